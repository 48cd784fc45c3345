//! The work a stream runs, or a graph holds: kernel launches, copies, memsets, host
//! functions, and the native operations of the cuBLASLt and NCCL stand-ins. Device ranges
//! are checked when the work runs (the memory may have been freed since it was queued); a
//! failure becomes the context's sticky error.

use std::sync::Arc;

use super::context::{Context, contexts, find_pinned};
use super::module::Function;
use super::{CUresult, SM_COUNT};
use crate::exec::{self, Launch};

/// Where a copy reads or writes.
#[derive(Clone)]
pub enum Loc {
    /// Device memory (any context's: copies between devices are allowed).
    Device(u64),
    /// Host memory read or written when the copy runs (pinned memory, or pageable memory
    /// whose copy the caller waits for).
    Host(usize),
    /// Pageable host data copied when the call was made.
    Staged(Arc<[u8]>),
}

/// A kernel launch with its argument values.
pub struct KernelNode {
    pub func: Arc<Function>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dyn_shared: usize,
    pub params: Vec<u8>,
}

/// What a native operation may touch.
pub struct NativeCtx<'a> {
    pub ctx: &'a Arc<Context>,
}

impl NativeCtx<'_> {
    /// A host pointer to `len` bytes of device (or pinned) memory at `addr`, checked.
    pub fn mem(&self, addr: u64, len: usize, what: &str) -> Result<*mut u8, String> {
        if len == 0 {
            return Ok(addr as *mut u8);
        }
        let map = self.ctx.mem_map();
        match map.find(addr, len as u64) {
            Some(_) => Ok(addr as *mut u8),
            None => Err(format!(
                "{what}: {len} bytes at {addr:#x} are not inside one live allocation of device {} ({})",
                self.ctx.device.ordinal,
                map.nearest(addr)
            )),
        }
    }
}

/// A native operation (cuBLASLt matmul, NCCL collective).
pub type NativeFn = dyn Fn(&NativeCtx) -> Result<(), (CUresult, String)> + Send + Sync;

/// One unit of stream work.
pub enum Node {
    Kernel(KernelNode),
    Copy {
        dst: Loc,
        src: Loc,
        bytes: usize,
    },
    /// `height` rows of `width` bytes between pitched buffers.
    Copy2D {
        dst: Loc,
        dpitch: usize,
        src: Loc,
        spitch: usize,
        width: usize,
        height: usize,
    },
    /// `count` elements of `elem` bytes set to `value`, in `height` rows `pitch` apart.
    Set {
        dst: u64,
        value: u32,
        elem: usize,
        count: usize,
        pitch: usize,
        height: usize,
    },
    /// `cuLaunchHostFunc`.
    Host {
        f: unsafe extern "C" fn(*mut std::ffi::c_void),
        data: usize,
    },
    Native {
        name: String,
        f: Arc<NativeFn>,
    },
}

/// `TANDEM_EMU_TRACE=1`: log every node as it runs.
fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var("TANDEM_EMU_TRACE").is_ok_and(|v| v == "1"))
}

/// Whether [addr, addr + len) is device memory of some context or pinned host memory.
fn device_range_ok(ctx: &Context, addr: u64, len: usize) -> bool {
    len == 0
        || ctx.find(addr, len as u64).is_some()
        || find_pinned(addr, len as u64).is_some()
        || contexts()
            .values()
            .iter()
            .any(|c| c.find(addr, len as u64).is_some())
}

fn loc(l: &Loc) -> String {
    match l {
        Loc::Device(a) => format!("device {a:#x}"),
        Loc::Host(p) => format!("host {p:#x}"),
        Loc::Staged(b) => format!("staged {} bytes", b.len()),
    }
}

impl Node {
    /// A short name for messages.
    pub fn name(&self) -> String {
        match self {
            Node::Kernel(k) => format!("kernel {}", k.func.kernel.name),
            Node::Copy { .. } => "memcpy".into(),
            Node::Copy2D { .. } => "2D memcpy".into(),
            Node::Set { .. } => "memset".into(),
            Node::Host { .. } => "host function".into(),
            Node::Native { name, .. } => name.clone(),
        }
    }

    /// The node and its arguments, for the trace.
    pub fn describe(&self) -> String {
        match self {
            Node::Kernel(k) => {
                let args: Vec<String> = k
                    .func
                    .kernel
                    .params
                    .iter()
                    .map(|p| {
                        let mut v = [0u8; 8];
                        let n = p.size.min(8);
                        v[..n].copy_from_slice(&k.params[p.offset..p.offset + n]);
                        format!("{:#x}", u64::from_le_bytes(v))
                    })
                    .collect();
                format!(
                    "kernel {} grid {:?} block {:?} shared {} args [{}]",
                    k.func.kernel.name,
                    k.grid,
                    k.block,
                    k.dyn_shared,
                    args.join(", ")
                )
            }
            Node::Copy { dst, src, bytes } => {
                format!("memcpy {bytes} bytes {} -> {}", loc(src), loc(dst))
            }
            Node::Copy2D {
                dst,
                src,
                width,
                height,
                ..
            } => {
                format!(
                    "2D memcpy {height} x {width} bytes {} -> {}",
                    loc(src),
                    loc(dst)
                )
            }
            Node::Set {
                dst,
                value,
                elem,
                count,
                height,
                ..
            } => {
                format!("memset {height} x {count} x {elem} bytes at {dst:#x} to {value:#x}")
            }
            Node::Host { .. } => "host function".into(),
            Node::Native { name, .. } => name.clone(),
        }
    }

