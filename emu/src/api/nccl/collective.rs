//! The collectives: each rank's input left at a rendezvous, every rank's output computed from
//! all the inputs in rank order, queued on the rank's stream like a kernel.

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::stream_of;
use crate::device::CUresult;
use crate::device::node::{NativeCtx, Node};

use super::*;

impl Comm {
    /// Leaves `input` at this rank's next rendezvous and returns every rank's input once all
    /// have arrived.
    fn rendezvous(&self, what: String, input: Vec<u8>) -> Result<Vec<Arc<Vec<u8>>>, String> {
        let seq = self.ran.fetch_add(1, Ordering::AcqRel);
        let c = &self.clique;
        let n = c.devs.len();
        let mut slots = c.slots.lock().map_err(|_| "rendezvous poisoned")?;
        let slot = slots.entry(seq).or_insert_with(|| Slot {
            what: what.clone(),
            failed: None,
            inputs: vec![None; n],
            arrived: 0,
            left: 0,
        });
        if slot.what != what {
            let msg = format!(
                "rank {} runs {what} as collective #{seq}, another rank runs {}",
                self.rank, slot.what
            );
            slot.failed = Some(msg.clone());
            c.cv.notify_all();
            return Err(msg);
        }
        slot.inputs[self.rank] = Some(Arc::new(input));
        slot.arrived += 1;
        c.cv.notify_all();
        let deadline = Instant::now() + timeout();
        loop {
            let s = slots.get(&seq).ok_or("rendezvous lost")?;
            if let Some(m) = &s.failed {
                return Err(m.clone());
            }
            if s.arrived == n {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "rank {} waited {:?} at collective #{seq} ({what}) for {} other ranks that never arrived",
                    self.rank,
                    timeout(),
                    n - s.arrived
                ));
            }
            slots =
                c.cv.wait_timeout(slots, deadline - now)
                    .map_err(|_| "rendezvous poisoned")?
                    .0;
        }
        let s = slots.get_mut(&seq).ok_or("rendezvous lost")?;
        let all: Vec<Arc<Vec<u8>>> = s
            .inputs
            .iter()
            .map(|x| x.clone().unwrap_or_default())
            .collect();
        s.left += 1;
        if s.left == n {
            slots.remove(&seq);
        }
        Ok(all)
    }
}

/// Bytes per element of ncclDataType_t `dt`.
fn size_of(dt: c_int) -> Res<usize> {
    match dt {
        0 | 1 => Ok(1),
        2 | 3 | 7 => Ok(4),
        4 | 5 | 8 => Ok(8),
        6 | 9 => Ok(2),
        _ => bad(
            ncclInvalidArgument,
            format!("data type {dt} is not emulated"),
        ),
    }
}

fn get_f(dt: c_int, b: &[u8]) -> f64 {
    match dt {
        6 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        9 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        7 => f32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as f64,
        _ => f64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
    }
}

fn put_f(dt: c_int, b: &mut [u8], v: f64) {
    match dt {
        6 => b[..2].copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        // bf16: round the f32 value (what NCCL's reduction kernels compute in).
        9 => b[..2].copy_from_slice(&half::bf16::from_f32(v as f32).to_le_bytes()),
        7 => b[..4].copy_from_slice(&(v as f32).to_le_bytes()),
        _ => b[..8].copy_from_slice(&v.to_le_bytes()),
    }
}

fn get_i(dt: c_int, b: &[u8]) -> i128 {
    match dt {
        0 => b[0] as i8 as i128,
        1 => b[0] as i128,
        2 => i32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as i128,
        3 => u32::from_le_bytes(b[..4].try_into().unwrap_or_default()) as i128,
        4 => i64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as i128,
        _ => u64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as i128,
    }
}

fn put_i(dt: c_int, b: &mut [u8], v: i128) {
    let n = size_of(dt).unwrap_or(8);
    b[..n].copy_from_slice(&v.to_le_bytes()[..n]);
}

fn is_float(dt: c_int) -> bool {
    matches!(dt, 6..=9)
}

/// Reduces every rank's `len` bytes (of type `dt`) at byte `at` with `op`, in rank order,
/// rounding to the type after each step.
fn reduce(dt: c_int, op: c_int, inputs: &[Arc<Vec<u8>>], at: usize, len: usize) -> Vec<u8> {
    let e = size_of(dt).unwrap_or(1);
    let mut out = inputs[0][at..at + len].to_vec();
    for x in &inputs[1..] {
        for i in (0..len).step_by(e) {
            let (a, b) = (&out[i..i + e], &x[at + i..at + i + e]);
            if is_float(dt) {
                let (a, b) = (get_f(dt, a), get_f(dt, b));
                let r = match op {
                    0 | 4 => a + b,
                    1 => a * b,
                    2 => a.max(b),
                    _ => a.min(b),
                };
                put_f(dt, &mut out[i..i + e], r);
            } else {
                let (a, b) = (get_i(dt, a), get_i(dt, b));
                let r = match op {
                    0 | 4 => a.wrapping_add(b),
                    1 => a.wrapping_mul(b),
                    2 => a.max(b),
                    _ => a.min(b),
                };
                put_i(dt, &mut out[i..i + e], r);
            }
        }
    }
    if op == 4 {
        let n = inputs.len() as i128;
        for i in (0..len).step_by(e) {
            if is_float(dt) {
                let v = get_f(dt, &out[i..i + e]) / n as f64;
                put_f(dt, &mut out[i..i + e], v);
            } else {
                let v = get_i(dt, &out[i..i + e]) / n;
                put_i(dt, &mut out[i..i + e], v);
            }
        }
    }
    out
}

