//! The hardware and model shapes the cost model starts from: data-sheet GPUs (H200, GB200),
//! a CPU guess for `tandem profile` to fit, and the Qwen3 shapes that decide a step's cost.

/// The shapes of a Qwen3 model that decide its cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Hidden size.
    pub hidden: f64,
    /// MLP intermediate size.
    pub intermediate: f64,
    /// Decoder layers.
    pub layers: f64,
    /// Query heads.
    pub q_heads: f64,
    /// Key/value heads.
    pub kv_heads: f64,
    /// Width of a head.
    pub head_dim: f64,
    /// Vocabulary.
    pub vocab: f64,
    /// Bytes per weight and per cached value (bf16: 2).
    pub dtype_bytes: f64,
}

impl ModelShape {
    /// The shape of a model's config, storing `dtype_bytes` per value (the backend's: 4 on the
    /// CPU, 2 on the GPU).
    pub fn of(cfg: &crate::config::ModelConfig, dtype_bytes: f64) -> Self {
        ModelShape {
            hidden: cfg.hidden_size as f64,
            intermediate: cfg.intermediate_size as f64,
            layers: cfg.num_hidden_layers as f64,
            q_heads: cfg.num_attention_heads as f64,
            kv_heads: cfg.num_key_value_heads as f64,
            head_dim: cfg.head_dim as f64,
            vocab: cfg.vocab_size as f64,
            dtype_bytes,
        }
    }
}

/// Qwen3-32B (config.json of Qwen/Qwen3-32B).
pub const QWEN3_32B: ModelShape = ModelShape {
    hidden: 5120.0,
    intermediate: 25600.0,
    layers: 64.0,
    q_heads: 64.0,
    kv_heads: 8.0,
    head_dim: 128.0,
    vocab: 151_936.0,
    dtype_bytes: 2.0,
};

/// One GPU and its links, from the data sheet.
#[derive(Debug, Clone, Copy)]
pub struct Gpu {
    /// Name.
    pub name: &'static str,
    /// Device memory, bytes.
    pub memory: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bandwidth: f64,
    /// Dense bf16 tensor-core rate, FLOP/s.
    pub matmul_flops: f64,
    /// Dense FP8 tensor-core rate, FLOP/s.
    pub fp8_flops: f64,
    /// Dense FP4 tensor-core rate, FLOP/s (the FP8 rate where there are no FP4 units).
    pub fp4_flops: f64,
    /// NVLink bandwidth per direction, bytes/s.
    pub nvlink_bandwidth: f64,
    /// Network bandwidth per GPU (one NIC each), bytes/s.
    pub nic_bandwidth: f64,
    /// Link to host memory per direction, bytes/s.
    pub host_link_bandwidth: f64,
}

/// H200 SXM: 143,771 MiB, 4.8 TB/s HBM3e, 989 TFLOP/s dense bf16 and 1,979 FP8 (no FP4
/// units), NVLink 4 (450 GB/s per direction), one 400 Gb/s NIC per GPU, PCIe Gen5 x16 to the
/// host (32 GT/s × 16 lanes × 128/130 = 63 GB/s per direction).
pub const H200: Gpu = Gpu {
    name: "H200",
    memory: 143_771.0 * 1024.0 * 1024.0,
    hbm_bandwidth: 4.8e12,
    matmul_flops: 989e12,
    fp8_flops: 1979e12,
    fp4_flops: 1979e12,
    nvlink_bandwidth: 450e9,
    nic_bandwidth: 50e9,
    host_link_bandwidth: 63e9,
};

/// One Blackwell GPU of a GB200 NVL72 rack, from the rack's data sheet over its 72 GPUs:
/// 13.4 TB of HBM3e at 576 TB/s (186 GB, 8 TB/s each); 1,440 / 720 / 360 PFLOPS of FP4 /
/// FP8 / bf16 with sparsity (10 / 5 / 2.5 PFLOP/s dense each); NVLink 5 at 130 TB/s (1.8 TB/s
/// each, 900 GB/s per direction), one domain over the rack; one 800 Gb/s NIC per GPU;
/// NVLink-C2C to its Grace CPU's memory (900 GB/s between a Grace and its two GPUs: 225 GB/s
/// per GPU per direction).
pub const GB200: Gpu = Gpu {
    name: "GB200",
    memory: 186e9,
    hbm_bandwidth: 8e12,
    matmul_flops: 2.5e15,
    fp8_flops: 5e15,
    fp4_flops: 10e15,
    nvlink_bandwidth: 900e9,
    nic_bandwidth: 100e9,
    host_link_bandwidth: 225e9,
};

impl Gpu {
    /// A starting point for a CPU, whose rates `tandem profile` fits to what it measures: a
    /// DDR channel's bandwidth and a few cores' f32 rate, no memory to speak of (the KV
    /// capacity is the engine's).
    pub const CPU_GUESS: Gpu = Gpu {
        name: "CPU",
        memory: 16.0 * (1u64 << 30) as f64,
        hbm_bandwidth: 10e9,
        matmul_flops: 50e9,
        fp8_flops: 50e9,
        fp4_flops: 50e9,
        nvlink_bandwidth: 10e9,
        nic_bandwidth: 1e9,
        host_link_bandwidth: 10e9,
    };
}
