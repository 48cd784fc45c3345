//! The worker process (`tandem worker`, and the workers of `tandem serve`): one engine
//! behind the gRPC service (generation, the prefill/decode RPCs and the transfer service's),
//! its health, its KV event hub and publishers, and its metrics. How KV moves between workers
//! is in transfer/.

pub mod disagg;
pub mod health;
pub mod kv_hub;
pub mod metrics;
pub mod service;
pub mod start;
pub mod zmq_events;
