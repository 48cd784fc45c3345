//! Driver API entry points: modules, their kernels, and launches.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{out, run, stream_of};
use crate::device::context::current;
use crate::device::graph::unsafe_call;
use crate::device::module::{Function, Module, SHARED_OPTIN, functions, modules};
use crate::device::node::{KernelNode, Node};
use crate::device::{CUresult, CuResult, fail};

/// # Safety
/// C caller: a valid image.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(pm: *mut *mut c_void, image: *const c_void) -> CUresult {
    run("cuModuleLoadData", || {
        let c = current()?;
        let m = unsafe { Module::load(&c, image as *const u8)? };
        let h = modules().add(m);
        unsafe { out(pm, h as *mut c_void, "cuModuleLoadData") }
    })
}

/// # Safety
/// C caller: a valid image; JIT options are ignored (they tune or log a compilation the
/// emulator does not do).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    pm: *mut *mut c_void,
    image: *const c_void,
    _n: c_uint,
    _options: *mut c_int,
    _values: *mut *mut c_void,
) -> CUresult {
    unsafe { cuModuleLoadData(pm, image) }
}

/// # Safety
/// C caller: a NUL-terminated path.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(pm: *mut *mut c_void, path: *const c_char) -> CUresult {
    run("cuModuleLoad", || {
        if path.is_null() {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuModuleLoad: null path",
            );
        }
        let p = unsafe { std::ffi::CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        let mut bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    CUresult::CUDA_ERROR_FILE_NOT_FOUND,
                    format!("cuModuleLoad({p}): {e}"),
                );
            }
        };
        bytes.push(0);
        let c = current()?;
        let m = unsafe { Module::load(&c, bytes.as_ptr())? };
        let h = modules().add(m);
        unsafe { out(pm, h as *mut c_void, "cuModuleLoad") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(m: *mut c_void) -> CUresult {
    run("cuModuleUnload", || match modules().remove(m as usize) {
        Some(md) => {
            let _ = md.ctx.synchronize();
            md.unload();
            Ok(())
        }
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("module handle {m:p}"),
        ),
    })
}

fn module(m: *mut c_void) -> CuResult<Arc<Module>> {
    crate::device::driver()?;
    match modules().get(m as usize) {
        Some(x) => Ok(x),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("module handle {m:p}"),
        ),
    }
}

fn cstr(p: *const c_char) -> CuResult<String> {
    if p.is_null() {
        return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "null name");
    }
    // SAFETY: the caller's NUL-terminated name.
    Ok(unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned())
}

/// # Safety
/// C caller: valid out-pointer, NUL-terminated name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(
    pf: *mut *mut c_void,
    m: *mut c_void,
    name: *const c_char,
) -> CUresult {
    run("cuModuleGetFunction", || {
        let f = module(m)?.function(&cstr(name)?)?;
        let h = functions().add(f);
        unsafe { out(pf, h as *mut c_void, "cuModuleGetFunction") }
    })
}

/// # Safety
/// C caller: null or valid out-pointers, NUL-terminated name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut u64,
    bytes: *mut usize,
    m: *mut c_void,
    name: *const c_char,
) -> CUresult {
    run("cuModuleGetGlobal", || {
        let md = module(m)?;
        let n = cstr(name)?;
        let Some(&(a, size)) = md.globals.get(&n) else {
            return fail(
                CUresult::CUDA_ERROR_NOT_FOUND,
                format!("cuModuleGetGlobal: no variable {n}"),
            );
        };
        unsafe {
            if !dptr.is_null() {
                dptr.write(a);
            }
            if !bytes.is_null() {
                bytes.write(size);
            }
        }
        Ok(())
    })
}

