//! Prometheus metrics of the frontend and of the workers, under the `tandem:` prefix with the
//! series vLLM's dashboards read (deploy/grafana/ is built on these names).

use prometheus::core::{Collector, GenericCounter};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::EngineStats;
use crate::engine::sequence::RequestTiming;

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0,
    128.0,
];

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn hist(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

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

/// A worker's own metrics (`tandem worker --metrics-port`): its engine's counters, its
/// requests' queue, prefill and decode times, and its KV transfers.
pub struct WorkerMetrics {
    registry: Registry,
    running: prometheus::IntGauge,
    waiting: prometheus::IntGauge,
    kv_usage: Gauge,
    prompt_tokens: IntCounter,
    generation_tokens: IntCounter,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    preemptions: IntCounter,
    aborted: IntCounter,
    queue_time: Histogram,
    prefill_time: Histogram,
    decode_time: Histogram,
    transfers: IntCounter,
    transfer_bytes: IntCounterVec,
    transfer_seconds: prometheus::Counter,
    tier_blocks: prometheus::IntGaugeVec,
    tier_hits: IntCounterVec,
    tier_copy_bytes: IntCounterVec,
    tier_copy_seconds: prometheus::Counter,
    tier_copy_failures: IntCounter,
    /// Bytes of one KV block over every layer and rank (what a tier copy moves).
    block_bytes: u64,
}

/// KV transfer totals of a worker, for its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferTotals {
    /// Pulls made (decode side).
    pub pulls: u64,
    /// Bytes pulled.
    pub pulled_bytes: u64,
    /// Seconds pulling.
    pub pull_seconds: f64,
    /// Bytes served to pullers (prefill side).
    pub served_bytes: u64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Raises a counter to `to` (counters mirror totals the engine keeps).
fn raise<P: prometheus::core::Atomic>(c: &GenericCounter<P>, to: P::T)
where
    P::T: std::ops::Sub<Output = P::T> + PartialOrd,
{
    let now = c.get();
    if to > now {
        c.inc_by(to - now);
    }
}

impl WorkerMetrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        Self::with_block_bytes(0)
    }

    /// A registry for a worker whose KV blocks are `block_bytes` each (every layer and rank):
    /// the host tier's copies are reported in bytes.
    pub fn with_block_bytes(block_bytes: u64) -> Self {
        let r = Registry::new();
        let int = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let one = |name: &str, help: &str| {
            register(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
                    .expect("valid metric"),
            )
        };
        WorkerMetrics {
            running: register(
                &r,
                prometheus::IntGauge::new("tandem:num_requests_running", "Requests running")
                    .expect("valid metric"),
            ),
            waiting: register(
                &r,
                prometheus::IntGauge::new("tandem:num_requests_waiting", "Requests waiting")
                    .expect("valid metric"),
            ),
            kv_usage: register(
                &r,
                Gauge::new("tandem:kv_cache_usage_perc", "Fraction of KV blocks in use")
                    .expect("valid metric"),
            ),
            prompt_tokens: int("tandem:prompt_tokens_total", "Prompt tokens admitted"),
            generation_tokens: int("tandem:generation_tokens_total", "Tokens generated"),
            prefix_queries: int(
                "tandem:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            prefix_hits: int(
                "tandem:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
            preemptions: int("tandem:num_preemptions_total", "Sequences preempted"),
            aborted: int(
                "tandem:requests_aborted_total",
                "Requests aborted while live",
            ),
            queue_time: one(
                "tandem:request_queue_time_seconds",
                "Time a request waited before its first step",
            ),
            prefill_time: one(
                "tandem:request_prefill_time_seconds",
                "Time from a request's first step to its first token",
            ),
            decode_time: one(
                "tandem:request_decode_time_seconds",
                "Time from a request's first token to its end",
            ),
            transfers: int("tandem:kv_transfers_total", "KV pulls made"),
            transfer_bytes: counter(
                &r,
                "tandem:kv_transfer_bytes_total",
                "KV bytes moved, pulled by this worker or served to pullers",
                &["direction"],
            ),
            transfer_seconds: register(
                &r,
                prometheus::Counter::new(
                    "tandem:kv_transfer_seconds_total",
                    "Seconds spent pulling KV",
                )
                .expect("valid metric"),
            ),
            tier_blocks: register(
                &r,
                prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "tandem:kv_tier_blocks",
                        "KV blocks per tier (device, host): all of them, and those cached",
                    ),
                    &["tier", "state"],
                )
                .expect("valid metric"),
            ),
            tier_hits: counter(
                &r,
                "tandem:prefix_cache_tier_hits_total",
                "Prompt tokens found in the prefix cache, by the tier that held them",
                &["tier"],
            ),
            tier_copy_bytes: counter(
                &r,
                "tandem:kv_tier_copy_bytes_total",
                "KV bytes copied between the tiers: offloaded to the host, onboarded back",
                &["direction"],
            ),
            tier_copy_seconds: register(
                &r,
                prometheus::Counter::new(
                    "tandem:kv_tier_copy_seconds_total",
                    "Seconds spent copying KV between the tiers",
                )
                .expect("valid metric"),
            ),
            tier_copy_failures: int(
                "tandem:kv_tier_copy_failures_total",
                "Copies between the tiers that failed (the blocks were computed again)",
            ),
            block_bytes,
            registry: r,
        }
    }

    /// Records a finished request's timing.
    pub fn observe(&self, t: &RequestTiming) {
        self.queue_time.observe(t.queued.as_secs_f64());
        self.prefill_time.observe(t.prefill.as_secs_f64());
        self.decode_time.observe(t.decode.as_secs_f64());
    }

    /// The text exposition, with the engine's and transfers' totals as of now.
    pub fn render(&self, s: &EngineStats, t: &TransferTotals) -> String {
        self.running.set(s.running as i64);
        self.waiting.set(s.waiting as i64);
        let total = s.kv.total_blocks.max(1) as f64;
        self.kv_usage
            .set((s.kv.total_blocks - s.kv.free_blocks) as f64 / total);
        raise(&self.prompt_tokens, s.kv.query_tokens);
        raise(&self.generation_tokens, s.generated_tokens);
        raise(&self.prefix_queries, s.kv.query_tokens);
        raise(&self.prefix_hits, s.kv.hit_tokens);
        raise(&self.preemptions, s.preemptions);
        raise(&self.aborted, s.aborted);
        raise(&self.transfers, t.pulls);
        raise(
            &self.transfer_bytes.with_label_values(&["pulled"]),
            t.pulled_bytes,
        );
        raise(
            &self.transfer_bytes.with_label_values(&["served"]),
            t.served_bytes,
        );
        raise(&self.transfer_seconds, t.pull_seconds);
        let k = &s.kv;
        for (tier, total, cached) in [
            ("device", k.total_blocks, k.cached_blocks),
            ("host", k.host_blocks, k.host_cached_blocks),
        ] {
            self.tier_blocks
                .with_label_values(&[tier, "total"])
                .set(total as i64);
            self.tier_blocks
                .with_label_values(&[tier, "cached"])
                .set(cached as i64);
        }
        raise(
            &self.tier_hits.with_label_values(&["device"]),
            k.hit_tokens - k.host_hit_tokens,
        );
        raise(
            &self.tier_hits.with_label_values(&["host"]),
            k.host_hit_tokens,
        );
        raise(
            &self.tier_copy_bytes.with_label_values(&["offload"]),
            k.offloaded_blocks * self.block_bytes,
        );
        raise(
            &self.tier_copy_bytes.with_label_values(&["onboard"]),
            k.onboarded_blocks * self.block_bytes,
        );
        raise(&self.tier_copy_seconds, s.copy_seconds);
        raise(&self.tier_copy_failures, s.copy_failures);
        render(&self.registry)
    }
}
