//! Helpers of the CUDA tests: a device or a clear skip, seeded random bf16-exact tensors.
#![allow(dead_code)]

use tandem::backend::HostTensor;
use tandem::backend::cuda::{CudaBackend, GpuPresence, gpu_presence};

/// The GPU backend, or None after printing why the test is skipped: only a machine without a
/// CUDA driver, or whose driver sees no device, skips. A driver that fails otherwise fails
/// the test with its message. With TANDEM_REQUIRE_GPU=1 a skip is a failure too, so a GPU
/// run cannot pass by skipping.
pub fn gpu(test: &str) -> Option<CudaBackend> {
    let reason = match gpu_presence() {
        Ok(GpuPresence::NoDriver) => "no CUDA device (no CUDA driver)".to_string(),
        Ok(GpuPresence::Devices(0)) => "no CUDA device".to_string(),
        Ok(GpuPresence::Devices(_)) => {
            return Some(CudaBackend::single(0, 512 << 20).expect("opening GPU 0"));
        }
        Err(e) => panic!("{test}: a CUDA driver is installed but fails, so this is no skip: {e}"),
    };
    if std::env::var("TANDEM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason}, and TANDEM_REQUIRE_GPU=1");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}: {test}");
    None
}

/// max |a - b| / max |b|.
pub fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(1e-6, f32::max)
}

/// xorshift64*: reproducible inputs without depending on a random crate's API.
pub struct Rng(pub u64);

impl Rng {
    /// Next value in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A tensor of values in [-scale, scale), rounded to bf16 so both backends see them exactly.
    pub fn tensor(&mut self, shape: Vec<usize>, scale: f32) -> HostTensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| half::bf16::from_f32((self.uniform() * 2.0 - 1.0) * scale).to_f32())
            .collect();
        HostTensor::new(shape, data)
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.uniform() * (i + 1) as f32) as usize % (i + 1);
            v.swap(i, j);
        }
    }
}
