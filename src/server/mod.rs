//! Serving: the worker's gRPC service, its KV event publishers, and the OpenAI frontend.

pub mod chat;
pub mod dispatch;
pub mod health;
pub mod http;
pub mod kv_hub;
pub mod kv_tcp;
pub mod kv_transport;
pub mod metrics;
pub mod nixl;
pub mod openai;
pub mod proto;
pub mod reasoning;
pub mod response;
pub mod tls;
pub mod tool_calls;
pub mod transfer;
pub mod worker;
pub mod zmq_events;
