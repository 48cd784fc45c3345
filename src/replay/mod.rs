//! Trace replay: the Mooncake workload and AIPerf's metrics.

pub mod client;
pub mod metrics;
pub mod synth;
pub mod trace;
