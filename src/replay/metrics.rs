//! AIPerf's metrics of a replay: TTFT = first non-empty chunk − send; ITL per request =
//! (latency − TTFT) / (output tokens − 1); goodput = requests meeting every threshold per
//! second of benchmark. Summaries in the shape of AIPerf's profile_export_aiperf.json.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// What one replayed request measured (one line of the per-request JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the trace.
    pub index: usize,
    /// When it was sent, ms after the start.
    pub send_ms: f64,
    /// Prompt tokens.
    pub input_tokens: usize,
    /// Prompt tokens the server reported as cached.
    pub cached_tokens: usize,
    /// Time to the first non-empty chunk, ms.
    pub ttft_ms: Option<f64>,
    /// Time to the last chunk, ms.
    pub latency_ms: Option<f64>,
    /// Tokens received.
    pub output_tokens: usize,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Its clock points, when the server gave them (tandem's frontend, asked with
    /// [`crate::frontend::http::TIMELINE_HEADER`]) or the simulator wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Box<crate::timeline::Timeline>>,
}

impl RequestRecord {
    /// A request sent `send_ms` after the start, with nothing measured yet.
    pub fn sent(index: usize, send_ms: f64, input_tokens: usize) -> Self {
        RequestRecord {
            index,
            send_ms,
            input_tokens,
            cached_tokens: 0,
            ttft_ms: None,
            latency_ms: None,
            output_tokens: 0,
            error: None,
            timeline: None,
        }
    }

    /// Inter-token latency: (latency − TTFT) / (output tokens − 1); None with fewer than 2 tokens.
    pub fn itl_ms(&self) -> Option<f64> {
        match (self.ttft_ms, self.latency_ms) {
            (Some(t), Some(l)) if self.output_tokens > 1 => {
                Some((l - t) / (self.output_tokens - 1) as f64)
            }
            _ => None,
        }
    }
}

/// Service-level thresholds of goodput (ms); a request is good when it meets all that are set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slo {
    /// time_to_first_token.
    pub ttft_ms: Option<f64>,
    /// inter_token_latency.
    pub itl_ms: Option<f64>,
    /// request_latency.
    pub latency_ms: Option<f64>,
}

impl Slo {
    /// Parses AIPerf's `--goodput` syntax: "time_to_first_token:2000 inter_token_latency:25".
    pub fn parse(s: &str) -> Result<Self> {
        let mut slo = Slo::default();
        for part in s.split_whitespace() {
            let (k, v) = part.split_once(':').ok_or_else(|| {
                Error::InvalidRequest(format!("goodput term {part:?} is not name:value"))
            })?;
            let v: f64 = v.parse().map_err(|_| {
                Error::InvalidRequest(format!("goodput value {v:?} is not a number"))
            })?;
            match k {
                "time_to_first_token" => slo.ttft_ms = Some(v),
                "inter_token_latency" => slo.itl_ms = Some(v),
                "request_latency" => slo.latency_ms = Some(v),
                other => {
                    return Err(Error::InvalidRequest(format!(
                        "unknown goodput metric {other:?}"
                    )));
                }
            }
        }
        Ok(slo)
    }

    /// Whether a successful request meets every threshold.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let ok =
            |limit: Option<f64>, v: Option<f64>| limit.is_none_or(|l| v.is_some_and(|v| v <= l));
        r.error.is_none()
            && ok(self.ttft_ms, r.ttft_ms)
            && ok(self.itl_ms, r.itl_ms())
            && ok(self.latency_ms, r.latency_ms)
    }
}

/// Distribution of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Dist {
    /// Mean.
    pub avg: f64,
    /// Extremes.
    pub min: f64,
    /// Extremes.
    pub max: f64,
    /// Percentiles 50, 90, 99 (linear interpolation, as numpy's default).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Population standard deviation.
    pub std: f64,
}

/// Percentile with linear interpolation between closest ranks.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = (sorted.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Dist {
    /// The distribution of `values`; None when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let avg = v.iter().sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        Some(Dist {
            avg,
            min: v[0],
            max: v[v.len() - 1],
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            std,
        })
    }

    fn json(&self, unit: &str) -> Value {
        json!({"unit": unit, "avg": self.avg, "min": self.min, "max": self.max, "p50": self.p50,
               "p90": self.p90, "p99": self.p99, "std": self.std})
    }
}

/// The aggregate of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Benchmark duration: first send to last response, seconds.
    pub duration_s: f64,
    /// Time to first token, ms.
    pub ttft: Option<Dist>,
    /// Inter-token latency per request, ms.
    pub itl: Option<Dist>,
    /// Request latency, ms.
    pub latency: Option<Dist>,
    /// Output tokens per second of benchmark.
    pub output_token_throughput: f64,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Good requests per second (None without thresholds).
    pub goodput: Option<f64>,
    /// Good requests (None without thresholds).
    pub good_requests: Option<usize>,
    /// Cached prompt tokens over prompt tokens of successful requests.
    pub prefix_hit_rate: f64,
}

