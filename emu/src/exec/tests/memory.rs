//! ld/st in the .global, .shared, .local and .param state spaces (PTX ISA "ld", "st").

use super::support::*;
use crate::exec::testing::*;

// ---------------------------------------------------------------- global ld/st

/// ld.global of every scalar type: signed types sign-extend and unsigned/bit types
/// zero-extend into a wider destination register (ISA "Operand Size Exceeding
/// Instruction-Type Size"); narrow stores write only their own bytes (the source register
/// is truncated).
#[test]
fn global_scalar_types() {
    let ptx = module(
        "gscalar",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .reg .b16 %rs<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    .reg .f64 %fd<4>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    ld.global.s8 %r1, [%rd1];
    ld.global.u8 %r2, [%rd1];
    ld.global.b8 %r3, [%rd1+2];
    ld.global.s16 %r4, [%rd1+4];
    ld.global.u16 %r5, [%rd1+4];
    ld.global.s16 %r6, [%rd1+6];
    ld.global.u32 %r7, [%rd1+8];
    ld.global.s32 %r8, [%rd1+12];
    ld.global.u64 %rd3, [%rd1+16];
    ld.global.f32 %f1, [%rd1+24];
    ld.global.f64 %fd1, [%rd1+32];
    ld.global.s16 %rd4, [%rd1+4];
    ld.global.s8 %rs1, [%rd1];
    ld.global.u8 %rs2, [%rd1];
    st.global.u32 [%rd2], %r1;
    st.global.u32 [%rd2+4], %r2;
    st.global.u32 [%rd2+8], %r3;
    st.global.u32 [%rd2+12], %r4;
    st.global.s32 [%rd2+16], %r5;
    st.global.b32 [%rd2+20], %r6;
    st.global.u32 [%rd2+24], %r7;
    st.global.s32 [%rd2+28], %r8;
    st.global.u64 [%rd2+32], %rd3;
    st.global.s64 [%rd2+40], %rd4;
    add.f32 %f2, %f1, 0f3F800000;
    st.global.f32 [%rd2+48], %f2;
    st.global.u16 [%rd2+52], %rs1;
    st.global.b16 [%rd2+54], %rs2;
    mul.f64 %fd2, %fd1, 0d4000000000000000;
    st.global.f64 [%rd2+56], %fd2;
    mov.u32 %r9, 0x12345678;
    st.global.u8 [%rd2+64], %r9;
    st.global.u16 [%rd2+66], %r9;
    st.global.b8 [%rd2+69], %r9;
    st.global.s16 [%rd2+70], %r9;
    ret;"#,
    );
    let mut inp = vec![0x80u8, 0x7f, 0xfe, 0x01, 0x01, 0x80, 0xfe, 0x7f];
    inp.extend(0xdead_beefu32.to_le_bytes());
    inp.extend((-10i32).to_le_bytes());
    inp.extend(0x0123_4567_89ab_cdefu64.to_le_bytes());
    inp.extend((-1.5f32).to_le_bytes());
    inp.extend([0; 4]);
    inp.extend(3.25f64.to_le_bytes());
    let out = launch(
        &ptx,
        "gscalar",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(inp), Arg::Buf(vec![0xaa; 72])],
    )
    .unwrap();
    let o = &out[1];
    let w = as_u32(&o[..32]);
    assert_eq!(w[0], 0xffff_ff80, "ld.s8 sign-extends");
    assert_eq!(w[1], 0x80, "ld.u8 zero-extends");
    assert_eq!(w[2], 0xfe, "ld.b8 zero-extends");
    assert_eq!(w[3], 0xffff_8001, "ld.s16 sign-extends");
    assert_eq!(w[4], 0x8001, "ld.u16 zero-extends");
    assert_eq!(w[5], 0x7ffe, "ld.s16 of a positive value");
    assert_eq!(w[6], 0xdead_beef);
    assert_eq!(w[7] as i32, -10);
    assert_eq!(as_u64(&o[32..40])[0], 0x0123_4567_89ab_cdef);
    assert_eq!(
        as_u64(&o[40..48])[0],
        0xffff_ffff_ffff_8001,
        "ld.s16 into a .b64 register"
    );
    assert_eq!(as_f32(&o[48..52])[0], -0.5);
    assert_eq!(
        &o[52..56],
        &[0x80, 0xff, 0x80, 0x00],
        "ld.s8/ld.u8 into .b16 registers"
    );
    assert_eq!(f64::from_le_bytes(o[56..64].try_into().unwrap()), 6.5);
    assert_eq!(
        &o[64..72],
        &[0x78, 0xaa, 0x78, 0x56, 0xaa, 0x78, 0x78, 0x56],
        "st.u8/u16 write only their bytes"
    );
}

