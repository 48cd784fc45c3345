//! The capture modes' reach across threads (cuThreadExchangeStreamCaptureMode's rules): a
//! global-mode capture forbids potentially unsafe calls on every thread whose own mode is
//! global, a thread-local one only on its own thread, and a thread in relaxed mode is never
//! stopped. A binary of its own: a global capture would stop other tests' allocations.

mod common;

use common::*;

#[test]
fn a_global_capture_reaches_other_threads_and_a_thread_local_one_does_not() {
    let ctx = primary(0) as usize;
    let s = stream();
    let alloc_elsewhere = move |relaxed: bool| {
        std::thread::spawn(move || {
            ok(cuCtxSetCurrent(ctx as H));
            if relaxed {
                let mut mode = 2u32;
                unsafe { ok(cuThreadExchangeStreamCaptureMode(&mut mode)) };
                assert_eq!(mode, 0, "threads start in global mode");
            }
            let mut p = 0u64;
            let r = unsafe { cuMemAlloc_v2(&mut p, 256) };
            if r == CUDA_SUCCESS {
                ok(cuMemFree_v2(p));
            }
            r
        })
        .join()
        .unwrap()
    };
    let mut g = std::ptr::null_mut();
    // Thread-local: another thread allocates freely.
    ok(cuStreamBeginCapture_v2(s, 1));
    assert_eq!(alloc_elsewhere(false), CUDA_SUCCESS);
    unsafe { ok(cuStreamEndCapture(s, &mut g)) };
    // Global: another global-mode thread is refused, and the capture is invalidated.
    ok(cuStreamBeginCapture_v2(s, 0));
    assert_eq!(
        alloc_elsewhere(false),
        CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    unsafe {
        assert_eq!(
            cuStreamEndCapture(s, &mut g),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        )
    };
    // Global, but the other thread switched itself to relaxed: allowed.
    ok(cuStreamBeginCapture_v2(s, 0));
    assert_eq!(alloc_elsewhere(true), CUDA_SUCCESS);
    unsafe { ok(cuStreamEndCapture(s, &mut g)) };
}
