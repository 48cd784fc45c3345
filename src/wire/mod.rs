//! What both sides of the worker's gRPC share (the frontend, the router and `tandem profile`
//! on one side, the worker on the other): the types generated from proto/worker.proto, their
//! conversions to engine types, the failures both sides read, and TLS.

pub mod convert;
pub mod proto;
pub mod tls;

/// How a decode worker says that the prompt's KV could not be had from its source (the
/// prefill worker is gone, its hold expired, the stream broke): DATA_LOSS with this prefix.
/// The decode worker itself is fine; the frontend computes the prompt again elsewhere.
pub const KV_SOURCE_LOST: &str = "the KV source failed: ";
