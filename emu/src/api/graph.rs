//! Driver API entry points: stream capture and graphs.

use std::ffi::{c_uint, c_void};
use std::sync::Arc;

use super::{out, run, stream_of};
use crate::device::context::current;
use crate::device::graph::{self, GraphExec, execs, graphs};
use crate::device::{CUresult, fail};

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_v2(h: *mut c_void, mode: c_uint) -> CUresult {
    run("cuStreamBeginCapture", || {
        graph::begin(&stream_of(h)?, mode)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(h: *mut c_void, pg: *mut *mut c_void) -> CUresult {
    run("cuStreamEndCapture", || {
        let s = stream_of(h)?;
        if pg.is_null() {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuStreamEndCapture: null output",
            );
        }
        match graph::end(&s) {
            Ok(g) => {
                let handle = graphs().add(Arc::new(g));
                unsafe { pg.write(handle as *mut c_void) };
                Ok(())
            }
            Err(e) => {
                unsafe { pg.write(std::ptr::null_mut()) };
                Err(e)
            }
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(h: *mut c_void, status: *mut c_uint) -> CUresult {
    run("cuStreamIsCapturing", || {
        let s = stream_of(h)?;
        unsafe { out(status, graph::status(&s).0, "cuStreamIsCapturing") }
    })
}

/// # Safety
/// C caller: null or valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    h: *mut c_void,
    status: *mut c_uint,
    id: *mut u64,
    graph_out: *mut *mut c_void,
    deps: *mut *const c_void,
    ndeps: *mut usize,
) -> CUresult {
    run("cuStreamGetCaptureInfo", || {
        let s = stream_of(h)?;
        let (st, cid) = graph::status(&s);
        unsafe {
            out(status, st, "cuStreamGetCaptureInfo")?;
            if !id.is_null() {
                id.write(cid);
            }
            if !graph_out.is_null() || !deps.is_null() {
                return fail(
                    CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    "cuStreamGetCaptureInfo: the graph and dependency outputs are not emulated",
                );
            }
            if !ndeps.is_null() {
                ndeps.write(0);
            }
        }
        Ok(())
    })
}

/// # Safety
/// C caller: valid in/out pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut c_uint) -> CUresult {
    run("cuThreadExchangeStreamCaptureMode", || {
        if mode.is_null() {
            return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "null mode");
        }
        unsafe {
            let old = graph::exchange_mode(*mode)?;
            mode.write(old);
        }
        Ok(())
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    pe: *mut *mut c_void,
    g: *mut c_void,
    flags: u64,
) -> CUresult {
    run("cuGraphInstantiate", || {
        let c = current()?;
        let Some(gr) = graphs().get(g as usize) else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("graph handle {g:p}"),
            );
        };
        // AUTO_FREE_ON_LAUNCH (1) and USE_NODE_PRIORITY (8) change nothing for graphs without
        // memory nodes; UPLOAD (2) needs cuGraphInstantiateWithParams; DEVICE_LAUNCH (4)
        // is not emulated.
        if flags & !(1 | 2 | 4 | 8) != 0 || flags & 2 != 0 || (flags & 4 != 0 && flags & 1 != 0) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuGraphInstantiate flags {flags:#x}"),
            );
        }
        if flags & 4 != 0 {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "device-launchable graphs are not emulated",
            );
        }
        let e = Arc::new(GraphExec::new(c, &gr));
        let h = execs().add(e);
        unsafe { out(pe, h as *mut c_void, "cuGraphInstantiate") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphLaunch(e: *mut c_void, h: *mut c_void) -> CUresult {
    run("cuGraphLaunch", || {
        let s = stream_of(h)?;
        let Some(ex) = execs().get(e as usize) else {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("graph exec handle {e:p}"),
            );
        };
        if !Arc::ptr_eq(&ex.ctx, &s.ctx) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_CONTEXT,
                "cuGraphLaunch: the graph and the stream belong to different contexts",
            );
        }
        if s.capture().is_some() {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "launching a graph into a stream capture (child graphs) is not emulated",
            );
        }
        s.ctx.check()?;
        s.push(crate::device::stream::Job::Graph(ex)).map(drop)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphUpload(e: *mut c_void, h: *mut c_void) -> CUresult {
    // Uploading prepares a launch; the emulator has nothing to prepare.
    run("cuGraphUpload", || {
        stream_of(h)?;
        match execs().get(e as usize) {
            Some(_) => Ok(()),
            None => fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("graph exec handle {e:p}"),
            ),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphExecDestroy(e: *mut c_void) -> CUresult {
    // A launch in flight holds its own reference and finishes.
    run("cuGraphExecDestroy", || match execs().remove(e as usize) {
        Some(_) => Ok(()),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("graph exec handle {e:p}"),
        ),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphDestroy(g: *mut c_void) -> CUresult {
    run("cuGraphDestroy", || match graphs().remove(g as usize) {
        Some(_) => Ok(()),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("graph handle {g:p}"),
        ),
    })
}
