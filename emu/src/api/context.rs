//! Driver API entry points: primary and created contexts, the current context per thread.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use super::{context_of, out, run};
use crate::device::context::{self, Context, contexts, current};
use crate::device::graph::unsafe_call;
use crate::device::{self, CUresult, CuResult, fail};

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut *mut c_void, dev: c_int) -> CUresult {
    run("cuDevicePrimaryCtxRetain", || {
        let d = device::device(dev)?;
        let mut p = d.primary.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        let ctx = match &p.ctx {
            Some(c) => c.clone(),
            None => {
                let c = Context::new(d.clone(), true);
                contexts().add(c.clone());
                p.ctx = Some(c.clone());
                c
            }
        };
        p.refs += 1;
        unsafe {
            out(
                pctx,
                ctx.handle() as *mut c_void,
                "cuDevicePrimaryCtxRetain",
            )
        }
    })
}

fn release_primary(dev: c_int, reset: bool) -> CuResult<()> {
    let d = device::device(dev)?;
    let mut p = d.primary.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
    if p.ctx.is_none() || (!reset && p.refs == 0) {
        return fail(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            format!("device {dev}'s primary context is not retained"),
        );
    }
    if !reset {
        p.refs -= 1;
    }
    if reset || p.refs == 0 {
        // The last release resets the context: its memory, streams and modules go.
        if let Some(c) = p.ctx.take() {
            c.synchronize().ok();
            c.destroy();
            contexts().remove(c.handle());
        }
        p.refs = 0;
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: c_int) -> CUresult {
    run("cuDevicePrimaryCtxRelease", || release_primary(dev, false))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: c_int) -> CUresult {
    run("cuDevicePrimaryCtxReset", || release_primary(dev, true))
}

/// # Safety
/// C caller: valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    run("cuDevicePrimaryCtxGetState", || {
        let d = device::device(dev)?;
        let on = d.primary.lock().map(|p| p.refs > 0).unwrap_or(false);
        unsafe {
            out(flags, 0, "cuDevicePrimaryCtxGetState")?;
            out(active, on as c_int, "cuDevicePrimaryCtxGetState")
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: c_int, _flags: c_uint) -> CUresult {
    // Scheduling flags (spin, yield, blocking sync) change how the host waits, which the
    // emulator always does by blocking.
    run("cuDevicePrimaryCtxSetFlags", || {
        device::device(dev).map(drop)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut *mut c_void,
    _params: *mut c_void,
    _flags: c_uint,
    dev: c_int,
) -> CUresult {
    run("cuCtxCreate", || {
        let d = device::device(dev)?;
        let c = Context::new(d.clone(), false);
        contexts().add(c.clone());
        context::push_current(c.clone());
        unsafe { out(pctx, c.handle() as *mut c_void, "cuCtxCreate") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(
    pctx: *mut *mut c_void,
    flags: c_uint,
    dev: c_int,
) -> CUresult {
    unsafe { cuCtxCreate_v4(pctx, std::ptr::null_mut(), flags, dev) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy_v2(h: *mut c_void) -> CUresult {
    run("cuCtxDestroy", || {
        let c = context_of(h)?;
        if c.primary {
            return fail(
                CUresult::CUDA_ERROR_INVALID_CONTEXT,
                "cuCtxDestroy of a primary context",
            );
        }
        let _ = c.synchronize();
        c.destroy();
        contexts().remove(c.handle());
        if context::current_opt().is_some_and(|x| Arc::ptr_eq(&x, &c)) {
            context::pop_current();
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(h: *mut c_void) -> CUresult {
    run("cuCtxSetCurrent", || {
        device::driver()?;
        if h.is_null() {
            context::set_current(None);
            return Ok(());
        }
        context::set_current(Some(context_of(h)?));
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut *mut c_void) -> CUresult {
    run("cuCtxGetCurrent", || {
        device::driver()?;
        let h = context::current_opt().map_or(std::ptr::null_mut(), |c| c.handle() as *mut c_void);
        unsafe { out(pctx, h, "cuCtxGetCurrent") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(h: *mut c_void) -> CUresult {
    run("cuCtxPushCurrent", || {
        context::push_current(context_of(h)?);
        Ok(())
    })
}

/// # Safety
/// C caller: null or valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut *mut c_void) -> CUresult {
    run("cuCtxPopCurrent", || {
        let Some(c) = context::pop_current() else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_CONTEXT,
                "cuCtxPopCurrent: no current context",
            );
        };
        if !pctx.is_null() {
            unsafe { pctx.write(c.handle() as *mut c_void) };
        }
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut c_int) -> CUresult {
    run("cuCtxGetDevice", || {
        let c = current()?;
        unsafe { out(dev, c.device.ordinal as c_int, "cuCtxGetDevice") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    run("cuCtxSynchronize", || {
        unsafe_call("cuCtxSynchronize")?;
        current()?.synchronize()
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    run("cuCtxGetFlags", || {
        current()?;
        unsafe { out(flags, 0, "cuCtxGetFlags") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetFlags(_flags: c_uint) -> CUresult {
    // Host scheduling flags: the emulator's waits always block.
    run("cuCtxSetFlags", || current().map(drop))
}

/// # Safety
/// C caller: valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CUresult {
    run("cuCtxGetStreamPriorityRange", || {
        current()?;
        unsafe {
            if !least.is_null() {
                least.write(0);
            }
            if !greatest.is_null() {
                greatest.write(-5);
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCacheConfig(_config: c_int) -> CUresult {
    // A preference between L1 and shared memory: there is no cache to split.
    run("cuCtxSetCacheConfig", || current().map(drop))
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCacheConfig(config: *mut c_int) -> CUresult {
    run("cuCtxGetCacheConfig", || {
        current()?;
        unsafe { out(config, 0, "cuCtxGetCacheConfig") }
    })
}
