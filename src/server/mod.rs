//! Serving: the worker's gRPC service, its KV event publishers, and the OpenAI frontend.

pub mod kv_hub;
pub mod proto;
pub mod worker;
pub mod zmq_events;
