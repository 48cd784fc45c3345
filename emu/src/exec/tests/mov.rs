//! mov (PTX ISA): packing and unpacking vectors of halves, and the special registers.

use super::support::*;
use crate::exec::testing::*;

/// mov.b32 d, {a, b} packs two b16 with a in the low half; mov.b64 d, {lo, hi} likewise, and
/// `mov.b64 {lo, hi}, d` unpacks.
#[test]
fn mov_pack_unpack() {
    let d = lanes(
        "cvt.u16.u32 %h1, %a;\n    cvt.u16.u32 %h2, %b;\n    mov.b32 %d, {%h1, %h2};",
        &[("b32", &[0x1111, 0xffff]), ("b32", &[0x2222, 0x8000])],
        "b32",
    );
    assert_eq!(d, vec![0x2222_1111, 0x8000_ffff]);
    let d = lanes(
        "mov.b64 %d, {%a, %b};",
        &[
            ("b32", &[0x1111_1111, 0xffff_ffff]),
            ("b32", &[0x2222_2222, 0]),
        ],
        "b64",
    );
    assert_eq!(d, vec![0x2222_2222_1111_1111, 0xffff_ffff]);
    let d = lanes(
        "mov.b64 {%t1, %t2}, %a;\n    sub.u32 %d, %t2, %t1;",
        &[("b64", &[0x0000_0005_0000_0002, 0x0000_0001_0000_0000])],
        "b32",
    );
    assert_eq!(d, vec![3, 1]);
    let d = lanes(
        "mov.b64 {%t1, %t2}, %a;\n    mov.b32 %d, %t2;",
        &[("b64", &[0xdead_beef_0000_0001])],
        "b32",
    );
    assert_eq!(d, vec![0xdead_beef]);
    let d = lanes(
        "mov.b32 {%h1, %h2}, %a;\n    cvt.u32.u16 %t1, %h1;\n    cvt.u32.u16 %t2, %h2;\n    \
         shl.b32 %t2, %t2, 8;\n    add.u32 %d, %t1, %t2;",
        &[("b32", &[0x0102_0304])],
        "b32",
    );
    assert_eq!(d, vec![0x0304 + (0x0102 << 8)]);
    // Plain moves of immediates.
    let d = lanes("mov.b32 %d, 0f3F800000;", &[("b32", &[0])], "b32");
    assert_eq!(d, vec![f(1.0)]);
    let d = lanes("mov.u64 %d, 0x123456789;", &[("b32", &[0])], "b64");
    assert_eq!(d, vec![0x1_2345_6789]);
    let d = lanes("mov.f64 %d, 0d3FF0000000000000;", &[("b32", &[0])], "b64");
    assert_eq!(d, vec![g(1.0)]);
}

/// %tid.{x,y,z} and %ntid.{x,y,z} in a 3-D block; %laneid is the thread's position in its warp
/// (warps are formed from consecutive linear thread ids x + y*nx + z*nx*ny); %warpid is below
/// %nwarpid.
#[test]
fn mov_special_registers() {
    let ptx = module(
        "sreg",
        ".param .u64 pout",
        r#"
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %tid.y;
    mov.u32 %r3, %tid.z;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %ntid.y;
    mov.u32 %r6, %ntid.z;
    mov.u32 %r7, %laneid;
    mov.u32 %r8, %warpid;
    mov.u32 %r9, %nwarpid;
    mad.lo.u32 %r10, %r3, %r5, %r2;
    mad.lo.u32 %r10, %r10, %r4, %r1;
    mul.wide.u32 %rd2, %r10, 36;
    add.u64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r1;
    st.global.u32 [%rd3+4], %r2;
    st.global.u32 [%rd3+8], %r3;
    st.global.u32 [%rd3+12], %r4;
    st.global.u32 [%rd3+16], %r5;
    st.global.u32 [%rd3+20], %r6;
    st.global.u32 [%rd3+24], %r7;
    st.global.u32 [%rd3+28], %r8;
    st.global.u32 [%rd3+32], %r9;
    ret;"#,
    );
    let (nx, ny, nz) = (8u32, 4u32, 3u32);
    let n = (nx * ny * nz) as usize;
    let out = launch(
        &ptx,
        "sreg",
        [1, 1, 1],
        [nx, ny, nz],
        &[Arg::Buf(vec![0; n * 36])],
    )
    .unwrap();
    let v = as_u32(&out[0]);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let lin = (x + y * nx + z * nx * ny) as usize;
                let r = &v[lin * 9..lin * 9 + 9];
                assert_eq!(r[..6], [x, y, z, nx, ny, nz], "thread ({x},{y},{z})");
                assert_eq!(r[6], lin as u32 % 32, "%laneid of ({x},{y},{z})");
                assert!(r[7] < r[8], "%warpid {} not below %nwarpid {}", r[7], r[8]);
                assert!(r[8] >= n.div_ceil(32) as u32, "%nwarpid {}", r[8]);
            }
        }
    }
    // Threads of one warp share a %warpid; different warps of the CTA have different ones.
    let warp_of = |lin: usize| v[lin * 9 + 7];
    for w in 0..n / 32 {
        for l in 0..32 {
            assert_eq!(warp_of(w * 32 + l), warp_of(w * 32), "warp {w} lane {l}");
        }
    }
    let mut ids: Vec<u32> = (0..n.div_ceil(32)).map(|w| warp_of(w * 32)).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n.div_ceil(32));
}
