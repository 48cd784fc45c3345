//! NCCL's collectives as its documentation defines them, across the two emulated devices
//! with one thread per rank: all-reduce (every op, in place or not), all-gather (rank-major),
//! broadcast, reduce, reduce-scatter; identical results on every rank; collectives captured
//! into graphs; and the failures NCCL hangs on (mismatched collectives, a missing rank)
//! reported instead.

mod common;

use std::ffi::c_void;

use common::*;
use tandem_emu::api::nccl::*;

const FLOAT: i32 = 7;
const BF16: i32 = 9;
const INT32: i32 = 2;

fn comms() -> [usize; 2] {
    init();
    let mut c = [std::ptr::null_mut(); 2];
    unsafe {
        assert_eq!(
            ncclCommInitAll(c.as_mut_ptr(), 2, std::ptr::null()),
            NcclResult::ncclSuccess
        )
    };
    [c[0] as usize, c[1] as usize]
}

/// Runs `f(rank, comm)` on one thread per rank, each with its device's context current.
fn on_ranks<T: Send + 'static>(c: [usize; 2], f: fn(usize, H) -> T) -> Vec<T> {
    let hs: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                primary(r as i32);
                f(r, c[r] as H)
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_of_every_op_is_identical_on_every_rank() {
    let c = comms();
    let out = on_ranks(c, |r, comm| {
        let x: Vec<f32> = (0..100)
            .map(|i| i as f32 * (r as f32 + 1.0) - 7.0)
            .collect();
        let s = stream();
        let mut res = Vec::new();
        for op in 0..5 {
            let (send, recv) = (alloc(400), alloc(400));
            htod(send, &f32s(&x));
            let st = ncclAllReduce(
                send as *const c_void,
                recv as *mut c_void,
                100,
                FLOAT,
                op,
                comm,
                s,
            );
            assert_eq!(st, NcclResult::ncclSuccess);
            ok(sync(s));
            res.push(as_f32(&dtoh(recv, 400)));
        }
        // In place, bf16 and int32.
        let buf = alloc(200);
        let b: Vec<u8> = (0..100)
            .flat_map(|i| half::bf16::from_f32(i as f32 * 0.5 + r as f32).to_le_bytes())
            .collect();
        htod(buf, &b);
        assert_eq!(
            ncclAllReduce(
                buf as *const c_void,
                buf as *mut c_void,
                100,
                BF16,
                0,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );
        let ib = alloc(400);
        htod(
            ib,
            &u32s(
                &(0..100)
                    .map(|i| (i - 50 + r as i32) as u32)
                    .collect::<Vec<_>>(),
            ),
        );
        assert_eq!(
            ncclAllReduce(
                ib as *const c_void,
                ib as *mut c_void,
                100,
                INT32,
                3,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );
        ok(sync(s));
        let bf: Vec<f32> = dtoh(buf, 200)
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let iv: Vec<i32> = as_u32(&dtoh(ib, 400))
            .into_iter()
            .map(|v| v as i32)
            .collect();
        (res, bf, iv)
    });
    assert_eq!(out[0], out[1], "every rank holds the same results");
    let (res, bf, iv) = &out[0];
    for i in 0..100 {
        let (a, b) = (i as f32 - 7.0, i as f32 * 2.0 - 7.0);
        assert_eq!(res[0][i], a + b, "sum");
        assert_eq!(res[1][i], a * b, "prod");
        assert_eq!(res[2][i], a.max(b), "max");
        assert_eq!(res[3][i], a.min(b), "min");
        assert_eq!(res[4][i], (a + b) / 2.0, "avg");
        assert_eq!(
            bf[i],
            half::bf16::from_f32(i as f32 + 1.0).to_f32(),
            "bf16 sum"
        );
        assert_eq!(iv[i], i as i32 - 50, "int32 min");
    }
}

#[test]
fn gathers_broadcasts_and_scatters() {
    let c = comms();
    let out = on_ranks(c, |r, comm| {
        let s = stream();
        let mine: Vec<f32> = (0..4).map(|i| (10 * r + i) as f32).collect();
        let send = alloc(16);
        htod(send, &f32s(&mine));
        let gathered = alloc(32);
        assert_eq!(
            ncclAllGather(
                send as *const c_void,
                gathered as *mut c_void,
                4,
                FLOAT,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );

        let root = alloc(16);
        assert_eq!(
            ncclBroadcast(
                send as *const c_void,
                root as *mut c_void,
                4,
                FLOAT,
                1,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );

        let two: Vec<f32> = (0..8).map(|i| (i * (r + 1)) as f32).collect();
        let big = alloc(32);
        htod(big, &f32s(&two));
        let part = alloc(16);
        assert_eq!(
            ncclReduceScatter(
                big as *const c_void,
                part as *mut c_void,
                4,
                FLOAT,
                0,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );

        let red = alloc(16);
        htod(red, &f32s(&[-1.0; 4]));
        assert_eq!(
            ncclReduce(
                send as *const c_void,
                red as *mut c_void,
                4,
                FLOAT,
                0,
                0,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );

        ok(sync(s));
        (
            as_f32(&dtoh(gathered, 32)),
            as_f32(&dtoh(root, 16)),
            as_f32(&dtoh(part, 16)),
            as_f32(&dtoh(red, 16)),
        )
    });
    for (r, (g, b, p, red)) in out.iter().enumerate() {
        assert_eq!(
            *g,
            [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0],
            "all-gather, rank-major"
        );
        assert_eq!(*b, [10.0, 11.0, 12.0, 13.0], "broadcast from rank 1");
        let want: Vec<f32> = (0..4).map(|i| ((4 * r + i) * 3) as f32).collect();
        assert_eq!(*p, want, "reduce-scatter block {r}");
        if r == 0 {
            assert_eq!(*red, [10.0, 12.0, 14.0, 16.0], "reduce to rank 0");
        } else {
            assert_eq!(*red, [-1.0; 4], "reduce leaves non-roots alone");
        }
    }
}

#[test]
fn captured_collectives_replay_on_every_launch() {
    let c = comms();
    let out = on_ranks(c, |r, comm| {
        let s = stream();
        let buf = alloc(16);
        ok(cuStreamBeginCapture_v2(s, 1));
        assert_eq!(
            ncclAllReduce(
                buf as *const c_void,
                buf as *mut c_void,
                4,
                FLOAT,
                0,
                comm,
                s
            ),
            NcclResult::ncclSuccess
        );
        let mut g = std::ptr::null_mut();
        let mut e = std::ptr::null_mut();
        unsafe {
            ok(cuStreamEndCapture(s, &mut g));
            ok(cuGraphInstantiateWithFlags(&mut e, g, 0));
        }
        let mut seen = Vec::new();
        for round in 0..3 {
            htod(buf, &f32s(&[(round * 10 + r) as f32; 4]));
            ok(cuGraphLaunch(e, s));
            ok(sync(s));
            seen.push(as_f32(&dtoh(buf, 16))[0]);
        }
        seen
    });
    assert_eq!(out[0], [1.0, 21.0, 41.0]);
    assert_eq!(out[0], out[1]);
}

#[test]
fn mismatched_collectives_fail_instead_of_hanging() {
    // Rank 0 all-reduces while rank 1 all-gathers: NCCL would hang; here both launches fail.
    let c = comms();
    let out = on_ranks(c, |r, comm| {
        let ctx = own_context(r as i32);
        let s = stream();
        let buf = alloc(64);
        let st = if r == 0 {
            ncclAllReduce(
                buf as *const c_void,
                buf as *mut c_void,
                4,
                FLOAT,
                0,
                comm,
                s,
            )
        } else {
            ncclAllGather(
                buf as *const c_void,
                (buf + 32) as *mut c_void,
                4,
                FLOAT,
                comm,
                s,
            )
        };
        assert_eq!(st, NcclResult::ncclSuccess, "queued");
        let r = sync(s);
        ok(cuCtxDestroy_v2(ctx));
        r
    });
    assert_eq!(out, [CUDA_ERROR_LAUNCH_FAILED, CUDA_ERROR_LAUNCH_FAILED]);
}

#[test]
fn a_rank_that_never_arrives_times_out() {
    let c = comms();
    // Only rank 0 calls; TANDEM_EMU_NCCL_TIMEOUT_S is 3 in these tests.
    let ctx = own_context(0);
    let s = stream();
    let buf = alloc(16);
    assert_eq!(
        ncclAllReduce(
            buf as *const c_void,
            buf as *mut c_void,
            4,
            FLOAT,
            0,
            c[0] as H,
            s
        ),
        NcclResult::ncclSuccess
    );
    assert_eq!(sync(s), CUDA_ERROR_LAUNCH_FAILED);
    ok(cuCtxDestroy_v2(ctx));
    // The communicator is dropped, not reused.
    assert_eq!(ncclCommDestroy(c[0] as H), NcclResult::ncclSuccess);
    assert_eq!(ncclCommDestroy(c[1] as H), NcclResult::ncclSuccess);
}
