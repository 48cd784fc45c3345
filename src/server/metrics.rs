//! The frontend's Prometheus metrics.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request latencies, outcomes and per-worker load.
pub struct Metrics {
    registry: Registry,
    /// Time to first token.
    pub ttft: HistogramVec,
    /// Time between consecutive tokens.
    pub itl: HistogramVec,
    /// Whole request.
    pub e2e: HistogramVec,
    /// Requests by outcome (stop, length, abort, error, rejected).
    pub requests: IntCounterVec,
    /// Per-worker gauges: running, waiting, used_blocks, total_blocks, healthy.
    pub worker: IntGaugeVec,
    /// Requests that took another path than the first choice: "retry" (a worker's call failed
    /// and another worker got the request), "decode_only" (no prefill worker was up).
    pub failovers: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0,
            32.0, 64.0,
        ];
        let hist = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                &["model"],
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let ttft = hist(
            "tandem_time_to_first_token_seconds",
            "Time from request to first token",
        );
        let itl = hist(
            "tandem_inter_token_latency_seconds",
            "Time between consecutive output tokens",
        );
        let e2e = hist(
            "tandem_e2e_request_latency_seconds",
            "Time from request to last token",
        );
        let requests = IntCounterVec::new(
            Opts::new("tandem_requests_total", "Requests by outcome"),
            &["model", "outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        let worker = IntGaugeVec::new(
            Opts::new("tandem_worker", "Worker load as last polled"),
            &["worker", "quantity"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(worker.clone()))
            .expect("unique metric");
        let failovers = IntCounterVec::new(
            Opts::new(
                "tandem_failovers_total",
                "Requests sent elsewhere than the first choice, by path",
            ),
            &["path"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(failovers.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            failovers,
            ttft,
            itl,
            e2e,
            requests,
            worker,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
