//! KV block events: what a worker tells routers about its prefix cache.

/// Where a block's KV lives, as vLLM's events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Medium {
    /// The device tier (the accelerator's memory; the CPU backend's cache arena too).
    #[default]
    Gpu,
    /// The host tier (`--host-kv-cache-gib`).
    Cpu,
}

impl Medium {
    /// The name on the wire: "GPU" or "CPU".
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Gpu => "GPU",
            Medium::Cpu => "CPU",
        }
    }

    /// Reads a wire name; anything but "CPU" (vLLM sends none, or "GPU") is the device tier.
    pub fn parse(s: Option<&str>) -> Medium {
        match s {
            Some(m) if m.eq_ignore_ascii_case("cpu") => Medium::Cpu,
            _ => Medium::Gpu,
        }
    }
}

/// How much of its KV events a cache records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventDetail {
    /// None: nobody listens.
    #[default]
    Off,
    /// Every event, but a `BlockStored` without its token ids (empty), for a consumer that
    /// knows blocks by their hashes alone, as the simulator's router does. Not vLLM's format:
    /// Dynamo's router hashes the tokens itself.
    Hashes,
    /// Every event in full, as vLLM publishes them.
    Full,
}

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
        /// The tier that now holds them.
        medium: Medium,
    },
    /// Blocks left a tier.
    BlockRemoved {
        /// Sequence hashes of the blocks.
        block_hashes: Vec<u64>,
        /// The tier they left.
        medium: Medium,
    },
    /// The whole cache, every tier, was dropped.
    AllBlocksCleared,
}
