//! The driver API as NVIDIA documents it: streams run in order and apart from the host,
//! events mark and time points in them, stream capture records instead of running and its
//! graphs replay, the calls capture forbids are refused, memory is bounded and checked,
//! launches are validated, and a kernel fault is reported (and sticks to its context).

mod common;

use std::ffi::c_void;

use common::*;

#[test]
fn saxpy_on_a_stream_with_events() {
    primary(0);
    let m = load(SAXPY).unwrap();
    let f = function(m, "saxpy");
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
    let (dx, dy) = (alloc(4 * n), alloc(4 * n));
    htod(dx, &f32s(&x));
    htod(dy, &f32s(&y));
    let s = stream();
    let (mut e0, mut e1) = (std::ptr::null_mut(), std::ptr::null_mut());
    unsafe {
        ok(cuEventCreate(&mut e0, 0));
        ok(cuEventCreate(&mut e1, 0));
    }
    ok(cuEventRecord(e0, s));
    ok(launch(
        f,
        [4, 1, 1],
        [256, 1, 1],
        0,
        s,
        &[P::U64(dx), P::U64(dy), P::F32(2.0), P::U32(n as u32)],
    ));
    ok(cuEventRecord(e1, s));
    ok(cuEventSynchronize(e1));
    ok(cuEventQuery(e1));
    let mut ms = -1.0f32;
    unsafe { ok(cuEventElapsedTime_v2(&mut ms, e0, e1)) };
    assert!(ms >= 0.0);
    let got = as_f32(&dtoh(dy, 4 * n));
    for i in 0..n {
        assert_eq!(got[i], 2.0f32.mul_add(x[i], y[i]), "element {i}");
    }
    // Timing needs both events recorded and timing on.
    let mut never = std::ptr::null_mut();
    let mut untimed = std::ptr::null_mut();
    unsafe {
        ok(cuEventCreate(&mut never, 0));
        ok(cuEventCreate(&mut untimed, 2));
        assert_eq!(
            cuEventElapsedTime_v2(&mut ms, e0, never),
            CUDA_ERROR_INVALID_HANDLE
        );
    }
    ok(cuEventRecord(untimed, s));
    ok(sync(s));
    unsafe {
        assert_eq!(
            cuEventElapsedTime_v2(&mut ms, e0, untimed),
            CUDA_ERROR_INVALID_HANDLE
        )
    };
    // A never-recorded event is complete; waiting on it is a no-op.
    ok(cuEventQuery(never));
    ok(cuStreamWaitEvent(s, never, 0));
    ok(cuStreamDestroy_v2(s));
}

/// A host function queued after a kernel sees its result.
#[test]
fn host_functions_run_in_stream_order() {
    primary(0);
    let m = load(SAXPY).unwrap();
    let f = function(m, "saxpy");
    let (dx, dy) = (alloc(4), alloc(4));
    htod(dx, &f32s(&[3.0]));
    htod(dy, &f32s(&[1.0]));
    let s = stream();
    let mut seen = [0f32; 1];
    struct Job {
        src: u64,
        out: *mut f32,
    }
    unsafe extern "C" fn read(p: *mut c_void) {
        // SAFETY: the Job below, alive until the stream is synchronized. Host functions may
        // not call CUDA, so the value is read straight from (host-addressable) memory the
        // kernel wrote.
        unsafe {
            let j = &*(p as *const Job);
            *j.out = *(j.src as *const f32);
        }
    }
    let job = Job {
        src: dy,
        out: seen.as_mut_ptr(),
    };
    ok(launch(
        f,
        [1, 1, 1],
        [32, 1, 1],
        0,
        s,
        &[P::U64(dx), P::U64(dy), P::F32(2.0), P::U32(1)],
    ));
    ok(cuLaunchHostFunc(
        s,
        Some(read),
        &job as *const Job as *mut c_void,
    ));
    ok(sync(s));
    assert_eq!(seen[0], 7.0);
}

