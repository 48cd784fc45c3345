//! Driver API entry points: initialization, devices, contexts, memory and copies.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::Arc;

use super::{out, run};
use crate::device::context::{self, Context, contexts, current};
use crate::device::graph::{blocking_capture_in, unsafe_call};
use crate::device::node::{Loc, Node};
use crate::device::stream::{Stream, streams};
use crate::device::{self, ARCH, CUresult, CuResult, SM_COUNT, fail};

/// The driver version reported (CUDA 13.0).
pub const DRIVER_VERSION: c_int = 13000;

/// Name every emulated device reports; tools check for it to know their timings mean
/// nothing.
pub const DEVICE_NAME: &str = "tandem-emu (emulated sm_90)";

/// The stream a handle names (0 and CU_STREAM_LEGACY: the current context's legacy stream),
/// checked against the current context.
pub(crate) fn stream_of(h: *mut c_void) -> CuResult<Arc<Stream>> {
    device::driver()?;
    match h as usize {
        0 | 1 => {
            let ctx = current()?;
            ctx.check()?;
            if blocking_capture_in(&ctx) {
                return fail(
                    CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
                    "the legacy stream is used while a blocking stream of its context is captured",
                );
            }
            Ok(ctx.legacy())
        }
        2 => fail(
            CUresult::CUDA_ERROR_NOT_SUPPORTED,
            "the per-thread default stream (CU_STREAM_PER_THREAD) is not emulated",
        ),
        x => {
            let Some(s) = streams().get(x) else {
                return fail(
                    CUresult::CUDA_ERROR_INVALID_HANDLE,
                    format!("stream handle {x:#x}"),
                );
            };
            let cur = current()?;
            if !Arc::ptr_eq(&cur, &s.ctx) {
                return fail(
                    CUresult::CUDA_ERROR_INVALID_CONTEXT,
                    "the stream belongs to another context than the current one",
                );
            }
            s.ctx.check()?;
            Ok(s)
        }
    }
}

