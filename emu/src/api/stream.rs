//! Driver API entry points: streams, host functions on them, and events.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use super::{out, run, stream_of};
use crate::device::context::current;
use crate::device::node::Node;
use crate::device::stream::{Event, Stream, events, streams};
use crate::device::{CUresult, CuResult, fail};

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(ps: *mut *mut c_void, flags: c_uint) -> CUresult {
    run("cuStreamCreate", || {
        let c = current()?;
        c.check()?;
        if flags & !1 != 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuStreamCreate flags {flags:#x}"),
            );
        }
        let s = Stream::new(c, flags & 1 == 0, false);
        let h = streams().add(s);
        unsafe { out(ps, h as *mut c_void, "cuStreamCreate") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ps: *mut *mut c_void,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    // Priorities order work between streams competing for SMs; the emulator's streams
    // each have their own thread.
    unsafe { cuStreamCreate(ps, flags) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(h: *mut c_void) -> CUresult {
    run("cuStreamDestroy", || {
        let Some(s) = streams().remove(h as usize) else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                format!("stream handle {h:p}"),
            );
        };
        // Queued work still runs; the worker exits once it is done.
        s.shutdown();
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(h: *mut c_void) -> CUresult {
    run("cuStreamSynchronize", || stream_of(h)?.synchronize())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(h: *mut c_void) -> CUresult {
    run("cuStreamQuery", || stream_of(h)?.query())
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(h: *mut c_void, flags: *mut c_uint) -> CUresult {
    run("cuStreamGetFlags", || {
        let s = stream_of(h)?;
        unsafe { out(flags, (!s.blocking) as c_uint, "cuStreamGetFlags") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCtx(h: *mut c_void, pctx: *mut *mut c_void) -> CUresult {
    run("cuStreamGetCtx", || {
        let s = stream_of(h)?;
        unsafe { out(pctx, s.ctx.handle() as *mut c_void, "cuStreamGetCtx") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(h: *mut c_void, e: *mut c_void, flags: c_uint) -> CUresult {
    run("cuStreamWaitEvent", || {
        let s = stream_of(h)?;
        let Some(ev) = events().get(e as usize) else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                format!("event handle {e:p}"),
            );
        };
        s.wait_event(&ev, flags)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc(
    h: *mut c_void,
    f: Option<unsafe extern "C" fn(*mut c_void)>,
    data: *mut c_void,
) -> CUresult {
    run("cuLaunchHostFunc", || {
        let Some(f) = f else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuLaunchHostFunc: null function",
            );
        };
        stream_of(h)?.submit(Node::Host {
            f,
            data: data as usize,
        })
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(pe: *mut *mut c_void, flags: c_uint) -> CUresult {
    run("cuEventCreate", || {
        let c = current()?;
        if flags & !7 != 0 || (flags & 4 != 0 && flags & 2 == 0) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuEventCreate flags {flags:#x}"),
            );
        }
        let h = events().add(Event::new(c, flags));
        unsafe { out(pe, h as *mut c_void, "cuEventCreate") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(e: *mut c_void) -> CUresult {
    run("cuEventDestroy", || match events().remove(e as usize) {
        Some(_) => Ok(()),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("event handle {e:p}"),
        ),
    })
}

fn event(e: *mut c_void) -> CuResult<Arc<Event>> {
    crate::device::driver()?;
    match events().get(e as usize) {
        Some(ev) => Ok(ev),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("event handle {e:p}"),
        ),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(e: *mut c_void, h: *mut c_void) -> CUresult {
    run("cuEventRecord", || event(e)?.record(&stream_of(h)?))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags(
    e: *mut c_void,
    h: *mut c_void,
    flags: c_uint,
) -> CUresult {
    run("cuEventRecordWithFlags", || {
        if flags != 0 {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "cuEventRecordWithFlags: external event records are not emulated",
            );
        }
        event(e)?.record(&stream_of(h)?)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(e: *mut c_void) -> CUresult {
    run("cuEventQuery", || event(e)?.query())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(e: *mut c_void) -> CUresult {
    run("cuEventSynchronize", || event(e)?.synchronize())
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    run("cuEventElapsedTime", || {
        let (a, b) = (event(start)?, event(end)?);
        let t = a.elapsed_ms(&b)?;
        unsafe { out(ms, t, "cuEventElapsedTime") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    unsafe { cuEventElapsedTime(ms, start, end) }
}
