//! The cuBLASLt stand-in: `cublasLtMatmul` as NVIDIA documents it, D = alpha op(A) op(B) plus
//! beta C, over column- or row-major layouts with leading dimensions and strided batches, for
//! the regular f32-compute combinations (A and B in bf16, f16 or f32; C and D in the same type
//! or f32). The product is computed in f32 and D rounded once to its type. The matmul runs in
//! stream order (or is captured into a graph) as a native device operation.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use super::stream_of;
use crate::device::{Handles, log};

/// cublasStatus_t.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, dead_code)]
pub enum Status {
    SUCCESS = 0,
    NOT_INITIALIZED = 1,
    ALLOC_FAILED = 3,
    INVALID_VALUE = 7,
    ARCH_MISMATCH = 8,
    MAPPING_ERROR = 11,
    EXECUTION_FAILED = 13,
    INTERNAL_ERROR = 14,
    NOT_SUPPORTED = 15,
}

type Res<T> = Result<T, Status>;

fn bad<T>(s: Status, msg: impl std::fmt::Display) -> Res<T> {
    log(format_args!("cuBLASLt: {msg} ({s:?})"));
    Err(s)
}

fn run(name: &str, f: impl FnOnce() -> Res<()>) -> Status {
    super::guarded(name, Status::SUCCESS, Status::INTERNAL_ERROR, f)
}

// cudaDataType_t values.
const R_32F: u32 = 0;
const R_16F: u32 = 2;
const R_16BF: u32 = 14;
// cublasComputeType_t values.
const COMPUTE_32F: i32 = 68;
const COMPUTE_32F_PEDANTIC: i32 = 69;
const COMPUTE_32F_FAST_16F: i32 = 74;
const COMPUTE_32F_FAST_16BF: i32 = 75;
const COMPUTE_32F_FAST_TF32: i32 = 77;
/// Marks an algorithm this library's heuristic returned.
const ALGO_MAGIC: u64 = 0x5445_4d55_4c54_0001;

struct LtHandle;

#[derive(Clone)]
struct Desc {
    compute: i32,
    scale: u32,
    pointer_mode: i32,
    trans_a: i32,
    trans_b: i32,
    trans_c: i32,
    epilogue: u32,
    bias: u64,
    /// Attributes set that this library does not implement (refused at the matmul).
    unsupported: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    ty: u32,
    order: i32,
    rows: u64,
    cols: u64,
    ld: i64,
    batch: i32,
    stride: i64,
}

struct Pref {
    max_workspace: u64,
}

fn handles() -> &'static Handles<LtHandle> {
    static H: OnceLock<Handles<LtHandle>> = OnceLock::new();
    H.get_or_init(Handles::default)
}
fn descs() -> &'static Handles<Mutex<Desc>> {
    static H: OnceLock<Handles<Mutex<Desc>>> = OnceLock::new();
    H.get_or_init(Handles::default)
}
fn layouts() -> &'static Handles<Mutex<Layout>> {
    static H: OnceLock<Handles<Mutex<Layout>>> = OnceLock::new();
    H.get_or_init(Handles::default)
}
fn prefs() -> &'static Handles<Mutex<Pref>> {
    static H: OnceLock<Handles<Mutex<Pref>>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

fn get<T>(h: &Handles<T>, p: *mut c_void, what: &str) -> Res<Arc<T>> {
    h.get(p as usize).map_or_else(
        || bad(Status::INVALID_VALUE, format!("bad {what} handle {p:p}")),
        Ok,
    )
}

unsafe fn put<T>(p: *mut T, v: T) -> Res<()> {
    if p.is_null() {
        return bad(Status::INVALID_VALUE, "null output pointer");
    }
    // SAFETY: the caller's out-pointer.
    unsafe { p.write(v) };
    Ok(())
}

/// Reads an attribute value of exactly `size` bytes.
unsafe fn read_attr<T: Copy>(buf: *const c_void, size: usize) -> Res<T> {
    if buf.is_null() || size != std::mem::size_of::<T>() {
        return bad(
            Status::INVALID_VALUE,
            format!(
                "attribute of {size} bytes where {} are expected",
                std::mem::size_of::<T>()
            ),
        );
    }
    // SAFETY: size checked; the caller's buffer.
    Ok(unsafe { (buf as *const T).read_unaligned() })
}

