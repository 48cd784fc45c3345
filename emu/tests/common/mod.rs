//! The driver API as a C program calls it, wrapped for the tests: every call checked, with
//! the few values a test needs returned. Tests in one binary share the process's driver,
//! initialized once with two devices of 1 GiB.
#![allow(dead_code)]

use std::ffi::c_void;
use std::sync::Once;

// Each test binary uses some of these (the driver API a C program sees).
#[allow(unused_imports)]
pub use tandem_emu::api::{
    context::*, copy::*, driver::*, errors::*, graph::*, launch::*, memory::*, stream::*,
};
pub use tandem_emu::device::CUresult;
pub use tandem_emu::device::CUresult::*;

pub type H = *mut c_void;

/// Initializes the driver (2 devices, 1 GiB each) once per process.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: set before any thread reads the environment (the driver reads it once, here).
        unsafe {
            std::env::set_var("TANDEM_EMU_DEVICES", "2");
            std::env::set_var("TANDEM_EMU_MEMORY_GIB", "1");
            std::env::set_var("TANDEM_EMU_NCCL_TIMEOUT_S", "3");
        }
        ok(cuInit(0));
    });
}

#[track_caller]
pub fn ok(r: CUresult) {
    assert_eq!(r, CUDA_SUCCESS);
}

/// Device `d`'s primary context, made current on this thread.
pub fn primary(d: i32) -> H {
    init();
    let mut c = std::ptr::null_mut();
    unsafe { ok(cuDevicePrimaryCtxRetain(&mut c, d)) };
    ok(cuCtxSetCurrent(c));
    c
}

/// A fresh context of its own on device `d` (current on this thread): faults there leave the
/// primary context, which other tests share, usable.
pub fn own_context(d: i32) -> H {
    init();
    let mut c = std::ptr::null_mut();
    unsafe { ok(cuCtxCreate_v4(&mut c, std::ptr::null_mut(), 0, d)) };
    c
}

pub fn alloc(n: usize) -> u64 {
    let mut p = 0;
    unsafe { ok(cuMemAlloc_v2(&mut p, n)) };
    p
}

pub fn htod(d: u64, b: &[u8]) {
    unsafe { ok(cuMemcpyHtoD_v2(d, b.as_ptr() as *const c_void, b.len())) };
}

pub fn dtoh(s: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    unsafe { ok(cuMemcpyDtoH_v2(v.as_mut_ptr() as *mut c_void, s, n)) };
    v
}

pub fn stream() -> H {
    let mut s = std::ptr::null_mut();
    unsafe { ok(cuStreamCreate(&mut s, 1)) };
    s
}

/// Loads PTX text (NUL-terminated here).
pub fn load(ptx: &str) -> Result<H, CUresult> {
    let mut text = ptx.as_bytes().to_vec();
    text.push(0);
    let mut m = std::ptr::null_mut();
    match unsafe { cuModuleLoadData(&mut m, text.as_ptr() as *const c_void) } {
        CUDA_SUCCESS => Ok(m),
        e => Err(e),
    }
}

pub fn function(m: H, name: &str) -> H {
    let mut f = std::ptr::null_mut();
    let n = std::ffi::CString::new(name).unwrap();
    unsafe { ok(cuModuleGetFunction(&mut f, m, n.as_ptr())) };
    f
}

/// A kernel argument's bytes.
pub enum P {
    U32(u32),
    U64(u64),
    F32(f32),
}

/// cuLaunchKernel with kernelParams built from `args`.
pub fn launch(f: H, grid: [u32; 3], block: [u32; 3], shared: u32, s: H, args: &[P]) -> CUresult {
    let mut vals: Vec<[u8; 8]> = args
        .iter()
        .map(|a| {
            let mut b = [0u8; 8];
            match a {
                P::U32(v) => b[..4].copy_from_slice(&v.to_le_bytes()),
                P::U64(v) => b.copy_from_slice(&v.to_le_bytes()),
                P::F32(v) => b[..4].copy_from_slice(&v.to_le_bytes()),
            }
            b
        })
        .collect();
    let mut ptrs: Vec<*mut c_void> = vals
        .iter_mut()
        .map(|v| v.as_mut_ptr() as *mut c_void)
        .collect();
    unsafe {
        cuLaunchKernel(
            f,
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            shared,
            s,
            ptrs.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
}

pub fn sync(s: H) -> CUresult {
    cuStreamSynchronize(s)
}

pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn as_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn as_u32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `y[i] = a * x[i] + y[i]` for i < n: the kernel most tests run.
pub const SAXPY: &str = r#"
.version 9.0
.target sm_80
.address_size 64

.visible .entry saxpy(.param .u64 px, .param .u64 py, .param .f32 a, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<5>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    ld.param.f32 %f1, [a];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mad.lo.s32 %r5, %r3, %r4, %r2;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd1, %rd3;
    add.s64 %rd5, %rd2, %rd3;
    ld.global.f32 %f2, [%rd4];
    ld.global.f32 %f3, [%rd5];
    fma.rn.f32 %f4, %f1, %f2, %f3;
    st.global.f32 [%rd5], %f4;
DONE:
    ret;
}
"#;
