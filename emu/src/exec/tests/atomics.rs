//! atom/red (PTX ISA "atom", "red"): each operation's results, types, spaces, generic addresses.

use super::support::*;
use crate::exec::testing::*;

/// .min/.max compare as the instruction type says: -16..15 as .s32 and as .u32 differ.
#[test]
fn atom_min_max_signedness() {
    let ptx = module(
        "atminmax",
        ".param .u64 pc",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    mov.u32 %r1, %tid.x;
    sub.s32 %r2, %r1, 16;
    atom.global.min.s32 %r3, [%rd1], %r2;
    atom.global.min.u32 %r3, [%rd1+4], %r2;
    atom.global.max.s32 %r3, [%rd1+8], %r2;
    atom.global.max.u32 %r3, [%rd1+12], %r2;
    cvt.s64.s32 %rd2, %r2;
    atom.global.max.s64 %rd3, [%rd1+16], %rd2;
    atom.global.min.u64 %rd3, [%rd1+24], %rd2;
    ret;"#,
    );
    let mut init = u32s(&[0, 100, (-100i32) as u32, 0]);
    init.extend((-100i64).to_le_bytes());
    init.extend(1000u64.to_le_bytes());
    let out = launch(&ptx, "atminmax", [1, 1, 1], [32, 1, 1], &[Arg::Buf(init)]).unwrap();
    let w = as_u32(&out[0][..16]);
    assert_eq!(w[0] as i32, -16, "min.s32");
    assert_eq!(w[1], 0, "min.u32");
    assert_eq!(w[2] as i32, 15, "max.s32");
    assert_eq!(w[3], 0xffff_ffff, "max.u32");
    let d = as_u64(&out[0][16..32]);
    assert_eq!(d[0] as i64, 15, "max.s64");
    assert_eq!(d[1], 0, "min.u64");
}

/// inc: new = (old >= b) ? 0 : old+1; dec: new = (old == 0 || old > b) ? b : old-1.
#[test]
fn atom_inc_dec_wrap() {
    let ptx = module(
        "atincdec",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    atom.global.inc.u32 %r1, [%rd1], 3;
    atom.global.inc.u32 %r2, [%rd1], 3;
    atom.global.inc.u32 %r3, [%rd1], 3;
    atom.global.inc.u32 %r4, [%rd1], 3;
    atom.global.inc.u32 %r5, [%rd1], 3;
    atom.global.inc.u32 %r6, [%rd1+4], 3;
    atom.global.dec.u32 %r7, [%rd1+8], 2;
    atom.global.dec.u32 %r8, [%rd1+8], 2;
    atom.global.dec.u32 %r9, [%rd1+8], 2;
    atom.global.dec.u32 %r10, [%rd1+8], 2;
    atom.global.dec.u32 %r11, [%rd1+12], 2;
    st.global.v4.u32 [%rd2], {%r1, %r2, %r3, %r4};
    st.global.v4.u32 [%rd2+16], {%r5, %r6, %r7, %r8};
    st.global.v2.u32 [%rd2+32], {%r9, %r10};
    st.global.u32 [%rd2+40], %r11;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atincdec",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(u32s(&[0, 10, 0, 7])), Arg::Buf(vec![0; 44])],
    )
    .unwrap();
    // inc from 0 with bound 3: 0,1,2,3 then wraps to 0, ends at 1; 10 >= 3 -> 0.
    // dec from 0 with bound 2: 0 -> 2 -> 1 -> 0 -> 2; 7 > 2 -> 2.
    assert_eq!(as_u32(&out[0]), vec![1, 0, 2, 2]);
    assert_eq!(as_u32(&out[1]), vec![0, 1, 2, 3, 0, 10, 0, 2, 1, 0, 7]);
}