/// Writes an attribute value for a Get call (sizeInBytes 0 asks for the size).
unsafe fn write_attr<T: Copy>(v: T, buf: *mut c_void, size: usize, written: *mut usize) -> Res<()> {
    let need = std::mem::size_of::<T>();
    if size == 0 {
        if written.is_null() {
            return bad(
                Status::INVALID_VALUE,
                "GetAttribute with size 0 and no sizeWritten",
            );
        }
        unsafe { written.write(need) };
        return Ok(());
    }
    if buf.is_null() || size < need {
        return bad(
            Status::INVALID_VALUE,
            format!("attribute buffer of {size} bytes, {need} needed"),
        );
    }
    unsafe {
        (buf as *mut T).write_unaligned(v);
        if !written.is_null() {
            written.write(need);
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetVersion() -> usize {
    130000
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetStatusName(s: c_int) -> *const c_char {
    match s {
        0 => c"CUBLAS_STATUS_SUCCESS",
        1 => c"CUBLAS_STATUS_NOT_INITIALIZED",
        3 => c"CUBLAS_STATUS_ALLOC_FAILED",
        7 => c"CUBLAS_STATUS_INVALID_VALUE",
        8 => c"CUBLAS_STATUS_ARCH_MISMATCH",
        13 => c"CUBLAS_STATUS_EXECUTION_FAILED",
        14 => c"CUBLAS_STATUS_INTERNAL_ERROR",
        15 => c"CUBLAS_STATUS_NOT_SUPPORTED",
        _ => c"CUBLAS_STATUS_UNKNOWN",
    }
    .as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtGetStatusString(s: c_int) -> *const c_char {
    cublasLtGetStatusName(s)
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtCreate(h: *mut *mut c_void) -> Status {
    run("cublasLtCreate", || {
        if crate::device::context::current().is_err() {
            return bad(
                Status::NOT_INITIALIZED,
                "cublasLtCreate: no current CUDA context",
            );
        }
        let p = handles().add(Arc::new(LtHandle));
        unsafe { put(h, p as *mut c_void) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtDestroy(h: *mut c_void) -> Status {
    run("cublasLtDestroy", || match handles().remove(h as usize) {
        Some(_) => Ok(()),
        None => bad(Status::NOT_INITIALIZED, "cublasLtDestroy: bad handle"),
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescCreate(
    d: *mut *mut c_void,
    compute: i32,
    scale: u32,
) -> Status {
    run("cublasLtMatmulDescCreate", || {
        let desc = Desc {
            compute,
            scale,
            pointer_mode: 0,
            trans_a: 0,
            trans_b: 0,
            trans_c: 0,
            epilogue: 1,
            bias: 0,
            unsupported: Vec::new(),
        };
        let p = descs().add(Arc::new(Mutex::new(desc)));
        unsafe { put(d, p as *mut c_void) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtMatmulDescDestroy(d: *mut c_void) -> Status {
    run("cublasLtMatmulDescDestroy", || {
        descs().remove(d as usize);
        Ok(())
    })
}

/// # Safety
/// C caller: `buf` holds `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescSetAttribute(
    d: *mut c_void,
    attr: u32,
    buf: *const c_void,
    size: usize,
) -> Status {
    run("cublasLtMatmulDescSetAttribute", || {
        let desc = get(descs(), d, "matmul desc")?;
        let mut g = desc.lock().map_err(|_| Status::INTERNAL_ERROR)?;
        unsafe {
            match attr {
                0 => g.compute = read_attr(buf, size)?,
                1 => g.scale = read_attr(buf, size)?,
                2 => g.pointer_mode = read_attr(buf, size)?,
                3 => g.trans_a = read_attr(buf, size)?,
                4 => g.trans_b = read_attr(buf, size)?,
                5 => g.trans_c = read_attr(buf, size)?,
                6 => {
                    read_attr::<i32>(buf, size)?;
                }
                7 => g.epilogue = read_attr(buf, size)?,
                8 => g.bias = read_attr(buf, size)?,
                // Hints: the target SM count, fast accumulation.
                15 => {
                    read_attr::<i32>(buf, size)?;
                }
                25 => {
                    read_attr::<i8>(buf, size)?;
                }
                _ => g.unsupported.push(attr),
            }
        }
        Ok(())
    })
}

/// # Safety
/// C caller: `buf` holds `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescGetAttribute(
    d: *mut c_void,
    attr: u32,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> Status {
    run("cublasLtMatmulDescGetAttribute", || {
        let desc = get(descs(), d, "matmul desc")?;
        let g = desc.lock().map_err(|_| Status::INTERNAL_ERROR)?.clone();
        unsafe {
            match attr {
                0 => write_attr(g.compute, buf, size, written),
                1 => write_attr(g.scale, buf, size, written),
                2 => write_attr(g.pointer_mode, buf, size, written),
                3 => write_attr(g.trans_a, buf, size, written),
                4 => write_attr(g.trans_b, buf, size, written),
                5 => write_attr(g.trans_c, buf, size, written),
                7 => write_attr(g.epilogue, buf, size, written),
                8 => write_attr(g.bias, buf, size, written),
                _ => bad(
                    Status::INVALID_VALUE,
                    format!("matmul desc attribute {attr} is not emulated"),
                ),
            }
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutCreate(
    l: *mut *mut c_void,
    ty: u32,
    rows: u64,
    cols: u64,
    ld: i64,
) -> Status {
    run("cublasLtMatrixLayoutCreate", || {
        let layout = Layout {
            ty,
            order: 0,
            rows,
            cols,
            ld,
            batch: 1,
            stride: 0,
        };
        let p = layouts().add(Arc::new(Mutex::new(layout)));
        unsafe { put(l, p as *mut c_void) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtMatrixLayoutDestroy(l: *mut c_void) -> Status {
    run("cublasLtMatrixLayoutDestroy", || {
        layouts().remove(l as usize);
        Ok(())
    })
}

/// # Safety
/// C caller: `buf` holds `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutSetAttribute(
    l: *mut c_void,
    attr: u32,
    buf: *const c_void,
    size: usize,
) -> Status {
    run("cublasLtMatrixLayoutSetAttribute", || {
        let layout = get(layouts(), l, "matrix layout")?;
        let mut g = layout.lock().map_err(|_| Status::INTERNAL_ERROR)?;
        unsafe {
            match attr {
                0 => g.ty = read_attr(buf, size)?,
                1 => g.order = read_attr(buf, size)?,
                2 => g.rows = read_attr(buf, size)?,
                3 => g.cols = read_attr(buf, size)?,
                4 => g.ld = read_attr(buf, size)?,
                5 => g.batch = read_attr(buf, size)?,
                6 => g.stride = read_attr(buf, size)?,
                _ => {
                    return bad(
                        Status::NOT_SUPPORTED,
                        format!("matrix layout attribute {attr} is not emulated"),
                    );
                }
            }
        }
        Ok(())
    })
}

/// # Safety
/// C caller: `buf` holds `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutGetAttribute(
    l: *mut c_void,
    attr: u32,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> Status {
    run("cublasLtMatrixLayoutGetAttribute", || {
        let layout = get(layouts(), l, "matrix layout")?;
        let g = *layout.lock().map_err(|_| Status::INTERNAL_ERROR)?;
        unsafe {
            match attr {
                0 => write_attr(g.ty, buf, size, written),
                1 => write_attr(g.order, buf, size, written),
                2 => write_attr(g.rows, buf, size, written),
                3 => write_attr(g.cols, buf, size, written),
                4 => write_attr(g.ld, buf, size, written),
                5 => write_attr(g.batch, buf, size, written),
                6 => write_attr(g.stride, buf, size, written),
                _ => bad(
                    Status::INVALID_VALUE,
                    format!("matrix layout attribute {attr} is not emulated"),
                ),
            }
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulPreferenceCreate(p: *mut *mut c_void) -> Status {
    run("cublasLtMatmulPreferenceCreate", || {
        let h = prefs().add(Arc::new(Mutex::new(Pref { max_workspace: 0 })));
        unsafe { put(p, h as *mut c_void) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cublasLtMatmulPreferenceDestroy(p: *mut c_void) -> Status {
    run("cublasLtMatmulPreferenceDestroy", || {
        prefs().remove(p as usize);
        Ok(())
    })
}

/// # Safety
/// C caller: `buf` holds `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulPreferenceSetAttribute(
    p: *mut c_void,
    attr: u32,
    buf: *const c_void,
    size: usize,
) -> Status {
    run("cublasLtMatmulPreferenceSetAttribute", || {
        let pref = get(prefs(), p, "matmul preference")?;
        let mut g = pref.lock().map_err(|_| Status::INTERNAL_ERROR)?;
        unsafe {
            match attr {
                1 => g.max_workspace = read_attr(buf, size)?,
                // Search mode, reduction schemes, minimum alignments, waves: constraints the
                // single algorithm here always meets.
                0 | 3 | 9 | 12 => {
                    read_attr::<u32>(buf, size)
                        .or_else(|_| read_attr::<u64>(buf, size).map(|_| 0))?;
                }
                5..=8 => {
                    read_attr::<u32>(buf, size)?;
                }
                _ => {
                    return bad(
                        Status::NOT_SUPPORTED,
                        format!("preference attribute {attr} is not emulated"),
                    );
                }
            }
        }
        Ok(())
    })
}

mod matmul;
pub use matmul::{HeuristicResult, cublasLtMatmul, cublasLtMatmulAlgoGetHeuristic};
