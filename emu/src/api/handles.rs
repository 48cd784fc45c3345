//! Resolving the handles C passes in: streams (0 and CU_STREAM_LEGACY are the current context's
//! legacy stream) and contexts, each checked.

use std::ffi::c_void;
use std::sync::Arc;

use crate::device::context::{Context, contexts, current};
use crate::device::graph::blocking_capture_in;
use crate::device::stream::{Stream, streams};
use crate::device::{self, CUresult, CuResult, fail};

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
