//! Paged KV cache bookkeeping: block pool, prefix cache and KV events.
//!
//! The tensors themselves live in the backend; this module decides which block ids hold what.

pub mod block_pool;
pub mod events;
pub mod hash;
pub mod manager;

pub use block_pool::{BlockId, BlockPool, PoolStats};
pub use events::KvEvent;
pub use manager::{BlockTable, KvCacheManager};
