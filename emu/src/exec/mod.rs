//! Running a kernel grid on the CPU: blocks on a pool of host threads, each block's warps
//! interleaved at barriers, every memory access checked (mem.rs). A fault stops the launch
//! and names the kernel, instruction, block, thread and address, as compute-sanitizer's
//! memcheck reports it.

mod access;
pub mod alu;
mod collective;
mod cta;
pub mod float;
pub mod mem;
mod step;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
mod warp;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::ptx::ir::{Kernel, Space};
pub use mem::{FaultKind, MemMap, Span};

/// One launch of a kernel.
pub struct Launch<'a> {
    pub kernel: &'a Kernel,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory bytes.
    pub dyn_shared: usize,
    /// The parameter buffer (laid out as the kernel's params say).
    pub params: &'a [u8],
    /// Streaming multiprocessors the device reports (`%nsmid`).
    pub sm_count: u32,
    /// A number unique to this launch (`%gridid`).
    pub grid_id: u64,
}

/// What failed inside a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultWhat {
    /// A memory access outside its bounds, misaligned, or to read-only memory.
    Memory { kind: FaultKind, lane: usize },
    /// A barrier misused or never completing.
    Barrier(String),
    /// A warp-synchronous instruction whose lanes do not converge.
    WarpSync(String),
}

/// A kernel fault: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kernel: String,
    /// The instruction (opcode, PTX line, source line).
    pub at: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    pub what: FaultWhat,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        let who = format!(
            "in kernel {} at {} by thread ({tx},{ty},{tz}) in block ({bx},{by},{bz})",
            self.kernel, self.at
        );
        match &self.what {
            FaultWhat::Memory { kind, .. } => match kind {
                FaultKind::OutOfBounds {
                    space,
                    addr,
                    size,
                    write,
                    detail,
                } => write!(
                    f,
                    "invalid {} {} of size {size} at {addr:#x} {who}: address is out of bounds ({detail})",
                    space.name(),
                    if *write { "write" } else { "read" }
                ),
                FaultKind::Misaligned {
                    space,
                    addr,
                    size,
                    write,
                } => write!(
                    f,
                    "misaligned {} {} of size {size} at {addr:#x} {who}",
                    space.name(),
                    if *write { "write" } else { "read" }
                ),
                FaultKind::ReadOnly { space, addr } => write!(
                    f,
                    "write to read-only {} memory at {addr:#x} {who}",
                    space.name()
                ),
            },
            FaultWhat::Barrier(m) => write!(f, "barrier error {who}: {m}"),
            FaultWhat::WarpSync(m) => write!(f, "warp-synchronous instruction error {who}: {m}"),
        }
    }
}

impl Fault {
    /// Whether the fault is a misaligned access (CUDA_ERROR_MISALIGNED_ADDRESS) rather than
    /// an illegal one.
    pub fn misaligned(&self) -> bool {
        matches!(
            self.what,
            FaultWhat::Memory {
                kind: FaultKind::Misaligned { .. },
                ..
            }
        )
    }

    /// Whether the fault is a memory access at all.
    pub fn is_memory(&self) -> bool {
        matches!(self.what, FaultWhat::Memory { .. })
    }
}

static WARP_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
static THREAD_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);

/// Adds a finished block's instructions to the process's counts.
fn count(warp: u64, thread: u64) {
    WARP_INSTRUCTIONS.fetch_add(warp, Ordering::Relaxed);
    THREAD_INSTRUCTIONS.fetch_add(thread, Ordering::Relaxed);
}

/// Instructions executed by every block that finished so far in this process: (issued per
/// warp, executed per thread).
pub fn instructions() -> (u64, u64) {
    (
        WARP_INSTRUCTIONS.load(Ordering::Relaxed),
        THREAD_INSTRUCTIONS.load(Ordering::Relaxed),
    )
}

