//! Warp-level instructions: shfl.sync, vote.sync, activemask, bar.warp.sync and
//! mma.sync.m16n8k16, each from the PTX ISA's definition.

use crate::exec::testing::*;

// ---------------------------------------------------------------- shfl.sync

#[derive(Clone, Copy, Debug)]
enum Mode {
    Up,
    Down,
    Bfly,
    Idx,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Bfly => "bfly",
            Mode::Idx => "idx",
        }
    }
}

/// The ISA's shfl.sync pseudocode: the source lane and the predicate for `lane`.
fn shfl_ref(mode: Mode, lane: i32, b: u32, c: u32) -> (i32, bool) {
    let bval = (b & 0x1f) as i32;
    let cval = (c & 0x1f) as i32;
    let segmask = ((c >> 8) & 0x1f) as i32;
    let max_lane = (lane & segmask) | (cval & !segmask);
    let min_lane = lane & segmask;
    let (j, p) = match mode {
        Mode::Up => {
            let j = lane - bval;
            (j, j >= max_lane)
        }
        Mode::Down => {
            let j = lane + bval;
            (j, j <= max_lane)
        }
        Mode::Bfly => {
            let j = lane ^ bval;
            (j, j <= max_lane)
        }
        Mode::Idx => {
            let j = min_lane | (bval & !segmask);
            (j, j <= max_lane)
        }
    };
    if p { (j, true) } else { (lane, false) }
}

/// A kernel: a = lane*10 + 7; `shfl.sync.<mode>.b32 d|p, a, b, c, 0xffffffff`; out[2*tid] =
/// d, out[2*tid+1] = p. `b` and `c` are operands as written (registers %r2/%r3 hold the
/// kernel's b and c params).
fn shfl_kernel(name: &str, mode: Mode, b: &str, c: &str) -> String {
    module(
        name,
        ".param .u64 pout, .param .u32 pb, .param .u32 pc",
        &format!(
            r#"
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r2, [pb];
    ld.param.u32 %r3, [pc];
    mov.u32 %r1, %tid.x;
    mov.u32 %r4, %laneid;
    mad.lo.u32 %r5, %r4, 10, 7;
    shfl.sync.{m}.b32 %r6|%p1, %r5, {b}, {c}, 0xffffffff;
    selp.u32 %r7, 1, 0, %p1;
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {{%r6, %r7}};
    ret;"#,
            m = mode.name()
        ),
    )
}

fn check_shfl(mode: Mode, b: u32, c: u32, immediate: bool) {
    let name = format!("shfl_{}", mode.name());
    let (bs, cs) = if immediate {
        (format!("{b}"), format!("{c:#x}"))
    } else {
        ("%r2".to_string(), "%r3".to_string())
    };
    let ptx = shfl_kernel(&name, mode, &bs, &cs);
    let out = launch(
        &ptx,
        &name,
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0xee; 64 * 8]), Arg::U32(b), Arg::U32(c)],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for t in 0..64usize {
        let lane = (t % 32) as i32;
        let (j, p) = shfl_ref(mode, lane, b, c);
        let want = [j as u32 * 10 + 7, p as u32];
        assert_eq!(
            &o[2 * t..2 * t + 2],
            &want,
            "{mode:?} b={b} c={c:#x} thread {t} (lane {lane})"
        );
    }
}

/// The c operand of a CUDA __shfl_*_sync with `width`: down/bfly/idx clamp to the segment's
/// last lane, up to its first.
fn c_of(mode: Mode, width: u32) -> u32 {
    let seg = (32 - width) << 8;
    match mode {
        Mode::Up => seg,
        _ => seg | 0x1f,
    }
}

#[test]
fn shfl_full_warp() {
    for imm in [false, true] {
        check_shfl(Mode::Up, 1, 0, imm);
        check_shfl(Mode::Up, 5, 0, imm);
        check_shfl(Mode::Down, 1, 0x1f, imm);
        check_shfl(Mode::Down, 7, 0x1f, imm);
        check_shfl(Mode::Bfly, 16, 0x1f, imm);
        check_shfl(Mode::Bfly, 5, 0x1f, imm);
        check_shfl(Mode::Idx, 5, 0x1f, imm);
        check_shfl(Mode::Idx, 31, 0x1f, imm);
    }
}

