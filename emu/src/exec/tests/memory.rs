//! ld/st in every state space, generic addressing (cvta, isspacep), the memory checker, and
//! atom/red, each from the PTX ISA's definition of the instruction.

use crate::exec::testing::*;

/// A module with module-scope declarations `decls` before one kernel.
fn module_with(decls: &str, name: &str, params: &str, body: &str) -> String {
    format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n\n{decls}\n\n.visible .entry {name}({params})\n{{\n{body}\n}}\n"
    )
}

/// The error of a launch that must fail.
fn err_of(r: Result<Vec<Vec<u8>>, String>) -> String {
    match r {
        Ok(_) => panic!("the launch succeeded; expected an error"),
        Err(e) => e,
    }
}

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

// ---------------------------------------------------------------- generic addressing

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

// ---------------------------------------------------------------- the memory checker

/// Thread t reads (or writes) element t of a buffer of `n` u32: with n+1 threads the last
/// one touches the element just past the end.
fn edge_kernel(name: &str, write: bool) -> String {
    let access = if write {
        "st.global.u32 [%rd3], %r1;"
    } else {
        "ld.global.u32 %r2, [%rd3];"
    };
    module(
        name,
        ".param .u64 pbuf",
        &format!(
            r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    {access}
    ret;"#
        ),
    )
}

#[test]
fn oob_global_read() {
    let ptx = edge_kernel("oob_read", false);
    assert!(
        launch(
            &ptx,
            "oob_read",
            [1, 1, 1],
            [16, 1, 1],
            &[Arg::Buf(vec![0; 64])]
        )
        .is_ok()
    );
    let e = err_of(launch(
        &ptx,
        "oob_read",
        [1, 1, 1],
        [17, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("out of bounds"), "{e}");
    assert!(e.contains("oob_read"), "{e}");
    assert!(e.contains("(16,0,0)"), "{e}");
}

#[test]
fn oob_global_write() {
    let ptx = edge_kernel("oob_write", true);
    let e = err_of(launch(
        &ptx,
        "oob_write",
        [1, 1, 1],
        [17, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("out of bounds"), "{e}");
    assert!(e.contains("oob_write"), "{e}");
    assert!(e.contains("write"), "{e}");
}

/// ISA: the address of an ld/st must be naturally aligned to the access size.
#[test]
fn misaligned_scalar() {
    let ptx = module(
        "mis32",
        ".param .u64 pbuf",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.global.u32 %r1, [%rd1+2];
    st.global.u32 [%rd1+8], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "mis32",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("misaligned"), "{e}");
    assert!(e.contains("mis32"), "{e}");
}

/// A .v4.u32 access is 16 bytes and must be 16-byte aligned: 8-aligned is not enough.
#[test]
fn misaligned_vector() {
    let ptx = module(
        "mis_v4",
        ".param .u64 pbuf",
        r#"
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.global.v2.u32 {%r1, %r2}, [%rd1+8];
    ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1+8];
    st.global.u32 [%rd1], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "mis_v4",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("misaligned"), "{e}");
}

/// A shared access past the declared shared size is an error, not a silent read.
#[test]
fn oob_shared() {
    let ptx = module(
        "oob_sh",
        ".param .u64 pbuf, .param .u32 off",
        r#"
    .shared .align 4 .b8 sb[64];
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    ld.param.u32 %r1, [off];
    mov.u32 %r2, sb;
    add.u32 %r3, %r2, %r1;
    st.shared.u32 [%r3], %r1;
    ld.shared.u32 %r4, [%r3];
    st.global.u32 [%rd1], %r4;
    ret;"#,
    );
    let ok = launch(
        &ptx,
        "oob_sh",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 4]), Arg::U32(60)],
    )
    .unwrap();
    assert_eq!(as_u32(&ok[0]), vec![60]);
    let e = err_of(launch(
        &ptx,
        "oob_sh",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::Buf(vec![0; 4]), Arg::U32(64)],
    ));
    assert!(e.contains("oob_sh"), "{e}");
    assert!(e.contains("shared"), "{e}");
}

