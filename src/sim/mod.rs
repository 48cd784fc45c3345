//! `tandem simulate`: the A/B on a simulated clock. The router decision, scheduler and KV
//! cache are the servers' own code; only the executor is a timing model.

pub mod cluster;
pub mod executor;
pub mod grid;
pub mod hardware;
pub mod measure;
pub mod median;
pub mod moe;
pub mod plan;
pub mod profile;
mod pulls;
pub mod seen;
pub mod serving;
mod track;

pub use cluster::{ClusterConfig, SimOutcome, Topology, simulate};
pub use executor::SimExecutor;
pub use profile::Profile;
pub mod plot;
pub mod report;

#[cfg(test)]
mod tests;
