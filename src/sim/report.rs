//! The A/B of simulated deployments: a side-by-side table and its JSON.

use serde_json::{Value, json};

use super::cluster::SimOutcome;
use crate::replay::metrics::{Dist, Summary};

/// One deployment's result, ready to compare.
pub struct Arm<'a> {
    /// Deployment name.
    pub name: &'a str,
    /// The run.
    pub outcome: &'a SimOutcome,
    /// Its metrics, as the replay client reports them.
    pub summary: &'a Summary,
}

type Row = (&'static str, fn(&Arm) -> Option<f64>);

fn dist(d: &Option<Dist>, f: fn(&Dist) -> f64) -> Option<f64> {
    d.as_ref().map(f)
}

const ROWS: &[Row] = &[
    ("TTFT avg (ms)", |a| dist(&a.summary.ttft, |d| d.avg)),
    ("TTFT p50 (ms)", |a| dist(&a.summary.ttft, |d| d.p50)),
    ("TTFT p90 (ms)", |a| dist(&a.summary.ttft, |d| d.p90)),
    ("TTFT p99 (ms)", |a| dist(&a.summary.ttft, |d| d.p99)),
    ("ITL avg (ms)", |a| dist(&a.summary.itl, |d| d.avg)),
    ("ITL p50 (ms)", |a| dist(&a.summary.itl, |d| d.p50)),
    ("ITL p90 (ms)", |a| dist(&a.summary.itl, |d| d.p90)),
    ("ITL p99 (ms)", |a| dist(&a.summary.itl, |d| d.p99)),
    ("latency p50 (ms)", |a| dist(&a.summary.latency, |d| d.p50)),
    ("latency p99 (ms)", |a| dist(&a.summary.latency, |d| d.p99)),
    ("output tokens/s", |a| {
        Some(a.summary.output_token_throughput)
    }),
    ("goodput (req/s)", |a| a.summary.goodput),
    ("good requests (%)", |a| {
        a.summary
            .good_requests
            .map(|g| 100.0 * g as f64 / a.summary.requests.max(1) as f64)
    }),
    ("prefix hit rate (%)", |a| {
        Some(100.0 * a.summary.prefix_hit_rate)
    }),
    ("errors", |a| Some(a.summary.errors as f64)),
    ("preemptions", |a| Some(a.outcome.preemptions as f64)),
    ("KV transfers", |a| Some(a.outcome.transfers as f64)),
    ("engine steps", |a| Some(a.outcome.steps as f64)),
    ("simulated duration (s)", |a| Some(a.outcome.duration_s)),
    ("wall time (s)", |a| Some(a.outcome.wall_s)),
];

/// The arms side by side; with two arms, the second's change over the first.
pub fn table(arms: &[Arm]) -> String {
    let mut out = format!("{:<24}", "metric");
    for a in arms {
        out += &format!("{:>14}", a.name);
    }
    if arms.len() == 2 {
        out += &format!("{:>10}", "change");
    }
    out.push('\n');
    for (name, f) in ROWS {
        out += &format!("{name:<24}");
        let vals: Vec<Option<f64>> = arms.iter().map(f).collect();
        for v in &vals {
            match v {
                Some(v) if v.abs() >= 100.0 => out += &format!("{v:>14.0}"),
                Some(v) => out += &format!("{v:>14.2}"),
                None => out += &format!("{:>14}", "-"),
            }
        }
        if let [Some(a), Some(b)] = vals[..]
            && a != 0.0
        {
            out += &format!("{:>+9.1}%", 100.0 * (b - a) / a.abs());
        }
        out.push('\n');
    }
    out
}

/// The arms as JSON: each one's AIPerf-shaped summary and run counters.
pub fn json(arms: &[Arm], profile: &super::Profile) -> Value {
    let deployments: Vec<Value> = arms
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "summary": a.summary.aiperf_json(),
                "steps": a.outcome.steps,
                "preemptions": a.outcome.preemptions,
                "transfers": a.outcome.transfers,
                "simulated_duration_s": a.outcome.duration_s,
                "wall_s": a.outcome.wall_s,
            })
        })
        .collect();
    json!({"profile": profile, "deployments": deployments})
}