/// A context handle.
pub(crate) fn context_of(h: *mut c_void) -> CuResult<Arc<Context>> {
    match contexts().get(h as usize) {
        Some(c) => Ok(c),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            format!("context handle {h:p}"),
        ),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    run("cuInit", || {
        if flags != 0 {
            return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "cuInit flags must be 0");
        }
        device::init().map(drop)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    run("cuDriverGetVersion", || unsafe {
        out(v, DRIVER_VERSION, "cuDriverGetVersion")
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> CUresult {
    run("cuDeviceGetCount", || {
        let d = device::driver()?;
        unsafe { out(n, d.devices.len() as c_int, "cuDeviceGetCount") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> CUresult {
    run("cuDeviceGet", || {
        device::device(ordinal)?;
        unsafe { out(dev, ordinal, "cuDeviceGet") }
    })
}

/// # Safety
/// C caller: `name` holds `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> CUresult {
    run("cuDeviceGetName", || {
        device::device(dev)?;
        if name.is_null() || len <= 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuDeviceGetName: no buffer",
            );
        }
        let bytes = DEVICE_NAME.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: the buffer holds len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name as *mut u8, n);
            *name.add(n) = 0;
        }
        Ok(())
    })
}

fn uuid_bytes(dev: c_int) -> [u8; 16] {
    let mut u = *b"tandem-emu-dev\0\0";
    u[15] = dev as u8;
    u
}

/// # Safety
/// C caller: 16 writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: c_int) -> CUresult {
    run("cuDeviceGetUuid", || {
        device::device(dev)?;
        unsafe { out(uuid, uuid_bytes(dev), "cuDeviceGetUuid") }
    })
}

/// # Safety
/// C caller: 16 writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: c_int) -> CUresult {
    unsafe { cuDeviceGetUuid(uuid, dev) }
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> CUresult {
    run("cuDeviceTotalMem", || {
        let d = device::device(dev)?;
        unsafe { out(bytes, d.budget.total, "cuDeviceTotalMem") }
    })
}

/// The value of device attribute `a` (CUdevice_attribute), as an H100/H200 SXM reports it,
/// or None for an attribute the emulator does not model.
pub fn attribute(a: c_int, ordinal: c_int) -> Option<c_int> {
    Some(match a {
        1 => 1024,                  // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,              // MAX_BLOCK_DIM_X/Y
        4 => 64,                    // MAX_BLOCK_DIM_Z
        5 => i32::MAX,              // MAX_GRID_DIM_X
        6 | 7 => 65535,             // MAX_GRID_DIM_Y/Z
        8 => 49152,                 // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                 // TOTAL_CONSTANT_MEMORY
        10 => 32,                   // WARP_SIZE
        11 => i32::MAX,             // MAX_PITCH
        12 => 65536,                // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,            // CLOCK_RATE (kHz)
        14 => 512,                  // TEXTURE_ALIGNMENT
        15 => 1,                    // GPU_OVERLAP
        16 => SM_COUNT as c_int,    // MULTIPROCESSOR_COUNT
        17 => 0,                    // KERNEL_EXEC_TIMEOUT
        18 => 0,                    // INTEGRATED
        19 => 1,                    // CAN_MAP_HOST_MEMORY
        20 => 0,                    // COMPUTE_MODE (default)
        31 => 1,                    // CONCURRENT_KERNELS
        32 => 1,                    // ECC_ENABLED
        33 => 0,                    // PCI_BUS_ID
        34 => ordinal,              // PCI_DEVICE_ID
        35 => 0,                    // TCC_DRIVER
        36 => 2_619_000,            // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                 // GLOBAL_MEMORY_BUS_WIDTH
        38 => 52_428_800,           // L2_CACHE_SIZE
        39 => 2048,                 // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 3,                    // ASYNC_ENGINE_COUNT
        41 => 1,                    // UNIFIED_ADDRESSING
        50 => 0,                    // PCI_DOMAIN_ID
        75 => (ARCH / 10) as c_int, // COMPUTE_CAPABILITY_MAJOR
        76 => (ARCH % 10) as c_int, // COMPUTE_CAPABILITY_MINOR
        78 => 1,                    // STREAM_PRIORITIES_SUPPORTED
        79 | 80 => 1,               // GLOBAL/LOCAL_L1_CACHE_SUPPORTED
        81 => 233_472,              // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,                    // MANAGED_MEMORY
        84 => 0,                    // MULTI_GPU_BOARD
        86 => 1,                    // HOST_NATIVE_ATOMIC_SUPPORTED
        88 => 0,                    // PAGEABLE_MEMORY_ACCESS
        89 => 1,                    // CONCURRENT_MANAGED_ACCESS
        90 => 1,                    // COMPUTE_PREEMPTION_SUPPORTED
        91 => 1,                    // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        95 => 1,                    // COOPERATIVE_LAUNCH
        97 => 232_448,              // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,                  // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => 1024,                // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,                   // MEMORY_POOLS_SUPPORTED
        _ => return None,
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    v: *mut c_int,
    attrib: c_int,
    dev: c_int,
) -> CUresult {
    run("cuDeviceGetAttribute", || {
        device::device(dev)?;
        match attribute(attrib, dev) {
            Some(x) => unsafe { out(v, x, "cuDeviceGetAttribute") },
            None => fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuDeviceGetAttribute: attribute {attrib} is not emulated"),
            ),
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(
    can: *mut c_int,
    dev: c_int,
    peer: c_int,
) -> CUresult {
    run("cuDeviceCanAccessPeer", || {
        device::device(dev)?;
        device::device(peer)?;
        unsafe { out(can, (dev != peer) as c_int, "cuDeviceCanAccessPeer") }
    })
}

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

// ---- memory ----

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

// ---- copies ----

/// Whether [p, p + n) is pinned host memory.
fn pinned(p: usize, n: usize) -> bool {
    context::find_pinned(p as u64, n as u64).is_some()
}

/// Checks a device range at the call, as the driver does (a bad pointer is an invalid
/// argument; memory freed later is a fault when the copy runs).
fn check_dev(s: &Stream, addr: u64, n: usize, what: &str) -> CuResult<()> {
    if n == 0 {
        return Ok(());
    }
    let ok = s.ctx.find(addr, n as u64).is_some()
        || context::find_pinned(addr, n as u64).is_some()
        || contexts()
            .values()
            .iter()
            .any(|c| c.find(addr, n as u64).is_some());
    if ok {
        Ok(())
    } else {
        fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("{what}: {n} bytes at {addr:#x} are not inside one live device allocation"),
        )
    }
}

/// Host to device on `s`. Pageable data is staged at the call (the caller may reuse its
/// buffer on return); pinned data is read when the copy runs, as DMA would.
unsafe fn htod(
    s: &Arc<Stream>,
    dst: u64,
    src: *const c_void,
    n: usize,
    sync: bool,
) -> CuResult<()> {
    check_dev(s, dst, n, "memcpy to device")?;
    if n == 0 {
        return Ok(());
    }
    if src.is_null() {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "memcpy from a null host pointer",
        );
    }
    let captured = s.capture().is_some();
    let loc = if pinned(src as usize, n) || captured {
        Loc::Host(src as usize)
    } else {
        // SAFETY: the caller's buffer holds n bytes.
        Loc::Staged(Arc::from(unsafe {
            std::slice::from_raw_parts(src as *const u8, n)
        }))
    };
    let node = Node::Copy {
        dst: Loc::Device(dst),
        src: loc,
        bytes: n,
    };
    // The synchronous form waits for the copy to land (the driver may return once pageable
    // data is staged; waiting is the stronger promise, and spares callers on non-blocking
    // streams a race the GPU almost never shows).
    if sync && !captured {
        s.submit_and_wait(node)
    } else {
        s.submit(node)
    }
}

/// Device to host on `s`: waits unless the destination is pinned (and not `sync`).
unsafe fn dtoh(s: &Arc<Stream>, dst: *mut c_void, src: u64, n: usize, sync: bool) -> CuResult<()> {
    check_dev(s, src, n, "memcpy from device")?;
    if n == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "memcpy to a null host pointer",
        );
    }
    let node = Node::Copy {
        dst: Loc::Host(dst as usize),
        src: Loc::Device(src),
        bytes: n,
    };
    if sync || !pinned(dst as usize, n) {
        s.submit_and_wait(node)
    } else {
        s.submit(node)
    }
}

fn dtod(s: &Arc<Stream>, dst: u64, src: u64, n: usize) -> CuResult<()> {
    check_dev(s, dst, n, "memcpy to device")?;
    check_dev(s, src, n, "memcpy from device")?;
    if n == 0 {
        return Ok(());
    }
    s.submit(Node::Copy {
        dst: Loc::Device(dst),
        src: Loc::Device(src),
        bytes: n,
    })
}

/// The legacy stream for a synchronous call (refused during capture as the mode says).
fn sync_stream(what: &str) -> CuResult<Arc<Stream>> {
    unsafe_call(what)?;
    stream_of(std::ptr::null_mut())
}

/// # Safety
/// C caller: `src` holds `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) -> CUresult {
    run("cuMemcpyHtoD", || unsafe {
        htod(&sync_stream("cuMemcpyHtoD")?, dst, src, n, true)
    })
}

/// # Safety
/// C caller: `src` holds `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    n: usize,
    h: *mut c_void,
) -> CUresult {
    run("cuMemcpyHtoDAsync", || unsafe {
        htod(&stream_of(h)?, dst, src, n, false)
    })
}

/// # Safety
/// C caller: `dst` holds `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) -> CUresult {
    run("cuMemcpyDtoH", || unsafe {
        dtoh(&sync_stream("cuMemcpyDtoH")?, dst, src, n, true)
    })
}

