//! The planner: for a GPU budget and tensor-parallel sizes, every prefill:decode split and
//! the aggregated baseline, under round-robin and KV routing, simulated on the same trace
//! and ranked by goodput at the SLA.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::cluster::{ClusterConfig, SimOutcome, Topology, simulate};
use super::profile::Profile;
use crate::error::Result;
use crate::replay::metrics::{Slo, Summary, summarize};
use crate::replay::trace::TraceRequest;
use crate::router::Policy;

/// One deployment the planner tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// GPUs per worker.
    pub tp: usize,
    /// Workers and their roles.
    pub topology: Topology,
    /// Routing of the aggregated (or prefill) pool.
    pub policy: Policy,
}

impl Candidate {
    /// "agg 8" or "6P:2D", with the TP size and the router, e.g. "TP2 6P:2D kv".
    pub fn label(&self) -> String {
        let shape = match self.topology {
            Topology::Aggregated { workers } => format!("agg {workers}"),
            Topology::Disaggregated { prefill, decode } => format!("{prefill}P:{decode}D"),
        };
        let router = match self.policy {
            Policy::RoundRobin => "round-robin",
            Policy::Kv { .. } => "kv",
        };
        format!("TP{} {shape} {router}", self.tp)
    }
}

/// Every candidate for `gpus` GPUs at each of `tps`, and the TP sizes or splits that give
/// none, with why.
pub fn candidates(gpus: usize, tps: &[usize], kv: Policy) -> (Vec<Candidate>, Vec<String>) {
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for &tp in tps {
        if tp == 0 || gpus < tp || !gpus.is_multiple_of(tp) {
            skipped.push(format!(
                "TP{tp}: {gpus} GPUs do not split into TP{tp} workers"
            ));
            continue;
        }
        let n = gpus / tp;
        for policy in [Policy::RoundRobin, kv] {
            out.push(Candidate {
                tp,
                topology: Topology::Aggregated { workers: n },
                policy,
            });
        }
        if n < 2 {
            skipped.push(format!(
                "TP{tp} disaggregated: {n} worker leaves no decode or no prefill worker"
            ));
            continue;
        }
        for prefill in (1..n).rev() {
            for policy in [Policy::RoundRobin, kv] {
                out.push(Candidate {
                    tp,
                    topology: Topology::Disaggregated {
                        prefill,
                        decode: n - prefill,
                    },
                    policy,
                });
            }
        }
    }
    (out, skipped)
}

/// A simulated candidate.
pub struct Planned {
    /// What ran.
    pub candidate: Candidate,
    /// Its run.
    pub outcome: SimOutcome,
    /// Its metrics at the SLA.
    pub summary: Summary,
}

/// Simulates every candidate (on all cores, each simulation on one), with the cluster and
/// profile `setup` gives it; returns them best first: most goodput, then least p90 TTFT.
pub fn run(
    candidates: &[Candidate],
    setup: &(dyn Fn(&Candidate) -> (ClusterConfig, Arc<Profile>) + Sync),
    trace: &[TraceRequest],
    slo: &Slo,
) -> Result<Vec<Planned>> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(candidates.len().max(1));
    let mut done: Vec<(usize, Result<Planned>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = candidates.get(i) else { break };
                        let (cfg, profile) = setup(c);
                        let planned = simulate(&cfg, profile, trace).map(|outcome| Planned {
                            candidate: *c,
                            summary: summarize(&outcome.records, outcome.duration_s, Some(slo)),
                            outcome,
                        });
                        mine.push((i, planned));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread panicked"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let mut planned = done
        .into_iter()
        .map(|(_, p)| p)
        .collect::<Result<Vec<_>>>()?;
    planned.sort_by(|a, b| {
        let g = |p: &Planned| p.summary.goodput.unwrap_or(0.0);
        let t = |p: &Planned| p.summary.ttft.as_ref().map_or(f64::INFINITY, |d| d.p90);
        g(b).total_cmp(&g(a)).then(t(a).total_cmp(&t(b)))
    });
    Ok(planned)
}

/// The ranked table.
pub fn table(planned: &[Planned], skipped: &[String]) -> String {
    let mut s = format!(
        "{:>4}  {:<24} {:>10} {:>8} {:>11} {:>11} {:>10} {:>10} {:>8}\n",
        "rank",
        "deployment",
        "goodput",
        "good %",
        "TTFT p50",
        "TTFT p90",
        "ITL p50",
        "ITL p90",
        "hit %"
    );
    let ms = |d: &Option<crate::replay::metrics::Dist>,
              f: fn(&crate::replay::metrics::Dist) -> f64| {
        d.as_ref()
            .map_or("-".to_string(), |d| format!("{:.0} ms", f(d)))
    };
    for (rank, p) in planned.iter().enumerate() {
        let m = &p.summary;
        s += &format!(
            "{:>4}  {:<24} {:>10} {:>7.1}% {:>11} {:>11} {:>10} {:>10} {:>7.1}%\n",
            rank + 1,
            p.candidate.label(),
            m.goodput.map_or("-".into(), |g| format!("{g:.3}/s")),
            100.0 * m.good_requests.unwrap_or(0) as f64 / m.requests.max(1) as f64,
            ms(&m.ttft, |d| d.p50),
            ms(&m.ttft, |d| d.p90),
            ms(&m.itl, |d| d.p50),
            ms(&m.itl, |d| d.p90),
            100.0 * m.prefix_hit_rate,
        );
    }
    for k in skipped {
        s += &format!("skipped: {k}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_split_and_the_baseline_under_both_routers() {
        let kv = Policy::kv(0.0);
        let (c, skipped) = candidates(16, &[2], kv);
        // agg 8 and 7 splits (7:1 .. 1:7), each under two routers.
        assert_eq!(c.len(), 2 * (1 + 7));
        assert!(skipped.is_empty());
        assert!(c.iter().any(|c| c.label() == "TP2 agg 8 round-robin"));
        assert!(c.iter().any(|c| c.label() == "TP2 6P:2D kv"));
        assert!(c.iter().any(|c| c.label() == "TP2 1P:7D kv"));
    }

    #[test]
    fn sizes_that_leave_a_role_empty_are_named_not_run() {
        let kv = Policy::kv(0.0);
        let (c, skipped) = candidates(2, &[2, 3], kv);
        // TP2 on 2 GPUs: one worker, aggregated only; TP3 does not divide 2.
        assert_eq!(c.len(), 2);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].contains("no decode or no prefill"),
            "{skipped:?}"
        );
        assert!(skipped[1].contains("TP3"), "{skipped:?}");
        // No GPUs, or fewer than one worker's: nothing to run, and said so.
        for gpus in [0, 1] {
            let (c, skipped) = candidates(gpus, &[2], kv);
            assert!(c.is_empty() && skipped.len() == 1, "{gpus}: {skipped:?}");
        }
    }
}
