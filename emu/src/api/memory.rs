//! Driver API entry points: device and pinned host memory, and what a pointer is.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use super::{out, run, stream_of};
use crate::device::context::{self, contexts, current};
use crate::device::graph::unsafe_call;
use crate::device::node::Node;
use crate::device::{self, CUresult, fail};

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut u64, bytes: usize) -> CUresult {
    run("cuMemAlloc", || {
        unsafe_call("cuMemAlloc")?;
        let c = current()?;
        let a = c.alloc(bytes)?;
        unsafe { out(dptr, a, "cuMemAlloc") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: u64) -> CUresult {
    run("cuMemFree", || {
        unsafe_call("cuMemFree")?;
        let c = current()?;
        // cuMemFree synchronizes: work queued before it may still use the memory.
        c.synchronize().ok();
        c.free(dptr)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut u64, bytes: usize, h: *mut c_void) -> CUresult {
    run("cuMemAllocAsync", || {
        let s = stream_of(h)?;
        if s.capture().is_some() {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "cuMemAllocAsync inside a stream capture (memory nodes) is not emulated",
            );
        }
        // Stream-ordered allocation may be satisfied at once: the memory is not used before
        // later work on the stream.
        let a = s.ctx.alloc(bytes)?;
        unsafe { out(dptr, a, "cuMemAllocAsync") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: u64, h: *mut c_void) -> CUresult {
    run("cuMemFreeAsync", || {
        let s = stream_of(h)?;
        if s.capture().is_some() {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "cuMemFreeAsync inside a stream capture (memory nodes) is not emulated",
            );
        }
        if s.ctx.find(dptr, 1).is_none_or(|a| a.base != dptr) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuMemFreeAsync({dptr:#x}): not the start of a live allocation"),
            );
        }
        // Freed when the stream reaches this point.
        let ctx = s.ctx.clone();
        s.submit(Node::Native {
            name: "cuMemFreeAsync".into(),
            f: Arc::new(move |_| {
                ctx.free(dptr)
                    .map_err(|e| (e, format!("cuMemFreeAsync({dptr:#x}) failed")))
            }),
        })
    })
}

/// # Safety
/// C caller: valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    run("cuMemGetInfo", || {
        let c = current()?;
        let b = &c.device.budget;
        unsafe {
            out(free, b.total.saturating_sub(b.used()), "cuMemGetInfo")?;
            out(total, b.total, "cuMemGetInfo")
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    bytes: usize,
    flags: c_uint,
) -> CUresult {
    run("cuMemHostAlloc", || {
        unsafe_call("cuMemHostAlloc")?;
        current()?;
        if flags & !7 != 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuMemHostAlloc flags {flags:#x}"),
            );
        }
        if bytes == 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuMemHostAlloc of 0 bytes",
            );
        }
        let p = context::alloc_pinned(bytes)?;
        unsafe { out(pp, p as *mut c_void, "cuMemHostAlloc") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    unsafe { cuMemHostAlloc(pp, bytes, 0) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    run("cuMemFreeHost", || {
        unsafe_call("cuMemFreeHost")?;
        device::driver()?;
        // Copies still queued may read or write it.
        for c in contexts().values() {
            let _ = c.synchronize();
        }
        context::free_pinned(p as u64)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostGetDevicePointer_v2(
    dptr: *mut u64,
    p: *mut c_void,
    flags: c_uint,
) -> CUresult {
    run("cuMemHostGetDevicePointer", || {
        current()?;
        if flags != 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuMemHostGetDevicePointer flags must be 0",
            );
        }
        if context::find_pinned(p as u64, 1).is_none() {
            return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "not pinned host memory");
        }
        // Unified addressing: the device sees pinned memory at its host address.
        unsafe { out(dptr, p as u64, "cuMemHostGetDevicePointer") }
    })
}

/// # Safety
/// C caller: null or valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(
    base: *mut u64,
    size: *mut usize,
    dptr: u64,
) -> CUresult {
    run("cuMemGetAddressRange", || {
        let c = current()?;
        let (b, s) = match c.containing(dptr) {
            Some(a) => (a.base, a.size),
            None => match context::find_pinned(dptr, 1) {
                Some(a) => (a.base, a.size),
                None => {
                    return fail(
                        CUresult::CUDA_ERROR_NOT_FOUND,
                        format!("cuMemGetAddressRange: {dptr:#x} is in no allocation"),
                    );
                }
            },
        };
        unsafe {
            if !base.is_null() {
                base.write(b);
            }
            if !size.is_null() {
                size.write(s);
            }
        }
        Ok(())
    })
}

/// # Safety
/// C caller: `data` big enough for the attribute.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttribute(
    data: *mut c_void,
    attr: c_int,
    ptr: u64,
) -> CUresult {
    run("cuPointerGetAttribute", || {
        device::driver()?;
        let owner = contexts()
            .values()
            .into_iter()
            .find_map(|c| c.containing(ptr).map(|a| (c, a)));
        let pinned = context::find_pinned(ptr, 1);
        if owner.is_none() && pinned.is_none() {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuPointerGetAttribute: {ptr:#x} is not memory the driver knows"),
            );
        }
        let (start, size, dev) = match (&owner, &pinned) {
            (Some((c, a)), _) => (a.base, a.size, c.device.ordinal),
            (None, Some(p)) => (p.base, p.size, 0),
            _ => unreachable!(),
        };
        // SAFETY: the caller gives storage of the attribute's type.
        unsafe {
            match attr {
                1 => (data as *mut *mut c_void).write(
                    owner
                        .as_ref()
                        .map_or(std::ptr::null_mut(), |(c, _)| c.handle() as *mut c_void),
                ),
                2 => (data as *mut c_uint).write(if owner.is_some() { 2 } else { 1 }),
                3 => (data as *mut u64).write(ptr),
                4 if pinned.is_some() => (data as *mut *mut c_void).write(ptr as *mut c_void),
                8 => (data as *mut c_int).write(0),
                9 => (data as *mut c_int).write(dev as c_int),
                11 => (data as *mut u64).write(start),
                12 => (data as *mut usize).write(size),
                13 => (data as *mut c_int).write(1),
                _ => {
                    return fail(
                        CUresult::CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "cuPointerGetAttribute: attribute {attr} is not emulated for this pointer"
                        ),
                    );
                }
            }
        }
        Ok(())
    })
}