#[test]
fn capture_records_and_a_graph_replays_with_new_inputs() {
    primary(0);
    let m = load(SAXPY).unwrap();
    let f = function(m, "saxpy");
    let n = 64;
    let (dx, dy, dz) = (alloc(4 * n), alloc(4 * n), alloc(4 * n));
    htod(dx, &f32s(&vec![1.0; n]));
    let s = stream();
    ok(cuStreamBeginCapture_v2(s, 1));
    let mut st = 9;
    unsafe { ok(cuStreamIsCapturing(s, &mut st)) };
    assert_eq!(st, 1);
    // y = 0; y = 3 x + y; z = y.
    ok(cuMemsetD32Async(dy, 0, n, s));
    ok(launch(
        f,
        [1, 1, 1],
        [64, 1, 1],
        0,
        s,
        &[P::U64(dx), P::U64(dy), P::F32(3.0), P::U32(n as u32)],
    ));
    ok(cuMemcpyDtoDAsync_v2(dz, dy, 4 * n, s));
    // Nothing ran: the work is in the graph.
    let mut g = std::ptr::null_mut();
    unsafe { ok(cuStreamEndCapture(s, &mut g)) };
    assert!(!g.is_null());
    assert_eq!(as_f32(&dtoh(dz, 4 * n))[0], 0.0);
    let mut e = std::ptr::null_mut();
    unsafe { ok(cuGraphInstantiateWithFlags(&mut e, g, 1)) };
    ok(cuGraphLaunch(e, s));
    ok(sync(s));
    assert!(as_f32(&dtoh(dz, 4 * n)).iter().all(|&v| v == 3.0));
    // The graph reads its inputs when it runs.
    htod(dx, &f32s(&vec![2.0; n]));
    ok(cuGraphLaunch(e, s));
    ok(cuGraphLaunch(e, s));
    ok(sync(s));
    assert!(as_f32(&dtoh(dz, 4 * n)).iter().all(|&v| v == 6.0));
    ok(cuGraphExecDestroy(e));
    ok(cuGraphDestroy(g));
}