/// .and/.or/.xor: one bit per thread; single-thread old values.
#[test]
fn atom_bitwise() {
    let ptx = module(
        "atbits",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, 1;
    shl.b32 %r3, %r2, %r1;
    not.b32 %r4, %r3;
    atom.global.or.b32 %r5, [%rd1], %r3;
    atom.global.and.b32 %r6, [%rd1+4], %r4;
    atom.global.xor.b32 %r7, [%rd1+8], %r3;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atbits",
        [1, 1, 1],
        [32, 1, 1],
        &[
            Arg::Buf(u32s(&[0, 0xffff_ffff, 0x0f0f_0f0f])),
            Arg::Buf(vec![0; 4]),
        ],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0]), vec![0xffff_ffff, 0, 0xf0f0_f0f0]);

    let ptx = module(
        "atbits1",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    atom.global.and.b32 %r1, [%rd1], 0xff00ff00;
    atom.global.or.b32 %r2, [%rd1+4], 0x0000ffff;
    atom.global.xor.b32 %r3, [%rd1+8], 0xffffffff;
    atom.global.and.b64 %rd3, [%rd1+16], 0xffffffff00000000;
    st.global.v4.u32 [%rd2], {%r1, %r2, %r3, %r3};
    st.global.u64 [%rd2+16], %rd3;
    ret;"#,
    );
    let mut init = u32s(&[0x1234_5678, 0xabcd_0000, 0x5555_aaaa, 0]);
    init.extend(0x1111_2222_3333_4444u64.to_le_bytes());
    let out = launch(
        &ptx,
        "atbits1",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(init), Arg::Buf(vec![0; 24])],
    )
    .unwrap();
    let m = &out[0];
    assert_eq!(
        as_u32(&m[..12]),
        vec![0x1200_5600, 0xabcd_ffff, 0xaaaa_5555]
    );
    assert_eq!(as_u64(&m[16..24])[0], 0x1111_2222_0000_0000);
    let o = &out[1];
    assert_eq!(
        as_u32(&o[..12]),
        vec![0x1234_5678, 0xabcd_0000, 0x5555_aaaa]
    );
    assert_eq!(as_u64(&o[16..24])[0], 0x1111_2222_3333_4444);
}

/// .exch and .cas (b32 and b64): the old value comes back; cas writes only on a match.
#[test]
fn atom_exch_cas() {
    let ptx = module(
        "atxc",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<12>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    atom.global.exch.b32 %r1, [%rd1], 42;
    atom.global.cas.b32 %r2, [%rd1+4], 9, 77;
    atom.global.cas.b32 %r3, [%rd1+8], 8, 77;
    atom.global.exch.b64 %rd3, [%rd1+16], 0x100000002;
    atom.global.cas.b64 %rd4, [%rd1+24], 0x500000005, 0x600000006;
    atom.global.cas.b64 %rd5, [%rd1+32], 0x500000005, 0x600000006;
    st.global.v4.u32 [%rd2], {%r1, %r2, %r3, %r3};
    st.global.u64 [%rd2+16], %rd3;
    st.global.u64 [%rd2+24], %rd4;
    st.global.u64 [%rd2+32], %rd5;
    ret;"#,
    );
    let mut init = u32s(&[5, 9, 9, 0]);
    init.extend(u64s(&[7, 0x5_0000_0005, 0x5_0000_0004]));
    let out = launch(
        &ptx,
        "atxc",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(init), Arg::Buf(vec![0; 40])],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0][..12]), vec![42, 77, 9]);
    assert_eq!(
        as_u64(&out[0][16..40]),
        vec![0x1_0000_0002, 0x6_0000_0006, 0x5_0000_0004]
    );
    assert_eq!(as_u32(&out[1][..12]), vec![5, 9, 9]);
    assert_eq!(
        as_u64(&out[1][16..40]),
        vec![7, 0x5_0000_0005, 0x5_0000_0004]
    );
}

