//! Trace replay: the Mooncake workload and AIPerf's metrics.

pub mod metrics;
pub mod trace;
