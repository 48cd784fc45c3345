//! Fatbins as nvcc 13.0 writes them load and run: tests/data/scale.fatbin (SASS for sm_90a
//! and sm_80, zstd-compressed compute_80 PTX) and scale-lz4.fatbin (LZ4-compressed PTX), made
//! from tests/data/scale.cu with
//!   nvcc -fatbin -O3 -gencode=arch=compute_90a,code=sm_90a \
//!        -gencode=arch=compute_80,code=[sm_80,compute_80] -o scale.fatbin scale.cu
//!   nvcc -fatbin -O3 -gencode=arch=compute_80,code=[sm_80,compute_80] \
//!        -compress-mode=speed -o scale-lz4.fatbin scale.cu

mod common;

use std::ffi::c_void;

use common::*;

fn run(image: &[u8]) {
    primary(0);
    // A heap copy: the fatbin header wants 8-byte alignment.
    let aligned: Vec<u64> = image
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let mut m = std::ptr::null_mut();
    unsafe { ok(cuModuleLoadData(&mut m, aligned.as_ptr() as *const c_void)) };
    let f = function(m, "scale");
    let n = 100u32;
    let d = alloc(4 * n as usize);
    htod(d, &f32s(&(0..n).map(|i| i as f32).collect::<Vec<_>>()));
    let s = stream();
    ok(launch(
        f,
        [1, 1, 1],
        [128, 1, 1],
        0,
        s,
        &[P::U64(d), P::F32(-0.5), P::U32(n)],
    ));
    ok(sync(s));
    let got = as_f32(&dtoh(d, 4 * n as usize));
    for (i, v) in got.iter().enumerate() {
        assert_eq!(*v, i as f32 * -0.5);
    }
}

#[test]
fn a_zstd_fatbin_with_sass_and_ptx() {
    run(include_bytes!("data/scale.fatbin"));
}

#[test]
fn an_lz4_fatbin() {
    run(include_bytes!("data/scale-lz4.fatbin"));
}

#[test]
fn a_fatbin_without_ptx_is_refused() {
    primary(0);
    // Keep only the first entry (the sm_90a SASS): header size, payload = that entry.
    let full = include_bytes!("data/scale.fatbin");
    let hsz = u32::from_le_bytes(full[20..24].try_into().unwrap()) as usize;
    let psz = u64::from_le_bytes(full[24..32].try_into().unwrap()) as usize;
    let mut only_sass = full[..16 + hsz + psz].to_vec();
    only_sass[8..16].copy_from_slice(&((hsz + psz) as u64).to_le_bytes());
    let aligned: Vec<u64> = only_sass
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let mut m = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            cuModuleLoadData(&mut m, aligned.as_ptr() as *const c_void),
            CUDA_ERROR_NO_BINARY_FOR_GPU
        );
    }
}
