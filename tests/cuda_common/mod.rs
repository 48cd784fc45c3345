//! Helpers of the CUDA tests: a device or a clear skip, seeded random bf16-exact tensors.
#![allow(dead_code)]

use tandem::backend::HostTensor;
use tandem::backend::cuda::{CudaBackend, GpuPresence, gpu_presence};

/// How many GPUs the suite must find: `TANDEM_REQUIRE_GPU=N` (CI runs the suite on two
/// emulated devices with N = 2; a one-GPU machine runs it with N = 1); 0 when unset.
fn required() -> usize {
    std::env::var("TANDEM_REQUIRE_GPU")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Devices visible, or None after printing why the test is skipped: only a machine without a
/// CUDA driver, or whose driver sees fewer than `n` devices, skips. A driver that fails
/// otherwise fails the test with its message; so does a skip where TANDEM_REQUIRE_GPU asks
/// for `n` devices.
fn devices(test: &str, n: usize) -> Option<usize> {
    let (reason, have) = match gpu_presence() {
        Ok(GpuPresence::NoDriver) => ("no CUDA device (no CUDA driver)".to_string(), 0),
        Ok(GpuPresence::Devices(k)) if k >= n => return Some(k),
        Ok(GpuPresence::Devices(k)) => (format!("{k} CUDA devices, {n} needed"), k),
        Err(e) => panic!("{test}: a CUDA driver is installed but fails, so this is no skip: {e}"),
    };
    if required() >= n {
        panic!(
            "{test}: {reason}, and TANDEM_REQUIRE_GPU={} asks for {n}. Without a GPU, build the \
             emulated device (scripts/cuda-emu.sh) and put the directory it prints on \
             LD_LIBRARY_PATH, with TANDEM_EMU_DEVICES={n}",
            required()
        );
    }
    let _ = have;
    // Straight to the process's stderr: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}: {test}");
    None
}

/// The GPU backend on device 0, or None after printing why the test is skipped (see
/// [`devices`]).
pub fn gpu(test: &str) -> Option<CudaBackend> {
    devices(test, 1)?;
    Some(CudaBackend::single(0, 512 << 20).expect("opening GPU 0"))
}

/// One backend per rank on devices 0..n, joined by NCCL, or None (see [`devices`]).
pub fn gpus(test: &str, n: usize) -> Option<Vec<CudaBackend>> {
    devices(test, n)?;
    let ordinals: Vec<usize> = (0..n).collect();
    let comms = tandem::backend::cuda::NcclComm::group(&ordinals).expect("NCCL communicators");
    Some(
        comms
            .into_iter()
            .zip(ordinals)
            .map(|(c, o)| CudaBackend::new(o, 512 << 20, c).expect("opening a GPU"))
            .collect(),
    )
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
