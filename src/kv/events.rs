//! KV block events: what a worker tells routers about its prefix cache.

/// One change to the set of cached blocks, in the shape of vLLM's KV events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Consecutive blocks of one sequence became cached.
    BlockStored {
        /// Sequence hashes of the blocks, in order.
        block_hashes: Vec<u64>,
        /// Sequence hash of the block before the first one, if any.
        parent_block_hash: Option<u64>,
        /// The tokens of all the blocks, concatenated.
        token_ids: Vec<u32>,
        /// Tokens per block.
        block_size: usize,
    },
    /// Blocks were evicted from the cache.
    BlockRemoved {
        /// Sequence hashes of the evicted blocks.
        block_hashes: Vec<u64>,
    },
    /// The whole cache was dropped.
    AllBlocksCleared,
}