/// # Safety
/// C caller: `dst` holds `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    n: usize,
    h: *mut c_void,
) -> CUresult {
    run("cuMemcpyDtoHAsync", || unsafe {
        dtoh(&stream_of(h)?, dst, src, n, false)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) -> CUresult {
    run("cuMemcpyDtoD", || {
        dtod(&sync_stream("cuMemcpyDtoD")?, dst, src, n)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, h: *mut c_void) -> CUresult {
    run("cuMemcpyDtoDAsync", || dtod(&stream_of(h)?, dst, src, n))
}

/// Whether `p` is device memory (unified addressing: cuMemcpy infers the direction).
fn is_device(p: u64) -> bool {
    contexts()
        .values()
        .iter()
        .any(|c| c.containing(p).is_some())
}

/// # Safety
/// C caller: host ranges hold `n` bytes.
unsafe fn copy_unified(s: &Arc<Stream>, dst: u64, src: u64, n: usize, sync: bool) -> CuResult<()> {
    match (is_device(dst), is_device(src)) {
        (true, true) => dtod(s, dst, src, n),
        (true, false) => unsafe { htod(s, dst, src as *const c_void, n, sync) },
        (false, true) => unsafe { dtoh(s, dst as *mut c_void, src, n, sync) },
        (false, false) => {
            // Host to host: fully synchronous.
            s.synchronize()?;
            // SAFETY: the caller's ranges.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) };
            Ok(())
        }
    }
}

/// # Safety
/// C caller: host ranges hold `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy(dst: u64, src: u64, n: usize) -> CUresult {
    run("cuMemcpy", || unsafe {
        copy_unified(&sync_stream("cuMemcpy")?, dst, src, n, true)
    })
}

/// # Safety
/// C caller: host ranges hold `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyAsync(dst: u64, src: u64, n: usize, h: *mut c_void) -> CUresult {
    run("cuMemcpyAsync", || unsafe {
        copy_unified(&stream_of(h)?, dst, src, n, false)
    })
}

/// CUDA_MEMCPY2D with its memory types as plain integers (a C caller may pass any value).
#[repr(C)]
pub struct Memcpy2D {
    pub src_x: usize,
    pub src_y: usize,
    pub src_type: c_uint,
    pub src_host: *const c_void,
    pub src_device: u64,
    pub src_array: *mut c_void,
    pub src_pitch: usize,
    pub dst_x: usize,
    pub dst_y: usize,
    pub dst_type: c_uint,
    pub dst_host: *mut c_void,
    pub dst_device: u64,
    pub dst_array: *mut c_void,
    pub dst_pitch: usize,
    pub width: usize,
    pub height: usize,
}

/// # Safety
/// C caller: a valid descriptor whose host ranges exist.
unsafe fn copy2d(s: &Arc<Stream>, p: *const Memcpy2D, sync: bool) -> CuResult<()> {
    // SAFETY: the caller's descriptor.
    let Some(p) = (unsafe { p.as_ref() }) else {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "cuMemcpy2D: null descriptor",
        );
    };
    if p.src_pitch < p.width + p.src_x || p.dst_pitch < p.width + p.dst_x {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!(
                "cuMemcpy2D: width {} (+x) exceeds a pitch ({} / {})",
                p.width, p.src_pitch, p.dst_pitch
            ),
        );
    }
    if p.width == 0 || p.height == 0 {
        return Ok(());
    }
    // Memory types: 1 host, 2 device, 3 array, 4 unified.
    let side = |ty: c_uint,
                host: usize,
                dev: u64,
                x: usize,
                y: usize,
                pitch: usize|
     -> CuResult<(Loc, bool)> {
        let off = y * pitch + x;
        match ty {
            1 => Ok((Loc::Host(host + off), false)),
            2 => Ok((Loc::Device(dev + off as u64), true)),
            4 if is_device(dev) => Ok((Loc::Device(dev + off as u64), true)),
            4 => Ok((Loc::Host(dev as usize + off), false)),
            _ => fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "cuMemcpy2D with CUDA arrays is not emulated",
            ),
        }
    };
    let (src, sdev) = side(
        p.src_type,
        p.src_host as usize,
        p.src_device,
        p.src_x,
        p.src_y,
        p.src_pitch,
    )?;
    let (dst, ddev) = side(
        p.dst_type,
        p.dst_host as usize,
        p.dst_device,
        p.dst_x,
        p.dst_y,
        p.dst_pitch,
    )?;
    let span = |pitch: usize| pitch * (p.height - 1) + p.width;
    if let Loc::Device(a) = src {
        check_dev(s, a, span(p.src_pitch), "cuMemcpy2D source")?;
    }
    if let Loc::Device(a) = dst {
        check_dev(s, a, span(p.dst_pitch), "cuMemcpy2D destination")?;
    }
    let src = match src {
        Loc::Host(h) if !pinned(h, span(p.src_pitch)) && s.capture().is_none() => {
            // SAFETY: the caller's host rows.
            Loc::Staged(Arc::from(unsafe {
                std::slice::from_raw_parts(h as *const u8, span(p.src_pitch))
            }))
        }
        other => other,
    };
    let to_pageable = matches!(dst, Loc::Host(h) if !pinned(h, span(p.dst_pitch)));
    let node = Node::Copy2D {
        dst,
        dpitch: p.dst_pitch,
        src,
        spitch: p.src_pitch,
        width: p.width,
        height: p.height,
    };
    let _ = (sdev, ddev);
    if sync || to_pageable {
        s.submit_and_wait(node)
    } else {
        s.submit(node)
    }
}

