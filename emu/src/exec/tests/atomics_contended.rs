//! atom/red under contention (PTX ISA "atom"): exact totals, each old value returned once.

use crate::exec::testing::*;

/// 4 blocks x 128 threads add to shared counters: the totals are exact.
#[test]
fn atom_add_contended_global() {
    let ptx = module(
        "atadd",
        ".param .u64 pc",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [pc];
    mov.u32 %r1, %tid.x;
    atom.global.add.u32 %r2, [%rd1], 1;
    atom.global.add.u32 %r3, [%rd1+4], %r1;
    atom.global.add.s32 %r4, [%rd1+8], -3;
    atom.global.add.u64 %rd2, [%rd1+16], 4294967297;
    atom.global.add.f32 %f1, [%rd1+24], 0f3F000000;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atadd",
        [4, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(vec![0; 32])],
    )
    .unwrap();
    let o = &out[0];
    let w = as_u32(&o[..12]);
    assert_eq!(w[0], 512);
    assert_eq!(w[1], 4 * (127 * 128 / 2));
    assert_eq!(w[2] as i32, -1536);
    assert_eq!(as_u64(&o[16..24])[0], 512 + (512u64 << 32));
    assert_eq!(as_f32(&o[24..28])[0], 256.0);
}

/// The old values returned by a contended atom.add of 1 are 0..n-1, each once.
#[test]
fn atom_add_old_values_permutation() {
    let ptx = module(
        "atperm",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .shared .align 4 .u32 sc;
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 0;
    mov.u32 %r0, 0;
    @%p1 st.shared.u32 [sc], %r0;
    bar.sync 0;
    atom.global.add.u32 %r2, [%rd1], 1;
    atom.shared.add.u32 %r3, [sc], 1;
    mul.wide.u32 %rd3, %r1, 8;
    add.s64 %rd4, %rd2, %rd3;
    st.global.v2.u32 [%rd4], {%r2, %r3};
    ret;"#,
    );
    let n = 256usize;
    let out = launch(
        &ptx,
        "atperm",
        [1, 1, 1],
        [n as u32, 1, 1],
        &[Arg::Buf(vec![0; 4]), Arg::Buf(vec![0; 8 * n])],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0]), vec![n as u32]);
    let o = as_u32(&out[1]);
    let mut g: Vec<u32> = o.iter().step_by(2).copied().collect();
    let mut s: Vec<u32> = o.iter().skip(1).step_by(2).copied().collect();
    g.sort_unstable();
    s.sort_unstable();
    let want: Vec<u32> = (0..n as u32).collect();
    assert_eq!(g, want, "global");
    assert_eq!(s, want, "shared");
}

/// Many threads inc'ing with a large bound count exactly; with bound n-1 they wrap to 0.
#[test]
fn atom_inc_contended() {
    let ptx = module(
        "atinc2",
        ".param .u64 pc",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pc];
    atom.global.inc.u32 %r1, [%rd1], 100000;
    atom.global.inc.u32 %r2, [%rd1+4], 255;
    atom.global.dec.u32 %r3, [%rd1+8], 100000;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atinc2",
        [2, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(u32s(&[0, 0, 1000]))],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0]), vec![256, 0, 744]);
}

/// Contended exch: the old values and the final value are the initial value and every
/// thread's value, each once. Contended cas loop: an exact increment count.
#[test]
fn atom_exch_cas_contended() {
    let ptx = module(
        "atxc2",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r4, %r2, %r3, %r1;
    add.u32 %r5, %r4, 1;
    atom.global.exch.b32 %r6, [%rd1], %r5;
    mul.wide.u32 %rd3, %r4, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.u32 [%rd4], %r6;
    ld.volatile.global.u32 %r7, [%rd1+4];
RETRY:
    add.u32 %r8, %r7, 1;
    atom.global.cas.b32 %r9, [%rd1+4], %r7, %r8;
    setp.ne.u32 %p1, %r9, %r7;
    mov.u32 %r7, %r9;
    @%p1 bra RETRY;
    ret;"#,
    );
    let n = 256usize;
    let out = launch(
        &ptx,
        "atxc2",
        [2, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(u32s(&[0, 0])), Arg::Buf(vec![0; 4 * n])],
    )
    .unwrap();
    let c = as_u32(&out[0]);
    assert_eq!(c[1], n as u32, "cas loop count");
    let mut all = as_u32(&out[1]);
    all.push(c[0]);
    all.sort_unstable();
    assert_eq!(all, (0..=n as u32).collect::<Vec<_>>());
}

