//! Branching, divergence and reconvergence, special registers, and bar.sync, each from the
//! PTX ISA's definition (bra, ret, bar/barrier, "Special Registers").

use std::sync::mpsc;
use std::time::Duration;

use crate::exec::testing::*;

/// `launch`, failing the test instead of hanging if the launch never returns.
fn launch_within(
    secs: u64,
    ptx: &str,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &[Arg],
) -> Result<Vec<Vec<u8>>, String> {
    let (tx, rx) = mpsc::channel();
    let (ptx, name, args) = (ptx.to_string(), kernel.to_string(), args.to_vec());
    std::thread::spawn(move || {
        let _ = tx.send(launch(&ptx, &name, grid, block, &args));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(_) => panic!("launch of {kernel} did not return within {secs} s"),
    }
}

/// Per-thread u32 output: the body computes %r30 (linear tid in %r31) and stores it at
/// out[%r31].
fn per_thread(name: &str, body: &str) -> String {
    module(
        name,
        ".param .u64 pout",
        &format!(
            r#"
    .reg .pred %p<16>;
    .reg .b32 %r<40>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r31, %tid.x;
{body}
    mul.wide.u32 %rd2, %r31, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r30;
    ret;"#
        ),
    )
}

// ---------------------------------------------------------------- branches

/// Even lanes take one path, odd lanes the other; after the join a full-mask shfl.sync
/// (which waits for all 32 lanes) reads the partner's result.
#[test]
fn if_else_join() {
    let ptx = per_thread(
        "ifelse",
        r#"
    and.b32 %r2, %r31, 1;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 bra EVEN;
    mul.lo.u32 %r3, %r31, 3;
    bra.uni JOIN;
EVEN:
    add.u32 %r3, %r31, 1000;
JOIN:
    shfl.sync.bfly.b32 %r4, %r3, 1, 0x1f, 0xffffffff;
    shl.b32 %r5, %r4, 16;
    or.b32 %r30, %r5, %r3;"#,
    );
    let out = launch(
        &ptx,
        "ifelse",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let f = |i: u32| if i.is_multiple_of(2) { i + 1000 } else { i * 3 };
    let want: Vec<u32> = (0..64).map(|i| (f(i ^ 1) << 16) | f(i)).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// A loop whose trip count is the lane id: lanes leave at different iterations; the
/// butterfly reduction after the loop sees every lane's result.
#[test]
fn loop_divergent_trip_count() {
    let ptx = per_thread(
        "tripcount",
        r#"
    mov.u32 %r1, %laneid;
    mov.u32 %r2, 0;
    mov.u32 %r3, 0;
LOOP:
    setp.ge.u32 %p1, %r3, %r1;
    @%p1 bra END;
    add.u32 %r2, %r2, %r3;
    add.u32 %r3, %r3, 1;
    bra LOOP;
END:
    shfl.sync.bfly.b32 %r4, %r2, 16, 0x1f, 0xffffffff;
    mov.u32 %r5, %r2;
    shfl.sync.bfly.b32 %r6, %r5, 16, 0x1f, 0xffffffff;
    add.u32 %r5, %r5, %r6;
    shfl.sync.bfly.b32 %r6, %r5, 8, 0x1f, 0xffffffff;
    add.u32 %r5, %r5, %r6;
    shfl.sync.bfly.b32 %r6, %r5, 4, 0x1f, 0xffffffff;
    add.u32 %r5, %r5, %r6;
    shfl.sync.bfly.b32 %r6, %r5, 2, 0x1f, 0xffffffff;
    add.u32 %r5, %r5, %r6;
    shfl.sync.bfly.b32 %r6, %r5, 1, 0x1f, 0xffffffff;
    add.u32 %r5, %r5, %r6;
    shl.b32 %r7, %r5, 16;
    or.b32 %r30, %r7, %r4;"#,
    );
    let out = launch(
        &ptx,
        "tripcount",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let acc = |l: u32| l * l.saturating_sub(1) / 2;
    let total: u32 = (0..32).map(acc).sum();
    let want: Vec<u32> = (0..64)
        .map(|i| (total << 16) | acc((i % 32) ^ 16))
        .collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Two levels of divergence with `@!%p bra`, then a full-mask shfl.sync.idx.
#[test]
fn nested_divergence() {
    let ptx = per_thread(
        "nested",
        r#"
    mov.u32 %r1, %laneid;
    and.b32 %r2, %r1, 1;
    and.b32 %r3, %r1, 2;
    setp.ne.u32 %p1, %r2, 0;
    setp.ne.u32 %p2, %r3, 0;
    @%p1 bra A;
    @%p2 bra B;
    mov.u32 %r4, 1;
    bra J1;
B:
    mov.u32 %r4, 2;
J1:
    add.u32 %r4, %r4, 10;
    bra J0;
A:
    @!%p2 bra C;
    mov.u32 %r4, 3;
    bra J2;
C:
    mov.u32 %r4, 4;
J2:
    add.u32 %r4, %r4, 20;
J0:
    mov.u32 %r5, 31;
    sub.u32 %r6, %r5, %r1;
    shfl.sync.idx.b32 %r7, %r4, %r6, 0x1f, 0xffffffff;
    shl.b32 %r8, %r7, 8;
    or.b32 %r30, %r8, %r4;"#,
    );
    let out = launch(
        &ptx,
        "nested",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    let f = |l: u32| match (l & 1 != 0, l & 2 != 0) {
        (false, false) => 11,
        (false, true) => 12,
        (true, true) => 23,
        (true, false) => 24,
    };
    let want: Vec<u32> = (0..32).map(|l| (f(31 - l) << 8) | f(l)).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// bra.uni in a loop whose trip count is the same for every thread.
#[test]
fn bra_uni_loop() {
    let ptx = per_thread(
        "brauni",
        r#"
    mov.u32 %r2, 0;
    mov.u32 %r3, 0;
LOOP:
    add.u32 %r2, %r2, %r31;
    add.u32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, 5;
    @%p1 bra.uni LOOP;
    mov.u32 %r30, %r2;"#,
    );
    let out = launch(
        &ptx,
        "brauni",
        [1, 1, 1],
        [40, 1, 1],
        &[Arg::Buf(vec![0; 160])],
    )
    .unwrap();
    let want: Vec<u32> = (0..40).map(|i| i * 5).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Lanes with laneid % 3 == 0 return early; the rest keep going and a ballot over exactly
/// the remaining lanes sees them all.
#[test]
fn early_ret() {
    let ptx = module(
        "earlyret",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    rem.u32 %r2, %r1, 3;
    setp.eq.u32 %p1, %r2, 0;
    @!%p1 bra GO;
    mov.u32 %r3, 1;
    st.global.u32 [%rd3], %r3;
    ret;
GO:
    mov.u32 %r4, 0;
    mov.u32 %r5, 0;
LOOP:
    add.u32 %r4, %r4, %r1;
    add.u32 %r5, %r5, 1;
    setp.lt.u32 %p2, %r5, 4;
    @%p2 bra LOOP;
    vote.sync.ballot.b32 %r6, %p2, 0xb6db6db6;
    setp.ne.u32 %p3, %r4, 0;
    vote.sync.ballot.b32 %r7, %p3, 0xb6db6db6;
    xor.b32 %r8, %r7, %r6;
    add.u32 %r9, %r8, %r4;
    st.global.u32 [%rd3], %r9;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "earlyret",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    // Remaining lanes: not multiples of 3 -> mask 0xb6db6db6; all have %r4 = 4*lane != 0.
    let mask = (0..32u32)
        .filter(|l| l % 3 != 0)
        .fold(0u32, |m, l| m | (1 << l));
    assert_eq!(mask, 0xb6db_6db6);
    let want: Vec<u32> = (0..32)
        .map(|l| {
            if l % 3 == 0 {
                1
            } else {
                mask.wrapping_add(4 * l)
            }
        })
        .collect();
    assert_eq!(as_u32(&out[0]), want);
}

// ---------------------------------------------------------------- special registers

/// %tid, %ntid, %ctaid, %nctaid, %laneid, %warpid and %lanemask_* in a 3-D block and a
/// 2-D grid.
#[test]
fn special_registers() {
    let ptx = module(
        "sregs",
        ".param .u64 pout",
        r#"
    .reg .b32 %r<32>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    mov.u32 %r3, %tid.z;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %ntid.y;
    mov.u32 %r6, %ntid.z;
    mov.u32 %r7, %ctaid.x;
    mov.u32 %r8, %ctaid.y;
    mov.u32 %r9, %ctaid.z;
    mov.u32 %r10, %nctaid.x;
    mov.u32 %r11, %nctaid.y;
    mov.u32 %r12, %nctaid.z;
    mov.u32 %r13, %laneid;
    mov.u32 %r14, %warpid;
    mov.u32 %r15, %lanemask_eq;
    mov.u32 %r16, %lanemask_lt;
    mov.u32 %r17, %lanemask_le;
    mov.u32 %r18, %lanemask_gt;
    mov.u32 %r19, %lanemask_ge;
    mad.lo.u32 %r20, %r3, %r5, %r2;
    mad.lo.u32 %r20, %r20, %r4, %r1;
    mad.lo.u32 %r21, %r8, %r10, %r7;
    mul.lo.u32 %r22, %r4, %r5;
    mul.lo.u32 %r22, %r22, %r6;
    mad.lo.u32 %r23, %r21, %r22, %r20;
    mul.wide.u32 %rd2, %r23, 80;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r1, %r2, %r3, %r4};
    st.global.v4.u32 [%rd3+16], {%r5, %r6, %r7, %r8};
    st.global.v4.u32 [%rd3+32], {%r9, %r10, %r11, %r12};
    st.global.v4.u32 [%rd3+48], {%r13, %r14, %r15, %r16};
    st.global.v4.u32 [%rd3+64], {%r17, %r18, %r19, %r20};
    ret;"#,
    );
    let (grid, block) = ([3u32, 2, 1], [8u32, 4, 2]);
    let per_block = 64usize;
    let n = 6 * per_block;
    let out = launch(&ptx, "sregs", grid, block, &[Arg::Buf(vec![0xff; 80 * n])]).unwrap();
    let o = as_u32(&out[0]);
    for by in 0..2u32 {
        for bx in 0..3u32 {
            for z in 0..2u32 {
                for y in 0..4u32 {
                    for x in 0..8u32 {
                        let lin = x + 8 * y + 32 * z;
                        let idx = ((by * 3 + bx) * 64 + lin) as usize;
                        let lane = lin % 32;
                        let lt = (1u32 << lane) - 1;
                        let le = lt | (1 << lane);
                        let want = [
                            x,
                            y,
                            z,
                            8,
                            4,
                            2,
                            bx,
                            by,
                            0,
                            3,
                            2,
                            1,
                            lane,
                            lin / 32,
                            1 << lane,
                            lt,
                            le,
                            !le,
                            !lt,
                            lin,
                        ];
                        assert_eq!(
                            &o[idx * 20..idx * 20 + 20],
                            &want,
                            "block ({bx},{by}) thread ({x},{y},{z})"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- bar.sync

/// A block-wide tree reduction through shared memory over 8 warps, bar.sync 0 between
/// phases; 4 blocks each reduce their own slice.
#[test]
fn barrier_reduction() {
    let ptx = module(
        "reduce",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .shared .align 4 .b8 s[1024];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    shl.b32 %r3, %r2, 8;
    add.u32 %r3, %r3, %r1;
    mul.wide.u32 %rd3, %r3, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r4, [%rd4];
    mov.u32 %r5, s;
    shl.b32 %r6, %r1, 2;
    add.u32 %r7, %r5, %r6;
    st.shared.u32 [%r7], %r4;
    bar.sync 0;
    mov.u32 %r8, 128;
STEP:
    setp.ge.u32 %p1, %r1, %r8;
    @%p1 bra SKIP;
    shl.b32 %r9, %r8, 2;
    add.u32 %r10, %r7, %r9;
    ld.shared.u32 %r11, [%r10];
    ld.shared.u32 %r12, [%r7];
    add.u32 %r12, %r12, %r11;
    st.shared.u32 [%r7], %r12;
SKIP:
    bar.sync 0;
    shr.u32 %r8, %r8, 1;
    setp.ne.u32 %p2, %r8, 0;
    @%p2 bra STEP;
    setp.ne.u32 %p3, %r1, 0;
    @%p3 bra DONE;
    ld.shared.u32 %r13, [s];
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.u32 [%rd6], %r13;
DONE:
    ret;"#,
    );
    let mut x = 12345u32;
    let inp: Vec<u32> = (0..1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x >> 12
        })
        .collect();
    let out = launch(
        &ptx,
        "reduce",
        [4, 1, 1],
        [256, 1, 1],
        &[Arg::Buf(u32s(&inp)), Arg::Buf(vec![0; 16])],
    )
    .unwrap();
    let want: Vec<u32> = inp
        .chunks(256)
        .map(|c| c.iter().fold(0u32, |a, &v| a.wrapping_add(v)))
        .collect();
    assert_eq!(as_u32(&out[1]), want);
}

/// `bar.sync 1, 64`: warps 0 and 1 exchange data through barrier 1 while warps 2 and 3 use
/// barrier 2 with their own count; nobody waits for the whole block.
#[test]
fn barrier_with_count() {
    let ptx = module(
        "barcount",
        ".param .u64 pout",
        r#"
    .shared .align 4 .b8 s[512];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    mul.lo.u32 %r5, %r1, 7;
    st.shared.u32 [%r4], %r5;
    setp.lt.u32 %p1, %r1, 64;
    @!%p1 bra OTHER;
    bar.sync 1, 64;
    bra.uni READ;
OTHER:
    bar.sync 2, 64;
READ:
    xor.b32 %r6, %r1, 32;
    shl.b32 %r7, %r6, 2;
    add.u32 %r8, %r2, %r7;
    ld.shared.u32 %r9, [%r8];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r9;
    ret;"#,
    );
    let out = launch_within(
        30,
        &ptx,
        "barcount",
        [2, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(vec![0; 512])],
    )
    .unwrap();
    let want: Vec<u32> = (0..128).map(|i| (i ^ 32) * 7).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Only warps 0 and 1 reach `bar.sync 1, 64`; warps 2 and 3 exit without it.
#[test]
fn barrier_with_count_partial_block() {
    let ptx = module(
        "barcount2",
        ".param .u64 pout",
        r#"
    .shared .align 4 .b8 s[256];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    setp.lt.u32 %p1, %r1, 64;
    @%p1 bra WORK;
    mov.u32 %r9, 1;
    st.global.u32 [%rd3], %r9;
    ret;
WORK:
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    add.u32 %r5, %r1, 500;
    st.shared.u32 [%r4], %r5;
    bar.sync 1, 64;
    xor.b32 %r6, %r1, 32;
    shl.b32 %r7, %r6, 2;
    add.u32 %r8, %r2, %r7;
    ld.shared.u32 %r9, [%r8];
    st.global.u32 [%rd3], %r9;
    ret;"#,
    );
    let out = launch_within(
        30,
        &ptx,
        "barcount2",
        [1, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(vec![0; 512])],
    )
    .unwrap();
    let want: Vec<u32> = (0..128)
        .map(|i| if i < 64 { (i ^ 32) + 500 } else { 1 })
        .collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Threads that have exited no longer count toward bar.sync 0: the rest pass it. `first`
/// threads stay, the others return before the barrier.
fn exited_threads_case(first: u32) {
    let ptx = module(
        "barexit",
        ".param .u64 pout, .param .u32 n",
        r#"
    .shared .align 4 .b8 s[512];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r10, [n];
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p1, %r1, %r10;
    @%p1 bra DONE;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    add.u32 %r5, %r1, 9;
    st.shared.u32 [%r4], %r5;
    bar.sync 0;
    add.u32 %r6, %r1, 1;
    rem.u32 %r6, %r6, %r10;
    shl.b32 %r7, %r6, 2;
    add.u32 %r8, %r2, %r7;
    ld.shared.u32 %r9, [%r8];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r9;
DONE:
    ret;"#,
    );
    let out = launch_within(
        30,
        &ptx,
        "barexit",
        [2, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(vec![0; 512]), Arg::U32(first)],
    )
    .unwrap();
    let want: Vec<u32> = (0..128)
        .map(|i| if i < first { (i + 1) % first + 9 } else { 0 })
        .collect();
    assert_eq!(as_u32(&out[0]), want, "{first} threads stay");
}

#[test]
fn barrier_after_whole_warp_exits() {
    exited_threads_case(96);
}

#[test]
fn barrier_after_some_lanes_exit() {
    exited_threads_case(100);
}

/// Warp 0 waits at barrier 0 and warp 1 at barrier 1 (each expecting the whole block):
/// neither can complete; the launch reports it instead of hanging.
#[test]
fn barrier_deadlock_reported() {
    let ptx = module(
        "bardead",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 32;
    @%p1 bra W0;
    bar.sync 1;
    bra.uni DONE;
W0:
    bar.sync 0;
DONE:
    ret;"#,
    );
    let e = launch_within(
        30,
        &ptx,
        "bardead",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 4])],
    )
    .unwrap_err();
    assert!(e.contains("barrier"), "{e}");
    assert!(e.contains("bardead"), "{e}");
}

/// bar.sync is .aligned: all threads of a warp must execute the same bar instruction. Even
/// and odd lanes reaching different bar.sync instructions is an error.
#[test]
fn barrier_divergent_in_warp() {
    let ptx = module(
        "bardiv",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    mov.u32 %r1, %laneid;
    and.b32 %r2, %r1, 1;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 bra EVEN;
    bar.sync 0;
    bra.uni DONE;
EVEN:
    bar.sync 0;
DONE:
    ret;"#,
    );
    let e = launch_within(
        30,
        &ptx,
        "bardiv",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 4])],
    )
    .unwrap_err();
    assert!(e.contains("barrier"), "{e}");
}

/// barrier.sync without .aligned may be reached by the lanes of a warp at different
/// barrier instructions: it completes once every thread has arrived.
#[test]
fn barrier_non_aligned_divergent() {
    let ptx = module(
        "barna",
        ".param .u64 pout",
        r#"
    .shared .align 4 .b8 s[256];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    and.b32 %r5, %r1, 1;
    setp.eq.u32 %p1, %r5, 0;
    @%p1 bra EVEN;
    mul.lo.u32 %r6, %r1, 5;
    st.shared.u32 [%r4], %r6;
    barrier.sync 0;
    bra.uni READ;
EVEN:
    mul.lo.u32 %r6, %r1, 3;
    st.shared.u32 [%r4], %r6;
    barrier.sync 0;
READ:
    xor.b32 %r7, %r1, 1;
    shl.b32 %r8, %r7, 2;
    add.u32 %r9, %r2, %r8;
    ld.shared.u32 %r10, [%r9];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r10;
    ret;"#,
    );
    let out = launch_within(
        30,
        &ptx,
        "barna",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let want: Vec<u32> = (0..64u32)
        .map(|i| {
            let j = i ^ 1;
            if j % 2 == 0 { j * 3 } else { j * 5 }
        })
        .collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// The thread count of bar.sync must be a multiple of the warp size.
#[test]
fn barrier_count_not_warp_multiple() {
    let ptx = module(
        "barodd",
        ".param .u64 pout",
        r#"
    bar.sync 1, 48;
    ret;"#,
    );
    let e = launch_within(
        30,
        &ptx,
        "barodd",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 4])],
    )
    .unwrap_err();
    assert!(e.contains("barrier"), "{e}");
}

/// A guarded bar.sync whose guard differs across a warp: some lanes skip the .aligned
/// barrier, an error.
#[test]
fn barrier_guard_divergent() {
    let ptx = module(
        "barguard",
        ".param .u64 pout",
        r#"
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    mov.u32 %r1, %laneid;
    setp.lt.u32 %p1, %r1, 16;
    @%p1 bar.sync 0;
    ret;"#,
    );
    let e = launch_within(
        30,
        &ptx,
        "barguard",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 4])],
    )
    .unwrap_err();
    assert!(e.contains("barrier"), "{e}");
}