/// # Safety
/// C caller: a valid descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const Memcpy2D, h: *mut c_void) -> CUresult {
    run("cuMemcpy2DAsync", || unsafe {
        copy2d(&stream_of(h)?, p, false)
    })
}

/// # Safety
/// C caller: a valid descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const Memcpy2D) -> CUresult {
    run("cuMemcpy2D", || unsafe {
        copy2d(&sync_stream("cuMemcpy2D")?, p, true)
    })
}

#[allow(clippy::too_many_arguments)]
fn memset(
    s: &Arc<Stream>,
    dst: u64,
    value: u32,
    elem: usize,
    count: usize,
    pitch: usize,
    height: usize,
    sync: bool,
) -> CuResult<()> {
    if !dst.is_multiple_of(elem as u64) {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("memset of {elem}-byte values at {dst:#x}: misaligned"),
        );
    }
    let row = count * elem;
    if row == 0 || height == 0 {
        return Ok(());
    }
    check_dev(s, dst, pitch * (height - 1) + row, "memset")?;
    let node = Node::Set {
        dst,
        value,
        elem,
        count,
        pitch,
        height,
    };
    if sync {
        s.submit_and_wait(node)
    } else {
        s.submit(node)
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) -> CUresult {
    run("cuMemsetD8", || {
        memset(
            &sync_stream("cuMemsetD8")?,
            dst,
            v as u32,
            1,
            n,
            n,
            1,
            false,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8Async(dst: u64, v: u8, n: usize, h: *mut c_void) -> CUresult {
    run("cuMemsetD8Async", || {
        memset(&stream_of(h)?, dst, v as u32, 1, n, n, 1, false)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16_v2(dst: u64, v: u16, n: usize) -> CUresult {
    run("cuMemsetD16", || {
        memset(
            &sync_stream("cuMemsetD16")?,
            dst,
            v as u32,
            2,
            n,
            2 * n,
            1,
            false,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16Async(dst: u64, v: u16, n: usize, h: *mut c_void) -> CUresult {
    run("cuMemsetD16Async", || {
        memset(&stream_of(h)?, dst, v as u32, 2, n, 2 * n, 1, false)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32_v2(dst: u64, v: u32, n: usize) -> CUresult {
    run("cuMemsetD32", || {
        memset(&sync_stream("cuMemsetD32")?, dst, v, 4, n, 4 * n, 1, false)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32Async(dst: u64, v: u32, n: usize, h: *mut c_void) -> CUresult {
    run("cuMemsetD32Async", || {
        memset(&stream_of(h)?, dst, v, 4, n, 4 * n, 1, false)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D8Async(
    dst: u64,
    pitch: usize,
    v: u8,
    width: usize,
    height: usize,
    h: *mut c_void,
) -> CUresult {
    run("cuMemsetD2D8Async", || {
        if pitch < width {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuMemsetD2D8: pitch below width",
            );
        }
        memset(
            &stream_of(h)?,
            dst,
            v as u32,
            1,
            width,
            pitch,
            height,
            false,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD2D32Async(
    dst: u64,
    pitch: usize,
    v: u32,
    width: usize,
    height: usize,
    h: *mut c_void,
) -> CUresult {
    run("cuMemsetD2D32Async", || {
        if pitch < 4 * width {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuMemsetD2D32: pitch below width",
            );
        }
        memset(&stream_of(h)?, dst, v, 4, width, pitch, height, false)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(code: c_uint, s: *mut *const c_char) -> CUresult {
    match super::errors::describe(code) {
        Some((n, _)) => run("cuGetErrorName", || unsafe {
            out(s, n.as_ptr(), "cuGetErrorName")
        }),
        None => {
            if !s.is_null() {
                unsafe { s.write(std::ptr::null()) };
            }
            CUresult::CUDA_ERROR_INVALID_VALUE
        }
    }
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(code: c_uint, s: *mut *const c_char) -> CUresult {
    match super::errors::describe(code) {
        Some((_, d)) => run("cuGetErrorString", || unsafe {
            out(s, d.as_ptr(), "cuGetErrorString")
        }),
        None => {
            if !s.is_null() {
                unsafe { s.write(std::ptr::null()) };
            }
            CUresult::CUDA_ERROR_INVALID_VALUE
        }
    }
}
