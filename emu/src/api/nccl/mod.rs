//! The NCCL stand-in: communicators over the emulated devices of this process (ranks as
//! threads, as `ncclCommInitAll` or `ncclCommInitRank` from several threads make them) and
//! the collectives as NCCL documents them: all-reduce (sum, prod, max, min, avg), all-gather
//! (rank-major), broadcast, reduce and reduce-scatter, in place or not, on every data type.
//!
//! A collective is queued on its stream (or captured into a graph) like a kernel. When it
//! runs, each rank leaves its input at a rendezvous keyed by how many collectives that
//! communicator has run, waits for every rank, and computes its own output from all the
//! inputs in rank order, so every rank holds identical sums. Reductions round to the data
//! type after each rank's contribution, as NCCL's ring does. Ranks whose k-th collectives
//! differ, and ranks that never arrive (TANDEM_EMU_NCCL_TIMEOUT_S, default 120), fail the
//! collective instead of hanging.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::stream_of;
use crate::device::{self, Handles, log};

/// ncclResult_t.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, dead_code)]
pub enum NcclResult {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
}
use NcclResult::*;

type Res<T> = Result<T, NcclResult>;

fn bad<T>(r: NcclResult, msg: impl std::fmt::Display) -> Res<T> {
    log(format_args!("NCCL: {msg} ({r:?})"));
    Err(r)
}

fn run(name: &str, f: impl FnOnce() -> Res<()>) -> NcclResult {
    super::guarded(name, ncclSuccess, ncclInternalError, f)
}

/// What a rank contributes at one rendezvous, and what it got there.
struct Slot {
    what: String,
    /// Set when a rank found this rendezvous broken: the others stop waiting.
    failed: Option<String>,
    inputs: Vec<Option<Arc<Vec<u8>>>>,
    arrived: usize,
    left: usize,
}

/// The ranks of one communicator.
struct Clique {
    devs: Vec<i32>,
    slots: Mutex<HashMap<u64, Slot>>,
    cv: Condvar,
}

/// One rank.
pub struct Comm {
    clique: Arc<Clique>,
    rank: usize,
    /// Collectives this rank has run (the rendezvous key).
    ran: AtomicU64,
}

fn comms() -> &'static Handles<Comm> {
    static H: OnceLock<Handles<Comm>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

fn timeout() -> Duration {
    let s = std::env::var("TANDEM_EMU_NCCL_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(120);
    Duration::from_secs(s)
}

fn comm(h: *mut c_void) -> Res<Arc<Comm>> {
    comms().get(h as usize).map_or_else(
        || bad(ncclInvalidArgument, format!("communicator handle {h:p}")),
        Ok,
    )
}

mod collective;
pub use collective::{ncclAllGather, ncclAllReduce, ncclBroadcast, ncclReduce, ncclReduceScatter};

fn new_clique(devs: Vec<i32>) -> Arc<Clique> {
    Arc::new(Clique {
        devs,
        slots: Mutex::new(HashMap::new()),
        cv: Condvar::new(),
    })
}

/// # Safety
/// C caller: `comms` holds `ndev` entries; `devlist` null or `ndev` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommInitAll(
    comms_out: *mut *mut c_void,
    ndev: c_int,
    devlist: *const c_int,
) -> NcclResult {
    run("ncclCommInitAll", || {
        if comms_out.is_null() || ndev < 1 {
            return bad(
                ncclInvalidArgument,
                format!("ncclCommInitAll of {ndev} devices"),
            );
        }
        if device::init().is_err() {
            return bad(
                ncclUnhandledCudaError,
                "ncclCommInitAll: the CUDA driver failed to initialize",
            );
        }
        let devs: Vec<i32> = if devlist.is_null() {
            (0..ndev).collect()
        } else {
            // SAFETY: the caller's list of ndev devices.
            unsafe { std::slice::from_raw_parts(devlist, ndev as usize) }.to_vec()
        };
        for (i, d) in devs.iter().enumerate() {
            if device::device(*d).is_err() {
                return bad(
                    ncclInvalidArgument,
                    format!("ncclCommInitAll: device {d} does not exist"),
                );
            }
            if devs[..i].contains(d) {
                return bad(
                    ncclInvalidUsage,
                    format!("ncclCommInitAll: device {d} appears twice"),
                );
            }
        }
        let clique = new_clique(devs.clone());
        for r in 0..devs.len() {
            let h = comms().add(Arc::new(Comm {
                clique: clique.clone(),
                rank: r,
                ran: AtomicU64::new(0),
            }));
            // SAFETY: one slot per device.
            unsafe { comms_out.add(r).write(h as *mut c_void) };
        }
        Ok(())
    })
}

/// ncclUniqueId: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; 128],
}

/// A clique being formed: its size, each rank's device once joined, and the clique once all
/// have.
type Forming = (usize, Vec<Option<i32>>, Option<Arc<Clique>>);

/// Cliques being formed by ncclCommInitRank, by unique id.
type Pending = (Mutex<HashMap<[u8; 16], Forming>>, Condvar);