#[test]
fn shfl_segments() {
    for width in [2u32, 4, 8, 16] {
        for b in [1u32, 3, 5, 9] {
            check_shfl(Mode::Up, b, c_of(Mode::Up, width), false);
            check_shfl(Mode::Down, b, c_of(Mode::Down, width), false);
            check_shfl(Mode::Bfly, b, c_of(Mode::Bfly, width), false);
            check_shfl(Mode::Idx, b, c_of(Mode::Idx, width), false);
        }
    }
}

/// Clamp values other than 0 / 0x1f, and b beyond 31 (only b[4:0] counts).
#[test]
fn shfl_odd_clamps() {
    check_shfl(Mode::Down, 4, 0x0f, false);
    check_shfl(Mode::Up, 2, 0x05, false);
    check_shfl(Mode::Bfly, 3, 0x17, false);
    check_shfl(Mode::Idx, 20, 0x0a, false);
    check_shfl(Mode::Idx, 35, 0x1f, false);
    check_shfl(Mode::Down, 33, 0x1f, false);
}

/// Only the even lanes execute the shfl, with membermask = the even lanes; each reads from
/// an even lane.
#[test]
fn shfl_even_lanes_mask() {
    let ptx = module(
        "shfl_even",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    and.b32 %r2, %r1, 1;
    setp.ne.u32 %p1, %r2, 0;
    @%p1 bra DONE;
    mul.lo.u32 %r3, %r1, 3;
    add.u32 %r4, %r1, 2;
    and.b32 %r4, %r4, 31;
    shfl.sync.idx.b32 %r5, %r3, %r4, 0x1f, 0x55555555;
    shfl.sync.bfly.b32 %r6, %r3, 2, 0x1f, 0x55555555;
    st.global.v2.u32 [%rd3], {%r5, %r6};
DONE:
    ret;"#,
    );
    let out = launch(
        &ptx,
        "shfl_even",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for l in 0..32u32 {
        let want = if l % 2 == 0 {
            [((l + 2) % 32) * 3, (l ^ 2) * 3]
        } else {
            [0, 0]
        };
        assert_eq!(&o[2 * l as usize..2 * l as usize + 2], &want, "lane {l}");
    }
}

// ---------------------------------------------------------------- vote, activemask, bar.warp.sync

#[test]
fn vote_modes() {
    let ptx = module(
        "votes",
        ".param .u64 pout",
        r#"
    .reg .pred %p<16>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    setp.lt.u32 %p1, %r1, 5;
    setp.lt.u32 %p2, %r1, 32;
    vote.sync.all.pred %p3, %p1, 0xffffffff;
    vote.sync.any.pred %p4, %p1, 0xffffffff;
    vote.sync.uni.pred %p5, %p1, 0xffffffff;
    vote.sync.all.pred %p6, %p2, 0xffffffff;
    vote.sync.uni.pred %p7, %p2, 0xffffffff;
    vote.sync.any.pred %p8, !%p2, 0xffffffff;
    vote.sync.all.pred %p9, !%p1, 0xffffffff;
    vote.sync.uni.pred %p10, !%p2, 0xffffffff;
    vote.sync.ballot.b32 %r2, %p1, 0xffffffff;
    vote.sync.ballot.b32 %r3, !%p1, 0xffffffff;
    mov.u32 %r4, 0;
    selp.u32 %r5, 1, 0, %p3;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 2, 0, %p4;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 4, 0, %p5;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 8, 0, %p6;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 16, 0, %p7;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 32, 0, %p8;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 64, 0, %p9;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r5, 128, 0, %p10;
    or.b32 %r4, %r4, %r5;
    mov.u32 %r6, %tid.x;
    mul.wide.u32 %rd2, %r6, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r4, %r2, %r3, %r1};
    ret;"#,
    );
    let out = launch(
        &ptx,
        "votes",
        [1, 1, 1],
        [64, 1, 1],
        &[Arg::Buf(vec![0; 64 * 16])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    // all(l<5)=0, any(l<5)=1, uni(l<5)=0, all(true)=1, uni(true)=1, any(false)=0,
    // all(l>=5)=0, uni(false)=1.
    let flags = 2 | 8 | 16 | 128;
    for t in 0..64usize {
        assert_eq!(
            &o[4 * t..4 * t + 4],
            &[flags, 0x1f, !0x1f, (t % 32) as u32],
            "thread {t}"
        );
    }
}

/// A ballot with a partial membermask, executed only by those lanes: bits of lanes outside
/// the mask are 0.
#[test]
fn vote_partial_mask() {
    let ptx = module(
        "vote_even",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    and.b32 %r2, %r1, 1;
    setp.ne.u32 %p1, %r2, 0;
    @%p1 bra DONE;
    setp.lt.u32 %p2, %r1, 8;
    vote.sync.ballot.b32 %r3, %p2, 0x55555555;
    st.global.u32 [%rd3], %r3;
DONE:
    ret;"#,
    );
    let out = launch(
        &ptx,
        "vote_even",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    let want: Vec<u32> = (0..32).map(|l| if l % 2 == 0 { 0x55 } else { 0 }).collect();
    assert_eq!(as_u32(&out[0]), want);
}

/// activemask inside a divergent branch: the ISA guarantees the executing lane's own bit and
/// no bit of a lane on the other path; the emulator keeps lanes on the same path together,
/// so the mask is exactly that path's lanes.
#[test]
fn activemask_divergent() {
    let ptx = module(
        "amask",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    setp.lt.u32 %p1, %r1, 10;
    @%p1 bra LOW;
    activemask.b32 %r2;
    bra.uni OUT;
LOW:
    activemask.b32 %r2;
OUT:
    st.global.u32 [%rd3], %r2;
    ret;"#,
    );
    let out = launch(
        &ptx,
        "amask",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for l in 0..32u32 {
        let path = if l < 10 { 0x3ffu32 } else { !0x3ffu32 };
        assert_ne!(o[l as usize] & (1 << l), 0, "lane {l} own bit");
        assert_eq!(o[l as usize] & !path, 0, "lane {l} other path");
        assert_eq!(o[l as usize], path, "lane {l}");
    }
}

/// bar.warp.sync orders shared-memory accesses among the lanes of its membermask, full
/// warp and the even lanes only.
#[test]
fn bar_warp_sync() {
    let ptx = module(
        "warpsync",
        ".param .u64 pout",
        r#"
    .shared .align 4 .b8 s[256];
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    add.u32 %r5, %r1, 40;
    st.shared.u32 [%r4], %r5;
    bar.warp.sync 0xffffffff;
    xor.b32 %r6, %r1, 1;
    shl.b32 %r7, %r6, 2;
    add.u32 %r8, %r2, %r7;
    ld.shared.u32 %r9, [%r8];
    mov.u32 %r10, 0;
    and.b32 %r11, %r1, 1;
    setp.ne.u32 %p1, %r11, 0;
    @%p1 bra OUT;
    st.shared.u32 [%r4+128], %r9;
    bar.warp.sync 0x55555555;
    xor.b32 %r12, %r1, 2;
    shl.b32 %r12, %r12, 2;
    add.u32 %r12, %r2, %r12;
    ld.shared.u32 %r10, [%r12+128];
OUT:
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {%r9, %r10};
    ret;"#,
    );
    let out = launch(
        &ptx,
        "warpsync",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for l in 0..32u32 {
        let a = (l ^ 1) + 40;
        let b = if l % 2 == 0 { ((l ^ 2) ^ 1) + 40 } else { 0 };
        assert_eq!(&o[2 * l as usize..2 * l as usize + 2], &[a, b], "lane {l}");
    }
}

// ---------------------------------------------------------------- mma.sync m16n8k16

/// A tiny deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

/// A random 16-bit element (bf16 or f16 bits) with magnitude in [1/8, 4), and its value.
fn rand_half(g: &mut Lcg, bf16: bool) -> (u16, f64) {
    let r = g.next();
    let sign = (r >> 31) as u16;
    let e = (r >> 20) % 5; // 2^-3 .. 2^1
    if bf16 {
        let m = (r & 0x7f) as u16;
        let exp = (127 - 3 + e) as u16;
        let bits = (sign << 15) | (exp << 7) | m;
        (bits, f32::from_bits((bits as u32) << 16) as f64)
    } else {
        let m = (r & 0x3ff) as u16;
        let exp = (15 - 3 + e) as u16;
        let bits = (sign << 15) | (exp << 10) | m;
        let v = (1.0 + m as f64 / 1024.0) * 2f64.powi(exp as i32 - 15);
        (bits, if sign == 1 { -v } else { v })
    }
}

/// Runs one m16n8k16 mma with f32 accumulators and `ab` ("bf16" or "f16") inputs laid out
/// per lane as the ISA's fragment figures define; compares D with A·B + C in f64.
fn check_mma(ab: &str, seed: u64) {
    let bf16 = ab == "bf16";
    let mut g = Lcg(seed);
    let a: Vec<Vec<(u16, f64)>> = (0..16)
        .map(|_| (0..16).map(|_| rand_half(&mut g, bf16)).collect())
        .collect();
    let b: Vec<Vec<(u16, f64)>> = (0..16)
        .map(|_| (0..8).map(|_| rand_half(&mut g, bf16)).collect())
        .collect();
    let c: Vec<Vec<f32>> = (0..16)
        .map(|_| {
            (0..8)
                .map(|_| (g.next() % 2001) as f32 / 100.0 - 10.0)
                .collect()
        })
        .collect();
    let pack = |lo: u16, hi: u16| lo as u32 | ((hi as u32) << 16);
    // Per lane: A regs (4) at word 0, C (4 f32) at word 4, B regs (2) at word 8; 16 words.
    let mut inp = vec![0u32; 32 * 16];
    for lane in 0..32usize {
        let (gid, t) = (lane >> 2, lane % 4);
        let w = &mut inp[lane * 16..lane * 16 + 16];
        w[0] = pack(a[gid][2 * t].0, a[gid][2 * t + 1].0);
        w[1] = pack(a[gid + 8][2 * t].0, a[gid + 8][2 * t + 1].0);
        w[2] = pack(a[gid][2 * t + 8].0, a[gid][2 * t + 9].0);
        w[3] = pack(a[gid + 8][2 * t + 8].0, a[gid + 8][2 * t + 9].0);
        w[4] = c[gid][2 * t].to_bits();
        w[5] = c[gid][2 * t + 1].to_bits();
        w[6] = c[gid + 8][2 * t].to_bits();
        w[7] = c[gid + 8][2 * t + 1].to_bits();
        w[8] = pack(b[2 * t][gid].0, b[2 * t + 1][gid].0);
        w[9] = pack(b[2 * t + 8][gid].0, b[2 * t + 9][gid].0);
    }
    let name = format!("mma_{ab}");
    let ptx = module(
        &name,
        ".param .u64 pin, .param .u64 pout",
        &format!(
            r#"
    .reg .b32 %r<16>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd3, %r1, 64;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v4.b32 {{%r2, %r3, %r4, %r5}}, [%rd4];
    ld.global.v4.f32 {{%f1, %f2, %f3, %f4}}, [%rd4+16];
    ld.global.v2.b32 {{%r6, %r7}}, [%rd4+32];
    mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32 {{%f5, %f6, %f7, %f8}}, {{%r2, %r3, %r4, %r5}}, {{%r6, %r7}}, {{%f1, %f2, %f3, %f4}};
    mul.wide.u32 %rd5, %r1, 16;
    add.s64 %rd6, %rd2, %rd5;
    st.global.v4.f32 [%rd6], {{%f5, %f6, %f7, %f8}};
    ret;"#
        ),
    );
    let out = launch(
        &ptx,
        &name,
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(u32s(&inp)), Arg::Buf(vec![0; 32 * 16])],
    )
    .unwrap();
    let d = as_f32(&out[1]);
    for lane in 0..32usize {
        let (gid, t) = (lane >> 2, lane % 4);
        let at = [
            (gid, 2 * t),
            (gid, 2 * t + 1),
            (gid + 8, 2 * t),
            (gid + 8, 2 * t + 1),
        ];
        for (i, &(row, col)) in at.iter().enumerate() {
            let mut want = c[row][col] as f64;
            let mut mag = want.abs();
            for k in 0..16 {
                let p = a[row][k].1 * b[k][col].1;
                want += p;
                mag += p.abs();
            }
            let got = d[lane * 4 + i] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * mag.max(1e-30),
                "{ab} D[{row}][{col}] (lane {lane} d{i}): got {got}, want {want}"
            );
        }
    }
}

#[test]
fn mma_m16n8k16_bf16() {
    for seed in [1, 2, 3] {
        check_mma("bf16", seed);
    }
}

#[test]
fn mma_m16n8k16_f16() {
    for seed in [4, 5, 6] {
        check_mma("f16", seed);
    }
}

/// The value of f16 bits (normal, subnormal or zero).
fn f16_value(bits: u16) -> f64 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let e = ((bits >> 10) & 0x1f) as i32;
    let m = (bits & 0x3ff) as f64;
    sign * if e == 0 {
        m * 2f64.powi(-24)
    } else {
        (1.0 + m / 1024.0) * 2f64.powi(e - 15)
    }
}

/// m16n8k16 with f16 inputs and f16 accumulators (.f16.f16.f16.f16): C and D are two
/// .f16x2 registers per lane, c0,c1 (row g, cols 2t, 2t+1) in the first, c2,c3 (row g+8)
/// in the second, lower column in the low half.
#[test]
fn mma_m16n8k16_f16_accumulators() {
    let mut g = Lcg(77);
    let a: Vec<Vec<(u16, f64)>> = (0..16)
        .map(|_| (0..16).map(|_| rand_half(&mut g, false)).collect())
        .collect();
    let b: Vec<Vec<(u16, f64)>> = (0..16)
        .map(|_| (0..8).map(|_| rand_half(&mut g, false)).collect())
        .collect();
    let c: Vec<Vec<(u16, f64)>> = (0..16)
        .map(|_| (0..8).map(|_| rand_half(&mut g, false)).collect())
        .collect();
    let pack = |lo: u16, hi: u16| lo as u32 | ((hi as u32) << 16);
    let mut inp = vec![0u32; 32 * 8];
    for lane in 0..32usize {
        let (gid, t) = (lane >> 2, lane % 4);
        let w = &mut inp[lane * 8..lane * 8 + 8];
        w[0] = pack(a[gid][2 * t].0, a[gid][2 * t + 1].0);
        w[1] = pack(a[gid + 8][2 * t].0, a[gid + 8][2 * t + 1].0);
        w[2] = pack(a[gid][2 * t + 8].0, a[gid][2 * t + 9].0);
        w[3] = pack(a[gid + 8][2 * t + 8].0, a[gid + 8][2 * t + 9].0);
        w[4] = pack(b[2 * t][gid].0, b[2 * t + 1][gid].0);
        w[5] = pack(b[2 * t + 8][gid].0, b[2 * t + 9][gid].0);
        w[6] = pack(c[gid][2 * t].0, c[gid][2 * t + 1].0);
        w[7] = pack(c[gid + 8][2 * t].0, c[gid + 8][2 * t + 1].0);
    }
    let ptx = module(
        "mma_h",
        ".param .u64 pin, .param .u64 pout",
        r#"
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd3, %r1, 32;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v4.b32 {%r2, %r3, %r4, %r5}, [%rd4];
    ld.global.v4.b32 {%r6, %r7, %r8, %r9}, [%rd4+16];
    mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%r10, %r11}, {%r2, %r3, %r4, %r5}, {%r6, %r7}, {%r8, %r9};
    mul.wide.u32 %rd5, %r1, 8;
    add.s64 %rd6, %rd2, %rd5;
    st.global.v2.b32 [%rd6], {%r10, %r11};
    ret;"#,
    );
    let out = launch(
        &ptx,
        "mma_h",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(u32s(&inp)), Arg::Buf(vec![0; 256])],
    )
    .unwrap();
    let d = as_u32(&out[1]);
    for lane in 0..32usize {
        let (gid, t) = (lane >> 2, lane % 4);
        let at = [
            (gid, 2 * t),
            (gid, 2 * t + 1),
            (gid + 8, 2 * t),
            (gid + 8, 2 * t + 1),
        ];
        for (i, &(row, col)) in at.iter().enumerate() {
            let mut want = c[row][col].1;
            let mut mag = want.abs();
            for k in 0..16 {
                let p = a[row][k].1 * b[k][col].1;
                want += p;
                mag += p.abs();
            }
            let bits = (d[lane * 2 + i / 2] >> (16 * (i % 2))) as u16;
            let got = f16_value(bits);
            // f16 results: one rounding to 11 significant bits plus f16-or-better sums.
            assert!(
                (got - want).abs() <= 2f64.powi(-10) * mag,
                "f16 D[{row}][{col}] (lane {lane} d{i}): got {got}, want {want}"
            );
        }
    }
}