/// atom.cas.b16 (sm_70+): a 16-bit compare-and-swap leaves the neighbouring half alone.
#[test]
fn atom_cas_b16() {
    let ptx = module(
        "atcas16",
        ".param .u64 pc, .param .u64 pout",
        r#"
    .reg .b16 %rs<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pc];
    ld.param.u64 %rd2, [pout];
    mov.b16 %rs1, 0x1234;
    mov.b16 %rs2, 0xbeef;
    atom.global.cas.b16 %rs3, [%rd1+2], %rs1, %rs2;
    atom.global.cas.b16 %rs4, [%rd1], %rs1, %rs2;
    st.global.v2.u16 [%rd2], {%rs3, %rs4};
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atcas16",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(u32s(&[0x1234_5678])), Arg::Buf(vec![0; 4])],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0]), vec![0xbeef_5678]);
    assert_eq!(as_u32(&out[1]), vec![0x5678_1234]);
}

/// atom/red .add.f32 (without .noftz) flush subnormal inputs and results to sign-preserving
/// zero on global memory, and keep them on shared memory (ISA, atom "Operation
/// Descriptions"). 2^-127 + 2^-127 = 2^-126 (normal) unless the inputs are flushed;
/// 1.5·2^-126 - 2^-126 = 2^-127 (subnormal) unless the result is flushed.
#[test]
fn atom_add_f32_subnormals() {
    let ptx = module(
        "atftz",
        ".param .u64 pg, .param .u64 pout",
        r#"
    .shared .align 4 .b8 sm[16];
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<8>;
    ld.param.u64 %rd1, [pg];
    ld.param.u64 %rd2, [pout];
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1];
    st.shared.v4.f32 [sm], {%f1, %f2, %f3, %f4};
    mov.f32 %f5, 0f00400000;
    mov.f32 %f6, 0f80800000;
    atom.global.add.f32 %f7, [%rd1], %f5;
    atom.global.add.f32 %f7, [%rd1+4], %f6;
    red.global.add.f32 [%rd1+8], %f5;
    cvta.global.u64 %rd3, %rd1;
    atom.add.f32 %f7, [%rd3+12], %f5;
    atom.shared.add.f32 %f7, [sm], %f5;
    atom.shared.add.f32 %f7, [sm+4], %f6;
    red.shared.add.f32 [sm+8], %f5;
    ld.shared.v4.f32 {%f1, %f2, %f3, %f4}, [sm];
    st.global.v4.f32 [%rd2], {%f1, %f2, %f3, %f4};
    ret;"#,
    );
    let sub = f32::from_bits(0x0040_0000); // 2^-127
    let init = [sub, 1.5 * 2f32.powi(-126), sub, sub];
    let out = launch(
        &ptx,
        "atftz",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(f32s(&init)), Arg::Buf(vec![0; 16])],
    )
    .unwrap();
    let g = as_u32(&out[0]);
    assert_eq!(g, vec![0, 0, 0, 0], "global: flushed ({:#x?})", g);
    let s = as_f32(&out[1]);
    assert_eq!(
        s,
        vec![2f32.powi(-126), sub, 2f32.powi(-126), sub],
        "shared: kept"
    );
}

/// atom.global.add.noftz.f32 (PTX ISA 9.4) keeps subnormals; an emulator without it must
/// refuse it rather than flush.
#[test]
fn atom_add_noftz_f32_not_flushed() {
    let ptx = module(
        "atnoftz",
        ".param .u64 pg",
        r#"
    .reg .b64 %rd<4>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [pg];
    mov.f32 %f1, 0f00400000;
    atom.global.add.noftz.f32 %f2, [%rd1], %f1;
    ret;"#,
    );
    let sub = f32::from_bits(0x0040_0000);
    if let Ok(out) = launch(
        &ptx,
        "atnoftz",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(f32s(&[sub]))],
    ) {
        assert_eq!(as_f32(&out[0]), vec![2f32.powi(-126)]);
    }
}