fn pending() -> &'static Pending {
    static P: OnceLock<Pending> = OnceLock::new();
    P.get_or_init(|| (Mutex::new(HashMap::new()), Condvar::new()))
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclGetUniqueId(id: *mut UniqueId) -> NcclResult {
    run("ncclGetUniqueId", || {
        if id.is_null() {
            return bad(ncclInvalidArgument, "ncclGetUniqueId: null id");
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut u = UniqueId { internal: [0; 128] };
        let tag = format!(
            "tandem-emu-nccl-{:016x}",
            NEXT.fetch_add(1, Ordering::Relaxed) ^ std::process::id() as u64
        );
        for (d, s) in u.internal.iter_mut().zip(tag.bytes()) {
            *d = s as c_char;
        }
        unsafe { id.write(u) };
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommInitRank(
    out: *mut *mut c_void,
    nranks: c_int,
    id: UniqueId,
    rank: c_int,
) -> NcclResult {
    run("ncclCommInitRank", || {
        if out.is_null() || nranks < 1 || rank < 0 || rank >= nranks {
            return bad(
                ncclInvalidArgument,
                format!("ncclCommInitRank rank {rank} of {nranks}"),
            );
        }
        let dev = match device::context::current() {
            Ok(c) => c.device.ordinal as i32,
            Err(_) => {
                return bad(
                    ncclUnhandledCudaError,
                    "ncclCommInitRank: no current CUDA device",
                );
            }
        };
        let key: [u8; 16] = std::array::from_fn(|i| id.internal[i + 16] as u8);
        let (lock, cv) = pending();
        let mut p = lock.lock().map_err(|_| ncclInternalError)?;
        let e = p
            .entry(key)
            .or_insert_with(|| (nranks as usize, vec![None; nranks as usize], None));
        if e.0 != nranks as usize || e.1[rank as usize].is_some() {
            return bad(
                ncclInvalidUsage,
                "ncclCommInitRank: ranks disagree on the communicator's size, or a rank joins twice",
            );
        }
        e.1[rank as usize] = Some(dev);
        if e.1.iter().all(Option::is_some) {
            e.2 = Some(new_clique(e.1.iter().map(|d| d.unwrap_or(0)).collect()));
            cv.notify_all();
        }
        let deadline = Instant::now() + timeout();
        let clique = loop {
            if let Some(c) = p.get(&key).and_then(|e| e.2.clone()) {
                break c;
            }
            let now = Instant::now();
            if now >= deadline {
                p.remove(&key);
                return bad(
                    ncclSystemError,
                    "ncclCommInitRank: the other ranks never joined (ranks in other processes are not emulated)",
                );
            }
            p = cv
                .wait_timeout(p, deadline - now)
                .map_err(|_| ncclInternalError)?
                .0;
        };
        let h = comms().add(Arc::new(Comm {
            clique,
            rank: rank as usize,
            ran: AtomicU64::new(0),
        }));
        unsafe { out.write(h as *mut c_void) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclCommDestroy(h: *mut c_void) -> NcclResult {
    run("ncclCommDestroy", || match comms().remove(h as usize) {
        Some(_) => Ok(()),
        None => bad(
            ncclInvalidArgument,
            format!("ncclCommDestroy: communicator {h:p}"),
        ),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclCommAbort(h: *mut c_void) -> NcclResult {
    ncclCommDestroy(h)
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclCommFinalize(h: *mut c_void) -> NcclResult {
    // Queued collectives finish on their streams; nothing else is in flight.
    run("ncclCommFinalize", || comm(h).map(drop))
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommCount(h: *mut c_void, n: *mut c_int) -> NcclResult {
    run("ncclCommCount", || {
        let c = comm(h)?;
        if n.is_null() {
            return bad(ncclInvalidArgument, "null output");
        }
        unsafe { n.write(c.clique.devs.len() as c_int) };
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommCuDevice(h: *mut c_void, d: *mut c_int) -> NcclResult {
    run("ncclCommCuDevice", || {
        let c = comm(h)?;
        if d.is_null() {
            return bad(ncclInvalidArgument, "null output");
        }
        unsafe { d.write(c.clique.devs[c.rank]) };
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommUserRank(h: *mut c_void, r: *mut c_int) -> NcclResult {
    run("ncclCommUserRank", || {
        let c = comm(h)?;
        if r.is_null() {
            return bad(ncclInvalidArgument, "null output");
        }
        unsafe { r.write(c.rank as c_int) };
        Ok(())
    })
}

thread_local! {
    static GROUP_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Collectives never block their caller here (they are queued on streams), so a group has
/// nothing to defer; its nesting is still checked.
#[unsafe(no_mangle)]
pub extern "C" fn ncclGroupStart() -> NcclResult {
    GROUP_DEPTH.with(|d| d.set(d.get() + 1));
    ncclSuccess
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclGroupEnd() -> NcclResult {
    GROUP_DEPTH.with(|d| match d.get() {
        0 => {
            log("NCCL: ncclGroupEnd without ncclGroupStart (ncclInvalidUsage)");
            ncclInvalidUsage
        }
        n => {
            d.set(n - 1);
            ncclSuccess
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclGetVersion(v: *mut c_int) -> NcclResult {
    if v.is_null() {
        return ncclInvalidArgument;
    }
    // NCCL 2.27.7, in NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z.
    unsafe { v.write(22707) };
    ncclSuccess
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclGetErrorString(r: c_int) -> *const c_char {
    match r {
        0 => c"no error",
        1 => c"unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
        2 => c"unhandled system error (run with NCCL_DEBUG=INFO for details)",
        3 => c"internal error - please report this issue to the NCCL developers",
        4 => c"invalid argument (run with NCCL_DEBUG=WARN for details)",
        5 => c"invalid usage (run with NCCL_DEBUG=WARN for details)",
        6 => c"remote process exited or there was a network error",
        7 => c"NCCL operation in progress",
        _ => c"unknown result code",
    }
    .as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclGetLastError(_comm: *mut c_void) -> *const c_char {
    c"see the tandem-emu lines on stderr".as_ptr()
}
