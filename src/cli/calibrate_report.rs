//! What `tandem calibrate` prints and writes: per metric, real (mean of the runs, with their
//! spread), simulated and error, and whether the simulated A/B moves it the way the real one
//! does; then where the time goes, segment by segment.

use anyhow::Context;
use serde_json::{Value, json};

use crate::replay::metrics::Summary;
use crate::timeline::{SEGMENTS, TTFT_SEGMENTS};

/// One metric of one deployment.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    /// Mean of the real runs.
    real: f64,
    /// (max − min) / mean of the real runs, %.
    spread: f64,
    /// Mean of the simulated runs (one per seed).
    simulated: f64,
}

impl Cell {
    fn error(&self) -> f64 {
        if self.real == 0.0 {
            if self.simulated == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (self.simulated - self.real) / self.real * 100.0
        }
    }
}

/// One metric over both deployments.
#[derive(Debug, Clone)]
pub(super) struct Row {
    metric: &'static str,
    agg: Cell,
    disagg: Cell,
}

/// Whether the A/B moves a metric the same way, simulated as real: "yes", "no", or "noise"
/// when the real difference is inside the real runs' spread.
pub(super) fn direction(r: &Row) -> &'static str {
    let real = r.disagg.real - r.agg.real;
    let sim = r.disagg.simulated - r.agg.simulated;
    let noise =
        (r.agg.spread * r.agg.real.abs()).max(r.disagg.spread * r.disagg.real.abs()) / 100.0;
    if real.abs() <= noise {
        "noise"
    } else if real.signum() == sim.signum() {
        "yes"
    } else {
        "no"
    }
}

impl Row {
    pub(super) fn json(&self) -> Value {
        let c = |c: &Cell| {
            json!({"real": c.real, "real_spread_pct": c.spread, "simulated": c.simulated,
                   "error_pct": c.error()})
        };
        json!({"metric": self.metric, "agg-rr": c(&self.agg), "disagg-kv": c(&self.disagg),
               "ab_direction_agrees": direction(self)})
    }
}

