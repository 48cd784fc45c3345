//! The frontend's Prometheus metrics (its `/metrics`): latencies as clients see them, tokens,
//! outcomes, failovers, and each worker's load as last polled.

use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::{counter, hist, register, render};

/// The frontend's metrics: latencies as clients see them, tokens, outcomes, and each
/// worker's load as last polled.
pub struct Metrics {
    registry: Registry,
    /// Time to first token.
    pub ttft: HistogramVec,
    /// Time between consecutive tokens.
    pub itl: HistogramVec,
    /// Whole request.
    pub e2e: HistogramVec,
    /// Requests by outcome (stop, length, abort, error, rejected, overloaded, queue_timeout).
    pub requests: IntCounterVec,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: IntCounterVec,
    /// Tokens generated.
    pub generation_tokens: IntCounterVec,
    /// Prompt tokens looked up in (and found in) the workers' prefix caches.
    pub prefix_queries: IntCounterVec,
    /// See `prefix_queries`.
    pub prefix_hits: IntCounterVec,
    /// Requests that took another path than the first choice: "retry" (a worker failed
    /// before the first token, and another worker got the request), "decode_only" (no
    /// prefill worker was up).
    pub failovers: IntCounterVec,
    /// Requests waiting for their first token.
    pub queued: prometheus::IntGauge,
    /// Per worker: running and waiting requests, KV cache use.
    pub running: IntGaugeVec,
    /// See `running`.
    pub waiting: IntGaugeVec,
    /// See `running`.
    pub kv_usage: GaugeVec,
    /// Per worker, the rest of its load and the router's view of it (by `quantity`).
    pub worker: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &["worker"]).expect("valid metric"),
            )
        };
        let failovers = counter(
            &r,
            "tandem:failovers_total",
            "Requests sent elsewhere than the first choice, by path",
            &["path"],
        );
        // Both paths exist from the start, at 0, so that dashboards and alerts see them.
        for path in ["retry", "decode_only"] {
            failovers.with_label_values(&[path]);
        }
        Metrics {
            failovers,
            ttft: hist(
                &r,
                "tandem:time_to_first_token_seconds",
                "Time from request to first token",
                &["model"],
            ),
            itl: hist(
                &r,
                "tandem:inter_token_latency_seconds",
                "Time between consecutive output tokens",
                &["model"],
            ),
            e2e: hist(
                &r,
                "tandem:e2e_request_latency_seconds",
                "Time from request to last token",
                &["model"],
            ),
            requests: counter(
                &r,
                "tandem:requests_total",
                "Requests by outcome",
                &["model", "outcome"],
            ),
            prompt_tokens: counter(
                &r,
                "tandem:prompt_tokens_total",
                "Prompt tokens of finished requests",
                &["model"],
            ),
            generation_tokens: counter(
                &r,
                "tandem:generation_tokens_total",
                "Tokens generated",
                &["model"],
            ),
            prefix_queries: counter(
                &r,
                "tandem:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix caches",
                &["model"],
            ),
            prefix_hits: counter(
                &r,
                "tandem:prefix_cache_hits_total",
                "Prompt tokens found in the prefix caches",
                &["model"],
            ),
            queued: register(
                &r,
                prometheus::IntGauge::new(
                    "tandem:requests_queued",
                    "Requests waiting for their first token",
                )
                .expect("valid metric"),
            ),
            running: gauge(
                "tandem:num_requests_running",
                "Requests running on a worker",
            ),
            waiting: gauge(
                "tandem:num_requests_waiting",
                "Requests waiting on a worker",
            ),
            kv_usage: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "tandem:kv_cache_usage_perc",
                        "Fraction of a worker's KV blocks in use",
                    ),
                    &["worker"],
                )
                .expect("valid metric"),
            ),
            worker: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tandem:worker",
                        "Worker load as last polled, and the router's view",
                    ),
                    &["worker", "quantity"],
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
