//! A worker's Prometheus metrics (`tandem worker --metrics-port`): its engine's counters, its
//! requests' queue, prefill and decode times, its KV transfers and its host tier.

use prometheus::core::GenericCounter;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Registry};

use crate::engine::EngineStats;
use crate::engine::sequence::RequestTiming;
use crate::metrics::{BUCKETS, counter, register, render};
use crate::transfer::TransferTotals;

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