/// .v2/.v4 loads and stores: element x at the lowest address, then y, z, w.
#[test]
fn global_vectors() {
    let ptx = module(
        "gvec",
        ".param .u64 pin, .param .u64 pf, .param .u64 pout",
        r#"
    .reg .b16 %rs<6>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<6>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd5, [pf];
    ld.param.u64 %rd2, [pout];
    ld.global.v2.u32 {%r1, %r2}, [%rd1];
    ld.global.v4.u32 {%r3, %r4, %r5, %r6}, [%rd1+16];
    st.global.v4.u32 [%rd2], {%r6, %r5, %r4, %r3};
    st.global.v2.u32 [%rd2+16], {%r2, %r1};
    ld.global.v2.u64 {%rd3, %rd4}, [%rd1+32];
    st.global.v2.u64 [%rd2+32], {%rd4, %rd3};
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd5];
    st.global.v4.f32 [%rd2+48], {%f4, %f3, %f2, %f1};
    ld.global.v4.u16 {%rs1, %rs2, %rs3, %rs4}, [%rd1];
    st.global.v4.u16 [%rd2+64], {%rs4, %rs3, %rs2, %rs1};
    ld.global.v2.f32 {%f1, %f2}, [%rd5+8];
    st.global.v2.f32 [%rd2+72], {%f2, %f1};
    ret;"#,
    );
    let inp: Vec<u32> = (10..26).collect();
    let out = launch(
        &ptx,
        "gvec",
        [1, 1, 1],
        [1, 1, 1],
        &[
            Arg::Buf(u32s(&inp)),
            Arg::Buf(f32s(&[1.0, 2.0, 3.0, 4.0])),
            Arg::Buf(vec![0; 80]),
        ],
    )
    .unwrap();
    let o = &out[2];
    assert_eq!(as_u32(&o[..24]), vec![17, 16, 15, 14, 11, 10]);
    let lo = 18u64 | (19u64 << 32);
    let hi = 20u64 | (21u64 << 32);
    assert_eq!(as_u64(&o[32..48]), vec![hi, lo]);
    assert_eq!(as_f32(&o[48..64]), vec![4.0, 3.0, 2.0, 1.0]);
    assert_eq!(&o[64..72], &[0, 0, 11, 0, 0, 0, 10, 0]);
    assert_eq!(as_f32(&o[72..80]), vec![4.0, 3.0]);
}

/// ld.global.nc reads global memory like ld.global (the data is read-only for the kernel).
#[test]
fn global_nc() {
    let ptx = module(
        "gnc",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<6>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.nc.u32 %r2, [%rd4];
    ld.global.nc.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1];
    cvt.rzi.u32.f32 %r3, %f4;
    add.u32 %r4, %r2, %r3;
    add.s64 %rd5, %rd2, %rd3;
    st.global.u32 [%rd5], %r4;
    ret;"#,
    );
    let mut inp: Vec<u32> = (0..32).map(|i| i * 7).collect();
    inp[3] = 5.0f32.to_bits();
    let out = launch(
        &ptx,
        "gnc",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(u32s(&inp)), Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    let want: Vec<u32> = inp.iter().map(|v| v + 5).collect();
    assert_eq!(as_u32(&out[1]), want);
}

/// `[reg+-imm]` addresses: negative offsets, as nvcc writes them.
#[test]
fn negative_offsets() {
    let ptx = module(
        "negoff",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    add.s64 %rd3, %rd1, 12;
    ld.global.u32 %r1, [%rd3+-4];
    ld.global.u32 %r2, [%rd3+-12];
    add.s64 %rd4, %rd2, 16;
    st.global.v2.u32 [%rd4+-16], {%r1, %r2};
    st.global.u32 [%rd4+-4], %r1;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "negoff",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(u32s(&[11, 22, 33, 44])), Arg::Buf(vec![0; 16])],
    )
    .unwrap();
    assert_eq!(as_u32(&out[1]), vec![33, 11, 0, 33]);
}