fn function(f: *mut c_void) -> CuResult<Arc<Function>> {
    crate::device::driver()?;
    match functions().get(f as usize) {
        Some(x) => Ok(x),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("function handle {f:p}"),
        ),
    }
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetAttribute(
    v: *mut c_int,
    attr: c_int,
    f: *mut c_void,
) -> CUresult {
    run("cuFuncGetAttribute", || {
        let func = function(f)?;
        let k = &func.kernel;
        let x = match attr {
            0 => k.max_threads.unwrap_or(1024).min(1024) as c_int,
            1 => k.shared_bytes as c_int,
            2 => 0,
            3 => k.local_bytes as c_int,
            // PTX virtual registers, capped at the hardware's per-thread limit.
            4 => k.regs.min(255) as c_int,
            5 | 6 => 90,
            7 => 0,
            8 => func.max_dyn_shared.load(Ordering::Relaxed) as c_int,
            9 => -1,
            _ => {
                return fail(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    format!("cuFuncGetAttribute: attribute {attr} is not emulated"),
                );
            }
        };
        unsafe { out(v, x, "cuFuncGetAttribute") }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetAttribute(f: *mut c_void, attr: c_int, value: c_int) -> CUresult {
    run("cuFuncSetAttribute", || {
        let func = function(f)?;
        match attr {
            8 => {
                let v = usize::try_from(value).unwrap_or(usize::MAX);
                if v.saturating_add(func.kernel.shared_bytes) > SHARED_OPTIN {
                    return fail(
                        CUresult::CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "{value} bytes of dynamic shared memory plus {} static exceed {SHARED_OPTIN}",
                            func.kernel.shared_bytes
                        ),
                    );
                }
                func.max_dyn_shared.store(v, Ordering::Relaxed);
                Ok(())
            }
            // The carveout preference splits L1 and shared memory: nothing to split.
            9 if (-1..=100).contains(&value) => Ok(()),
            _ => fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuFuncSetAttribute: attribute {attr} = {value} is not settable here"),
            ),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetCacheConfig(f: *mut c_void, _config: c_int) -> CUresult {
    run("cuFuncSetCacheConfig", || function(f).map(drop))
}

/// The parameter buffer of a launch: from kernelParams (one pointer per parameter) or from
/// `extra` (CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE, ended by CU_LAUNCH_PARAM_END).
///
/// # Safety
/// As cuLaunchKernel's.
unsafe fn params(
    func: &Function,
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult<Vec<u8>> {
    let k = &func.kernel;
    let mut buf = vec![0u8; k.param_bytes];
    match (kp.is_null(), extra.is_null()) {
        (false, false) => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "cuLaunchKernel: both kernelParams and extra",
        ),
        (false, true) => {
            for (i, p) in k.params.iter().enumerate() {
                // SAFETY: one pointer per parameter, each to a value of its size.
                let src = unsafe { *kp.add(i) } as *const u8;
                if src.is_null() {
                    return fail(
                        CUresult::CUDA_ERROR_INVALID_VALUE,
                        format!("cuLaunchKernel {}: parameter {i} is null", k.name),
                    );
                }
                unsafe { std::ptr::copy_nonoverlapping(src, buf[p.offset..].as_mut_ptr(), p.size) };
            }
            Ok(buf)
        }
        (true, false) => {
            let (mut ptr, mut size) = (std::ptr::null::<u8>(), None);
            let mut i = 0;
            loop {
                // SAFETY: a key/value list ended by CU_LAUNCH_PARAM_END (0).
                let key = unsafe { *extra.add(i) } as usize;
                match key {
                    0 => break,
                    1 => ptr = unsafe { *extra.add(i + 1) } as *const u8,
                    2 => size = Some(unsafe { *(*extra.add(i + 1) as *const usize) }),
                    _ => {
                        return fail(
                            CUresult::CUDA_ERROR_INVALID_VALUE,
                            format!("cuLaunchKernel: unknown extra key {key:#x}"),
                        );
                    }
                }
                i += 2;
            }
            match (ptr.is_null(), size) {
                (false, Some(n)) if n >= k.param_bytes => {
                    unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), k.param_bytes) };
                    Ok(buf)
                }
                _ if k.param_bytes == 0 => Ok(buf),
                _ => fail(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    format!(
                        "cuLaunchKernel {}: extra gives no buffer of {} bytes",
                        k.name, k.param_bytes
                    ),
                ),
            }
        }
        (true, true) if k.params.is_empty() => Ok(buf),
        (true, true) => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!(
                "cuLaunchKernel {}: {} parameters expected, none given",
                k.name,
                k.params.len()
            ),
        ),
    }
}

/// # Safety
/// C caller: kernelParams / extra as the CUDA driver API defines them.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    h: *mut c_void,
    kp: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    run("cuLaunchKernel", || {
        let func = function(f)?;
        let s = stream_of(h)?;
        let k = &func.kernel;
        if !Arc::ptr_eq(&func.ctx, &s.ctx) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                format!(
                    "cuLaunchKernel {}: the kernel and the stream belong to different contexts",
                    k.name
                ),
            );
        }
        let threads = bx as u64 * by as u64 * bz as u64;
        let bad = |msg: String| {
            fail::<()>(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuLaunchKernel {}: {msg}", k.name),
            )
        };
        if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
            bad(format!(
                "grid ({gx}, {gy}, {gz}) is out of the device's limits"
            ))?;
        }
        if bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024 {
            bad(format!(
                "block ({bx}, {by}, {bz}) is out of the device's limits"
            ))?;
        }
        if let Some(m) = k.max_threads
            && threads > m as u64
        {
            return fail(
                CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                format!(
                    "cuLaunchKernel {}: {threads} threads per block, the kernel's .maxntid allows {m}",
                    k.name
                ),
            );
        }
        if let Some(r) = k.req_threads
            && r != [bx, by, bz]
        {
            bad(format!(
                "block ({bx}, {by}, {bz}) differs from the kernel's .reqntid {r:?}"
            ))?;
        }
        let max_dyn = func.max_dyn_shared.load(Ordering::Relaxed);
        if shared as usize > max_dyn {
            bad(format!(
                "{shared} bytes of dynamic shared memory, at most {max_dyn} (static {} bytes; raise it with \
                 CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                k.shared_bytes
            ))?;
        }
        let buf = unsafe { params(&func, kp, extra)? };
        s.submit(Node::Kernel(KernelNode {
            func: func.clone(),
            grid: [gx, gy, gz],
            block: [bx, by, bz],
            dyn_shared: shared as usize,
            params: buf,
        }))
    })
}

/// # Safety
/// Not emulated; arguments are not read.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: *mut c_void,
    _gx: c_uint,
    _gy: c_uint,
    _gz: c_uint,
    _bx: c_uint,
    _by: c_uint,
    _bz: c_uint,
    _shared: c_uint,
    _h: *mut c_void,
    _kp: *mut *mut c_void,
) -> CUresult {
    run("cuLaunchCooperativeKernel", || {
        function(f)?;
        // Grid-wide synchronization needs every block resident at once; the emulator runs
        // blocks to completion one after another.
        unsafe_call("cuLaunchCooperativeKernel")?;
        fail(
            CUresult::CUDA_ERROR_NOT_SUPPORTED,
            "cooperative launches (grid-wide sync) are not emulated",
        )
    })
}
