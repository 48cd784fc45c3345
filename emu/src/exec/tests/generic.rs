//! Generic addressing (PTX ISA "Generic Addressing"): cvta, cvta.to and isspacep.

use crate::exec::testing::*;

/// cvta.shared turns a shared address into a generic one that generic ld/st reach;
/// cvta.to.shared inverts it; isspacep tells the windows apart; cvta.global/to.global on a
/// global pointer.
#[test]
fn generic_addressing() {
    let ptx = module(
        "generic",
        ".param .u64 pout",
        r#"
    .shared .align 8 .b8 sbuf[128];
    .reg .pred %p<8>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<16>;
    ld.param.u64 %rd1, [pout];
    cvta.to.global.u64 %rd9, %rd1;
    cvta.global.u64 %rd10, %rd9;
    mov.u32 %r1, %tid.x;
    mov.u64 %rd2, sbuf;
    cvta.shared.u64 %rd3, %rd2;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd3, %rd4;
    add.u32 %r2, %r1, 100;
    st.u32 [%rd5], %r2;
    bar.sync 0;
    add.u32 %r3, %r1, 1;
    and.b32 %r3, %r3, 31;
    mul.wide.u32 %rd6, %r3, 4;
    add.s64 %rd7, %rd2, %rd6;
    ld.shared.u32 %r4, [%rd7];
    add.s64 %rd8, %rd3, %rd6;
    ld.u32 %r5, [%rd8];
    cvta.to.shared.u64 %rd11, %rd3;
    setp.eq.u64 %p1, %rd11, %rd2;
    isspacep.shared %p2, %rd3;
    isspacep.global %p3, %rd3;
    isspacep.global %p4, %rd10;
    isspacep.shared %p5, %rd10;
    selp.u32 %r6, 1, 0, %p1;
    selp.u32 %r7, 1, 0, %p2;
    selp.u32 %r8, 1, 0, %p3;
    selp.u32 %r9, 1, 0, %p4;
    selp.u32 %r10, 1, 0, %p5;
    mul.wide.u32 %rd12, %r1, 32;
    add.s64 %rd13, %rd10, %rd12;
    st.u32 [%rd13], %r4;
    st.u32 [%rd13+4], %r5;
    st.u32 [%rd13+8], %r6;
    st.u32 [%rd13+12], %r7;
    st.u32 [%rd13+16], %r8;
    st.u32 [%rd13+20], %r9;
    st.u32 [%rd13+24], %r10;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "generic",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 32 * 32])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for i in 0..32u32 {
        let r = &o[i as usize * 8..i as usize * 8 + 7];
        let v = (i + 1) % 32 + 100;
        assert_eq!(r, &[v, v, 1, 1, 0, 1, 0], "thread {i}");
    }
}

/// cvta.local: a generic address of a .local variable reaches the same per-thread memory.
#[test]
fn generic_local() {
    let ptx = module(
        "glocal",
        ".param .u64 pout",
        r#"
    .local .align 8 .b8 depot[16];
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u64 %rd2, depot;
    cvta.local.u64 %rd3, %rd2;
    add.u32 %r2, %r1, 50;
    st.u32 [%rd3+4], %r2;
    ld.local.u32 %r3, [%rd2+4];
    isspacep.local %p1, %rd3;
    selp.u32 %r4, 1, 0, %p1;
    add.u32 %r5, %r3, %r4;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    st.global.u32 [%rd5], %r5;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "glocal",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    let want: Vec<u32> = (0..32).map(|i| i + 51).collect();
    assert_eq!(as_u32(&out[0]), want);
}