/// Aggregates records over a benchmark of `duration_s` seconds.
pub fn summarize(records: &[RequestRecord], duration_s: f64, slo: Option<&Slo>) -> Summary {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let output: usize = ok.iter().map(|r| r.output_tokens).sum();
    let (cached, input) = ok.iter().fold((0, 0), |(c, i), r| {
        (c + r.cached_tokens, i + r.input_tokens)
    });
    let good = slo.map(|s| ok.iter().filter(|r| s.met_by(r)).count());
    let per_s = |n: f64| {
        if duration_s > 0.0 {
            n / duration_s
        } else {
            0.0
        }
    };
    Summary {
        requests: records.len(),
        errors: records.len() - ok.len(),
        duration_s,
        ttft: Dist::of(ok.iter().filter_map(|r| r.ttft_ms)),
        itl: Dist::of(ok.iter().filter_map(|r| r.itl_ms())),
        latency: Dist::of(ok.iter().filter_map(|r| r.latency_ms)),
        output_token_throughput: per_s(output as f64),
        request_throughput: per_s(ok.len() as f64),
        goodput: good.map(|g| per_s(g as f64)),
        good_requests: good,
        prefix_hit_rate: if input == 0 {
            0.0
        } else {
            cached as f64 / input as f64
        },
    }
}

impl Summary {
    /// The summary as AIPerf's profile_export_aiperf.json lays it out.
    pub fn aiperf_json(&self) -> Value {
        let mut v = json!({
            "request_throughput": {"unit": "requests/sec", "avg": self.request_throughput},
            "output_token_throughput": {"unit": "tokens/sec", "avg": self.output_token_throughput},
            "benchmark_duration": {"unit": "sec", "avg": self.duration_s},
            "request_count": {"unit": "requests", "avg": self.requests - self.errors},
            "error_request_count": if self.errors > 0 { json!({"unit": "requests", "avg": self.errors}) } else { Value::Null },
            "goodput": self.goodput.map(|g| json!({"unit": "requests/sec", "avg": g})),
            "good_request_count": self.good_requests.map(|g| json!({"unit": "requests", "avg": g})),
            "prefix_cache_hit_rate": {"unit": "ratio", "avg": self.prefix_hit_rate},
        });
        for (name, d) in [
            ("time_to_first_token", &self.ttft),
            ("inter_token_latency", &self.itl),
            ("request_latency", &self.latency),
        ] {
            v[name] = d.as_ref().map_or(Value::Null, |d| d.json("ms"));
        }
        v
    }

    /// A terminal table of the summary.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<34}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "metric", "avg", "p50", "p90", "p99", "max"
        );
        for (name, d) in [
            ("time to first token (ms)", &self.ttft),
            ("inter-token latency (ms)", &self.itl),
            ("request latency (ms)", &self.latency),
        ] {
            match d {
                Some(d) => {
                    out += &format!(
                        "{name:<34}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}\n",
                        d.avg, d.p50, d.p90, d.p99, d.max
                    )
                }
                None => out += &format!("{name:<34}{:>10}\n", "-"),
            }
        }
        out += &format!(
            "{:<34}{:>10}\n",
            "requests (errors)",
            format!("{} ({})", self.requests, self.errors)
        );
        out += &format!(
            "{:<34}{:>10.2}\n",
            "benchmark duration (s)", self.duration_s
        );
        out += &format!(
            "{:<34}{:>10.2}\n",
            "request throughput (req/s)", self.request_throughput
        );
        out += &format!(
            "{:<34}{:>10.1}\n",
            "output token throughput (tok/s)", self.output_token_throughput
        );
        if let Some(g) = self.goodput {
            out += &format!("{:<34}{:>10.2}\n", "goodput (req/s)", g);
        }
        out += &format!(
            "{:<34}{:>10.4}\n",
            "prefix cache hit rate", self.prefix_hit_rate
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ttft: f64, latency: f64, n: usize) -> RequestRecord {
        RequestRecord {
            index: 0,
            send_ms: 0.0,
            input_tokens: 100,
            cached_tokens: 25,
            ttft_ms: Some(ttft),
            latency_ms: Some(latency),
            output_tokens: n,
            error: None,
            timeline: None,
        }
    }

    #[test]
    fn definitions_on_hand_built_streams() {
        // TTFT 100 ms, then 10 more tokens over 200 ms: ITL = 200 / 10 = 20 ms.
        let a = rec(100.0, 300.0, 11);
        assert_eq!(a.itl_ms(), Some(20.0));
        // One token: no ITL.
        assert_eq!(rec(50.0, 50.0, 1).itl_ms(), None);
        let b = rec(2500.0, 2600.0, 11); // TTFT too slow
        let c = rec(100.0, 1100.0, 11); // ITL 100 ms too slow
        let mut failed = rec(1.0, 2.0, 2);
        failed.error = Some("HTTP 500".into());
        let slo = Slo::parse("time_to_first_token:2000 inter_token_latency:25").unwrap();
        assert!(slo.met_by(&a) && !slo.met_by(&b) && !slo.met_by(&c) && !slo.met_by(&failed));
        let s = summarize(&[a, b, c, failed], 2.0, Some(&slo));
        assert_eq!((s.requests, s.errors, s.good_requests), (4, 1, Some(1)));
        assert_eq!(s.goodput, Some(0.5));
        assert_eq!(s.output_token_throughput, 33.0 / 2.0);
        assert_eq!(s.ttft.as_ref().unwrap().p50, 100.0);
        assert_eq!(s.ttft.as_ref().unwrap().max, 2500.0);
        assert!((s.prefix_hit_rate - 0.25).abs() < 1e-12);
        let j = s.aiperf_json();
        assert_eq!(j["time_to_first_token"]["unit"], "ms");
        assert_eq!(j["goodput"]["avg"], 0.5);
        assert!(s.table().contains("goodput"));
        assert!(Slo::parse("ttft:5").is_err() && Slo::parse("time_to_first_token").is_err());
    }

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 90.0), 4.6);
        let d = Dist::of([2.0, 4.0]).unwrap();
        assert_eq!((d.avg, d.std), (3.0, 1.0));
    }
}