/// The metrics compared, read out of a summary.
type Metric = (&'static str, fn(&Summary) -> Option<f64>);

const METRICS: [Metric; 11] = [
    ("TTFT mean (ms)", |s| s.ttft.as_ref().map(|d| d.avg)),
    ("TTFT p50 (ms)", |s| s.ttft.as_ref().map(|d| d.p50)),
    ("TTFT p90 (ms)", |s| s.ttft.as_ref().map(|d| d.p90)),
    ("ITL mean (ms)", |s| s.itl.as_ref().map(|d| d.avg)),
    ("ITL p50 (ms)", |s| s.itl.as_ref().map(|d| d.p50)),
    ("ITL p90 (ms)", |s| s.itl.as_ref().map(|d| d.p90)),
    ("latency mean (ms)", |s| s.latency.as_ref().map(|d| d.avg)),
    ("latency p50 (ms)", |s| s.latency.as_ref().map(|d| d.p50)),
    ("latency p90 (ms)", |s| s.latency.as_ref().map(|d| d.p90)),
    ("goodput (req/s)", |s| s.goodput),
    ("hit rate (%)", |s| Some(s.prefix_hit_rate * 100.0)),
];

/// The rows of the table; an error when a metric is missing from a run (nothing succeeded).
pub(super) fn compare(
    real: &[Vec<Summary>],
    simulated: &[Vec<Summary>],
) -> anyhow::Result<Vec<Row>> {
    let cell = |k: usize, name: &str, f: fn(&Summary) -> Option<f64>| -> anyhow::Result<Cell> {
        let vals: Vec<f64> = real[k]
            .iter()
            .map(|s| f(s).with_context(|| format!("no real {name}: no request succeeded")))
            .collect::<anyhow::Result<_>>()?;
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let (lo, hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        Ok(Cell {
            real: mean,
            spread: if mean != 0.0 {
                (hi - lo) / mean.abs() * 100.0
            } else {
                0.0
            },
            simulated: {
                let runs = simulated[k]
                    .iter()
                    .map(|s| {
                        f(s).with_context(|| format!("no simulated {name}: no request finished"))
                    })
                    .collect::<anyhow::Result<Vec<f64>>>()?;
                runs.iter().sum::<f64>() / runs.len().max(1) as f64
            },
        })
    };
    METRICS
        .iter()
        .map(|&(name, f)| {
            Ok(Row {
                metric: name,
                agg: cell(0, name, f)?,
                disagg: cell(1, name, f)?,
            })
        })
        .collect()
}

/// Each deployment's (real, simulated) segment means: (timelines, ms per segment).
pub(super) type Breakdown = (
    (usize, [f64; SEGMENTS.len()]),
    (usize, [f64; SEGMENTS.len()]),
);

/// Where the time goes: each segment's mean, real against simulated, for both deployments.
pub(super) fn breakdown_table(b: &[Breakdown]) -> String {
    let mut s = format!(
        "where the time goes (mean ms; {} / {} real and {} / {} simulated timelines)\n\
         {:<34} {:>9} {:>9} | {:>9} {:>9}\n",
        b[0].0.0,
        b[1].0.0,
        b[0].1.0,
        b[1].1.0,
        "segment",
        "agg real",
        "agg sim",
        "dis real",
        "dis sim"
    );
    let sum = |x: &[f64]| x.iter().sum::<f64>();
    for (i, name) in SEGMENTS.iter().enumerate() {
        s += &format!(
            "{:<34} {:>9.2} {:>9.2} | {:>9.2} {:>9.2}\n",
            name, b[0].0.1[i], b[0].1.1[i], b[1].0.1[i], b[1].1.1[i]
        );
        if i + 1 == TTFT_SEGMENTS {
            s += &format!(
                "{:<34} {:>9.2} {:>9.2} | {:>9.2} {:>9.2}\n",
                "= TTFT",
                sum(&b[0].0.1[..=i]),
                sum(&b[0].1.1[..=i]),
                sum(&b[1].0.1[..=i]),
                sum(&b[1].1.1[..=i])
            );
        }
    }
    s += &format!(
        "{:<34} {:>9.2} {:>9.2} | {:>9.2} {:>9.2}\n",
        "= latency",
        sum(&b[0].0.1),
        sum(&b[0].1.1),
        sum(&b[1].0.1),
        sum(&b[1].1.1)
    );
    s
}

pub(super) fn breakdown_json(b: &[Breakdown]) -> Value {
    let side = |(n, m): &(usize, [f64; SEGMENTS.len()])| {
        let mut o = serde_json::Map::new();
        o.insert("timelines".into(), json!(n));
        for (name, v) in SEGMENTS.iter().zip(m) {
            o.insert((*name).into(), json!(v));
        }
        Value::Object(o)
    };
    json!({
        "agg-rr": {"real": side(&b[0].0), "simulated": side(&b[0].1)},
        "disagg-kv": {"real": side(&b[1].0), "simulated": side(&b[1].1)},
    })
}

pub(super) fn table(rows: &[Row], requests: usize, runs: usize, profile: &str) -> String {
    let mut s = format!(
        "sim vs real: {requests} requests, {runs} real run(s) each; profile: {profile}\n\
         {:<18} {:>10} {:>7} {:>10} {:>8} | {:>10} {:>7} {:>10} {:>8} | {:>6}\n",
        "metric",
        "agg real",
        "spread",
        "agg sim",
        "error",
        "dis real",
        "spread",
        "dis sim",
        "error",
        "A/B"
    );
    let pct = |v: f64| {
        if v.is_finite() {
            format!("{v:+.1}%")
        } else {
            "inf".into()
        }
    };
    for r in rows {
        s += &format!(
            "{:<18} {:>10.2} {:>6.1}% {:>10.2} {:>8} | {:>10.2} {:>6.1}% {:>10.2} {:>8} | {:>6}\n",
            r.metric,
            r.agg.real,
            r.agg.spread,
            r.agg.simulated,
            pct(r.agg.error()),
            r.disagg.real,
            r.disagg.spread,
            r.disagg.simulated,
            pct(r.disagg.error()),
            direction(r),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(agg: (f64, f64, f64), disagg: (f64, f64, f64)) -> Row {
        let c = |(real, spread, simulated)| Cell {
            real,
            spread,
            simulated,
        };
        Row {
            metric: "m",
            agg: c(agg),
            disagg: c(disagg),
        }
    }

    #[test]
    fn directions_compare_the_two_ab_moves() {
        assert_eq!(
            direction(&row((100.0, 1.0, 90.0), (50.0, 1.0, 60.0))),
            "yes"
        );
        assert_eq!(direction(&row((100.0, 1.0, 90.0), (50.0, 1.0, 95.0))), "no");
        // A real move of 1% under a 5% spread cannot be read.
        assert_eq!(
            direction(&row((100.0, 5.0, 90.0), (101.0, 5.0, 80.0))),
            "noise"
        );
    }

    #[test]
    fn errors_are_relative_to_the_real_figure() {
        let c = Cell {
            real: 200.0,
            spread: 0.0,
            simulated: 210.0,
        };
        assert!((c.error() - 5.0).abs() < 1e-12);
    }
}