#[test]
fn calls_capture_forbids_are_refused_and_invalidate_it() {
    primary(0);
    let s = stream();
    // Allocating during a thread-local capture on this thread.
    ok(cuStreamBeginCapture_v2(s, 1));
    let mut p = 0u64;
    unsafe {
        assert_eq!(
            cuMemAlloc_v2(&mut p, 256),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        )
    };
    let mut st = 0;
    unsafe { ok(cuStreamIsCapturing(s, &mut st)) };
    assert_eq!(st, 2, "invalidated");
    let mut g = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            cuStreamEndCapture(s, &mut g),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        )
    };
    assert!(g.is_null());
    // Synchronizing the capturing stream.
    ok(cuStreamBeginCapture_v2(s, 1));
    assert_eq!(sync(s), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    unsafe {
        assert_eq!(
            cuStreamEndCapture(s, &mut g),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        )
    };
    // Relaxed mode allows the allocation.
    ok(cuStreamBeginCapture_v2(s, 2));
    unsafe { ok(cuMemAlloc_v2(&mut p, 256)) };
    unsafe { ok(cuStreamEndCapture(s, &mut g)) };
    ok(cuMemFree_v2(p));
    // The legacy stream cannot be captured; a capture must end where it began, on its thread.
    // (Thread-local mode: a global capture would stop the other tests' allocations;
    // tests/capture_global.rs checks that in a binary of its own.)
    assert_eq!(
        cuStreamBeginCapture_v2(std::ptr::null_mut(), 1),
        CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    ok(cuStreamBeginCapture_v2(s, 1));
    let sh = s as usize;
    let ctx = primary(0) as usize;
    let other = std::thread::spawn(move || {
        ok(cuCtxSetCurrent(ctx as H));
        let mut g = std::ptr::null_mut();
        unsafe { cuStreamEndCapture(sh as H, &mut g) }
    })
    .join()
    .unwrap();
    assert_eq!(other, CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
    unsafe { ok(cuStreamEndCapture(s, &mut g)) };
}

#[test]
fn a_forked_stream_must_join_back_before_the_capture_ends() {
    primary(0);
    let m = load(SAXPY).unwrap();
    let f = function(m, "saxpy");
    let (a, b) = (stream(), stream());
    let (dx, dy) = (alloc(64), alloc(64));
    htod(dx, &f32s(&[1.0; 16]));
    htod(dy, &f32s(&[0.0; 16]));
    let ev = |flags| {
        let mut e = std::ptr::null_mut();
        unsafe { ok(cuEventCreate(&mut e, flags)) };
        e
    };
    let (fork, join) = (ev(2), ev(2));
    let args = [P::U64(dx), P::U64(dy), P::F32(1.0), P::U32(16)];
    // Fork b from a, work on both, join b into a: one graph with both streams' work.
    ok(cuStreamBeginCapture_v2(a, 1));
    ok(cuEventRecord(fork, a));
    ok(cuStreamWaitEvent(b, fork, 0));
    ok(launch(f, [1, 1, 1], [32, 1, 1], 0, b, &args));
    ok(cuEventRecord(join, b));
    ok(cuStreamWaitEvent(a, join, 0));
    ok(launch(f, [1, 1, 1], [32, 1, 1], 0, a, &args));
    let mut g = std::ptr::null_mut();
    unsafe { ok(cuStreamEndCapture(a, &mut g)) };
    let mut e = std::ptr::null_mut();
    unsafe { ok(cuGraphInstantiateWithFlags(&mut e, g, 0)) };
    ok(cuGraphLaunch(e, a));
    ok(sync(a));
    assert_eq!(as_f32(&dtoh(dy, 64))[0], 2.0);
    // Without the join: the capture ends in error.
    ok(cuStreamBeginCapture_v2(a, 1));
    ok(cuEventRecord(fork, a));
    ok(cuStreamWaitEvent(b, fork, 0));
    ok(launch(f, [1, 1, 1], [32, 1, 1], 0, b, &args));
    unsafe {
        assert_eq!(
            cuStreamEndCapture(a, &mut g),
            CUDA_ERROR_STREAM_CAPTURE_UNJOINED
        )
    };
    // A captured stream may not wait on work outside its capture.
    let outside = ev(0);
    ok(cuEventRecord(outside, b));
    ok(cuStreamBeginCapture_v2(a, 1));
    assert_eq!(
        cuStreamWaitEvent(a, outside, 0),
        CUDA_ERROR_STREAM_CAPTURE_ISOLATION
    );
    unsafe {
        assert_eq!(
            cuStreamEndCapture(a, &mut g),
            CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        )
    };
}

#[test]
fn memory_is_bounded_by_the_configured_size() {
    primary(1);
    let (mut free, mut total) = (0usize, 0usize);
    unsafe { ok(cuMemGetInfo_v2(&mut free, &mut total)) };
    assert_eq!(total, 1 << 30);
    let mut p = 0u64;
    unsafe { assert_eq!(cuMemAlloc_v2(&mut p, total + 1), CUDA_ERROR_OUT_OF_MEMORY) };
    unsafe { assert_eq!(cuMemAlloc_v2(&mut p, 0), CUDA_ERROR_INVALID_VALUE) };
    let big = alloc(256 << 20);
    let mut after = 0usize;
    unsafe { ok(cuMemGetInfo_v2(&mut after, &mut total)) };
    assert_eq!(free - after, 256 << 20);
    // Allocations are at least 256-byte aligned and never overlap.
    let small = alloc(1);
    assert_eq!(small % 256, 0);
    let (mut base, mut size) = (0u64, 0usize);
    unsafe { ok(cuMemGetAddressRange_v2(&mut base, &mut size, big + 1000)) };
    assert_eq!((base, size), (big, 256 << 20));
    ok(cuMemFree_v2(big));
    ok(cuMemFree_v2(small));
    assert_eq!(cuMemFree_v2(small), CUDA_ERROR_INVALID_VALUE, "double free");
    unsafe { ok(cuMemGetInfo_v2(&mut after, &mut total)) };
    assert_eq!(after, free);
}

#[test]
fn copies_and_memsets_in_every_form() {
    primary(0);
    let s = stream();
    let d = alloc(64);
    // Pinned memory: asynchronous copies, complete after a sync.
    let mut pinned = std::ptr::null_mut();
    unsafe { ok(cuMemHostAlloc(&mut pinned, 64, 0)) };
    ok(cuMemsetD32Async(d, 0x0102_0304, 16, s));
    unsafe { ok(cuMemcpyDtoHAsync_v2(pinned, d, 64, s)) };
    ok(sync(s));
    let got = unsafe { std::slice::from_raw_parts(pinned as *const u32, 16) };
    assert!(got.iter().all(|&v| v == 0x0102_0304));
    ok(cuMemsetD16_v2(d, 0xabcd, 32));
    assert!(dtoh(d, 64).chunks(2).all(|c| c == [0xcd, 0xab]));
    ok(cuMemsetD8_v2(d + 3, 7, 5));
    assert_eq!(dtoh(d, 10), [0xcd, 0xab, 0xcd, 7, 7, 7, 7, 7, 0xcd, 0xab]);
    assert_eq!(
        cuMemsetD32_v2(d + 2, 0, 1),
        CUDA_ERROR_INVALID_VALUE,
        "misaligned D32"
    );
    // A 2D copy of a 3 x 4-byte block between pitched buffers.
    htod(d, &(0u8..64).collect::<Vec<_>>());
    let e = alloc(64);
    htod(e, &[0u8; 64]);
    let p = Memcpy2D {
        src_x: 1,
        src_y: 1,
        src_type: 2,
        src_host: std::ptr::null(),
        src_device: d,
        src_array: std::ptr::null_mut(),
        src_pitch: 16,
        dst_x: 0,
        dst_y: 0,
        dst_type: 2,
        dst_host: std::ptr::null_mut(),
        dst_device: e,
        dst_array: std::ptr::null_mut(),
        dst_pitch: 8,
        width: 4,
        height: 3,
    };
    unsafe { ok(cuMemcpy2DAsync_v2(&p, s)) };
    ok(sync(s));
    let out = dtoh(e, 24);
    assert_eq!(&out[0..4], &[17, 18, 19, 20]);
    assert_eq!(&out[8..12], &[33, 34, 35, 36]);
    assert_eq!(&out[16..20], &[49, 50, 51, 52]);
    assert_eq!(&out[4..8], &[0; 4]);
    let bad = Memcpy2D { width: 17, ..p };
    unsafe { assert_eq!(cuMemcpy2DAsync_v2(&bad, s), CUDA_ERROR_INVALID_VALUE) };
    // Copies from or to a range no allocation holds are refused at the call.
    let buf = [0u8; 8];
    unsafe {
        assert_eq!(
            cuMemcpyHtoD_v2(e + 60, buf.as_ptr() as *const c_void, 8),
            CUDA_ERROR_INVALID_VALUE
        );
    }
    ok(cuMemFreeHost(pinned));
}

#[test]
fn launches_outside_the_device_limits_are_refused() {
    primary(0);
    let m = load(SAXPY).unwrap();
    let f = function(m, "saxpy");
    let d = alloc(4);
    let args = [P::U64(d), P::U64(d), P::F32(1.0), P::U32(1)];
    let s = stream();
    assert_eq!(
        launch(f, [1, 1, 1], [1025, 1, 1], 0, s, &args),
        CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(
        launch(f, [1, 1, 1], [32, 32, 2], 0, s, &args),
        CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(
        launch(f, [0, 1, 1], [32, 1, 1], 0, s, &args),
        CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(
        launch(f, [1, 65536, 1], [32, 1, 1], 0, s, &args),
        CUDA_ERROR_INVALID_VALUE
    );
    // Dynamic shared memory past 48 KiB needs the opt-in attribute, and stops at 227 KiB.
    assert_eq!(
        launch(f, [1, 1, 1], [32, 1, 1], 64 << 10, s, &args),
        CUDA_ERROR_INVALID_VALUE
    );
    ok(cuFuncSetAttribute(f, 8, 64 << 10));
    ok(launch(f, [1, 1, 1], [32, 1, 1], 64 << 10, s, &args));
    assert_eq!(
        cuFuncSetAttribute(f, 8, 228 << 10),
        CUDA_ERROR_INVALID_VALUE
    );
    // Missing parameters.
    unsafe {
        assert_eq!(
            cuLaunchKernel(
                f,
                1,
                1,
                1,
                32,
                1,
                1,
                0,
                s,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            CUDA_ERROR_INVALID_VALUE
        );
    }
    ok(sync(s));
}

#[test]
fn a_stream_of_another_context_is_refused() {
    let a = own_context(0);
    let s = stream();
    let b = own_context(0);
    ok(cuCtxSetCurrent(b));
    assert_eq!(sync(s), CUDA_ERROR_INVALID_CONTEXT);
    ok(cuCtxSetCurrent(a));
    ok(sync(s));
    ok(cuCtxDestroy_v2(b));
    ok(cuCtxDestroy_v2(a));
}

#[test]
fn unknown_instructions_and_bad_ptx_are_refused_at_load() {
    primary(0);
    let unknown = SAXPY.replace(
        "fma.rn.f32 %f4, %f1, %f2, %f3;",
        "fma.rn.f32 %f4, %f1, %f2, %f3;\n    frobnicate.b32 %r1, %r2;",
    );
    assert_eq!(load(&unknown).unwrap_err(), CUDA_ERROR_NOT_SUPPORTED);
    let broken = SAXPY.replace("ld.param.u64 %rd1, [px];", "ld.param.u64 %rd1, [px;");
    assert_eq!(load(&broken).unwrap_err(), CUDA_ERROR_INVALID_PTX);
    let newer = SAXPY.replace(".target sm_80", ".target sm_100");
    assert_eq!(load(&newer).unwrap_err(), CUDA_ERROR_INVALID_PTX);
    let m = load(SAXPY).unwrap();
    let mut f = std::ptr::null_mut();
    let name = std::ffi::CString::new("nope").unwrap();
    unsafe {
        assert_eq!(
            cuModuleGetFunction(&mut f, m, name.as_ptr()),
            CUDA_ERROR_NOT_FOUND
        )
    };
}

const OOB: &str = r#"
.version 9.0
.target sm_80
.address_size 64
.visible .entry oob(.param .u64 p, .param .u32 n)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    mov.u32 %r2, 7;
    st.global.u32 [%rd3], %r2;
    ret;
}
"#;

#[test]
fn an_out_of_bounds_write_is_an_illegal_address_that_sticks_to_its_context() {
    let c = own_context(0);
    let m = load(OOB).unwrap();
    let f = function(m, "oob");
    let d = alloc(64);
    let s = stream();
    // In bounds: fine.
    ok(launch(
        f,
        [1, 1, 1],
        [1, 1, 1],
        0,
        s,
        &[P::U64(d), P::U32(15)],
    ));
    ok(sync(s));
    // One element past the end: the launch queues, the fault surfaces at the sync, and the
    // context stays broken, as a GPU's does.
    ok(launch(
        f,
        [1, 1, 1],
        [1, 1, 1],
        0,
        s,
        &[P::U64(d), P::U32(16)],
    ));
    assert_eq!(sync(s), CUDA_ERROR_ILLEGAL_ADDRESS);
    assert_eq!(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    let mut p = 0u64;
    unsafe { assert_eq!(cuMemAlloc_v2(&mut p, 16), CUDA_ERROR_ILLEGAL_ADDRESS) };
    ok(cuCtxDestroy_v2(c));
    // Other contexts are unaffected.
    primary(0);
    let d = alloc(64);
    htod(d, &[1u8; 64]);
    assert_eq!(dtoh(d, 4), [1, 1, 1, 1]);
}

#[test]
fn a_kernel_reading_freed_memory_faults() {
    let c = own_context(1);
    let m = load(OOB).unwrap();
    let f = function(m, "oob");
    let d = alloc(64);
    ok(cuMemFree_v2(d));
    let s = stream();
    ok(launch(
        f,
        [1, 1, 1],
        [1, 1, 1],
        0,
        s,
        &[P::U64(d), P::U32(0)],
    ));
    assert_eq!(sync(s), CUDA_ERROR_ILLEGAL_ADDRESS);
    ok(cuCtxDestroy_v2(c));
}

#[test]
fn a_barrier_that_cannot_complete_fails_the_launch() {
    let c = own_context(0);
    // Warp 0 waits at barrier 0, warp 1 at barrier 1: neither completes.
    let ptx = r#"
.version 9.0
.target sm_80
.address_size 64
.visible .entry stuck()
{
    .reg .pred %p<2>;
    .reg .b32 %r<2>;
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 32;
    @%p1 bra FIRST;
    bar.sync 1;
    ret;
FIRST:
    bar.sync 0;
    ret;
}
"#;
    let m = load(ptx).unwrap();
    let f = function(m, "stuck");
    let s = stream();
    ok(launch(f, [1, 1, 1], [64, 1, 1], 0, s, &[]));
    assert_eq!(sync(s), CUDA_ERROR_LAUNCH_FAILED);
    ok(cuCtxDestroy_v2(c));
}

#[test]
fn error_names_and_strings() {
    let mut p = std::ptr::null();
    unsafe {
        ok(cuGetErrorName(700, &mut p));
        assert_eq!(
            std::ffi::CStr::from_ptr(p).to_str().unwrap(),
            "CUDA_ERROR_ILLEGAL_ADDRESS"
        );
        ok(cuGetErrorString(2, &mut p));
        assert_eq!(
            std::ffi::CStr::from_ptr(p).to_str().unwrap(),
            "out of memory"
        );
        assert_eq!(cuGetErrorString(123_456, &mut p), CUDA_ERROR_INVALID_VALUE);
        assert!(p.is_null());
    }
}

#[test]
fn devices_report_an_h100_class_sm90() {
    init();
    let mut n = 0;
    unsafe { ok(cuDeviceGetCount(&mut n)) };
    assert_eq!(n, 2);
    let attr = |a| {
        let mut v = 0;
        unsafe { ok(cuDeviceGetAttribute(&mut v, a, 1)) };
        v
    };
    assert_eq!((attr(75), attr(76)), (9, 0), "compute capability");
    assert_eq!(attr(16), 132, "SMs");
    assert_eq!(attr(1), 1024);
    let mut v = 0;
    unsafe {
        assert_eq!(
            cuDeviceGetAttribute(&mut v, 9999, 0),
            CUDA_ERROR_INVALID_VALUE
        )
    };
    let mut d = 0;
    unsafe { assert_eq!(cuDeviceGet(&mut d, 2), CUDA_ERROR_INVALID_DEVICE) };
}
