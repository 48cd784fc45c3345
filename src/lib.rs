//! tandem: a native Rust LLM serving stack for Qwen3 with a paged KV cache.
//!
//! The layers, bottom up: [`backend`] (device operations), [`model`] (Qwen3 over a backend),
//! [`kv`] (block pool and prefix cache), [`engine`] (scheduler, sampler, step loop).

pub mod backend;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod kv;
pub mod loader;
pub mod model;
pub mod replay;
pub mod router;
pub mod server;
pub mod sim;
pub mod tokenizer;

pub use error::{Error, Result};