/// Only thread (1,1,1) of block (2,1,0) misbehaves; the error names both.
#[test]
fn fault_names_thread_and_block() {
    let ptx = module(
        "who",
        ".param .u64 pbuf",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pbuf];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    mov.u32 %r3, %tid.z;
    mov.u32 %r4, %ctaid.x;
    mov.u32 %r5, %ctaid.y;
    setp.eq.u32 %p1, %r1, 1;
    setp.eq.and.u32 %p1, %r2, 1, %p1;
    setp.eq.and.u32 %p1, %r3, 1, %p1;
    setp.eq.and.u32 %p1, %r4, 2, %p1;
    setp.eq.and.u32 %p1, %r5, 1, %p1;
    @!%p1 bra DONE;
    ld.global.u32 %r6, [%rd1+64];
    st.global.u32 [%rd1], %r6;
DONE:
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "who",
        [3, 2, 1],
        [4, 2, 2],
        &[Arg::Buf(vec![0; 64])],
    ));
    assert!(e.contains("(1,1,1)"), "{e}");
    assert!(e.contains("(2,1,0)"), "{e}");
    assert!(e.contains("who"), "{e}");
    assert!(e.contains("out of bounds"), "{e}");
}

/// Kernel parameters are read-only: st.param to one is refused.
#[test]
fn st_param_refused() {
    let ptx = module(
        "stparam",
        ".param .u32 pa, .param .u64 pbuf",
        r#"
    .reg .b32 %r<4>;
    mov.u32 %r1, 5;
    st.param.u32 [pa], %r1;
    ret;"#,
    );
    let e = err_of(launch(
        &ptx,
        "stparam",
        [1, 1, 1],
        [1, 1, 1],
        &[Arg::U32(1), Arg::Buf(vec![0; 4])],
    ));
    assert!(!e.is_empty());
}

// ---------------------------------------------------------------- atomics

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

/// The checker covers atomics: misaligned and out-of-bounds atom are errors.
#[test]
fn atom_checked() {
    let ptx = module(
        "atbad",
        ".param .u64 pc, .param .u32 off",
        r#"
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pc];
    ld.param.u32 %r1, [off];
    cvt.u64.u32 %rd2, %r1;
    add.s64 %rd3, %rd1, %rd2;
    atom.global.add.u32 %r2, [%rd3], 1;
    ret;"#,
    );
    let run = |off: u32| {
        launch(
            &ptx,
            "atbad",
            [1, 1, 1],
            [1, 1, 1],
            &[Arg::Buf(vec![0; 16]), Arg::U32(off)],
        )
    };
    assert_eq!(as_u32(&run(12).unwrap()[0]), vec![0, 0, 0, 1]);
    let e = err_of(run(2));
    assert!(e.contains("misaligned"), "{e}");
    let e = err_of(run(16));
    assert!(e.contains("out of bounds"), "{e}");
}

/// Natural alignment holds in shared and local memory too; local accesses past the
/// thread's local size are errors; a generic address in the shared window past the shared
/// size is an error.
#[test]
fn shared_local_checked() {
    let ptx = module(
        "slbad",
        ".param .u64 pout, .param .u32 which",
        r#"
    .shared .align 8 .b8 sb[64];
    .local .align 8 .b8 lb[32];
    .reg .pred %p<4>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<8>;
    ld.param.u32 %r1, [which];
    setp.eq.u32 %p1, %r1, 1;
    @%p1 bra SH_MIS;
    setp.eq.u32 %p2, %r1, 2;
    @%p2 bra LOC_OOB;
    setp.eq.u32 %p3, %r1, 3;
    @%p3 bra GEN_OOB;
    ld.shared.u64 %rd1, [sb+56];
    ld.local.u64 %rd1, [lb+24];
    ret;
SH_MIS:
    ld.shared.u64 %rd1, [sb+4];
    ret;
LOC_OOB:
    ld.local.u32 %r2, [lb+32];
    ret;
GEN_OOB:
    mov.u64 %rd2, sb;
    cvta.shared.u64 %rd3, %rd2;
    ld.u32 %r2, [%rd3+64];
    ret;"#,
    );
    let run = |w: u32| {
        launch(
            &ptx,
            "slbad",
            [1, 1, 1],
            [1, 1, 1],
            &[Arg::Buf(vec![0; 4]), Arg::U32(w)],
        )
    };
    assert!(run(0).is_ok());
    let e = err_of(run(1));
    assert!(e.contains("misaligned"), "{e}");
    let e = err_of(run(2));
    assert!(e.contains("local"), "{e}");
    let e = err_of(run(3));
    assert!(e.contains("shared"), "{e}");
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