/// 64-bit shared atomics and v2.f64 accesses.
#[test]
fn atom_shared_64_and_f64_vectors() {
    let ptx = module(
        "at64",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .shared .align 8 .b8 s[16];
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<8>;
    .reg .f64 %fd<4>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 0;
    mov.u64 %rd3, 0;
    @%p1 st.shared.v2.u64 [s], {%rd3, %rd3};
    bar.sync 0;
    atom.shared.add.u64 %rd4, [s], 4294967296;
    cvt.u64.u32 %rd5, %r1;
    atom.shared.max.u64 %rd4, [s+8], %rd5;
    bar.sync 0;
    @!%p1 bra DONE;
    ld.shared.v2.u64 {%rd6, %rd7}, [s];
    st.global.v2.u64 [%rd2], {%rd6, %rd7};
    ld.global.v2.f64 {%fd1, %fd2}, [%rd1];
    st.global.v2.f64 [%rd2+16], {%fd2, %fd1};
    mov.u64 %rd5, 5;
    atom.shared.cas.b64 %rd4, [s+8], 63, %rd5;
    ld.shared.u64 %rd6, [s+8];
    st.global.v2.u64 [%rd2+32], {%rd4, %rd6};
DONE:
    ret;"#,
    );
    let mut inp = 1.25f64.to_le_bytes().to_vec();
    inp.extend((-7.5f64).to_le_bytes());
    let out = launch(
        &ptx,
        "at64",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(inp), Arg::Buf(vec![0; 48])],
    )
    .unwrap();
    let o = &out[1];
    assert_eq!(as_u64(&o[..16]), vec![64u64 << 32, 63]);
    assert_eq!(f64::from_le_bytes(o[16..24].try_into().unwrap()), -7.5);
    assert_eq!(f64::from_le_bytes(o[24..32].try_into().unwrap()), 1.25);
    assert_eq!(as_u64(&o[32..48]), vec![63, 5]);
}

/// atom with a generic address reaches shared and global memory.
#[test]
fn atom_generic() {
    let ptx = module(
        "atgen",
        ".param .u64 pc",
        r#"
    .shared .align 4 .u32 cnt;
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pc];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 0;
    mov.u32 %r2, 0;
    @%p1 st.shared.u32 [cnt], %r2;
    bar.sync 0;
    mov.u64 %rd2, cnt;
    cvta.shared.u64 %rd3, %rd2;
    atom.add.u32 %r3, [%rd3], 2;
    cvta.global.u64 %rd4, %rd1;
    atom.add.u32 %r4, [%rd4], 1;
    bar.sync 0;
    @!%p1 bra DONE;
    ld.shared.u32 %r5, [cnt];
    st.global.u32 [%rd1+4], %r5;
DONE:
    ret;"#,
    );
    let out = launch(
        &ptx,
        "atgen",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 8])],
    )
    .unwrap();
    assert_eq!(as_u32(&out[0]), vec![64, 128]);
}

/// atom may only reach .global or .shared: a generic address of .local memory is an error
/// (and atom.local is refused at load).
#[test]
fn atom_local_refused() {
    let ptx = module(
        "atloc",
        ".param .u64 pc",
        r#"
    .local .align 4 .b8 depot[8];
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    mov.u64 %rd1, depot;
    cvta.local.u64 %rd2, %rd1;
    atom.add.u32 %r1, [%rd2], 1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "atloc",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 4])],
    ));
    assert!(e.contains("atloc"), "{e}");
    let ptx = module(
        "atloc2",
        ".param .u64 pc",
        r#"
    .local .align 4 .b8 depot[8];
    .reg .b32 %r<4>;
    atom.local.add.u32 %r1, [depot], 1;
    ret;"#,
    );
    assert!(
        launch(
            &ptx,
            "atloc2",
            [1, 1, 1],
            [1, 1, 1],
            &[Arg::Buf(vec![0; 4])]
        )
        .is_err()
    );
}
