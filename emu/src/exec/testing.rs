//! Running hand-written PTX on the interpreter in unit tests: buffers in host memory (the
//! interpreter only needs addresses it is allowed to touch), scalars, and the buffers'
//! contents after the launch.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use super::{Launch, MemMap, Span, run_grid};
use crate::ptx::Parsed;

/// A kernel argument.
#[derive(Clone)]
pub enum Arg {
    /// A buffer of these bytes, passed as its address (16-byte aligned).
    Buf(Vec<u8>),
    U32(u32),
    U64(u64),
    F32(f32),
}

/// Buffers of a launch, 16-byte aligned, that outlive it.
struct Bufs(Vec<Box<[u128]>>);

/// Runs `kernel` of `ptx` on `grid` x `block` threads; the buffers' contents afterwards, in
/// argument order, or the load or launch error as text.
pub fn launch(
    ptx: &str,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &[Arg],
) -> Result<Vec<Vec<u8>>, String> {
    launch_shared(ptx, kernel, grid, block, 0, args)
}

/// As [`launch`], with `dyn_shared` bytes of dynamic shared memory.
pub fn launch_shared(
    ptx: &str,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dyn_shared: usize,
    args: &[Arg],
) -> Result<Vec<Vec<u8>>, String> {
    let parsed = Parsed::new(ptx).map_err(|e| e.to_string())?;
    let kernels = parsed.lower(&HashMap::new()).map_err(|e| e.to_string())?;
    let k = kernels
        .iter()
        .find(|k| k.name == kernel)
        .ok_or_else(|| format!("no kernel {kernel}"))?;
    let mut bufs = Bufs(Vec::new());
    let mut spans = Vec::new();
    let mut params = vec![0u8; k.param_bytes];
    let mut lens = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let slot = k.params.get(i).ok_or("too many arguments")?;
        let bytes: Vec<u8> = match a {
            Arg::Buf(b) => {
                let mut mem = vec![0u128; b.len().div_ceil(16).max(1)].into_boxed_slice();
                let p = mem.as_mut_ptr() as *mut u8;
                // SAFETY: the box holds at least b.len() bytes.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len()) };
                let owner: Arc<dyn Any + Send + Sync> = Arc::new(());
                spans.push(Span {
                    start: p as u64,
                    end: p as u64 + b.len() as u64,
                    owner,
                });
                lens.push(Some((bufs.0.len(), b.len())));
                bufs.0.push(mem);
                (p as u64).to_le_bytes().to_vec()
            }
            Arg::U32(v) => {
                lens.push(None);
                v.to_le_bytes().to_vec()
            }
            Arg::U64(v) => {
                lens.push(None);
                v.to_le_bytes().to_vec()
            }
            Arg::F32(v) => {
                lens.push(None);
                v.to_le_bytes().to_vec()
            }
        };
        let n = slot.size.min(bytes.len());
        params[slot.offset..slot.offset + n].copy_from_slice(&bytes[..n]);
    }
    let launch = Launch {
        kernel: k,
        grid,
        block,
        dyn_shared,
        params: &params,
        sm_count: 132,
        grid_id: 1,
    };
    run_grid(&launch, &MemMap::new(spans)).map_err(|f| f.to_string())?;
    Ok(lens
        .into_iter()
        .flatten()
        .map(|(i, n)| {
            let p = bufs.0[i].as_ptr() as *const u8;
            // SAFETY: the buffer holds n bytes.
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
        })
        .collect())
}

/// Little-endian bytes of u32 values.
pub fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 values.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of u64 values.
pub fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// u32 values of little-endian bytes.
pub fn as_u32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// f32 values of little-endian bytes.
pub fn as_f32(b: &[u8]) -> Vec<f32> {
    as_u32(b).into_iter().map(f32::from_bits).collect()
}

/// u64 values of little-endian bytes.
pub fn as_u64(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// A module holding one kernel with `params` (PTX parameter declarations, comma-separated)
/// and `body` (declarations and instructions).
pub fn module(name: &str, params: &str, body: &str) -> String {
    format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n\n.visible .entry {name}({params})\n{{\n{body}\n}}\n"
    )
}