/// One collective call: what each rank sends and how its output is made.
#[derive(Clone, Copy)]
enum Kind {
    AllReduce { op: c_int },
    AllGather,
    Broadcast { root: usize },
    Reduce { op: c_int, root: usize },
    ReduceScatter { op: c_int },
}

/// Queues a collective of `count` elements per rank (per block for reduce-scatter) on `stream`.
#[allow(clippy::too_many_arguments)]
fn collective(
    name: &str,
    kind: Kind,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    h: *mut c_void,
    stream: *mut c_void,
) -> Res<()> {
    let cm = comm(h)?;
    let e = size_of(dt)?;
    if let Kind::AllReduce { op } | Kind::Reduce { op, .. } | Kind::ReduceScatter { op } = kind
        && !(0..=4).contains(&op)
    {
        return bad(
            ncclInvalidArgument,
            format!("{name}: reduction op {op} is not emulated"),
        );
    }
    let n = cm.clique.devs.len();
    if let Kind::Broadcast { root } | Kind::Reduce { root, .. } = kind
        && root >= n
    {
        return bad(
            ncclInvalidArgument,
            format!("{name}: root {root} of {n} ranks"),
        );
    }
    let s = match stream_of(stream) {
        Ok(s) => s,
        Err(e) => return bad(ncclInvalidUsage, format!("{name}: stream: {e:?}")),
    };
    let dev = cm.clique.devs[cm.rank];
    if s.ctx.device.ordinal as i32 != dev {
        return bad(
            ncclInvalidUsage,
            format!(
                "{name}: rank {} is on device {dev}, its stream on device {}",
                cm.rank, s.ctx.device.ordinal
            ),
        );
    }
    let bytes = count * e;
    let (send_len, recv_len) = match kind {
        Kind::AllReduce { .. } | Kind::Broadcast { .. } | Kind::Reduce { .. } => (bytes, bytes),
        Kind::AllGather => (bytes, n * bytes),
        Kind::ReduceScatter { .. } => (n * bytes, bytes),
    };
    let (send, recv) = (send as u64, recv as u64);
    let rank = cm.rank;
    let what = format!("{name} of {count} x type {dt}");
    let label = what.clone();
    let node = Node::Native {
        name: format!("{name} (rank {rank})"),
        f: Arc::new(move |x: &NativeCtx| {
            let err = |m: String| (CUresult::CUDA_ERROR_LAUNCH_FAILED, format!("{label}: {m}"));
            let sends = match kind {
                Kind::Broadcast { root } => rank == root,
                _ => true,
            };
            let input = if sends && send_len > 0 {
                let p = x.mem(send, send_len, "send buffer").map_err(err)?;
                // SAFETY: checked range of device memory.
                unsafe { std::slice::from_raw_parts(p, send_len) }.to_vec()
            } else {
                Vec::new()
            };
            let all = cm.rendezvous(what.clone(), input).map_err(err)?;
            let out: Option<Vec<u8>> = match kind {
                Kind::AllReduce { op } => Some(reduce(dt, op, &all, 0, bytes)),
                Kind::AllGather => Some(all.iter().flat_map(|v| v.iter().copied()).collect()),
                Kind::Broadcast { root } => Some(all[root].as_ref().clone()),
                Kind::Reduce { op, root } => (rank == root).then(|| reduce(dt, op, &all, 0, bytes)),
                Kind::ReduceScatter { op } => Some(reduce(dt, op, &all, rank * bytes, bytes)),
            };
            if let Some(out) = out.filter(|o| !o.is_empty()) {
                if out.len() != recv_len {
                    return Err(err(format!(
                        "a rank contributed a buffer of another size ({} bytes)",
                        out.len()
                    )));
                }
                let p = x.mem(recv, recv_len, "receive buffer").map_err(err)?;
                // SAFETY: checked range; every rank's input was copied out before this write.
                unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), p, recv_len) };
            }
            Ok(())
        }),
    };
    match s.submit(node) {
        Ok(()) => Ok(()),
        Err(e) => bad(ncclUnhandledCudaError, format!("{name}: {e:?}")),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclAllReduce(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    op: c_int,
    h: *mut c_void,
    s: *mut c_void,
) -> NcclResult {
    run("ncclAllReduce", || {
        collective(
            "ncclAllReduce",
            Kind::AllReduce { op },
            send,
            recv,
            count,
            dt,
            h,
            s,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclAllGather(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    h: *mut c_void,
    s: *mut c_void,
) -> NcclResult {
    run("ncclAllGather", || {
        collective(
            "ncclAllGather",
            Kind::AllGather,
            send,
            recv,
            count,
            dt,
            h,
            s,
        )
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ncclBroadcast(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    root: c_int,
    h: *mut c_void,
    s: *mut c_void,
) -> NcclResult {
    run("ncclBroadcast", || {
        let root = usize::try_from(root).map_err(|_| ncclInvalidArgument)?;
        collective(
            "ncclBroadcast",
            Kind::Broadcast { root },
            send,
            recv,
            count,
            dt,
            h,
            s,
        )
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ncclReduce(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    op: c_int,
    root: c_int,
    h: *mut c_void,
    s: *mut c_void,
) -> NcclResult {
    run("ncclReduce", || {
        let root = usize::try_from(root).map_err(|_| ncclInvalidArgument)?;
        collective(
            "ncclReduce",
            Kind::Reduce { op, root },
            send,
            recv,
            count,
            dt,
            h,
            s,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ncclReduceScatter(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dt: c_int,
    op: c_int,
    h: *mut c_void,
    s: *mut c_void,
) -> NcclResult {
    run("ncclReduceScatter", || {
        collective(
            "ncclReduceScatter",
            Kind::ReduceScatter { op },
            send,
            recv,
            count,
            dt,
            h,
            s,
        )
    })
}