/// mma.sync.aligned needs all 32 lanes: with lanes 16..31 exited it is an error.
#[test]
fn mma_with_exited_lanes() {
    let ptx = module(
        "mma_exit",
        ".param .u64 pout",
        r#"
    .reg .pred %p<2>;
    .reg .b32 %r<16>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    setp.ge.u32 %p1, %r1, 16;
    @%p1 bra DONE;
    mov.b32 %r2, 0x3f803f80;
    mov.f32 %f1, 0f00000000;
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f5, %f6, %f7, %f8}, {%r2, %r2, %r2, %r2}, {%r2, %r2}, {%f1, %f1, %f1, %f1};
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.f32 [%rd3], %f5;
DONE:
    ret;"#,
    );
    let r = launch(
        &ptx,
        "mma_exit",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0; 128])],
    );
    let e = r.expect_err("mma with half the warp exited must fail");
    assert!(e.contains("mma_exit"), "{e}");
}

/// shfl.sync, vote.sync and bar.warp.sync wait only for the non-exited threads of their
/// membermask: with lanes 16..31 exited a full mask still completes.
#[test]
fn warp_sync_after_exits() {
    let ptx = module(
        "wexit",
        ".param .u64 pout",
        r#"
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    setp.ge.u32 %p1, %r1, 16;
    @%p1 bra DONE;
    bar.warp.sync 0xffffffff;
    add.u32 %r2, %r1, 100;
    shfl.sync.bfly.b32 %r3, %r2, 1, 0x1f, 0xffffffff;
    setp.lt.u32 %p2, %r1, 3;
    vote.sync.ballot.b32 %r4, %p2, 0xffffffff;
    vote.sync.all.pred %p3, %p2, 0xffffffff;
    selp.u32 %r5, 1, 0, %p3;
    mul.wide.u32 %rd2, %r1, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r3, %r4, %r5, %r1};
DONE:
    ret;"#,
    );
    let out = launch(
        &ptx,
        "wexit",
        [1, 1, 1],
        [32, 1, 1],
        &[Arg::Buf(vec![0xff; 512])],
    )
    .unwrap();
    let o = as_u32(&out[0]);
    for l in 0..16u32 {
        assert_eq!(
            &o[4 * l as usize..4 * l as usize + 4],
            &[(l ^ 1) + 100, 0b111, 0, l],
            "lane {l}"
        );
    }
}