// ---------------------------------------------------------------- shared, local, param

/// A static .shared array: each thread writes one word, bar.sync, and reads a word another
/// warp wrote; 32-bit and 64-bit shared addresses.
#[test]
fn shared_static() {
    let ptx = module(
        "sstatic",
        ".param .u64 pout",
        r#"
    .shared .align 4 .b8 buf[256];
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mul.lo.u32 %r2, %r1, 3;
    shl.b32 %r3, %r1, 2;
    mov.u32 %r4, buf;
    add.u32 %r5, %r4, %r3;
    st.shared.u32 [%r5], %r2;
    bar.sync 0;
    mov.u32 %r6, 63;
    sub.u32 %r7, %r6, %r1;
    mul.wide.u32 %rd2, %r7, 4;
    mov.u64 %rd3, buf;
    add.s64 %rd4, %rd3, %rd2;
    ld.shared.u32 %r8, [%rd4];
    ld.shared.u32 %r9, [buf+8];
    add.u32 %r10, %r8, %r9;
    mul.wide.u32 %rd5, %r1, 4;
    add.s64 %rd6, %rd1, %rd5;
    st.global.u32 [%rd6], %r10;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "sstatic",
        [2, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let want: Vec<u32> = (0..64).map(|i| (63 - i) * 3 + 6).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Dynamic shared memory (`.extern .shared` at module scope), sized at launch.
#[test]
fn shared_dynamic() {
    let ptx = module_with(
        ".extern .shared .align 16 .b8 smem[];",
        "sdyn",
        ".param .u64 pout",
        r#"
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, smem;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    add.u32 %r5, %r1, 1000;
    st.shared.u32 [%r4], %r5;
    bar.sync 0;
    add.u32 %r6, %r1, 1;
    and.b32 %r6, %r6, 127;
    shl.b32 %r7, %r6, 2;
    add.u32 %r8, %r2, %r7;
    ld.shared.u32 %r9, [%r8];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r9;
    ret;"#,
    );
    let out = launch_shared(
        &ptx,
        "sdyn",
        [1, 1, 1],
        [128, 1, 1],
        512,
        &[Arg::Buf(vec![0; 512])],
    )
    .unwrap();
    let want: Vec<u32> = (0..128).map(|i| (i + 1) % 128 + 1000).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// Static and dynamic shared memory side by side do not overlap; the dynamic part ends at
/// the launch's size.
#[test]
fn shared_static_and_dynamic() {
    let ptx = module_with(
        ".extern .shared .align 16 .b8 dyn[];",
        "sboth",
        ".param .u64 pout, .param .u32 over",
        r#"
    .shared .align 4 .b8 st[256];
    .reg .pred %p<2>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r10, [over];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, st;
    add.u32 %r4, %r3, %r2;
    mov.u32 %r5, dyn;
    add.u32 %r6, %r5, %r2;
    st.shared.u32 [%r4], %r1;
    add.u32 %r7, %r1, 1000;
    st.shared.u32 [%r6], %r7;
    bar.sync 0;
    xor.b32 %r8, %r2, 4;
    add.u32 %r9, %r3, %r8;
    ld.shared.u32 %r11, [%r9];
    add.u32 %r9, %r5, %r8;
    ld.shared.u32 %r12, [%r9];
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {%r11, %r12};
    setp.ne.u32 %p1, %r10, 0;
    @!%p1 bra DONE;
    add.u32 %r13, %r5, 256;
    ld.shared.u32 %r14, [%r13];
DONE:
    ret;"#,
    );
    let run = |over: u32| {
        launch_shared(
            &ptx,
            "sboth",
            [2, 1, 1],
            [64, 1, 1],
            256,
            &[Arg::Buf(vec![0; 512]), Arg::U32(over)],
        )
    };
    let o = as_u32(&run(0).unwrap()[0]);
    for i in 0..64u32 {
        assert_eq!(
            &o[2 * i as usize..2 * i as usize + 2],
            &[i ^ 1, (i ^ 1) + 1000],
            "thread {i}"
        );
    }
    let e = err_of(run(1));
    assert!(e.contains("shared"), "{e}");
}

/// .local memory is private to each thread: every thread stores its own tid at the same
/// local address, waits for the others (bar.sync) and reads its own value back.
#[test]
fn local_private() {
    let ptx = module(
        "lpriv",
        ".param .u64 pout",
        r#"
    .local .align 8 .b8 depot[32];
    .reg .b32 %r<12>;
    .reg .b64 %rd<12>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u64 %rd2, depot;
    st.local.u32 [%rd2], %r1;
    mul.wide.u32 %rd3, %r1, 1000;
    st.local.u64 [%rd2+8], %rd3;
    add.u32 %r2, %r1, 7;
    st.local.u32 [depot+16], %r2;
    bar.sync 0;
    ld.local.u32 %r3, [%rd2];
    ld.local.u64 %rd4, [%rd2+8];
    ld.local.u32 %r4, [depot+16];
    mul.wide.u32 %rd5, %r1, 16;
    add.s64 %rd6, %rd1, %rd5;
    st.global.u32 [%rd6], %r3;
    st.global.u32 [%rd6+4], %r4;
    st.global.u64 [%rd6+8], %rd4;
    ret;"#,
    );
    let n = 96usize;
    let out = launch(
        &ptx,
        "lpriv",
        [2, 1, 1],
        [n as u32, 1, 1],
        &[Arg::Buf(vec![0; 16 * n])],
    )
    .unwrap();
    for i in 0..n {
        let rec = &out[0][16 * i..16 * i + 16];
        assert_eq!(
            as_u32(&rec[..8]),
            vec![i as u32, i as u32 + 7],
            "thread {i}"
        );
        assert_eq!(as_u64(&rec[8..])[0], i as u64 * 1000, "thread {i}");
    }
}

/// ld.param of scalar params and of a byte-array (struct) param at offsets; a param's
/// address taken with mov is a .param address usable by ld.param.
#[test]
fn param_loads() {
    let ptx = module(
        "params",
        ".param .u32 pa, .param .u64 pb, .param .f32 pc, .param .align 8 .b8 ps[16], .param .u64 pout",
        r#"
    .reg .b16 %rs<4>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.f32 %f1, [pc];
    ld.param.u32 %r2, [ps];
    ld.param.u32 %r3, [ps+4];
    ld.param.u32 %r4, [ps+8];
    ld.param.u64 %rd3, [ps];
    ld.param.v2.u32 {%r5, %r6}, [ps];
    ld.param.u16 %rs1, [pa+2];
    mov.u64 %rd4, ps;
    ld.param.u32 %r7, [%rd4+4];
    st.global.u32 [%rd1], %r1;
    st.global.u64 [%rd1+8], %rd2;
    add.f32 %f2, %f1, %f1;
    st.global.f32 [%rd1+16], %f2;
    st.global.u32 [%rd1+20], %r2;
    st.global.u32 [%rd1+24], %r3;
    st.global.u32 [%rd1+28], %r4;
    st.global.u64 [%rd1+32], %rd3;
    st.global.u32 [%rd1+40], %r5;
    st.global.u32 [%rd1+44], %r6;
    st.global.u16 [%rd1+48], %rs1;
    st.global.u32 [%rd1+52], %r7;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "params",
        [1, 1, 1],
        [1, 1, 1],
        &[
            Arg::U32(0xdead_beef),
            Arg::U64(0x1122_3344_5566_7788),
            Arg::F32(2.5),
            Arg::U64(0x0000_0007_0000_0005),
            Arg::Buf(vec![0; 56]),
        ],
    )
    .unwrap();
    let o = &out[0];
    assert_eq!(as_u32(&o[..4])[0], 0xdead_beef);
    assert_eq!(as_u64(&o[8..16])[0], 0x1122_3344_5566_7788);
    assert_eq!(as_f32(&o[16..20])[0], 5.0);
    assert_eq!(as_u32(&o[20..32]), vec![5, 7, 0]);
    assert_eq!(as_u64(&o[32..40])[0], 0x0000_0007_0000_0005);
    assert_eq!(as_u32(&o[40..48]), vec![5, 7]);
    assert_eq!(&o[48..50], &[0xad, 0xde]);
    assert_eq!(as_u32(&o[52..56])[0], 7);
}