/// atom.shared: add, add.f32, min.s32, max.u32, inc, cas on shared words by 256 threads.
#[test]
fn atom_shared() {
    let ptx = module(
        "atsh",
        ".param .u64 pout",
        r#"
    .shared .align 8 .b8 sw[32];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 0;
    @!%p1 bra INIT_DONE;
    mov.u32 %r0, 0;
    st.shared.v4.u32 [sw], {%r0, %r0, %r0, %r0};
    st.shared.v4.u32 [sw+16], {%r0, %r0, %r0, %r0};
INIT_DONE:
    bar.sync 0;
    sub.s32 %r2, 100, %r1;
    atom.shared.add.u32 %r3, [sw], %r1;
    atom.shared.min.s32 %r3, [sw+4], %r2;
    atom.shared.max.u32 %r3, [sw+8], %r2;
    atom.shared.inc.u32 %r3, [sw+12], 1000;
    atom.shared.add.f32 %f1, [sw+16], 0f3E800000;
    atom.shared.exch.b32 %r4, [sw+20], %r1;
    atom.shared.and.b32 %r5, [sw+24], %r1;
    atom.shared.or.b32 %r5, [sw+28], %r1;
    bar.sync 0;
    @!%p1 bra DONE;
    ld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [sw];
    ld.shared.v4.u32 {%r10, %r11, %r12, %r13}, [sw+16];
    st.global.v4.u32 [%rd1], {%r6, %r7, %r8, %r9};
    st.global.v4.u32 [%rd1+16], {%r10, %r11, %r12, %r13};
DONE:
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atsh",
        [1, 1, 1],
        [256, 1, 1],
        &[Arg::Buf(vec![0; 32])],
    )
    .unwrap();
    let w = as_u32(&out[0]);
    assert_eq!(w[0], 255 * 256 / 2, "add.u32");
    assert_eq!(w[1] as i32, 100 - 255, "min.s32");
    // 100 - tid as .u32: tid > 100 gives huge values; the largest is tid = 101 -> -1.
    assert_eq!(w[2], 0xffff_ffff, "max.u32");
    assert_eq!(w[3], 256, "inc.u32");
    assert_eq!(f32::from_bits(w[4]), 64.0, "add.f32");
    assert!(w[5] < 256, "exch leaves some thread's value");
    assert_eq!(w[6], 0, "and.b32");
    assert_eq!(w[7], 255, "or.b32");
}

/// red.global.add.u32 has no destination; the total is exact.
#[test]
fn red_global_add() {
    let ptx = module(
        "redadd",
        ".param .u64 pc",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pc];
    mov.u32 %r1, %tid.x;
    red.global.add.u32 [%rd1], 1;
    red.global.add.u32 [%rd1+4], %r1;
    red.global.max.s32 [%rd1+8], %r1;
    red.global.add.f32 [%rd1+12], 0f3F800000;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "redadd",
        [4, 1, 1],
        [128, 1, 1],
        &[Arg::Buf(u32s(&[0, 0, (-5i32) as u32, 0]))],
    )
    .unwrap();
    let w = as_u32(&out[0]);
    assert_eq!(w[0], 512);
    assert_eq!(w[1], 4 * 127 * 128 / 2);
    assert_eq!(w[2], 127);
    assert_eq!(f32::from_bits(w[3]), 512.0);
}
