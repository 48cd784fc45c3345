//! bf16 GEMMs through cuBLASLt: `out [n, m] = x [n, k] * w [m, k]^T`, f32 accumulation.
//!
//! Row-major `out = x w^T` is column-major `out^T = w^T x^T` with w read transposed, so
//! cuBLASLt sees A = w (k x m, op T), B = x (k x n), C = out^T (m x n). Plans (descriptors
//! and the heuristic's algorithm) are cached for decode-sized n, where their set-up cost
//! would otherwise show; prefill shapes are planned per call.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;

use super::device::{Device, DeviceMem, cuda_err};
use crate::error::Result;

/// Hopper's recommended cuBLASLt workspace.
const WORKSPACE_BYTES: usize = 32 << 20;
/// Largest n (tokens) whose plan is kept.
const CACHE_MAX_N: usize = 512;

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each handle was created by Plan::new and is destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, m: usize, n: usize, k: usize) -> Result<Self> {
        let bf16 = sys::cudaDataType_t::CUDA_R_16BF;
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(cuda_err("matmul desc"))?;
        // Built field by field so that a failure drops (destroys) what exists so far.
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            // SAFETY: a plain C struct of integers; overwritten by the heuristic below.
            algo: unsafe { std::mem::zeroed() },
        };
        let trans: i32 = 1; // CUBLAS_OP_T
        // SAFETY: desc is live; the attribute is an int32 cublasOperation_t.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&trans) as *const i32 as *const c_void,
                std::mem::size_of::<i32>(),
            )
        }
        .map_err(cuda_err("transpose A"))?;
        plan.a = lt::create_matrix_layout(bf16, k as u64, m as u64, k as i64)
            .map_err(cuda_err("layout A"))?;
        plan.b = lt::create_matrix_layout(bf16, k as u64, n as u64, k as i64)
            .map_err(cuda_err("layout B"))?;
        plan.c = lt::create_matrix_layout(bf16, m as u64, n as u64, m as i64)
            .map_err(cuda_err("layout C"))?;
        let pref = lt::create_matmul_pref().map_err(cuda_err("matmul preference"))?;
        let ws = WORKSPACE_BYTES;
        // SAFETY: pref is live; the attribute is a size_t.
        let heuristic = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws) as *const usize as *const c_void,
                std::mem::size_of::<usize>(),
            )
            .and_then(|_| {
                lt::get_matmul_algo_heuristic(handle, desc, plan.a, plan.b, plan.c, plan.c, pref)
            })
        };
        // SAFETY: pref is not used after this.
        unsafe {
            let _ = lt::destroy_matmul_pref(pref);
        }
        plan.algo = heuristic
            .map_err(|e| {
                crate::error::Error::Backend(format!(
                    "cuBLASLt has no bf16 algorithm for m={m} n={n} k={k}: {e:?}"
                ))
            })?
            .algo;
        Ok(plan)
    }
}

/// A cuBLASLt handle with its workspace and plan cache.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceMem,
    plans: Mutex<HashMap<(usize, usize, usize), Plan>>,
}

// SAFETY: the handle and plans are only used by the rank that owns the backend, one call at a
// time (the plan cache is behind a mutex); cuBLASLt handles may move between threads.
unsafe impl Send for Gemm {}

impl Drop for Gemm {
    fn drop(&mut self) {
        if let Ok(mut p) = self.plans.lock() {
            p.clear();
        }
        // SAFETY: created in Gemm::new, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl Gemm {
    /// A handle on `dev`'s context.
    pub fn new(dev: &Device) -> Result<Self> {
        dev.bind()?;
        let handle = lt::create_handle().map_err(cuda_err("cuBLASLt handle"))?;
        let workspace = dev.alloc_owned(WORKSPACE_BYTES)?;
        Ok(Gemm {
            handle,
            workspace,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// `out [n, m] = x [n, k] * w [m, k]^T`, all bf16 row-major, on `dev`'s stream.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        dev: &Device,
        out: u64,
        x: u64,
        w: u64,
        n: usize,
        m: usize,
        k: usize,
    ) -> Result<()> {
        if n == 0 || m == 0 || dev.is_dry() {
            return Ok(());
        }
        if n > CACHE_MAX_N {
            let plan = Plan::new(self.handle, m, n, k)?;
            return self.run(dev, &plan, out, x, w);
        }
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| crate::error::Error::Backend("GEMM plan cache poisoned".into()))?;
        let plan = match plans.entry((m, n, k)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Plan::new(self.handle, m, n, k)?)
            }
        };
        self.run(dev, plan, out, x, w)
    }

    fn run(&self, dev: &Device, plan: &Plan, out: u64, x: u64, w: u64) -> Result<()> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the plan's layouts describe w, x and out, which the caller sized; the
        // workspace is WORKSPACE_BYTES as the plan was told.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                w as *const c_void,
                plan.a,
                x as *const c_void,
                plan.b,
                out as *const c_void,
                plan.c,
                out as *mut c_void,
                plan.c,
                &plan.algo,
                self.workspace.ptr() as *mut c_void,
                self.workspace.bytes(),
                dev.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(cuda_err("cuBLASLt matmul"))
    }
}
