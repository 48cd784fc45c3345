//! Driver API entry points: copies (host and device, 1D and 2D) and memsets, each in stream
//! order with the host synchronization NVIDIA documents for it.

use std::ffi::{c_uint, c_void};
use std::sync::Arc;

use super::{run, stream_of};
use crate::device::context::{self, contexts};
use crate::device::graph::unsafe_call;
use crate::device::node::{Loc, Node};
use crate::device::stream::Stream;
use crate::device::{CUresult, CuResult, fail};

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