    /// Runs the node in `ctx`.
    pub fn run(&self, ctx: &Arc<Context>) -> Result<(), (CUresult, String)> {
        if trace() {
            super::log(format_args!(
                "device {}: {}",
                ctx.device.ordinal,
                self.describe()
            ));
        }
        match self {
            Node::Kernel(k) => {
                let map = ctx.mem_map();
                let launch = Launch {
                    kernel: &k.func.kernel,
                    grid: k.grid,
                    block: k.block,
                    dyn_shared: k.dyn_shared,
                    params: &k.params,
                    sm_count: SM_COUNT,
                    grid_id: ctx
                        .launches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
                exec::run_grid(&launch, &map).map_err(|f| {
                    let code = if f.misaligned() {
                        CUresult::CUDA_ERROR_MISALIGNED_ADDRESS
                    } else if f.is_memory() {
                        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
                    } else if matches!(f.what, exec::FaultWhat::WarpSync(_)) {
                        CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION
                    } else {
                        CUresult::CUDA_ERROR_LAUNCH_FAILED
                    };
                    (code, f.to_string())
                })
            }
            Node::Copy { dst, src, bytes } => {
                let (d, s) = (self.ptr(ctx, dst, *bytes)?, self.src_ptr(ctx, src, *bytes)?);
                // SAFETY: both ranges were checked (device) or are the caller's (host);
                // overlapping device ranges behave as memmove.
                unsafe { std::ptr::copy(s, d, *bytes) };
                Ok(())
            }
            Node::Copy2D {
                dst,
                dpitch,
                src,
                spitch,
                width,
                height,
            } => {
                if *height == 0 || *width == 0 {
                    return Ok(());
                }
                let dspan = dpitch * (height - 1) + width;
                let sspan = spitch * (height - 1) + width;
                let (d, s) = (self.ptr(ctx, dst, dspan)?, self.src_ptr(ctx, src, sspan)?);
                for r in 0..*height {
                    // SAFETY: every row lies in the checked spans.
                    unsafe { std::ptr::copy(s.add(r * spitch), d.add(r * dpitch), *width) };
                }
                Ok(())
            }
            Node::Set {
                dst,
                value,
                elem,
                count,
                pitch,
                height,
            } => {
                let row = count * elem;
                if row == 0 || *height == 0 {
                    return Ok(());
                }
                let span = pitch * (height - 1) + row;
                let d = self.ptr(ctx, &Loc::Device(*dst), span)?;
                for r in 0..*height {
                    // SAFETY: inside the checked span.
                    let p = unsafe { d.add(r * pitch) };
                    if *value == 0
                        && *height == 1
                        && let Some(a) = ctx.find(*dst, row as u64)
                    {
                        a.zero((*dst - a.base) as usize, row);
                        continue;
                    }
                    for i in 0..*count {
                        let b = value.to_le_bytes();
                        // SAFETY: inside the checked span.
                        unsafe {
                            std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(i * elem), *elem)
                        };
                    }
                }
                Ok(())
            }
            Node::Host { f, data } => {
                // SAFETY: the function and data the caller gave cuLaunchHostFunc.
                unsafe { f(*data as *mut std::ffi::c_void) };
                Ok(())
            }
            Node::Native { f, .. } => f(&NativeCtx { ctx }),
        }
    }

    fn ptr(&self, ctx: &Context, loc: &Loc, len: usize) -> Result<*mut u8, (CUresult, String)> {
        match loc {
            Loc::Device(a) => {
                if device_range_ok(ctx, *a, len) {
                    Ok(*a as *mut u8)
                } else {
                    Err((
                        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
                        format!(
                            "{}: {len} bytes at device address {a:#x} are not inside one live allocation",
                            self.name()
                        ),
                    ))
                }
            }
            Loc::Host(p) => Ok(*p as *mut u8),
            Loc::Staged(_) => Err((
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "a staged copy cannot be written".into(),
            )),
        }
    }

    fn src_ptr(
        &self,
        ctx: &Context,
        loc: &Loc,
        len: usize,
    ) -> Result<*const u8, (CUresult, String)> {
        match loc {
            Loc::Staged(b) if b.len() >= len => Ok(b.as_ptr()),
            Loc::Staged(_) => Err((
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "short staged copy".into(),
            )),
            _ => self.ptr(ctx, loc, len).map(|p| p as *const u8),
        }
    }
}
