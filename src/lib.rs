//! tandem: a native Rust LLM serving stack for Qwen3 with a paged KV cache.
//!
//! The layers, bottom up (imports run only downwards; tests/layers.rs checks it): [`kv`]
//! (block pool and prefix cache), [`backend`] (device operations), [`model`] (Qwen3 over a
//! backend), [`engine`] (scheduler, sampler, step loop), [`wire`] (the worker's gRPC types),
//! [`transfer`] (KV between workers), [`router`], then the processes: [`worker`],
//! [`frontend`], [`replay`], [`sim`], and [`cli`] over them all.

pub mod backend;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod kv;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod replay;
pub mod router;
pub mod sim;
pub mod timeline;
pub mod tokenizer;
pub mod transfer;
pub mod wire;
pub mod worker;

pub use error::{Error, Result};
