//! The C entry points: the CUDA driver API (driver, context, memory, copy, stream, graph,
//! launch), cuBLASLt (cublaslt) and NCCL (nccl). Each validates its handles and pointers, calls into device/, and
//! turns the outcome into the library's status code; a panic never crosses into C.

pub mod context;
pub mod copy;
pub mod cublaslt;
pub mod driver;
pub mod errors;
pub mod graph;
mod handles;
pub mod launch;
pub mod memory;
pub mod nccl;
pub mod stream;

pub(crate) use handles::{context_of, stream_of};

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::device::{CUresult, CuResult, log};

/// Runs a driver entry point's body, turning its result (or a panic) into a CUresult.
pub(crate) fn run(name: &str, f: impl FnOnce() -> CuResult<()>) -> CUresult {
    guarded(
        name,
        CUresult::CUDA_SUCCESS,
        CUresult::CUDA_ERROR_UNKNOWN,
        f,
    )
}

/// Runs an entry point's body (of any of the three libraries) to its status code: `ok`, the
/// body's error, or `internal` for a panic, which must not unwind into C.
pub(crate) fn guarded<S>(name: &str, ok: S, internal: S, f: impl FnOnce() -> Result<(), S>) -> S {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ok,
        Ok(Err(e)) => e,
        Err(_) => {
            log(format_args!(
                "{name}: internal error (a panic in the emulator)"
            ));
            internal
        }
    }
}

/// Writes an out-parameter, refusing a null pointer.
///
/// # Safety
/// `p` must be null or valid for a write of T.
pub(crate) unsafe fn out<T>(p: *mut T, v: T, what: &str) -> CuResult<()> {
    if p.is_null() {
        return crate::device::fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("{what}: null output pointer"),
        );
    }
    // SAFETY: the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}
