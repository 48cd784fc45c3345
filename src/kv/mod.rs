//! Paged KV cache bookkeeping: block pool, prefix cache, host tier and KV events.
//!
//! The tensors themselves live in the backend; this module decides which block ids hold what.

pub mod block_pool;
pub mod events;
pub mod hash;
pub mod host_tier;
pub mod lru;
pub mod manager;
#[cfg(test)]
mod tier_props;

pub use block_pool::{BlockId, BlockPool, KvCopy, PoolStats};
pub use events::{EventDetail, KvEvent, Medium};
pub use host_tier::SlotId;
pub use manager::{BlockTable, KvCacheManager, PrefixHit};