/// The host threads blocks run on: `TANDEM_EMU_THREADS`, else every core.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("TANDEM_EMU_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("tandem-emu-sm{i}"))
            .build()
            .unwrap_or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("a one-thread pool")
            })
    })
}

/// Host threads that run blocks.
pub fn threads() -> usize {
    pool().current_num_threads()
}

thread_local! {
    /// A host thread's block buffers (registers, shared and local memory), reused from block
    /// to block and launch to launch.
    static SCRATCH: std::cell::RefCell<cta::Scratch> = std::cell::RefCell::new(cta::Scratch::default());
}

/// Runs every block of `launch` against memory `map`. On a fault, blocks not yet started are
/// skipped and the fault of the lowest-numbered failing block is returned.
pub fn run_grid(launch: &Launch, map: &MemMap) -> Result<(), Fault> {
    run_grid_on(pool(), launch, map)
}

/// [`run_grid`] on the threads of `pool`.
pub fn run_grid_on(pool: &rayon::ThreadPool, launch: &Launch, map: &MemMap) -> Result<(), Fault> {
    let [gx, gy, gz] = launch.grid.map(u64::from);
    let n = gx * gy * gz;
    if launch.block.contains(&0) || n == 0 {
        return Ok(());
    }
    let block_of = |i: u64| {
        [
            (i % gx) as u32,
            ((i / gx) % gy) as u32,
            (i / (gx * gy)) as u32,
        ]
    };
    let block =
        |i: u64| SCRATCH.with_borrow_mut(|s| cta::run_block(launch, map, block_of(i), i, s));
    if n == 1 || pool.current_num_threads() == 1 {
        return (0..n).try_for_each(block);
    }
    let stop = AtomicBool::new(false);
    let first: Mutex<Option<(u64, Fault)>> = Mutex::new(None);
    pool.install(|| {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(|i| {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(f) = block(i) {
                stop.store(true, Ordering::Relaxed);
                if let Ok(mut g) = first.lock()
                    && g.as_ref().is_none_or(|(j, _)| i < *j)
                {
                    *g = Some((i, f));
                }
            }
        });
    });
    match first.into_inner().ok().flatten() {
        Some((_, f)) => Err(f),
        None => Ok(()),
    }
}

/// The state space a fault happened in, if a memory fault.
pub fn fault_space(f: &Fault) -> Option<Space> {
    match &f.what {
        FaultWhat::Memory { kind, .. } => Some(match kind {
            FaultKind::OutOfBounds { space, .. }
            | FaultKind::Misaligned { space, .. }
            | FaultKind::ReadOnly { space, .. } => *space,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod smoke {
    use super::testing::*;

    /// d[tid] = a[tid] + b[tid], the smallest kernel with every basic step: parameters, the
    /// thread index, address arithmetic, global loads and stores, a guard.
    #[test]
    fn vector_add() {
        let ptx = module(
            "add",
            ".param .u64 pa, .param .u64 pb, .param .u64 pd, .param .u32 n",
            r#"
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pd];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mad.lo.s32 %r5, %r3, %r4, %r2;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    mul.wide.u32 %rd4, %r5, 4;
    add.s64 %rd5, %rd1, %rd4;
    add.s64 %rd6, %rd2, %rd4;
    add.s64 %rd7, %rd3, %rd4;
    ld.global.f32 %f1, [%rd5];
    ld.global.f32 %f2, [%rd6];
    add.f32 %f3, %f1, %f2;
    st.global.f32 [%rd7], %f3;
DONE:
    ret;"#,
        );
        let n = 300usize;
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
        let out = launch(
            &ptx,
            "add",
            [3, 1, 1],
            [128, 1, 1],
            &[
                Arg::Buf(f32s(&a)),
                Arg::Buf(f32s(&b)),
                Arg::Buf(f32s(&vec![0.0; n])),
                Arg::U32(n as u32),
            ],
        )
        .unwrap();
        let d = as_f32(&out[2]);
        for i in 0..n {
            assert_eq!(d[i], a[i] + b[i], "element {i}");
        }
    }
}
