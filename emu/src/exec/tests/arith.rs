//! (tests written from the PTX ISA; see mod.rs)
//!
//! Integer, comparison, floating-point, conversion and move instructions. Each test runs one
//! instruction form per lane over edge-case operands and compares every lane with the value
//! the PTX ISA defines: from the ISA's pseudo-code for the integer and bit instructions, and
//! for IEEE-rounded floating-point results from exact integer arithmetic rounded here by the
//! IEEE 754 rules (see [`Fmt::round`]), never from the interpreter's own code.

use crate::exec::testing::*;

// ---------------------------------------------------------------------------------------------
// Harness: lane i loads operand %a, %b, %c, %e from element i of one buffer each, runs the body,
// and stores %d to element i of the output buffer.
// ---------------------------------------------------------------------------------------------

const OPERANDS: [&str; 4] = ["a", "b", "c", "e"];

/// Bytes of a `.b8`/`.b16`/`.b32`/`.b64` element.
fn size_of(t: &str) -> usize {
    match t {
        "b8" => 1,
        "b16" => 2,
        "b32" => 4,
        "b64" => 8,
        _ => panic!("bad type {t}"),
    }
}

/// The register type holding a value of type `t` (PTX has no 8-bit registers in practice).
fn reg_of(t: &str) -> &str {
    if t == "b8" { "b16" } else { t }
}

/// Runs `body` on one lane per input element. `ins` are the operand columns (their PTX type and
/// values, low bits used); `out` is the type %d is stored with.
fn run(body: &str, ins: &[(&str, &[u64])], out: &str) -> Result<Vec<u64>, String> {
    let n = ins[0].1.len();
    assert!(n > 0 && n <= 1024 && ins.iter().all(|(_, v)| v.len() == n));
    let mut params = Vec::new();
    let mut text = String::from(
        "    .reg .b32 %tx;\n    .reg .b64 %ti, %pa, %off;\n    .reg .pred %p<8>;\n    \
         .reg .b16 %h<8>;\n    .reg .b32 %t<8>;\n    .reg .b64 %u<8>;\n",
    );
    for (i, (t, _)) in ins.iter().enumerate() {
        text += &format!("    .reg .{} %{};\n", reg_of(t), OPERANDS[i]);
        params.push(format!(".param .u64 pin{i}"));
    }
    text += &format!("    .reg .{} %d;\n", reg_of(out));
    params.push(".param .u64 pout".to_string());
    text += "    mov.u32 %tx, %tid.x;\n    cvt.u64.u32 %ti, %tx;\n";
    for (i, (t, _)) in ins.iter().enumerate() {
        text += &format!(
            "    ld.param.u64 %pa, [pin{i}];\n    mul.lo.u64 %off, %ti, {};\n    \
             add.u64 %pa, %pa, %off;\n    ld.global.{t} %{}, [%pa];\n",
            size_of(t),
            OPERANDS[i]
        );
    }
    text += body;
    text += &format!(
        "\n    ld.param.u64 %pa, [pout];\n    mul.lo.u64 %off, %ti, {};\n    \
         add.u64 %pa, %pa, %off;\n    st.global.{out} [%pa], %d;\n    ret;",
        size_of(out)
    );
    let ptx = module("k", &params.join(", "), &text);
    let mut args: Vec<Arg> = ins
        .iter()
        .map(|(t, v)| {
            let w = size_of(t);
            Arg::Buf(
                v.iter()
                    .flat_map(|x| x.to_le_bytes()[..w].to_vec())
                    .collect(),
            )
        })
        .collect();
    args.push(Arg::Buf(vec![0; n * size_of(out)]));
    let bufs = launch(&ptx, "k", [1, 1, 1], [n as u32, 1, 1], &args)?;
    let w = size_of(out);
    Ok(bufs[ins.len()]
        .chunks_exact(w)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect())
}

fn lanes(body: &str, ins: &[(&str, &[u64])], out: &str) -> Vec<u64> {
    run(body, ins, out).unwrap_or_else(|e| panic!("`{body}`: {e}"))
}

fn mask(t: &str) -> u64 {
    match size_of(t) {
        8 => u64::MAX,
        w => (1u64 << (8 * w)) - 1,
    }
}

/// Unary instruction: cases are (a, expected d).
fn check1(body: &str, ta: &str, out: &str, cases: &[(u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let d = lanes(body, &[(ta, &a)], out);
    for (i, &(a, want)) in cases.iter().enumerate() {
        assert_eq!(d[i], want & mask(out), "`{body}` a={a:#x} (lane {i})");
    }
}

/// Binary instruction: cases are (a, b, expected d).
fn check2(body: &str, ta: &str, tb: &str, out: &str, cases: &[(u64, u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let d = lanes(body, &[(ta, &a), (tb, &b)], out);
    for (i, &(a, b, want)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            want & mask(out),
            "`{body}` a={a:#x} b={b:#x} (lane {i})"
        );
    }
}

/// Ternary instruction: cases are (a, b, c, expected d).
fn check3(body: &str, t: [&str; 3], out: &str, cases: &[(u64, u64, u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let c: Vec<u64> = cases.iter().map(|c| c.2).collect();
    let d = lanes(body, &[(t[0], &a), (t[1], &b), (t[2], &c)], out);
    for (i, &(a, b, c, want)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            want & mask(out),
            "`{body}` a={a:#x} b={b:#x} c={c:#x} (lane {i})"
        );
    }
}

/// Two's-complement bit patterns of signed values, as operand columns hold them.
fn s16(v: i16) -> u64 {
    v as u16 as u64
}
fn s32(v: i32) -> u64 {
    v as u32 as u64
}
fn s64(v: i64) -> u64 {
    v as u64
}
fn f(v: f32) -> u64 {
    v.to_bits() as u64
}
fn g(v: f64) -> u64 {
    v.to_bits()
}

const MIN32: i32 = i32::MIN;
const MAX32: i32 = i32::MAX;

// ---------------------------------------------------------------------------------------------
// 1. Integer arithmetic
// ---------------------------------------------------------------------------------------------

/// add/sub: two's-complement wrap-around; `.sat` (s32 only) clamps to MININT..MAXINT.
#[test]
fn int_add_sub() {
    check2(
        "add.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (s32(MAX32), 1, s32(MIN32)),
            (s32(-1), s32(-1), s32(-2)),
            (s32(-5), 3, s32(-2)),
        ],
    );
    check2(
        "add.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(0xffff_ffff, 2, 1), (7, 8, 15)],
    );
    check2(
        "sub.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(s32(MIN32), 1, s32(MAX32)), (3, 5, s32(-2))],
    );
    check2(
        "add.sat.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (s32(MAX32), 1, s32(MAX32)),
            (s32(MAX32), s32(MAX32), s32(MAX32)),
            (s32(MIN32), s32(-1), s32(MIN32)),
            (s32(MIN32), s32(MIN32), s32(MIN32)),
            (5, s32(-7), s32(-2)),
            (s32(MAX32), s32(MIN32), s32(-1)),
        ],
    );
    check2(
        "sub.sat.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (s32(MIN32), 1, s32(MIN32)),
            (s32(MAX32), s32(-1), s32(MAX32)),
            (0, s32(MIN32), s32(MAX32)),
            (5, 7, s32(-2)),
        ],
    );
    check2(
        "add.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(u64::MAX, 2, 1), (0xffff_ffff, 1, 0x1_0000_0000)],
    );
    check2(
        "sub.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(0, 1, u64::MAX), (0x1_0000_0000, 1, 0xffff_ffff)],
    );
    check2(
        "add.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(s64(i64::MAX), 1, s64(i64::MIN)), (s64(-3), 1, s64(-2))],
    );
    check2(
        "add.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0x7fff, 1, 0x8000), (s16(-1), s16(-1), s16(-2))],
    );
}

/// mul.lo: low half of the 2n-bit product; mul.hi: high half (signed or unsigned product);
/// mul.wide (16/32-bit types only): the whole 2n-bit product.
#[test]
fn int_mul() {
    check2(
        "mul.lo.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (0x10000, 0x10000, 0),
            (s32(-3), 5, s32(-15)),
            (s32(MAX32), 2, 0xffff_fffe),
        ],
    );
    check2(
        "mul.lo.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(0xffff_ffff, 0xffff_ffff, 1), (0x12345, 0x10, 0x123450)],
    );
    check2(
        "mul.hi.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (s32(-3), 5, 0xffff_ffff),
            (s32(MAX32), s32(MAX32), 0x3fff_ffff),
            (s32(MIN32), s32(MIN32), 0x4000_0000),
            (s32(MIN32), 1, 0xffff_ffff),
            (0x10000, 0x10000, 1),
        ],
    );
    check2(
        "mul.hi.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (0xffff_ffff, 0xffff_ffff, 0xffff_fffe),
            (0x8000_0000, 2, 1),
            (s32(-3), 5, 4),
        ],
    );
    check2(
        "mul.wide.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b64",
        &[
            (s32(-1), s32(-1), 1),
            (s32(MIN32), s32(MIN32), 1 << 62),
            (s32(-3), 5, s64(-15)),
            (s32(MAX32), s32(-2), s64(-(MAX32 as i64) * 2)),
        ],
    );
    check2(
        "mul.wide.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b64",
        &[
            (0xffff_ffff, 0xffff_ffff, 0xffff_fffe_0000_0001),
            (0x8000_0000, 2, 0x1_0000_0000),
        ],
    );
    check2(
        "mul.wide.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b32",
        &[
            (s16(-2), 0x7fff, s32(-65534)),
            (0x8000, 0x8000, 0x4000_0000),
            (s16(-1), s16(-1), 1),
        ],
    );
    check2(
        "mul.wide.u16 %d, %a, %b;",
        "b16",
        "b16",
        "b32",
        &[(0xffff, 0xffff, 0xfffe_0001), (0x8000, 2, 0x1_0000)],
    );
    check2(
        "mul.lo.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0x100, 0x100, 0), (s16(-3), 7, s16(-21))],
    );
    check2(
        "mul.hi.u16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0xffff, 0xffff, 0xfffe), (0x8000, 2, 1)],
    );
    check2(
        "mul.hi.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0x8000, 0x8000, 0x4000), (s16(-1), 1, 0xffff)],
    );
    check2(
        "mul.lo.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(u64::MAX, u64::MAX, 1), (1 << 40, 1 << 30, 0)],
    );
    check2(
        "mul.hi.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (u64::MAX, u64::MAX, u64::MAX - 1),
            (1 << 40, 1 << 30, 1 << 6),
        ],
    );
    check2(
        "mul.hi.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (s64(-1), s64(-1), 0),
            (s64(i64::MIN), 2, u64::MAX),
            (s64(i64::MIN), s64(i64::MIN), 1 << 62),
            (s64(-3), 5, u64::MAX),
        ],
    );
}

/// mad.lo/.hi: the low/high half of a*b plus c (wrapping); mad.wide: the 2n-bit product plus a
/// 2n-bit c; mad.hi.sat.s32: high half plus c, clamped to MININT..MAXINT.
#[test]
fn int_mad() {
    let t32 = ["b32", "b32", "b32"];
    check3(
        "mad.lo.s32 %d, %a, %b, %c;",
        t32,
        "b32",
        &[
            (0x10000, 0x10000, 5, 5),
            (s32(-3), 5, 20, 5),
            (s32(MAX32), 2, 3, 1),
        ],
    );
    check3(
        "mad.lo.u32 %d, %a, %b, %c;",
        t32,
        "b32",
        &[(0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0)],
    );
    check3(
        "mad.hi.s32 %d, %a, %b, %c;",
        t32,
        "b32",
        &[
            (s32(MAX32), s32(MAX32), 1, 0x4000_0000),
            (s32(-3), 5, 1, 0),
            (2, 3, s32(-5), s32(-5)),
        ],
    );
    check3(
        "mad.hi.u32 %d, %a, %b, %c;",
        t32,
        "b32",
        &[(0xffff_ffff, 0xffff_ffff, 2, 0), (0x8000_0000, 4, 3, 5)],
    );
    check3(
        "mad.hi.sat.s32 %d, %a, %b, %c;",
        t32,
        "b32",
        &[
            // 0x3fffffff + MAXINT overflows: clamped.
            (s32(MAX32), s32(MAX32), s32(MAX32), s32(MAX32)),
            // hi(-2^31 * (2^31-1)) = -2^30; -2^30 + -2^31 < MININT: clamped.
            (s32(MIN32), s32(MAX32), s32(MIN32), s32(MIN32)),
            (2, 3, s32(-5), s32(-5)),
            (s32(MIN32), s32(MIN32), 1, 0x4000_0001),
        ],
    );
    check3(
        "mad.wide.s32 %d, %a, %b, %c;",
        ["b32", "b32", "b64"],
        "b64",
        &[
            (s32(-1), 1, 0x1_0000_0000, 0xffff_ffff),
            (s32(MIN32), s32(MIN32), 1, (1 << 62) + 1),
            (s32(-3), 5, s64(-1), s64(-16)),
        ],
    );
    check3(
        "mad.wide.u32 %d, %a, %b, %c;",
        ["b32", "b32", "b64"],
        "b64",
        &[
            (0xffff_ffff, 0xffff_ffff, 0x1_ffff_fffe, u64::MAX),
            (0xffff_ffff, 0xffff_ffff, 0x2_0000_0000, 1),
        ],
    );
    check3(
        "mad.wide.s16 %d, %a, %b, %c;",
        ["b16", "b16", "b32"],
        "b32",
        &[
            (s16(-2), 0x7fff, 65534, 0),
            (0x8000, 0x8000, 1, 0x4000_0001),
        ],
    );
    check3(
        "mad.lo.s64 %d, %a, %b, %c;",
        ["b64", "b64", "b64"],
        "b64",
        &[(s64(-3), 5, 20, 5), (u64::MAX, u64::MAX, 1, 2)],
    );
}

/// div/rem on integers: the quotient truncates toward zero, and the remainder takes the sign of
/// the dividend (a = b*q + r). Division by zero gives an unspecified value but must not fault.
#[test]
fn int_div_rem() {
    let c32 = [
        (7, 2, 3, 1),
        (-7, 2, -3, -1),
        (7, -2, -3, 1),
        (-7, -2, 3, -1),
        (MIN32, 3, -715827882, -2),
        (MAX32, MAX32, 1, 0),
        (1, 5, 0, 1),
        (-1, 5, 0, -1),
    ];
    let div: Vec<_> = c32
        .iter()
        .map(|&(a, b, q, _)| (s32(a), s32(b), s32(q)))
        .collect();
    let rem: Vec<_> = c32
        .iter()
        .map(|&(a, b, _, r)| (s32(a), s32(b), s32(r)))
        .collect();
    check2("div.s32 %d, %a, %b;", "b32", "b32", "b32", &div);
    check2("rem.s32 %d, %a, %b;", "b32", "b32", "b32", &rem);
    check2(
        "div.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (0xffff_ffff, 2, 0x7fff_ffff),
            (s32(-7), 2, 0x7fff_fffc),
            (3, 7, 0),
        ],
    );
    check2(
        "rem.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(0xffff_ffff, 2, 1), (s32(-7), 2, 1), (3, 7, 3)],
    );
    check2(
        "div.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (s64(-7), 2, s64(-3)),
            (s64(i64::MIN), 2, s64(i64::MIN / 2)),
            (s64(-(1 << 40) - 1), 1 << 20, s64(-(1 << 20))),
        ],
    );
    check2(
        "rem.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (s64(-7), 2, s64(-1)),
            (7, s64(-2), 1),
            (s64(-(1 << 40) - 1), 1 << 20, s64(-1)),
        ],
    );
    check2(
        "div.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (u64::MAX, 3, u64::MAX / 3),
            (u64::MAX, 1 << 32, 0xffff_ffff),
        ],
    );
    check2(
        "rem.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(u64::MAX, 10, 5), (u64::MAX, 1 << 32, 0xffff_ffff)],
    );
    check2(
        "div.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(s16(-7), 2, s16(-3)), (s16(i16::MIN), s16(-2), 0x4000)],
    );
    check2(
        "rem.u16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0xffff, 0x100, 0xff)],
    );
    // Division by zero (and MININT / -1): an unspecified value, but the launch completes.
    for body in [
        "div.u32 %d, %a, %b;",
        "div.s32 %d, %a, %b;",
        "rem.u32 %d, %a, %b;",
        "rem.s32 %d, %a, %b;",
    ] {
        lanes(
            body,
            &[("b32", &[5, s32(MIN32)]), ("b32", &[0, s32(-1)])],
            "b32",
        );
    }
    for body in [
        "div.u64 %d, %a, %b;",
        "div.s64 %d, %a, %b;",
        "rem.s64 %d, %a, %b;",
    ] {
        lanes(
            body,
            &[("b64", &[5, s64(i64::MIN)]), ("b64", &[0, s64(-1)])],
            "b64",
        );
    }
}

/// min/max compare as signed or unsigned according to the type.
#[test]
fn int_min_max() {
    let pairs32 = [
        (s32(-1), 1),
        (s32(MIN32), s32(MAX32)),
        (5, 5),
        (0, 0xffff_ffff),
    ];
    let with = |f: fn(u32, u32) -> u32| -> Vec<(u64, u64, u64)> {
        pairs32
            .iter()
            .map(|&(a, b)| (a, b, f(a as u32, b as u32) as u64))
            .collect()
    };
    check2(
        "min.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &with(|a, b| (a as i32).min(b as i32) as u32),
    );
    check2(
        "max.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &with(|a, b| (a as i32).max(b as i32) as u32),
    );
    check2(
        "min.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &with(|a, b| a.min(b)),
    );
    check2(
        "max.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &with(|a, b| a.max(b)),
    );
    check2(
        "min.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(s64(-1), 1, s64(-1)), (s64(i64::MIN), 0, s64(i64::MIN))],
    );
    check2(
        "max.s64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[
            (s64(-1), 1, 1),
            (s64(i64::MIN), s64(i64::MAX), s64(i64::MAX)),
        ],
    );
    check2(
        "min.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(u64::MAX, 1, 1), (1 << 40, 1 << 41, 1 << 40)],
    );
    check2(
        "max.u64 %d, %a, %b;",
        "b64",
        "b64",
        "b64",
        &[(u64::MAX, 1, u64::MAX)],
    );
    check2(
        "min.s16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(s16(-1), 1, s16(-1)), (0x8000, 0x7fff, 0x8000)],
    );
    check2(
        "max.u16 %d, %a, %b;",
        "b16",
        "b16",
        "b16",
        &[(0xffff, 1, 0xffff)],
    );
}

/// and/or/xor/not are bitwise; cnot is the C logical not (1 if a is 0, else 0).
#[test]
fn int_logic() {
    let (x, y) = (0xf0f0_1234u64, 0x0ff0_ff00u64);
    check2("and.b32 %d, %a, %b;", "b32", "b32", "b32", &[(x, y, x & y)]);
    check2("or.b32 %d, %a, %b;", "b32", "b32", "b32", &[(x, y, x | y)]);
    check2("xor.b32 %d, %a, %b;", "b32", "b32", "b32", &[(x, y, x ^ y)]);
    let (x, y) = (0xf0f0_1234_8000_0001u64, 0x0ff0_ff00_ffff_0000u64);
    check2("and.b64 %d, %a, %b;", "b64", "b64", "b64", &[(x, y, x & y)]);
    check2("or.b64 %d, %a, %b;", "b64", "b64", "b64", &[(x, y, x | y)]);
    check2("xor.b64 %d, %a, %b;", "b64", "b64", "b64", &[(x, y, x ^ y)]);
    check1(
        "not.b32 %d, %a;",
        "b32",
        "b32",
        &[(0, 0xffff_ffff), (0x1234_5678, !0x1234_5678u32 as u64)],
    );
    check1("not.b64 %d, %a;", "b64", "b64", &[(1, !1u64)]);
    check1(
        "cnot.b32 %d, %a;",
        "b32",
        "b32",
        &[(0, 1), (5, 0), (0x8000_0000, 0), (1, 0)],
    );
    check1(
        "cnot.b64 %d, %a;",
        "b64",
        "b64",
        &[(0, 1), (1 << 63, 0), (1 << 32, 0)],
    );
    check1("cnot.b16 %d, %a;", "b16", "b16", &[(0, 1), (0x8000, 0)]);
}

/// shl/shr: the shift amount is an unsigned 32-bit value, and amounts larger than the width are
/// clamped to the width: shl and shr.u (and shr.b) give 0, shr.s fills with the sign bit.
#[test]
fn int_shifts() {
    check2(
        "shl.b32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (1, 31, 0x8000_0000),
            (1, 32, 0),
            (1, 33, 0),
            (0xffff_ffff, 0xffff_ffff, 0),
            (0xf0f0_f0f0, 4, 0x0f0f_0f00),
            (0x1234, 0, 0x1234),
        ],
    );
    check2(
        "shr.u32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (0x8000_0000, 31, 1),
            (0x8000_0000, 32, 0),
            (0x8000_0000, 100, 0),
            (0xffff_ffff, 0x8000_0000, 0),
            (0xf000_0000, 4, 0x0f00_0000),
        ],
    );
    check2(
        "shr.b32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(0xf000_0000, 4, 0x0f00_0000), (0x8000_0000, 32, 0)],
    );
    check2(
        "shr.s32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[
            (0x8000_0000, 31, 0xffff_ffff),
            (0x8000_0000, 32, 0xffff_ffff),
            (0x8000_0000, 0xffff_ffff, 0xffff_ffff),
            (0x4000_0000, 40, 0),
            (0x4000_0000, 30, 1),
            (s32(-16), 2, s32(-4)),
            (s32(-1), 1, s32(-1)),
        ],
    );
    check2(
        "shl.b64 %d, %a, %b;",
        "b64",
        "b32",
        "b64",
        &[
            (1, 63, 1 << 63),
            (1, 64, 0),
            (1, 1000, 0),
            (0xff, 32, 0xff << 32),
        ],
    );
    check2(
        "shr.u64 %d, %a, %b;",
        "b64",
        "b32",
        "b64",
        &[
            (1 << 63, 63, 1),
            (1 << 63, 64, 0),
            (u64::MAX, 0xffff_ffff, 0),
        ],
    );
    check2(
        "shr.s64 %d, %a, %b;",
        "b64",
        "b32",
        "b64",
        &[
            (s64(i64::MIN), 63, u64::MAX),
            (s64(i64::MIN), 64, u64::MAX),
            (s64(i64::MIN), 200, u64::MAX),
            (1 << 62, 64, 0),
            (1 << 62, 62, 1),
            (s64(-256), 4, s64(-16)),
        ],
    );
    check2(
        "shl.b16 %d, %a, %b;",
        "b16",
        "b32",
        "b16",
        &[(1, 15, 0x8000), (1, 16, 0)],
    );
    check2(
        "shr.s16 %d, %a, %b;",
        "b16",
        "b32",
        "b16",
        &[
            (0x8000, 15, 0xffff),
            (0x8000, 16, 0xffff),
            (0x8000, 20, 0xffff),
        ],
    );
}

/// neg/abs on signed types (two's complement: -MININT and |MININT| are MININT).
#[test]
fn int_neg_abs() {
    check1(
        "neg.s32 %d, %a;",
        "b32",
        "b32",
        &[(5, s32(-5)), (s32(-5), 5), (0, 0), (s32(MIN32), s32(MIN32))],
    );
    check1(
        "abs.s32 %d, %a;",
        "b32",
        "b32",
        &[(s32(-5), 5), (5, 5), (0, 0), (s32(MIN32), s32(MIN32))],
    );
    check1(
        "neg.s64 %d, %a;",
        "b64",
        "b64",
        &[(5, s64(-5)), (s64(i64::MIN), s64(i64::MIN))],
    );
    check1(
        "abs.s64 %d, %a;",
        "b64",
        "b64",
        &[(s64(-(1 << 40)), 1 << 40), (7, 7)],
    );
    check1(
        "neg.s16 %d, %a;",
        "b16",
        "b16",
        &[(1, 0xffff), (0x8000, 0x8000)],
    );
    check1("abs.s16 %d, %a;", "b16", "b16", &[(0xffff, 1)]);
}

/// popc: number of set bits; clz: leading zeros (the width for 0); brev: bit reversal. The
/// popc/clz result is a .u32 for both the .b32 and .b64 forms.
#[test]
fn int_bit_counts() {
    let v32 = [0u64, 1, 0x8000_0000, 0xffff_ffff, 0x1234_5678, 0x0001_0000];
    let c =
        |f: fn(u32) -> u64| -> Vec<(u64, u64)> { v32.iter().map(|&v| (v, f(v as u32))).collect() };
    check1(
        "popc.b32 %d, %a;",
        "b32",
        "b32",
        &c(|v| v.count_ones() as u64),
    );
    check1(
        "clz.b32 %d, %a;",
        "b32",
        "b32",
        &c(|v| v.leading_zeros() as u64),
    );
    check1(
        "brev.b32 %d, %a;",
        "b32",
        "b32",
        &c(|v| v.reverse_bits() as u64),
    );
    check1(
        "brev.b32 %d, %a;",
        "b32",
        "b32",
        &[(1, 0x8000_0000), (0x1234_5678, 0x1e6a_2c48)],
    );
    let v64 = [0u64, 1, 1 << 63, u64::MAX, 0x1234_5678_9abc_def0, 1 << 32];
    let c = |f: fn(u64) -> u64| -> Vec<(u64, u64)> { v64.iter().map(|&v| (v, f(v))).collect() };
    check1(
        "popc.b64 %d, %a;",
        "b64",
        "b32",
        &c(|v| v.count_ones() as u64),
    );
    check1(
        "clz.b64 %d, %a;",
        "b64",
        "b32",
        &c(|v| v.leading_zeros() as u64),
    );
    check1("brev.b64 %d, %a;", "b64", "b64", &c(|v| v.reverse_bits()));
    check1(
        "clz.b64 %d, %a;",
        "b64",
        "b32",
        &[(0, 64), (1, 63), (1 << 32, 31)],
    );
}

/// The ISA's pseudo-code of bfe: pos and len are the low 8 bits of b and c; bits past the msb
/// and past len take sbit, which is 0 for unsigned types or len 0, else a[min(pos+len-1, msb)].
fn bfe_ref(a: u64, b: u64, c: u64, bits: u32, signed: bool) -> u64 {
    let msb = bits as u64 - 1;
    let (pos, len) = (b & 0xff, c & 0xff);
    let sbit = if !signed || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(msb)) & 1
    };
    let mut d = 0;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

/// bfe: bit-field extract, zero- or sign-filled (see [`bfe_ref`]).
#[test]
fn int_bfe() {
    let cases32: [(u64, u64, u64); 11] = [
        (0x1234_5678, 4, 8),
        (0x1234_5678, 28, 8),
        (0x0000_00f0, 4, 4),
        (0x0000_0070, 4, 4),
        (0xffff_ffff, 4, 0),
        (0x8000_0000, 28, 8),
        (0x8000_0000, 40, 4),
        (0x1234_5678, 0x104, 0x108),
        (0xdead_beef, 0, 32),
        (0xdead_beef, 0, 255),
        (0x0000_8000, 8, 8),
    ];
    for signed in [false, true] {
        let body = if signed {
            "bfe.s32 %d, %a, %b, %c;"
        } else {
            "bfe.u32 %d, %a, %b, %c;"
        };
        let cases: Vec<_> = cases32
            .iter()
            .map(|&(a, b, c)| (a, b, c, bfe_ref(a, b, c, 32, signed)))
            .collect();
        check3(body, ["b32", "b32", "b32"], "b32", &cases);
    }
    // Hand-computed values of the same rule.
    check3(
        "bfe.u32 %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &[(0x1234_5678, 4, 8, 0x67), (0x1234_5678, 28, 8, 1)],
    );
    check3(
        "bfe.s32 %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &[
            (0xf0, 4, 4, 0xffff_ffff),
            (0x70, 4, 4, 7),
            (0xffff_ffff, 4, 0, 0),
            (0x8000_0000, 28, 8, 0xffff_fff8),
            (0x8000_0000, 40, 4, 0xffff_ffff),
        ],
    );
    let cases64: [(u64, u64, u64); 5] = [
        (0x8000_0000_0000_0000, 60, 8),
        (0x0000_00f0_0000_0000, 36, 4),
        (0x1234_5678_9abc_def0, 16, 32),
        (0x1234_5678_9abc_def0, 70, 3),
        (u64::MAX, 3, 0),
    ];
    for signed in [false, true] {
        let body = if signed {
            "bfe.s64 %d, %a, %b, %c;"
        } else {
            "bfe.u64 %d, %a, %b, %c;"
        };
        let cases: Vec<_> = cases64
            .iter()
            .map(|&(a, b, c)| (a, b, c, bfe_ref(a, b, c, 64, signed)))
            .collect();
        check3(body, ["b64", "b32", "b32"], "b64", &cases);
    }
}

/// bfi d, a, b, pos, len: b with bits [pos, pos+len) replaced by the low bits of a; pos and len
/// are the low 8 bits of their operands and bits past the msb are not written.
#[test]
fn int_bfi() {
    fn bfi_ref(a: u64, b: u64, pos: u64, len: u64, bits: u64) -> u64 {
        let (pos, len) = (pos & 0xff, len & 0xff);
        let mut f = b;
        let mut i = 0;
        while i < len && pos + i < bits {
            f = (f & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
            i += 1;
        }
        f
    }
    let cases = [
        (0xff, 0, 8, 4),
        (0xffff_ffff, 0x1234_5678, 28, 8),
        (0xffff_ffff, 0x1234_5678, 4, 0),
        (0xffff_ffff, 0x1234_5678, 32, 4),
        (0xabcd, 0x1234_5678, 0x104, 0x108),
        (0, 0xffff_ffff, 0, 32),
        (0, 0xffff_ffff, 8, 16),
    ];
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let c: Vec<u64> = cases.iter().map(|c| c.2).collect();
    let e: Vec<u64> = cases.iter().map(|c| c.3).collect();
    let d = lanes(
        "bfi.b32 %d, %a, %b, %c, %e;",
        &[("b32", &a), ("b32", &b), ("b32", &c), ("b32", &e)],
        "b32",
    );
    for (i, &(a, b, p, l)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            bfi_ref(a, b, p, l, 32),
            "bfi.b32 {a:#x} {b:#x} {p} {l}"
        );
    }
    // Hand-computed: 0xff's low 4 bits into 0 at bit 8; 4 bits fit below bit 32 of 8 asked.
    assert_eq!(d[0], 0x0f00);
    assert_eq!(d[1], 0xf234_5678);
    assert_eq!(d[2], 0x1234_5678);
    assert_eq!(d[3], 0x1234_5678);
    let cases = [
        (0xff, 0, 60, 8),
        (0xffff_ffff, 0, 16, 32),
        (0x5, u64::MAX, 63, 1),
    ];
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let c: Vec<u64> = cases.iter().map(|c| c.2).collect();
    let e: Vec<u64> = cases.iter().map(|c| c.3).collect();
    let d = lanes(
        "bfi.b64 %d, %a, %b, %c, %e;",
        &[("b64", &a), ("b64", &b), ("b32", &c), ("b32", &e)],
        "b64",
    );
    for (i, &(a, b, p, l)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            bfi_ref(a, b, p, l, 64),
            "bfi.b64 {a:#x} {b:#x} {p} {l}"
        );
    }
    assert_eq!(d[0], 0xf000_0000_0000_0000);
}

/// prmt.b32 d, a, b, c picks bytes of the 8-byte value {b, a} (a is bytes 0-3, b bytes 4-7).
/// Default mode: result byte i is chosen by nibble i of c (low 3 bits: byte index; bit 3: replace
/// the byte by copies of its sign bit). The special modes use c[1:0] and the ISA's table.
#[test]
fn int_prmt() {
    let a = 0x8844_2211u64; // bytes 11 22 44 88
    let b = 0xff7f_c001u64; // bytes 01 c0 7f ff
    let bytes = |i: u64| ((b << 32 | a) >> (8 * (i & 7))) & 0xff;
    let generic = |c: u64| -> u64 {
        (0..4)
            .map(|i| {
                let s = (c >> (4 * i)) & 0xf;
                let v = bytes(s);
                let v = if s & 8 != 0 {
                    if v & 0x80 != 0 { 0xff } else { 0 }
                } else {
                    v
                };
                v << (8 * i)
            })
            .sum()
    };
    let sels = [
        0x3210u64,
        0x7654,
        0x0123,
        0x4567,
        0x8888,
        0xbbbb,
        0xcd01,
        0x9a8f,
        0x1111_3210,
        0xe6e6,
    ];
    let cases: Vec<_> = sels.iter().map(|&c| (a, b, c, generic(c))).collect();
    check3(
        "prmt.b32 %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &cases,
    );
    // Hand-computed values of the same rule.
    check3(
        "prmt.b32 %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &[
            (a, b, 0x3210, a),
            (a, b, 0x7654, b),
            (a, b, 0x0123, 0x1122_4488),
            (a, b, 0x8888, 0),
            (a, b, 0xbbbb, 0xffff_ffff),
            (a, b, 0x1111_5410, 0xc001_2211),
            (a, b, 0xf0d8, 0xff11_ff00),
            (a, b, 0x0bf3, 0x11ff_ff88),
        ],
    );
    // (mode, bytes d.b0..d.b3 for c[1:0] = 0, 1, 2, 3)
    let modes: [(&str, [[u64; 4]; 4]); 6] = [
        (
            "f4e",
            [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]],
        ),
        (
            "b4e",
            [[0, 7, 6, 5], [1, 0, 7, 6], [2, 1, 0, 7], [3, 2, 1, 0]],
        ),
        (
            "rc8",
            [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]],
        ),
        (
            "ecl",
            [[0, 1, 2, 3], [1, 1, 2, 3], [2, 2, 2, 3], [3, 3, 3, 3]],
        ),
        (
            "ecr",
            [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 2, 2], [0, 1, 2, 3]],
        ),
        (
            "rc16",
            [[0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]],
        ),
    ];
    for (mode, table) in modes {
        // Only c[1:0] counts: the same selectors with junk in the upper bits.
        let sel = [0u64, 1, 2, 3, 0xffff_fff0, 0x1234_5671, 0x8000_0006, 0xfb];
        let cases: Vec<_> = sel
            .iter()
            .map(|&c| {
                let row = table[(c & 3) as usize];
                let want = (0..4).map(|i| bytes(row[i]) << (8 * i)).sum();
                (a, b, c, want)
            })
            .collect();
        check3(
            &format!("prmt.b32.{mode} %d, %a, %b, %c;"),
            ["b32", "b32", "b32"],
            "b32",
            &cases,
        );
    }
    // Hand-computed: f4e with c = 1 is bytes 4 3 2 1 = 01 88 44 22.
    check3(
        "prmt.b32.f4e %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &[(a, b, 1, 0x0188_4422)],
    );
    check3(
        "prmt.b32.rc8 %d, %a, %b, %c;",
        ["b32", "b32", "b32"],
        "b32",
        &[(a, b, 2, 0x4444_4444)],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. setp, selp, predicate logic
// ---------------------------------------------------------------------------------------------

/// Runs `setp.<cmp>.<ty> %p1, %a, %b` over all pairs of `vals` and checks it against `want`.
fn check_setp(ty: &str, t: &str, cmp: &str, vals: &[u64], want: &dyn Fn(u64, u64) -> bool) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in vals {
        for &y in vals {
            a.push(x);
            b.push(y);
        }
    }
    let body = format!("setp.{cmp}.{ty} %p1, %a, %b;\n    selp.u32 %d, 1, 0, %p1;");
    let d = lanes(&body, &[(t, &a), (t, &b)], "b32");
    for i in 0..a.len() {
        assert_eq!(
            d[i],
            want(a[i], b[i]) as u64,
            "setp.{cmp}.{ty} a={:#x} b={:#x}",
            a[i],
            b[i]
        );
    }
}

/// setp on integers: eq/ne/lt/le/gt/ge compare by the type's signedness; lo/ls/hi/hs are the
/// unsigned comparisons.
#[test]
fn setp_int() {
    let v32 = [s32(MIN32), s32(-1), 0, 1, s32(MAX32), 0x8000_0001];
    type C = fn(u64, u64) -> bool;
    let signed32: [(&str, C); 6] = [
        ("eq", |a, b| a == b),
        ("ne", |a, b| a != b),
        ("lt", |a, b| (a as u32 as i32) < (b as u32 as i32)),
        ("le", |a, b| (a as u32 as i32) <= (b as u32 as i32)),
        ("gt", |a, b| (a as u32 as i32) > (b as u32 as i32)),
        ("ge", |a, b| (a as u32 as i32) >= (b as u32 as i32)),
    ];
    for (cmp, w) in signed32 {
        check_setp("s32", "b32", cmp, &v32, &w);
    }
    let unsigned: [(&str, C); 10] = [
        ("eq", |a, b| a == b),
        ("ne", |a, b| a != b),
        ("lt", |a, b| a < b),
        ("le", |a, b| a <= b),
        ("gt", |a, b| a > b),
        ("ge", |a, b| a >= b),
        ("lo", |a, b| a < b),
        ("ls", |a, b| a <= b),
        ("hi", |a, b| a > b),
        ("hs", |a, b| a >= b),
    ];
    for (cmp, w) in unsigned {
        check_setp("u32", "b32", cmp, &v32, &w);
    }
    let v64 = [
        s64(i64::MIN),
        s64(-1),
        0,
        1,
        s64(i64::MAX),
        0x1_0000_0000,
        0xffff_ffff,
    ];
    let signed64: [(&str, C); 6] = [
        ("eq", |a, b| a == b),
        ("ne", |a, b| a != b),
        ("lt", |a, b| (a as i64) < (b as i64)),
        ("le", |a, b| (a as i64) <= (b as i64)),
        ("gt", |a, b| (a as i64) > (b as i64)),
        ("ge", |a, b| (a as i64) >= (b as i64)),
    ];
    for (cmp, w) in signed64 {
        check_setp("s64", "b64", cmp, &v64, &w);
    }
    for (cmp, w) in unsigned {
        check_setp("u64", "b64", cmp, &v64, &w);
    }
    check_setp("b32", "b32", "eq", &v32, &|a, b| a == b);
    check_setp("b64", "b64", "ne", &v64, &|a, b| a != b);
    let v16 = [0x8000u64, 0xffff, 0, 1, 0x7fff];
    check_setp("s16", "b16", "lt", &v16, &|a, b| {
        (a as u16 as i16) < (b as u16 as i16)
    });
    check_setp("u16", "b16", "hi", &v16, &|a, b| a > b);
}

type FCmp = fn(f64, f64) -> bool;

/// The float comparisons: eq..ge are ordered (false when either operand is NaN, except ne which
/// is also false), equ..geu are unordered (true when either is NaN), num/nan test for NaN.
/// -0 and +0 compare equal.
fn float_cmps() -> [(&'static str, FCmp); 14] {
    [
        ("eq", |a, b| a == b),
        ("ne", |a, b| !a.is_nan() && !b.is_nan() && a != b),
        ("lt", |a, b| a < b),
        ("le", |a, b| a <= b),
        ("gt", |a, b| a > b),
        ("ge", |a, b| a >= b),
        ("equ", |a, b| a.is_nan() || b.is_nan() || a == b),
        ("neu", |a, b| a.is_nan() || b.is_nan() || a != b),
        ("ltu", |a, b| a.is_nan() || b.is_nan() || a < b),
        ("leu", |a, b| a.is_nan() || b.is_nan() || a <= b),
        ("gtu", |a, b| a.is_nan() || b.is_nan() || a > b),
        ("geu", |a, b| a.is_nan() || b.is_nan() || a >= b),
        ("num", |a, b| !a.is_nan() && !b.is_nan()),
        ("nan", |a, b| a.is_nan() || b.is_nan()),
    ]
}

/// setp on f32/f64 with every comparison (see [`float_cmps`]) over NaN, ±inf, ±0, subnormal
/// and normal operands; with .ftz, subnormal operands compare as zeros.
#[test]
fn setp_float() {
    let v32 = [
        f32::NAN,
        f32::NEG_INFINITY,
        -1.0,
        -0.0,
        0.0,
        1e-40,
        1.0,
        2.0,
        f32::INFINITY,
    ];
    let bits: Vec<u64> = v32.iter().map(|&x| f(x)).collect();
    for (cmp, w) in float_cmps() {
        check_setp("f32", "b32", cmp, &bits, &|a, b| {
            w(
                f32::from_bits(a as u32) as f64,
                f32::from_bits(b as u32) as f64,
            )
        });
    }
    let v64 = [
        f64::NAN,
        f64::NEG_INFINITY,
        -1.5,
        -0.0,
        0.0,
        1.5,
        1e300,
        f64::INFINITY,
    ];
    let bits: Vec<u64> = v64.iter().map(|&x| g(x)).collect();
    for (cmp, w) in float_cmps() {
        check_setp("f64", "b64", cmp, &bits, &|a, b| {
            w(f64::from_bits(a), f64::from_bits(b))
        });
    }
    // .ftz: a subnormal operand compares as a zero of its sign.
    check_setp(
        "f32",
        "b32",
        "eq.ftz",
        &[f(1e-40), f(0.0), f(-1e-40)],
        &|_, _| true,
    );
    check_setp(
        "f32",
        "b32",
        "lt.ftz",
        &[f(1e-40), f(0.0), f(2e-40)],
        &|_, _| false,
    );
}

/// `setp.cmp.type p|q, a, b` writes q = !p; `setp.cmp.bool.type p|q, a, b, {!}c` writes
/// p = (a cmp b) BOOL c and q = !(a cmp b) BOOL c.
#[test]
fn setp_two_dest_and_combine() {
    // Lanes: (a, b, c as 0/1).
    let mut cases = Vec::new();
    for (a, b) in [(1u64, 2u64), (2, 1), (s32(-1), 1), (3, 3)] {
        for c in [0u64, 1] {
            cases.push((a, b, c));
        }
    }
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let c: Vec<u64> = cases.iter().map(|c| c.2).collect();
    let out = "selp.u32 %t1, 1, 0, %p1;\n    selp.u32 %t2, 2, 0, %p2;\n    or.b32 %d, %t1, %t2;";
    let lt = |a: u64, b: u64| (a as u32 as i32) < (b as u32 as i32);
    type B = fn(bool, bool) -> bool;
    let forms: [(&str, B); 7] = [
        ("setp.lt.s32 %p1|%p2, %a, %b;", |t, _| t),
        ("setp.lt.and.s32 %p1|%p2, %a, %b, %p3;", |t, c| t && c),
        ("setp.lt.or.s32 %p1|%p2, %a, %b, %p3;", |t, c| t || c),
        ("setp.lt.xor.s32 %p1|%p2, %a, %b, %p3;", |t, c| t ^ c),
        ("setp.lt.and.s32 %p1|%p2, %a, %b, !%p3;", |t, c| t && !c),
        ("setp.lt.or.s32 %p1|%p2, %a, %b, !%p3;", |t, c| t || !c),
        ("setp.lt.and.s32 %p1, %a, %b, %p3;", |t, c| t && c),
    ];
    for (i, (form, op)) in forms.iter().enumerate() {
        let two = form.contains('|');
        let body =
            format!("setp.ne.u32 %p3, %c, 0;\n    setp.eq.u32 %p2, 0, 0;\n    {form}\n    {out}");
        let d = lanes(&body, &[("b32", &a), ("b32", &b), ("b32", &c)], "b32");
        for (l, &(x, y, z)) in cases.iter().enumerate() {
            let t = lt(x, y);
            let p = op(t, z != 0);
            // Without a second destination %p2 keeps the true it was set to.
            let q = if two { op(!t, z != 0) } else { true };
            let want = p as u64 | (q as u64) << 1;
            assert_eq!(d[l], want, "form {i} `{form}` a={x:#x} b={y:#x} c={z}");
        }
    }
    // A float comparison with NaN: t is false, so p = false and q = true for p|q.
    let d = lanes(
        &format!("setp.lt.f32 %p1|%p2, %a, %b;\n    {out}"),
        &[("b32", &[f(f32::NAN), f(1.0)]), ("b32", &[f(1.0), f(2.0)])],
        "b32",
    );
    assert_eq!(d, vec![2, 1]);
}

/// selp.type d, a, b, c: d = c ? a : b. Predicate logic on .pred registers.
#[test]
fn selp_and_pred_logic() {
    let a = [0x1111_1111u64, f(1.5), 7];
    let b = [0x2222_2222u64, f(-2.5), 9];
    let c = [1u64, 0, 0];
    let body = "setp.ne.u32 %p1, %c, 0;\n    selp.b32 %d, %a, %b, %p1;";
    let d = lanes(body, &[("b32", &a), ("b32", &b), ("b32", &c)], "b32");
    assert_eq!(d, vec![0x1111_1111, f(-2.5), 9]);
    let body = "setp.ne.u32 %p1, %c, 0;\n    selp.f32 %d, %a, %b, %p1;";
    let d = lanes(
        body,
        &[("b32", &a), ("b32", &b), ("b32", &[0, 1, 1])],
        "b32",
    );
    assert_eq!(d, vec![0x2222_2222, f(1.5), 7]);
    let body = "setp.ne.u32 %p1, %c, 0;\n    selp.b64 %d, %a, %b, %p1;";
    let d = lanes(
        body,
        &[
            ("b64", &[u64::MAX, 1 << 40]),
            ("b64", &[5, 1 << 50]),
            ("b32", &[1, 0]),
        ],
        "b64",
    );
    assert_eq!(d, vec![u64::MAX, 1 << 50]);
    let body = "setp.ne.u32 %p1, %c, 0;\n    selp.s32 %d, -1, 2, %p1;";
    let d = lanes(
        body,
        &[("b32", &[0, 0]), ("b32", &[0, 0]), ("b32", &[1, 0])],
        "b32",
    );
    assert_eq!(d, vec![0xffff_ffff, 2]);

    let x = [0u64, 0, 1, 1];
    let y = [0u64, 1, 0, 1];
    let pre = "setp.ne.u32 %p1, %a, 0;\n    setp.ne.u32 %p2, %b, 0;\n    ";
    for (op, w) in [
        ("and", [0u64, 0, 0, 1]),
        ("or", [0, 1, 1, 1]),
        ("xor", [0, 1, 1, 0]),
    ] {
        let body = format!("{pre}{op}.pred %p3, %p1, %p2;\n    selp.u32 %d, 1, 0, %p3;");
        assert_eq!(
            lanes(&body, &[("b32", &x), ("b32", &y)], "b32"),
            w,
            "{op}.pred"
        );
    }
    let body = format!("{pre}not.pred %p3, %p1;\n    selp.u32 %d, 1, 0, %p3;");
    assert_eq!(
        lanes(&body, &[("b32", &x), ("b32", &y)], "b32"),
        vec![1, 1, 0, 0]
    );
    // mov.pred copies.
    let body = format!("{pre}mov.pred %p3, %p2;\n    selp.u32 %d, 1, 0, %p3;");
    assert_eq!(lanes(&body, &[("b32", &x), ("b32", &y)], "b32"), y.to_vec());
}

// ---------------------------------------------------------------------------------------------
// 3. Floating point. Reference: exact values in integers, rounded by the IEEE 754 rules.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rm {
    /// To nearest, ties to even.
    N,
    /// Toward zero.
    Z,
    /// Toward -inf.
    M,
    /// Toward +inf.
    P,
}

const MODES: [(Rm, &str); 4] = [(Rm::N, "rn"), (Rm::Z, "rz"), (Rm::M, "rm"), (Rm::P, "rp")];

/// An IEEE binary format: fraction bits and exponent bits.
#[derive(Clone, Copy)]
struct Fmt {
    man: u32,
    ebits: u32,
}

const F16: Fmt = Fmt { man: 10, ebits: 5 };
const BF16: Fmt = Fmt { man: 7, ebits: 8 };
const F32: Fmt = Fmt { man: 23, ebits: 8 };
const F64: Fmt = Fmt { man: 52, ebits: 11 };

/// A finite value (-1)^neg * mag * 2^exp.
type Exact = (bool, u128, i32);

impl Fmt {
    fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }

    fn inf(self) -> u64 {
        ((1u64 << self.ebits) - 1) << self.man
    }

    fn sign(self) -> u64 {
        1 << (self.man + self.ebits)
    }

    fn is_nan(self, bits: u64) -> bool {
        bits & !self.sign() > self.inf()
    }

    /// The exact value of finite `bits`.
    fn parts(self, bits: u64) -> Exact {
        let neg = bits & self.sign() != 0;
        let be = ((bits >> self.man) & ((1 << self.ebits) - 1)) as i32;
        let frac = (bits & ((1 << self.man) - 1)) as u128;
        assert!(be != (1 << self.ebits) - 1, "not finite: {bits:#x}");
        if be == 0 {
            (neg, frac, 1 - self.bias() - self.man as i32)
        } else {
            (
                neg,
                frac | 1 << self.man,
                be - self.bias() - self.man as i32,
            )
        }
    }

    /// IEEE 754 rounding of the exact value (-1)^neg * mag * 2^exp to this format, with
    /// gradual underflow and the rounding mode's overflow result (inf or the largest finite).
    fn round(self, (neg, mag, exp): Exact, r: Rm) -> u64 {
        let sign = if neg { self.sign() } else { 0 };
        if mag == 0 {
            return sign;
        }
        let man = self.man as i32;
        let emin = 1 - self.bias();
        let top = exp + 127 - mag.leading_zeros() as i32;
        let mut q = top.max(emin) - man;
        let (mut sig, inc) = if exp >= q {
            (mag << (exp - q), false)
        } else {
            let s = (q - exp) as u32;
            let (sig, rem, half) = if s > 128 {
                (0, mag, None)
            } else if s == 128 {
                (0, mag, Some(1u128 << 127))
            } else {
                (mag >> s, mag & ((1u128 << s) - 1), Some(1u128 << (s - 1)))
            };
            let inexact = rem != 0;
            let inc = match r {
                Rm::N => match half {
                    Some(h) => rem > h || (rem == h && sig & 1 == 1),
                    None => false,
                },
                Rm::Z => false,
                Rm::M => neg && inexact,
                Rm::P => !neg && inexact,
            };
            (sig, inc)
        };
        sig += inc as u128;
        if sig == 1 << (man + 1) {
            sig >>= 1;
            q += 1;
        }
        if sig < 1 << man {
            return sign | sig as u64;
        }
        let be = q + man + self.bias();
        if be >= (1 << self.ebits) - 1 {
            let to_inf = match r {
                Rm::N => true,
                Rm::Z => false,
                Rm::M => neg,
                Rm::P => !neg,
            };
            return sign | if to_inf { self.inf() } else { self.inf() - 1 };
        }
        sign | (be as u64) << self.man | (sig as u64 & ((1 << self.man) - 1))
    }
}

/// Exact a + b (the sign of an exact zero sum per IEEE 754: +0, or -0 when rounding toward
/// -inf, unless both operands are zeros of the same sign).
fn exact_add(a: Exact, b: Exact, r: Rm) -> Exact {
    let e = a.2.min(b.2);
    let val = |x: Exact| -> i128 {
        let sh = x.2 - e;
        assert!(
            sh < 128 - 1 - (128 - x.1.leading_zeros() as i32),
            "operands too far apart"
        );
        let m = (x.1 << sh) as i128;
        if x.0 { -m } else { m }
    };
    let s = val(a) + val(b);
    if s == 0 {
        let neg = if a.1 == 0 && b.1 == 0 && a.0 == b.0 {
            a.0
        } else {
            r == Rm::M
        };
        return (neg, 0, 0);
    }
    (s < 0, s.unsigned_abs(), e)
}

fn exact_mul(a: Exact, b: Exact) -> Exact {
    (a.0 ^ b.0, a.1 * b.1, a.2 + b.2)
}

/// a / b (b != 0) truncated to at least 70 significant bits, with a sticky bit below them: this
/// rounds to any format of up to 64 bits exactly as the infinitely precise quotient does.
fn exact_div(a: Exact, b: Exact) -> Exact {
    assert!(b.1 != 0);
    if a.1 == 0 {
        return (a.0 ^ b.0, 0, 0);
    }
    let k = a.1.leading_zeros() as i32 - 1;
    let n = a.1 << k;
    let (q, rem) = (n / b.1, n % b.1);
    (a.0 ^ b.0, q << 1 | (rem != 0) as u128, a.2 - b.2 - k - 1)
}

/// sqrt(a) (a >= 0) with a sticky bit, as [`exact_div`].
fn exact_sqrt(a: Exact) -> Exact {
    let (neg, mut m, mut e) = a;
    if m == 0 {
        return (neg, 0, 0);
    }
    if e % 2 != 0 {
        m <<= 1;
        e -= 1;
    }
    let j = (m.leading_zeros() as i32 - 1) / 2;
    m <<= 2 * j;
    e -= 2 * j;
    let s = m.isqrt();
    (false, s << 1 | (s * s != m) as u128, e / 2 - 1)
}

fn p32(x: f32) -> Exact {
    F32.parts(x.to_bits() as u64)
}
fn p64(x: f64) -> Exact {
    F64.parts(x.to_bits())
}

/// A small deterministic generator of test operands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }

    /// An f32 with random sign and fraction and unbiased exponent `e` (subnormal below -126).
    fn f32_at(&mut self, e: i32) -> f32 {
        let e = e.clamp(-127, 127);
        let bits = (self.next() as u32 & 0x807f_ffff) | (((e + 127) as u32) << 23);
        f32::from_bits(bits)
    }

    fn f64_at(&mut self, e: i32) -> f64 {
        let e = e.clamp(-1023, 1023);
        let bits = (self.next() & 0x800f_ffff_ffff_ffff) | (((e + 1023) as u64) << 52);
        f64::from_bits(bits)
    }
}

/// Runs a binary f32 instruction over `pairs` and compares it bit for bit with `want`.
fn check_f32_2(body: &str, pairs: &[(f32, f32)], want: &dyn Fn(f32, f32) -> u64) {
    let a: Vec<u64> = pairs.iter().map(|p| f(p.0)).collect();
    let b: Vec<u64> = pairs.iter().map(|p| f(p.1)).collect();
    let d = lanes(body, &[("b32", &a), ("b32", &b)], "b32");
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let w = want(x, y);
        let ok = if F32.is_nan(w) {
            F32.is_nan(d[i])
        } else {
            d[i] == w
        };
        assert!(
            ok,
            "`{body}` a={x:e} ({:#x}) b={y:e} ({:#x}): got {:e} ({:#x}), want {:e} ({w:#x})",
            x.to_bits(),
            y.to_bits(),
            f32::from_bits(d[i] as u32),
            d[i],
            f32::from_bits(w as u32)
        );
    }
}

fn check_f64_2(body: &str, pairs: &[(f64, f64)], want: &dyn Fn(f64, f64) -> u64) {
    let a: Vec<u64> = pairs.iter().map(|p| g(p.0)).collect();
    let b: Vec<u64> = pairs.iter().map(|p| g(p.1)).collect();
    let d = lanes(body, &[("b64", &a), ("b64", &b)], "b64");
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let w = want(x, y);
        let ok = if F64.is_nan(w) {
            F64.is_nan(d[i])
        } else {
            d[i] == w
        };
        assert!(
            ok,
            "`{body}` a={x:e} b={y:e}: got {:e} ({:#x}), want {:e} ({w:#x})",
            f64::from_bits(d[i]),
            d[i],
            f64::from_bits(w)
        );
    }
}

/// Hand-picked finite f32 pairs for add/sub: ties, sticky bits, cancellation, subnormals,
/// overflow at the top of the range, negative values.
fn add_pairs32() -> Vec<(f32, f32)> {
    let t = |e: i32| 2f32.powi(e);
    let mut v = vec![
        (1.0, t(-24)),             // exactly half an ulp: tie
        (1.0, 3.0 * t(-25)),       // above half an ulp
        (1.0, t(-25)),             // below half an ulp
        (1.0 + t(-23), t(-24)),    // tie from an odd significand
        (-1.0, -t(-24)),           // negative tie
        (-1.0, -3.0 * t(-25)),     // negative, above half
        (1.0, -t(-30)),            // just below 1
        (f32::MAX, f32::MAX),      // overflow
        (-f32::MAX, -f32::MAX),    // negative overflow
        (f32::MAX, t(103)),        // MAX + half an ulp: rounds up to 2^128 under rn
        (f32::MAX, t(102)),        // below half an ulp
        (1.5 * t(-126), -t(-126)), // subnormal result
        (t(-149), t(-149)),        // subnormals
        (3.0, -3.0),               // exact zero: sign depends on rounding mode
        (-0.0, -0.0),              // -0
        (0.0, -0.0),               // +0 (rm: -0)
        (1e-45, 0.0),              // smallest subnormal
        (16777216.0, 1.0),         // 2^24 + 1
        (-16777216.0, -1.0),
        (0.1, 0.2),
    ];
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..150 {
        let ea = r.range(-150, 127);
        let eb = ea + r.range(-30, 30);
        v.push((r.f32_at(ea), r.f32_at(eb)));
    }
    v
}

/// add/sub/mul/fma on f32 and f64 with .rn/.rz/.rm/.rp: the exact result rounded by IEEE 754
/// (the ISA: these are IEEE 754 compliant with the given rounding).
#[test]
fn float_add_sub_mul_rounding() {
    let pairs = add_pairs32();
    for (r, m) in MODES {
        check_f32_2(&format!("add.{m}.f32 %d, %a, %b;"), &pairs, &|x, y| {
            F32.round(exact_add(p32(x), p32(y), r), r)
        });
        check_f32_2(&format!("sub.{m}.f32 %d, %a, %b;"), &pairs, &|x, y| {
            F32.round(exact_add(p32(x), p32(-y), r), r)
        });
    }
    // Hand-checked directions: 1 + 2^-24 lies halfway between 1 and 1 + 2^-23.
    let up = 1.0 + 2f32.powi(-23);
    for (m, w) in [("rn", 1.0), ("rz", 1.0), ("rm", 1.0), ("rp", up)] {
        check_f32_2(
            &format!("add.{m}.f32 %d, %a, %b;"),
            &[(1.0, 2f32.powi(-24))],
            &|_, _| f(w),
        );
    }
    for (m, w) in [("rn", -1.0), ("rz", -1.0), ("rm", -up), ("rp", -1.0)] {
        check_f32_2(
            &format!("add.{m}.f32 %d, %a, %b;"),
            &[(-1.0, -2f32.powi(-24))],
            &|_, _| f(w),
        );
    }
    for (m, w) in [
        ("rn", f32::INFINITY),
        ("rz", f32::MAX),
        ("rm", f32::MAX),
        ("rp", f32::INFINITY),
    ] {
        check_f32_2(
            &format!("add.{m}.f32 %d, %a, %b;"),
            &[(f32::MAX, f32::MAX)],
            &|_, _| f(w),
        );
        check_f32_2(
            &format!("add.{m}.f32 %d, %a, %b;"),
            &[(-f32::MAX, -f32::MAX)],
            &|_, _| {
                f(if m == "rm" || m == "rn" {
                    f32::NEG_INFINITY
                } else {
                    -f32::MAX
                })
            },
        );
    }
    check_f32_2("add.rm.f32 %d, %a, %b;", &[(3.0, -3.0)], &|_, _| f(-0.0));
    check_f32_2("add.rn.f32 %d, %a, %b;", &[(3.0, -3.0)], &|_, _| f(0.0));

    // mul: random exponents reach overflow and (gradual) underflow.
    let mut rng = Rng(0x0dd_ba11_cafe);
    let mut mp: Vec<(f32, f32)> = (0..200)
        .map(|_| {
            let (ea, eb) = (rng.range(-80, 80), rng.range(-80, 80));
            (rng.f32_at(ea), rng.f32_at(eb))
        })
        .collect();
    mp.extend([
        (3.0, 1.0 / 3.0),
        (f32::MAX, 2.0),
        (-f32::MAX, 1.5),
        (2f32.powi(-70), 2f32.powi(-70)),
        (1.5 * 2f32.powi(-75), 2f32.powi(-75)),
        (1e-45, 0.5),
        (1e-45, 1.5),
        (-1e-45, 0.5),
        (0.0, -5.0),
        (1.0 + 2f32.powi(-23), 1.0 + 2f32.powi(-23)),
    ]);
    for (r, m) in MODES {
        check_f32_2(&format!("mul.{m}.f32 %d, %a, %b;"), &mp, &|x, y| {
            F32.round(exact_mul(p32(x), p32(y)), r)
        });
    }
    // Plain add/mul/sub default to .rn.
    check_f32_2("add.f32 %d, %a, %b;", &pairs, &|x, y| f(x + y));
    check_f32_2("mul.f32 %d, %a, %b;", &mp, &|x, y| f(x * y));

    // f64.
    let mut rng = Rng(0xfeed_f00d_1234);
    let mut dp: Vec<(f64, f64)> = (0..150)
        .map(|_| {
            let ea = rng.range(-1074, 1023);
            let eb = ea + rng.range(-60, 60);
            (rng.f64_at(ea), rng.f64_at(eb))
        })
        .collect();
    dp.extend([
        (1.0, 2f64.powi(-53)),
        (-1.0, -2f64.powi(-53)),
        (1.0, 3.0 * 2f64.powi(-54)),
        (f64::MAX, f64::MAX),
        (-f64::MAX, -f64::MAX),
        (2.0, -2.0),
        (5e-324, 5e-324),
    ]);
    for (r, m) in MODES {
        check_f64_2(&format!("add.{m}.f64 %d, %a, %b;"), &dp, &|x, y| {
            F64.round(exact_add(p64(x), p64(y), r), r)
        });
        check_f64_2(&format!("sub.{m}.f64 %d, %a, %b;"), &dp, &|x, y| {
            F64.round(exact_add(p64(x), p64(-y), r), r)
        });
    }
    let mut rng = Rng(0x00ab_cdef_0123);
    let mut dm: Vec<(f64, f64)> = (0..150)
        .map(|_| {
            let (ea, eb) = (rng.range(-600, 600), rng.range(-600, 600));
            (rng.f64_at(ea), rng.f64_at(eb))
        })
        .collect();
    dm.extend([
        (3.0, 1.0 / 3.0),
        (f64::MAX, 2.0),
        (2f64.powi(-540), 2f64.powi(-540)),
        (1e-160, -1.2345e-160),
        (5e-324, 0.75),
        (-5e-324, 0.25),
        (1.1e-300, 3.3e-20),
    ]);
    for (r, m) in MODES {
        check_f64_2(&format!("mul.{m}.f64 %d, %a, %b;"), &dm, &|x, y| {
            F64.round(exact_mul(p64(x), p64(y)), r)
        });
    }
    check_f64_2("add.f64 %d, %a, %b;", &dp, &|x, y| g(x + y));
    check_f64_2("mul.f64 %d, %a, %b;", &dm, &|x, y| g(x * y));

    // Non-finite operands (IEEE): inf - inf and 0 * inf are NaN; NaN propagates.
    let inf = f32::INFINITY;
    let specials = [
        (inf, 1.0),
        (inf, -inf),
        (-inf, -inf),
        (f32::NAN, 1.0),
        (0.0, inf),
        (inf, inf),
    ];
    for (_, m) in MODES {
        check_f32_2(&format!("add.{m}.f32 %d, %a, %b;"), &specials, &|x, y| {
            f(x + y)
        });
        check_f32_2(&format!("mul.{m}.f32 %d, %a, %b;"), &specials, &|x, y| {
            f(x * y)
        });
    }
}

/// fma (and mad with a rounding modifier, the same instruction): a*b+c computed exactly, then
/// rounded once.
#[test]
fn float_fma_rounding() {
    let t = |e: i32| 2f32.powi(e);
    let mut cases: Vec<(f32, f32, f32)> = vec![
        // (1+2^-23)^2 - (1+2^-22) = 2^-46 exactly: lost by a separate multiply and add.
        (1.0 + t(-23), 1.0 + t(-23), -(1.0 + t(-22))),
        (1.0 + t(-23), 1.0 - t(-24), -1.0),
        (3.0, 1.0 / 3.0, -1.0),
        (-3.0, 1.0 / 3.0, 1.0),
        (f32::MAX, 2.0, -f32::MAX),
        (f32::MAX, 1.0, f32::MAX),
        (t(-100), t(-40), 0.0),
        (t(-100), t(-40), -t(-126)),
        (2.0, 3.0, -6.0),
        (-2.0, 3.0, 6.0),
        (0.0, -1.0, 0.0),
        (-0.0, 1.0, -0.0),
        (1.0, 1.0, t(-24)),
        (1.0, 1.0, -t(-25)),
    ];
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..200 {
        let (ea, eb) = (rng.range(-60, 60), rng.range(-60, 60));
        let ec = ea + eb + rng.range(-40, 40);
        cases.push((rng.f32_at(ea), rng.f32_at(eb), rng.f32_at(ec)));
    }
    let a: Vec<u64> = cases.iter().map(|c| f(c.0)).collect();
    let b: Vec<u64> = cases.iter().map(|c| f(c.1)).collect();
    let c: Vec<u64> = cases.iter().map(|c| f(c.2)).collect();
    for (r, m) in MODES {
        for op in ["fma", "mad"] {
            let body = format!("{op}.{m}.f32 %d, %a, %b, %c;");
            let d = lanes(&body, &[("b32", &a), ("b32", &b), ("b32", &c)], "b32");
            for (i, &(x, y, z)) in cases.iter().enumerate() {
                let w = F32.round(exact_add(exact_mul(p32(x), p32(y)), p32(z), r), r);
                assert_eq!(
                    d[i],
                    w,
                    "`{body}` {x:e} * {y:e} + {z:e}: got {:e}, want {:e}",
                    f32::from_bits(d[i] as u32),
                    f32::from_bits(w as u32)
                );
            }
        }
    }
    // .rn agrees with IEEE fusedMultiplyAdd as Rust computes it.
    let d = lanes(
        "fma.rn.f32 %d, %a, %b, %c;",
        &[("b32", &a), ("b32", &b), ("b32", &c)],
        "b32",
    );
    for (i, &(x, y, z)) in cases.iter().enumerate() {
        assert_eq!(d[i], f(x.mul_add(y, z)), "fma.rn.f32 {x:e} {y:e} {z:e}");
    }
    assert_eq!(d[0], f(t(-46)));

    // fma.rn.f64 against IEEE fusedMultiplyAdd.
    let mut rng = Rng(0x5eed_0002);
    let mut dc: Vec<(f64, f64, f64)> = vec![
        (
            1.0 + 2f64.powi(-52),
            1.0 + 2f64.powi(-52),
            -(1.0 + 2f64.powi(-51)),
        ),
        (0.1, 10.0, -1.0),
        (f64::MAX, 2.0, -f64::MAX),
    ];
    for _ in 0..100 {
        let (ea, eb) = (rng.range(-400, 400), rng.range(-400, 400));
        let ec = ea + eb + rng.range(-80, 80);
        dc.push((rng.f64_at(ea), rng.f64_at(eb), rng.f64_at(ec)));
    }
    let a: Vec<u64> = dc.iter().map(|c| g(c.0)).collect();
    let b: Vec<u64> = dc.iter().map(|c| g(c.1)).collect();
    let c: Vec<u64> = dc.iter().map(|c| g(c.2)).collect();
    let d = lanes(
        "fma.rn.f64 %d, %a, %b, %c;",
        &[("b64", &a), ("b64", &b), ("b64", &c)],
        "b64",
    );
    for (i, &(x, y, z)) in dc.iter().enumerate() {
        assert_eq!(d[i], g(x.mul_add(y, z)), "fma.rn.f64 {x:e} {y:e} {z:e}");
    }
    assert_eq!(d[0], g(2f64.powi(-104)));
}

/// .ftz: subnormal inputs and results are flushed to zero of the same sign. .sat: the result is
/// clamped to [0.0, 1.0], and NaN becomes +0.0.
#[test]
fn float_ftz_sat() {
    let sub = 2f32.powi(-130); // subnormal
    let t = |e: i32| 2f32.powi(e);
    // (a, b, add.ftz, mul.ftz)
    let cases: [(f32, f32, f32, f32); 7] = [
        (sub, 0.0, 0.0, 0.0),
        (-sub, -0.0, -0.0, 0.0),
        (sub, 1.0, 1.0, 0.0),
        (1.5 * t(-126), -t(-126), 0.0, -0.0),
        (t(-70), t(-70), t(-70) * 2.0, 0.0),
        (-t(-70), t(-70), 0.0, -0.0),
        (t(-126), 1.0, 1.0, t(-126)),
    ];
    let pairs: Vec<(f32, f32)> = cases.iter().map(|c| (c.0, c.1)).collect();
    let d = lanes(
        "add.rn.ftz.f32 %d, %a, %b;",
        &[
            ("b32", &pairs.iter().map(|p| f(p.0)).collect::<Vec<_>>()),
            ("b32", &pairs.iter().map(|p| f(p.1)).collect::<Vec<_>>()),
        ],
        "b32",
    );
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(d[i], f(c.2), "add.ftz {:e} {:e}", c.0, c.1);
    }
    let d = lanes(
        "mul.rn.ftz.f32 %d, %a, %b;",
        &[
            ("b32", &pairs.iter().map(|p| f(p.0)).collect::<Vec<_>>()),
            ("b32", &pairs.iter().map(|p| f(p.1)).collect::<Vec<_>>()),
        ],
        "b32",
    );
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(d[i], f(c.3), "mul.ftz {:e} {:e}", c.0, c.1);
    }
    // Without .ftz the same subnormals are kept (IEEE gradual underflow).
    check_f32_2(
        "mul.rn.f32 %d, %a, %b;",
        &[(t(-70), t(-70)), (sub, 1.0)],
        &|x, y| f(x * y),
    );
    check_f32_2(
        "add.rn.f32 %d, %a, %b;",
        &[(1.5 * t(-126), -t(-126))],
        &|_, _| f(t(-127)),
    );
    // fma.ftz: subnormal c is flushed; subnormal result flushed.
    let d = lanes(
        "fma.rn.ftz.f32 %d, %a, %b, %c;",
        &[
            ("b32", &[f(1.0), f(t(-70)), f(sub)]),
            ("b32", &[f(1.0), f(-t(-70)), f(1.0)]),
            ("b32", &[f(sub), f(0.0), f(0.0)]),
        ],
        "b32",
    );
    assert_eq!(d, vec![f(1.0), f(-0.0), f(0.0)]);

    // .sat
    let cases: [(f32, f32, f32); 7] = [
        (0.75, 0.5, 1.0),
        (-0.5, 0.25, 0.0),
        (0.25, 0.25, 0.5),
        (f32::NAN, 1.0, 0.0),
        (f32::INFINITY, f32::NEG_INFINITY, 0.0),
        (f32::INFINITY, 1.0, 1.0),
        (-3.0, -4.0, 0.0),
    ];
    check_f32_2(
        "add.rn.sat.f32 %d, %a, %b;",
        &cases.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        &|x, y| {
            f(cases
                .iter()
                .find(|c| c.0.to_bits() == x.to_bits() && c.1 == y)
                .unwrap()
                .2)
        },
    );
    check_f32_2(
        "add.sat.f32 %d, %a, %b;",
        &[(0.75, 0.5), (f32::NAN, 0.5)],
        &|x, _| f(if x.is_nan() { 0.0 } else { 1.0 }),
    );
    check_f32_2(
        "mul.rn.sat.f32 %d, %a, %b;",
        &[(4.0, 0.5), (-1.0, 0.5), (0.5, 0.5), (0.0, f32::INFINITY)],
        &|x, y| {
            let p = x * y;
            f(if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) })
        },
    );
    check_f32_2(
        "sub.rn.sat.f32 %d, %a, %b;",
        &[(0.25, 0.5), (2.0, 0.5), (0.75, 0.5)],
        &|x, y| f((x - y).clamp(0.0, 1.0)),
    );
    let d = lanes(
        "fma.rn.sat.f32 %d, %a, %b, %c;",
        &[
            ("b32", &[f(2.0), f(2.0), f(0.5), f(f32::INFINITY)]),
            ("b32", &[f(2.0), f(-2.0), f(0.5), f(0.0)]),
            ("b32", &[f(0.0), f(0.0), f(0.25), f(1.0)]),
        ],
        "b32",
    );
    assert_eq!(d, vec![f(1.0), f(0.0), f(0.5), f(0.0)]);
}

/// min/max: a NaN operand gives the other operand, two NaNs give NaN, and -0.0 is less than
/// +0.0. With .NaN, any NaN operand gives NaN.
#[test]
fn float_min_max() {
    let nan = f32::NAN;
    let pairs = [
        (nan, 1.0),
        (1.0, nan),
        (nan, nan),
        (-0.0, 0.0),
        (0.0, -0.0),
        (f32::NEG_INFINITY, 3.0),
        (2.0, -7.5),
        (1e-40, -1e-40),
    ];
    let num = |x: f32, y: f32, lt: bool| -> u64 {
        if x.is_nan() && y.is_nan() {
            f(nan)
        } else if x.is_nan() {
            f(y)
        } else if y.is_nan() {
            f(x)
        } else if x == y {
            // Only ±0 here: min gives -0, max +0.
            f(if lt { -0.0 } else { 0.0 })
        } else if (x < y) == lt {
            f(x)
        } else {
            f(y)
        }
    };
    check_f32_2("min.f32 %d, %a, %b;", &pairs, &|x, y| num(x, y, true));
    check_f32_2("max.f32 %d, %a, %b;", &pairs, &|x, y| num(x, y, false));
    let nanp = |x: f32, y: f32, lt: bool| -> u64 {
        if x.is_nan() || y.is_nan() {
            f(nan)
        } else {
            num(x, y, lt)
        }
    };
    check_f32_2("min.NaN.f32 %d, %a, %b;", &pairs, &|x, y| nanp(x, y, true));
    check_f32_2("max.NaN.f32 %d, %a, %b;", &pairs, &|x, y| nanp(x, y, false));
    // .ftz: subnormal operands are zeros of their sign.
    check_f32_2(
        "min.ftz.f32 %d, %a, %b;",
        &[(1e-40, 1.0), (-1e-40, 1.0)],
        &|x, _| f(if x > 0.0 { 0.0 } else { -0.0 }),
    );
    let dp = [
        (f64::NAN, 2.0),
        (2.0, f64::NAN),
        (-0.0, 0.0),
        (0.0, -0.0),
        (1e300, -1e300),
        (f64::NAN, f64::NAN),
    ];
    let num64 = |x: f64, y: f64, lt: bool| -> u64 {
        if x.is_nan() && y.is_nan() {
            g(f64::NAN)
        } else if x.is_nan() {
            g(y)
        } else if y.is_nan() {
            g(x)
        } else if x == y {
            g(if lt { -0.0 } else { 0.0 })
        } else if (x < y) == lt {
            g(x)
        } else {
            g(y)
        }
    };
    check_f64_2("min.f64 %d, %a, %b;", &dp, &|x, y| num64(x, y, true));
    check_f64_2("max.f64 %d, %a, %b;", &dp, &|x, y| num64(x, y, false));
}

/// Integer ordering of f32 bits (adjacent floats differ by 1; ±0 both map to 0).
fn ord32(x: f32) -> i64 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        -((b & 0x7fff_ffff) as i64)
    } else {
        b as i64
    }
}

fn ulps(x: f32, y: f32) -> u64 {
    (ord32(x) - ord32(y)).unsigned_abs()
}

/// Runs a unary f32 instruction over `xs`.
fn un32(body: &str, xs: &[f32]) -> Vec<f32> {
    let a: Vec<u64> = xs.iter().map(|&x| f(x)).collect();
    lanes(body, &[("b32", &a)], "b32")
        .into_iter()
        .map(|b| f32::from_bits(b as u32))
        .collect()
}

fn un64(body: &str, xs: &[f64]) -> Vec<f64> {
    let a: Vec<u64> = xs.iter().map(|&x| g(x)).collect();
    lanes(body, &[("b64", &a)], "b64")
        .into_iter()
        .map(f64::from_bits)
        .collect()
}

/// Checks special-value results bit for bit (NaN: any NaN).
fn specials32(body: &str, cases: &[(f32, f32)]) {
    let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let d = un32(body, &xs);
    for (i, &(x, w)) in cases.iter().enumerate() {
        let ok = if w.is_nan() {
            d[i].is_nan()
        } else {
            d[i].to_bits() == w.to_bits()
        };
        assert!(ok, "`{body}` a={x:e}: got {:e}, want {w:e}", d[i]);
    }
}

fn specials64(body: &str, cases: &[(f64, f64)]) {
    let xs: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let d = un64(body, &xs);
    for (i, &(x, w)) in cases.iter().enumerate() {
        let ok = if w.is_nan() {
            d[i].is_nan()
        } else {
            d[i].to_bits() == w.to_bits()
        };
        assert!(ok, "`{body}` a={x:e}: got {:e}, want {w:e}", d[i]);
    }
}

/// div.rnd (IEEE-rounded quotient) for f32 and f64, including rcp.rnd (1/a); div.full (at most 2
/// ulp); div.approx (at most 2 ulp for |b| in [2^-126, 2^126]; for 2^126 < |b| < 2^128 it gives
/// 0, or NaN when a is infinite).
#[test]
fn float_div() {
    let mut rng = Rng(0xd1d1_d1d1);
    let mut pairs: Vec<(f32, f32)> = (0..200)
        .map(|_| {
            let (ea, eb) = (rng.range(-126, 127), rng.range(-126, 127));
            (rng.f32_at(ea), rng.f32_at(eb))
        })
        .collect();
    pairs.extend([
        (1.0, 3.0),
        (-1.0, 3.0),
        (2.0, 3.0),
        (-2.0, -3.0),
        (1.0, 10.0),
        (f32::MAX, 0.5),
        (-f32::MAX, 0.5),
        (2f32.powi(-126), 3.0),
        (1e-45, 2.0),
        (1e-45, -3.0),
        (0.0, -5.0),
    ]);
    for (r, m) in MODES {
        check_f32_2(&format!("div.{m}.f32 %d, %a, %b;"), &pairs, &|x, y| {
            F32.round(exact_div(p32(x), p32(y)), r)
        });
    }
    // .rn is IEEE division (the f64 quotient rounds to f32 correctly: 53 >= 2*24+2).
    check_f32_2("div.rn.f32 %d, %a, %b;", &pairs, &|x, y| {
        f(((x as f64) / (y as f64)) as f32)
    });
    // Hand-checked: 1/3 lies strictly between two f32 neighbours lo < 1/3 < hi, nearer to hi
    // (1/3 = 1.0101...b x 2^-2 continues 1 0 1... after the 24th bit).
    let hi = 1.0f32 / 3.0;
    let lo = hi.next_down();
    assert!((lo as f64) < 1.0 / 3.0 && (hi as f64) > 1.0 / 3.0);
    assert!(hi as f64 - 1.0 / 3.0 < 1.0 / 3.0 - lo as f64);
    for (m, w, wn) in [
        ("rn", hi, -hi),
        ("rz", lo, -lo),
        ("rm", lo, -hi),
        ("rp", hi, -lo),
    ] {
        check_f32_2(
            &format!("div.{m}.f32 %d, %a, %b;"),
            &[(1.0, 3.0)],
            &|_, _| f(w),
        );
        check_f32_2(
            &format!("div.{m}.f32 %d, %a, %b;"),
            &[(-1.0, 3.0)],
            &|_, _| f(wn),
        );
    }
    let inf = f32::INFINITY;
    let sp = [
        (1.0, 0.0),
        (-1.0, 0.0),
        (1.0, -0.0),
        (0.0, 0.0),
        (1.0, inf),
        (-1.0, inf),
        (inf, inf),
        (inf, 2.0),
        (f32::NAN, 1.0),
    ];
    for (_, m) in MODES {
        check_f32_2(&format!("div.{m}.f32 %d, %a, %b;"), &sp, &|x, y| f(x / y));
    }

    let mut rng = Rng(0xd2d2_d2d2);
    let mut dp: Vec<(f64, f64)> = (0..150)
        .map(|_| {
            let (ea, eb) = (rng.range(-1022, 1023), rng.range(-1022, 1023));
            (rng.f64_at(ea), rng.f64_at(eb))
        })
        .collect();
    // Subnormal quotients whose residual a - q*b lies below the smallest subnormal.
    dp.extend([
        (1.0, 3.0),
        (-1.0, 3.0),
        (5e-324, 3.0),
        (f64::MAX, 0.25),
        (1.5e-323, 3.5),
        (-1.5e-323, 3.5),
        (1e-310, 3.0),
        (1e-310, -7.0),
        (2.5e-320, 1.1),
    ]);
    for (r, m) in MODES {
        check_f64_2(&format!("div.{m}.f64 %d, %a, %b;"), &dp, &|x, y| {
            F64.round(exact_div(p64(x), p64(y)), r)
        });
    }
    check_f64_2("div.rn.f64 %d, %a, %b;", &dp, &|x, y| g(x / y));

    // rcp.rnd: 1/a rounded; ±0 -> ±inf, ±inf -> ±0.
    let xs: Vec<f32> = pairs.iter().map(|p| p.1).collect();
    for (r, m) in MODES {
        let d = un32(&format!("rcp.{m}.f32 %d, %a;"), &xs);
        for (i, &x) in xs.iter().enumerate() {
            let w = F32.round(exact_div(p32(1.0), p32(x)), r);
            assert_eq!(f(d[i]), w, "rcp.{m}.f32 {x:e}");
        }
    }
    for (_, m) in MODES {
        specials32(
            &format!("rcp.{m}.f32 %d, %a;"),
            &[
                (0.0, inf),
                (-0.0, -inf),
                (inf, 0.0),
                (-inf, -0.0),
                (f32::NAN, f32::NAN),
            ],
        );
        specials64(
            &format!("rcp.{m}.f64 %d, %a;"),
            &[
                (0.0, f64::INFINITY),
                (-0.0, f64::NEG_INFINITY),
                (f64::INFINITY, 0.0),
                (f64::NEG_INFINITY, -0.0),
                (f64::NAN, f64::NAN),
            ],
        );
    }
    let xs64: Vec<f64> = dp.iter().map(|p| p.1).collect();
    for (r, m) in MODES {
        let d = un64(&format!("rcp.{m}.f64 %d, %a;"), &xs64);
        for (i, &x) in xs64.iter().enumerate() {
            let w = F64.round(exact_div(p64(1.0), p64(x)), r);
            assert_eq!(g(d[i]), w, "rcp.{m}.f64 {x:e}");
        }
    }

    // div.full: within 2 ulp over the whole range.
    let mut full = pairs.clone();
    full.extend([(2f32.powi(100), 2f32.powi(127)), (1.0, 2f32.powi(120))]);
    let a: Vec<u64> = full.iter().map(|p| f(p.0)).collect();
    let b: Vec<u64> = full.iter().map(|p| f(p.1)).collect();
    let d = lanes(
        "div.full.f32 %d, %a, %b;",
        &[("b32", &a), ("b32", &b)],
        "b32",
    );
    for (i, &(x, y)) in full.iter().enumerate() {
        let q = ((x as f64) / (y as f64)) as f32;
        let got = f32::from_bits(d[i] as u32);
        assert!(
            ulps(got, q) <= 2,
            "div.full.f32 {x:e}/{y:e}: got {got:e}, want {q:e}"
        );
    }
    // div.approx: within 2 ulp for |b| in [2^-126, 2^126] (normal quotients).
    let ap: Vec<(f32, f32)> = pairs
        .iter()
        .copied()
        .filter(|&(x, y)| {
            let q = (x as f64 / y as f64).abs();
            y.abs() <= 2f32.powi(126) && q >= 2f64.powi(-126) && q < f32::MAX as f64
        })
        .collect();
    assert!(ap.len() > 100);
    let a: Vec<u64> = ap.iter().map(|p| f(p.0)).collect();
    let b: Vec<u64> = ap.iter().map(|p| f(p.1)).collect();
    let d = lanes(
        "div.approx.f32 %d, %a, %b;",
        &[("b32", &a), ("b32", &b)],
        "b32",
    );
    for (i, &(x, y)) in ap.iter().enumerate() {
        let q = ((x as f64) / (y as f64)) as f32;
        let got = f32::from_bits(d[i] as u32);
        assert!(
            ulps(got, q) <= 2,
            "div.approx.f32 {x:e}/{y:e}: got {got:e}, want {q:e}"
        );
    }
    // div.approx with 2^126 < |b| < 2^128: zero (of the quotient's sign), NaN for infinite a.
    let big = 1.5 * 2f32.powi(126);
    let d = lanes(
        "div.approx.f32 %d, %a, %b;",
        &[
            (
                "b32",
                &[f(1.0), f(-1.0), f(f32::MAX), f(5.0), f(inf), f(-inf)],
            ),
            ("b32", &[f(big), f(big), f(big), f(-big), f(big), f(-big)]),
        ],
        "b32",
    );
    assert_eq!(
        d[..4],
        [f(0.0), f(-0.0), f(0.0), f(-0.0)],
        "div.approx, huge divisor"
    );
    assert!(
        F32.is_nan(d[4]) && F32.is_nan(d[5]),
        "div.approx inf / huge: {:#x?}",
        &d[4..]
    );
    check_f32_2(
        "div.approx.ftz.f32 %d, %a, %b;",
        &[(1.0, 4.0), (-3.0, 2.0)],
        &|x, y| f(x / y),
    );
}

/// sqrt.rnd: IEEE-rounded square root; sqrt.approx: close to it. Both: negative -> NaN,
/// -0 -> -0, +inf -> +inf. rsqrt.approx: -0 -> -inf, +0 -> +inf, +inf -> +0, negative -> NaN.
#[test]
fn float_sqrt_rsqrt() {
    let mut rng = Rng(0x5a5a_5a5a);
    let mut xs: Vec<f32> = (0..200)
        .map(|_| {
            let e = rng.range(-149, 127);
            rng.f32_at(e).abs()
        })
        .collect();
    xs.extend([2.0, 3.0, 4.0, 1e-45, 2f32.powi(-127), f32::MAX, 0.0]);
    for (r, m) in MODES {
        let d = un32(&format!("sqrt.{m}.f32 %d, %a;"), &xs);
        for (i, &x) in xs.iter().enumerate() {
            let w = F32.round(exact_sqrt(p32(x)), r);
            assert_eq!(f(d[i]), w, "sqrt.{m}.f32 {x:e}: got {:e}", d[i]);
        }
    }
    let d = un32("sqrt.rn.f32 %d, %a;", &xs);
    for (i, &x) in xs.iter().enumerate() {
        assert_eq!(d[i], (x as f64).sqrt() as f32, "sqrt.rn.f32 {x:e}");
    }
    let inf = f32::INFINITY;
    let sp = [
        (-1.0, f32::NAN),
        (-inf, f32::NAN),
        (-0.0, -0.0),
        (0.0, 0.0),
        (inf, inf),
        (f32::NAN, f32::NAN),
        (-1e-45, f32::NAN),
    ];
    for (_, m) in MODES {
        specials32(&format!("sqrt.{m}.f32 %d, %a;"), &sp);
    }
    specials32("sqrt.approx.f32 %d, %a;", &sp[..6]);
    specials32(
        "sqrt.approx.ftz.f32 %d, %a;",
        &[(1e-40, 0.0), (-1e-40, -0.0), (4.0, 2.0)],
    );
    let d = un32("sqrt.approx.f32 %d, %a;", &xs);
    for (i, &x) in xs.iter().enumerate() {
        let w = (x as f64).sqrt();
        assert!(
            (d[i] as f64 - w).abs() <= w * 2f64.powi(-22),
            "sqrt.approx.f32 {x:e}: got {:e}",
            d[i]
        );
    }
    let mut dx: Vec<f64> = (0..100)
        .map(|_| {
            let e = rng.range(-1074, 1023);
            rng.f64_at(e).abs()
        })
        .collect();
    dx.extend([2.0, 5e-324, f64::MAX]);
    for (r, m) in MODES {
        let d = un64(&format!("sqrt.{m}.f64 %d, %a;"), &dx);
        for (i, &x) in dx.iter().enumerate() {
            assert_eq!(
                g(d[i]),
                F64.round(exact_sqrt(p64(x)), r),
                "sqrt.{m}.f64 {x:e}"
            );
        }
        specials64(
            &format!("sqrt.{m}.f64 %d, %a;"),
            &[
                (-1.0, f64::NAN),
                (-0.0, -0.0),
                (f64::INFINITY, f64::INFINITY),
            ],
        );
    }

    let rs = [
        (-0.0, -inf),
        (0.0, inf),
        (inf, 0.0),
        (-inf, f32::NAN),
        (-4.0, f32::NAN),
        (f32::NAN, f32::NAN),
        (4.0, 0.5),
        (0.25, 2.0),
    ];
    specials32("rsqrt.approx.f32 %d, %a;", &rs);
    specials32(
        "rsqrt.approx.ftz.f32 %d, %a;",
        &[(1e-40, inf), (-1e-40, -inf)],
    );
    let pos: Vec<f32> = xs.iter().copied().filter(|&x| x > 0.0).collect();
    let d = un32("rsqrt.approx.f32 %d, %a;", &pos);
    for (i, &x) in pos.iter().enumerate() {
        let w = 1.0 / (x as f64).sqrt();
        assert!(
            (d[i] as f64 - w).abs() <= w * 2f64.powi(-22),
            "rsqrt.approx.f32 {x:e}: got {:e}, want {w:e}",
            d[i]
        );
    }
    specials64(
        "rsqrt.approx.f64 %d, %a;",
        &[
            (-0.0, f64::NEG_INFINITY),
            (0.0, f64::INFINITY),
            (f64::INFINITY, 0.0),
            (-1.0, f64::NAN),
        ],
    );
    let d = un64("rsqrt.approx.f64 %d, %a;", &[4.0, 2.0, 1e100]);
    for (x, y) in [4.0f64, 2.0, 1e100].iter().zip(d) {
        let w = 1.0 / x.sqrt();
        assert!(
            (y - w).abs() <= w * 2f64.powi(-22),
            "rsqrt.approx.f64 {x:e}: {y:e}"
        );
    }
}

/// rcp.approx.f32: special values ±0 -> ±inf, ±inf -> ±0; other values within 1 ulp.
#[test]
fn float_rcp_approx() {
    let inf = f32::INFINITY;
    let sp = [
        (0.0, inf),
        (-0.0, -inf),
        (inf, 0.0),
        (-inf, -0.0),
        (f32::NAN, f32::NAN),
        (2.0, 0.5),
        (-0.25, -4.0),
    ];
    specials32("rcp.approx.f32 %d, %a;", &sp);
    specials32("rcp.approx.ftz.f32 %d, %a;", &sp);
    specials32(
        "rcp.approx.ftz.f32 %d, %a;",
        &[(1e-40, inf), (-1e-40, -inf)],
    );
    let xs = [3.0f32, 7.0, -0.1, 1.0e-30, 12345.678, -9.87e20];
    let d = un32("rcp.approx.f32 %d, %a;", &xs);
    for (i, &x) in xs.iter().enumerate() {
        let w = (1.0 / x as f64) as f32;
        assert!(
            ulps(d[i], w) <= 1,
            "rcp.approx.f32 {x:e}: got {:e}, want {w:e}",
            d[i]
        );
    }
}

/// ex2.approx: 2^a within 2 ulp; -inf -> +0, ±0 -> 1, +inf -> +inf. lg2.approx: log2(a);
/// ±0 -> -inf, +inf -> +inf, negative -> NaN.
#[test]
fn float_ex2_lg2() {
    let inf = f32::INFINITY;
    let sp = [
        (f32::NEG_INFINITY, 0.0),
        (-0.0, 1.0),
        (0.0, 1.0),
        (inf, inf),
        (f32::NAN, f32::NAN),
        (3.0, 8.0),
        (-2.0, 0.25),
        (200.0, inf),
    ];
    specials32("ex2.approx.f32 %d, %a;", &sp);
    specials32("ex2.approx.ftz.f32 %d, %a;", &sp);
    specials32(
        "ex2.approx.ftz.f32 %d, %a;",
        &[(1e-40, 1.0), (-1e-40, 1.0), (-200.0, 0.0)],
    );
    let mut rng = Rng(0xe2e2_e2e2);
    let xs: Vec<f32> = (0..200)
        .map(|_| (rng.next() % 250_000) as f32 / 1000.0 - 125.0)
        .chain([0.5, -0.5, 1e-3, 127.9, -125.9, 0.1])
        .collect();
    for body in ["ex2.approx.f32 %d, %a;", "ex2.approx.ftz.f32 %d, %a;"] {
        let d = un32(body, &xs);
        for (i, &x) in xs.iter().enumerate() {
            let w = (x as f64).exp2() as f32;
            assert!(
                ulps(d[i], w) <= 2,
                "`{body}` {x}: got {:e}, want {w:e}",
                d[i]
            );
        }
    }

    let lsp = [
        (0.0, f32::NEG_INFINITY),
        (-0.0, f32::NEG_INFINITY),
        (inf, inf),
        (-1.0, f32::NAN),
        (f32::NEG_INFINITY, f32::NAN),
        (f32::NAN, f32::NAN),
        (1.0, 0.0),
        (8.0, 3.0),
        (0.125, -3.0),
    ];
    specials32("lg2.approx.f32 %d, %a;", &lsp);
    specials32("lg2.approx.ftz.f32 %d, %a;", &lsp);
    specials32("lg2.approx.ftz.f32 %d, %a;", &[(1e-40, f32::NEG_INFINITY)]);
    let xs: Vec<f32> = (0..200)
        .map(|_| {
            let e = rng.range(-126, 127);
            rng.f32_at(e).abs()
        })
        .chain([1.5, 0.75, 1.0 + 1e-6, 3.0, 1e-40])
        .collect();
    let d = un32("lg2.approx.f32 %d, %a;", &xs);
    for (i, &x) in xs.iter().enumerate() {
        let w = (x as f64).log2();
        assert!(
            (d[i] as f64 - w).abs() <= 2f64.powi(-22) * w.abs().max(1.0),
            "lg2.approx.f32 {x:e}: got {:e}, want {w:e}",
            d[i]
        );
    }
}

/// sin/cos.approx: absolute error at most 2^-20.5 on [-2pi, 2pi]; sin(±0) = ±0, cos(0) = 1,
/// ±inf -> NaN. tanh.approx: relative error at most 2^-11; ±0 -> ±0, ±inf -> ±1.
#[test]
fn float_sin_cos_tanh() {
    let pi2 = 2.0 * std::f32::consts::PI;
    let xs: Vec<f32> = (0..=400).map(|i| -pi2 + pi2 * (i as f32) / 200.0).collect();
    for (body, func) in [
        ("sin.approx.f32 %d, %a;", f64::sin as fn(f64) -> f64),
        ("sin.approx.ftz.f32 %d, %a;", f64::sin),
        ("cos.approx.f32 %d, %a;", f64::cos),
        ("cos.approx.ftz.f32 %d, %a;", f64::cos),
    ] {
        let d = un32(body, &xs);
        for (i, &x) in xs.iter().enumerate() {
            let w = func(x as f64);
            assert!(
                (d[i] as f64 - w).abs() <= 2f64.powi(-41).sqrt(),
                "`{body}` {x}: got {:e}, want {w:e}",
                d[i]
            );
        }
    }
    let inf = f32::INFINITY;
    specials32(
        "sin.approx.f32 %d, %a;",
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (inf, f32::NAN),
            (-inf, f32::NAN),
            (f32::NAN, f32::NAN),
        ],
    );
    specials32(
        "cos.approx.f32 %d, %a;",
        &[
            (0.0, 1.0),
            (-0.0, 1.0),
            (inf, f32::NAN),
            (-inf, f32::NAN),
            (f32::NAN, f32::NAN),
        ],
    );

    let mut xs: Vec<f32> = (0..=200).map(|i| -10.0 + 0.1 * i as f32).collect();
    xs.extend([1e-5, -1e-5, 20.0, -20.0, 0.5, 1e-30]);
    let d = un32("tanh.approx.f32 %d, %a;", &xs);
    for (i, &x) in xs.iter().enumerate() {
        let w = (x as f64).tanh();
        assert!(
            (d[i] as f64 - w).abs() <= w.abs() * 2f64.powi(-11),
            "tanh.approx.f32 {x}: got {:e}, want {w:e}",
            d[i]
        );
    }
    specials32(
        "tanh.approx.f32 %d, %a;",
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (inf, 1.0),
            (-inf, -1.0),
            (f32::NAN, f32::NAN),
        ],
    );
}

/// neg/abs flip or clear the sign bit (also of zeros and infinities); .ftz flushes subnormals.
#[test]
fn float_neg_abs() {
    let inf = f32::INFINITY;
    specials32(
        "neg.f32 %d, %a;",
        &[
            (0.0, -0.0),
            (-0.0, 0.0),
            (1.5, -1.5),
            (-inf, inf),
            (1e-40, -1e-40),
        ],
    );
    specials32(
        "abs.f32 %d, %a;",
        &[
            (-0.0, 0.0),
            (0.0, 0.0),
            (-1.5, 1.5),
            (-inf, inf),
            (-1e-40, 1e-40),
        ],
    );
    specials32(
        "neg.ftz.f32 %d, %a;",
        &[(1e-40, -0.0), (-1e-40, 0.0), (2.0, -2.0)],
    );
    specials32("abs.ftz.f32 %d, %a;", &[(-1e-40, 0.0), (-2.0, 2.0)]);
    specials64(
        "neg.f64 %d, %a;",
        &[
            (0.0, -0.0),
            (1e-310, -1e-310),
            (f64::INFINITY, f64::NEG_INFINITY),
        ],
    );
    specials64(
        "abs.f64 %d, %a;",
        &[(-0.0, 0.0), (-1e-310, 1e-310), (-2.5, 2.5)],
    );
    let d = un32("abs.f32 %d, %a;", &[f32::from_bits(0xffc0_0001)]);
    assert!(d[0].is_nan());
}

// ---------------------------------------------------------------------------------------------
// 4. cvt
// ---------------------------------------------------------------------------------------------

/// Float to integer: .rni/.rzi/.rmi/.rpi round to an integer (nearest-even, toward zero, down,
/// up); results out of range clamp to the destination's MIN/MAX; NaN gives 0, except for an
/// .f64 source or a 64-bit destination, where it gives 1 << (width - 1).
#[test]
fn cvt_float_to_int() {
    let xs = [
        2.5f32,
        3.5,
        -2.5,
        -0.5,
        0.5,
        1.5,
        -1.5,
        2.7,
        -2.7,
        2.1,
        -2.1,
        -0.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        1e-40,
    ];
    type R = fn(f64) -> f64;
    let modes: [(&str, R); 4] = [
        ("rni", f64::round_ties_even),
        ("rzi", f64::trunc),
        ("rmi", f64::floor),
        ("rpi", f64::ceil),
    ];
    let a: Vec<u64> = xs.iter().map(|&x| f(x)).collect();
    for (m, rf) in modes {
        let d = lanes(&format!("cvt.{m}.s32.f32 %d, %a;"), &[("b32", &a)], "b32");
        for (i, &x) in xs.iter().enumerate() {
            let w = if x.is_nan() {
                0
            } else {
                rf(x as f64).clamp(i32::MIN as f64, i32::MAX as f64) as i32
            };
            assert_eq!(d[i], s32(w), "cvt.{m}.s32.f32 {x:e}");
        }
        let d = lanes(&format!("cvt.{m}.u32.f32 %d, %a;"), &[("b32", &a)], "b32");
        for (i, &x) in xs.iter().enumerate() {
            let w = if x.is_nan() {
                0
            } else {
                rf(x as f64).clamp(0.0, u32::MAX as f64) as u32
            };
            assert_eq!(d[i], w as u64, "cvt.{m}.u32.f32 {x:e}");
        }
        let d = lanes(&format!("cvt.{m}.s64.f32 %d, %a;"), &[("b32", &a)], "b64");
        for (i, &x) in xs.iter().enumerate() {
            let w = if x.is_nan() {
                i64::MIN
            } else {
                rf(x as f64).clamp(i64::MIN as f64, i64::MAX as f64) as i64
            };
            assert_eq!(d[i], s64(w), "cvt.{m}.s64.f32 {x:e}");
        }
        let d = lanes(&format!("cvt.{m}.u16.f32 %d, %a;"), &[("b32", &a)], "b16");
        for (i, &x) in xs.iter().enumerate() {
            let w = if x.is_nan() {
                0
            } else {
                rf(x as f64).clamp(0.0, 65535.0) as u64
            };
            assert_eq!(d[i], w, "cvt.{m}.u16.f32 {x:e}");
        }
        let d = lanes(&format!("cvt.{m}.s8.f32 %d, %a;"), &[("b32", &a)], "b8");
        for (i, &x) in xs.iter().enumerate() {
            let w = if x.is_nan() {
                0
            } else {
                rf(x as f64).clamp(-128.0, 127.0) as i8 as u8 as u64
            };
            assert_eq!(d[i], w, "cvt.{m}.s8.f32 {x:e}");
        }
    }
    // Hand-checked values.
    check1(
        "cvt.rni.s32.f32 %d, %a;",
        "b32",
        "b32",
        &[
            (f(2.5), 2),
            (f(3.5), 4),
            (f(-2.5), s32(-2)),
            (f(-0.5), 0),
            (f(1e10), s32(MAX32)),
            (f(f32::NEG_INFINITY), s32(MIN32)),
            (f(f32::NAN), 0),
        ],
    );
    check1(
        "cvt.rzi.u8.f32 %d, %a;",
        "b32",
        "b8",
        &[(f(300.0), 255), (f(-3.0), 0), (f(7.9), 7), (f(f32::NAN), 0)],
    );
    check1(
        "cvt.rzi.u32.f32 %d, %a;",
        "b32",
        "b32",
        &[(f(-5.0), 0), (f(-0.7), 0)],
    );
    check1(
        "cvt.rmi.s32.f32 %d, %a;",
        "b32",
        "b32",
        &[(f(-2.1), s32(-3))],
    );
    check1("cvt.rpi.s32.f32 %d, %a;", "b32", "b32", &[(f(2.1), 3)]);
    check1(
        "cvt.rni.u64.f32 %d, %a;",
        "b32",
        "b64",
        &[(f(f32::NAN), 1 << 63), (f(-1.0), 0)],
    );
    // f64 sources: NaN -> 1 << (width - 1).
    let nan = g(f64::NAN);
    check1(
        "cvt.rzi.u32.f64 %d, %a;",
        "b64",
        "b32",
        &[
            (nan, 0x8000_0000),
            (g(-1.0), 0),
            (g(5e9), 0xffff_ffff),
            (g(3.99), 3),
        ],
    );
    check1(
        "cvt.rni.s32.f64 %d, %a;",
        "b64",
        "b32",
        &[
            (nan, 0x8000_0000),
            (g(2.5), 2),
            (g(-3.5), s32(-4)),
            (g(1e20), s32(MAX32)),
            (g(-1e20), s32(MIN32)),
        ],
    );
    check1(
        "cvt.rzi.s64.f64 %d, %a;",
        "b64",
        "b64",
        &[
            (nan, s64(i64::MIN)),
            (g(1e30), s64(i64::MAX)),
            (g(-1e30), s64(i64::MIN)),
            (g(-7.9), s64(-7)),
        ],
    );
    check1(
        "cvt.rzi.u64.f64 %d, %a;",
        "b64",
        "b64",
        &[(nan, 1 << 63), (g(1e30), u64::MAX), (g(-1.0), 0)],
    );
    check1(
        "cvt.rzi.u16.f64 %d, %a;",
        "b64",
        "b16",
        &[(nan, 0x8000), (g(70000.0), 0xffff)],
    );
}

/// Integer to float: the integer rounded to the float format with .rn/.rz/.rm/.rp.
#[test]
fn cvt_int_to_float() {
    let u: Vec<u64> = vec![
        0,
        1,
        16_777_216,
        16_777_217,
        16_777_218,
        16_777_219,
        0xffff_ffff,
        0x8000_0080,
        0x8000_0081,
        0x7fff_ffff,
        0xffff_ff7f,
    ];
    for (r, m) in MODES {
        check1(
            &format!("cvt.{m}.f32.u32 %d, %a;"),
            "b32",
            "b32",
            &u.iter()
                .map(|&x| (x, F32.round((false, x as u128, 0), r)))
                .collect::<Vec<_>>(),
        );
        check1(
            &format!("cvt.{m}.f32.s32 %d, %a;"),
            "b32",
            "b32",
            &u.iter()
                .map(|&x| {
                    let v = x as u32 as i32;
                    (x, F32.round((v < 0, v.unsigned_abs() as u128, 0), r))
                })
                .collect::<Vec<_>>(),
        );
        let s: Vec<u64> = vec![
            s64(i64::MIN),
            s64(i64::MAX),
            s64(-16_777_217),
            s64(-(1 << 40) - 1),
            1 << 53 | 1,
            3,
        ];
        check1(
            &format!("cvt.{m}.f32.s64 %d, %a;"),
            "b64",
            "b32",
            &s.iter()
                .map(|&x| {
                    let v = x as i64;
                    (x, F32.round((v < 0, v.unsigned_abs() as u128, 0), r))
                })
                .collect::<Vec<_>>(),
        );
        check1(
            &format!("cvt.{m}.f64.u64 %d, %a;"),
            "b64",
            "b64",
            &[u64::MAX, 1 << 53 | 1, 1 << 53 | 3, 12345]
                .iter()
                .map(|&x| (x, F64.round((false, x as u128, 0), r)))
                .collect::<Vec<_>>(),
        );
        check1(
            &format!("cvt.{m}.f32.u64 %d, %a;"),
            "b64",
            "b32",
            &[u64::MAX, 1 << 24 | 1, (1 << 40) + (1 << 16) + 1]
                .iter()
                .map(|&x| (x, F32.round((false, x as u128, 0), r)))
                .collect::<Vec<_>>(),
        );
    }
    // Hand-checked: 2^24 + 1 is a tie (even: 2^24); 2^32 - 1 rounds up to 2^32 under rn.
    check1(
        "cvt.rn.f32.u32 %d, %a;",
        "b32",
        "b32",
        &[(16_777_217, f(16_777_216.0))],
    );
    check1(
        "cvt.rp.f32.u32 %d, %a;",
        "b32",
        "b32",
        &[(16_777_217, f(16_777_218.0))],
    );
    check1(
        "cvt.rn.f32.u32 %d, %a;",
        "b32",
        "b32",
        &[(16_777_219, f(16_777_220.0))],
    );
    check1(
        "cvt.rn.f32.u32 %d, %a;",
        "b32",
        "b32",
        &[(0xffff_ffff, f(4_294_967_296.0))],
    );
    check1(
        "cvt.rz.f32.u32 %d, %a;",
        "b32",
        "b32",
        &[(0xffff_ffff, f(4_294_967_040.0))],
    );
    check1(
        "cvt.rm.f32.s32 %d, %a;",
        "b32",
        "b32",
        &[(s32(-16_777_217), f(-16_777_218.0))],
    );
    // Exact conversions.
    check1(
        "cvt.rn.f64.s32 %d, %a;",
        "b32",
        "b64",
        &[(s32(MIN32), g(-2147483648.0)), (s32(-7), g(-7.0))],
    );
    check1(
        "cvt.rn.f32.s16 %d, %a;",
        "b16",
        "b32",
        &[(0x8000, f(-32768.0))],
    );
    check1(
        "cvt.rn.f32.u16 %d, %a;",
        "b16",
        "b32",
        &[(0x8000, f(32768.0))],
    );
}

/// Float to narrower float: f64->f32, f32->f16, f32->bf16 rounded by the mode (IEEE, with
/// overflow to inf or the largest finite value per mode); f16/bf16->f32 are exact.
#[test]
fn cvt_float_to_float() {
    let mut ds: Vec<f64> = vec![
        1.0 / 3.0,
        -1.0 / 3.0,
        1e39,
        -1e39,
        1e-40,
        -1e-40,
        1e-50,
        -1e-50,
        f32::MAX as f64 + 2f64.powi(103),
        0.1,
        2f64.powi(-150),
        3.0 * 2f64.powi(-151),
    ];
    let mut rng = Rng(0xc0c0_c0c0);
    for _ in 0..100 {
        let e = rng.range(-160, 130);
        ds.push(rng.f64_at(e));
    }
    for (r, m) in MODES {
        let d = lanes(
            &format!("cvt.{m}.f32.f64 %d, %a;"),
            &[("b64", &ds.iter().map(|&x| g(x)).collect::<Vec<_>>())],
            "b32",
        );
        for (i, &x) in ds.iter().enumerate() {
            assert_eq!(d[i], F32.round(p64(x), r), "cvt.{m}.f32.f64 {x:e}");
        }
    }
    let sp: Vec<u64> = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0]
        .iter()
        .map(|&x| g(x))
        .collect();
    let d = lanes("cvt.rn.f32.f64 %d, %a;", &[("b64", &sp)], "b32");
    assert!(F32.is_nan(d[0]));
    assert_eq!(d[1..], [f(f32::INFINITY), f(f32::NEG_INFINITY), f(-0.0)]);
    // Hand-checked overflow per mode: 1e39 > MAX.
    for (m, w) in [
        ("rn", f32::INFINITY),
        ("rz", f32::MAX),
        ("rm", f32::MAX),
        ("rp", f32::INFINITY),
    ] {
        check1(
            &format!("cvt.{m}.f32.f64 %d, %a;"),
            "b64",
            "b32",
            &[(g(1e39), f(w))],
        );
    }
    check1("cvt.rp.f32.f64 %d, %a;", "b64", "b32", &[(g(1e-50), 1)]);
    check1(
        "cvt.rm.f32.f64 %d, %a;",
        "b64",
        "b32",
        &[(g(-1e-50), 0x8000_0001)],
    );
    check1("cvt.rn.f32.f64 %d, %a;", "b64", "b32", &[(g(1e-50), 0)]);
    // f32 -> f64 exact.
    check1(
        "cvt.f64.f32 %d, %a;",
        "b32",
        "b64",
        &[
            (f(0.1), g(0.1f32 as f64)),
            (f(1e-45), g(1e-45f32 as f64)),
            (f(-0.0), g(-0.0)),
        ],
    );

    // f32 -> f16 / bf16.
    let mut xs: Vec<f32> = vec![
        1.0 / 3.0,
        -1.0 / 3.0,
        65504.0,
        65520.0,
        -65520.0,
        1e5,
        -1e5,
        1e-7,
        2f32.powi(-25),
        -2f32.powi(-25),
        3.0 * 2f32.powi(-26),
        2f32.powi(-30),
        -0.0,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        3.0e38,
        f32::MAX,
        -f32::MAX,
        1e-40,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
    ];
    for _ in 0..100 {
        let e = rng.range(-30, 20);
        xs.push(rng.f32_at(e));
    }
    for _ in 0..50 {
        let e = rng.range(-140, 127);
        xs.push(rng.f32_at(e));
    }
    let a: Vec<u64> = xs.iter().map(|&x| f(x)).collect();
    for (fmt, name) in [(F16, "f16"), (BF16, "bf16")] {
        for (r, m) in MODES {
            let body = format!("cvt.{m}.{name}.f32 %d, %a;");
            let d = lanes(&body, &[("b32", &a)], "b16");
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(d[i], fmt.round(p32(x), r), "`{body}` {x:e}");
            }
        }
    }
    // Cross-check rn with the `half` crate, and hand-checked f16 cases.
    let d = lanes("cvt.rn.f16.f32 %d, %a;", &[("b32", &a)], "b16");
    for (i, &x) in xs.iter().enumerate() {
        assert_eq!(
            d[i],
            half::f16::from_f32(x).to_bits() as u64,
            "cvt.rn.f16.f32 {x:e}"
        );
    }
    let d = lanes("cvt.rn.bf16.f32 %d, %a;", &[("b32", &a)], "b16");
    for (i, &x) in xs.iter().enumerate() {
        assert_eq!(
            d[i],
            half::bf16::from_f32(x).to_bits() as u64,
            "cvt.rn.bf16.f32 {x:e}"
        );
    }
    // 65520 is halfway between 65504 (odd significand) and 2^16: rn overflows to inf.
    check1(
        "cvt.rn.f16.f32 %d, %a;",
        "b32",
        "b16",
        &[
            (f(65520.0), 0x7c00),
            (f(2f32.powi(-25)), 0),
            (f(-1e5), 0xfc00),
        ],
    );
    check1(
        "cvt.rz.f16.f32 %d, %a;",
        "b32",
        "b16",
        &[
            (f(65520.0), 0x7bff),
            (f(1e5), 0x7bff),
            (f(f32::INFINITY), 0x7c00),
        ],
    );
    check1(
        "cvt.rp.f16.f32 %d, %a;",
        "b32",
        "b16",
        &[(f(2f32.powi(-25)), 1)],
    );
    check1(
        "cvt.rm.f16.f32 %d, %a;",
        "b32",
        "b16",
        &[(f(-2f32.powi(-25)), 0x8001)],
    );
    let d = lanes("cvt.rn.f16.f32 %d, %a;", &[("b32", &[f(f32::NAN)])], "b16");
    assert!(F16.is_nan(d[0]));
    let d = lanes("cvt.rn.bf16.f32 %d, %a;", &[("b32", &[f(f32::NAN)])], "b16");
    assert!(BF16.is_nan(d[0]));

    // f16 / bf16 -> f32: exact.
    check1(
        "cvt.f32.f16 %d, %a;",
        "b16",
        "b32",
        &[
            (0x3c00, f(1.0)),
            (0x0001, f(2f32.powi(-24))),
            (0x7c00, f(f32::INFINITY)),
            (0xfc00, f(f32::NEG_INFINITY)),
            (0x8000, f(-0.0)),
            (0x7bff, f(65504.0)),
            (0x3555, f(half::f16::from_bits(0x3555).to_f32())),
        ],
    );
    let d = lanes("cvt.f32.f16 %d, %a;", &[("b16", &[0x7e00])], "b32");
    assert!(F32.is_nan(d[0]));
    check1(
        "cvt.f32.bf16 %d, %a;",
        "b16",
        "b32",
        &[
            (0x3f80, f(1.0)),
            (0xc2f7, 0xc2f7_0000),
            (0x0001, 0x0001_0000),
            (0x7f80, f(f32::INFINITY)),
        ],
    );
}

/// cvt.rn{.relu}.{f16x2,bf16x2}.f32 d, a, b: d's upper half is a converted, its lower half b
/// converted; .relu makes negative results 0 (and NaN the canonical NaN).
#[test]
fn cvt_packed_half() {
    let pairs = [
        (1.0f32, 2.0f32),
        (-1.0, 0.5),
        (1.0 / 3.0, -65504.0),
        (1e5, -1e-3),
        (f32::NAN, 3.0),
    ];
    let a: Vec<u64> = pairs.iter().map(|p| f(p.0)).collect();
    let b: Vec<u64> = pairs.iter().map(|p| f(p.1)).collect();
    for (fmt, name) in [(F16, "f16x2"), (BF16, "bf16x2")] {
        let conv = |x: f32, relu: bool| -> u64 {
            if x.is_nan() {
                return u64::MAX;
            }
            let v = fmt.round(p32(x), Rm::N);
            if relu && v & fmt.sign() != 0 { 0 } else { v }
        };
        for relu in [false, true] {
            let body = if relu {
                format!("cvt.rn.relu.{name}.f32 %d, %a, %b;")
            } else {
                format!("cvt.rn.{name}.f32 %d, %a, %b;")
            };
            let d = lanes(&body, &[("b32", &a), ("b32", &b)], "b32");
            for (i, &(x, y)) in pairs.iter().enumerate() {
                let (hi, lo) = (d[i] >> 16, d[i] & 0xffff);
                let (wh, wl) = (conv(x, relu), conv(y, relu));
                if wh == u64::MAX {
                    assert!(fmt.is_nan(hi), "`{body}` {x:e}: {hi:#x}");
                    if relu {
                        // The canonical NaN: 0x7fff.
                        assert_eq!(hi, 0x7fff, "`{body}` NaN");
                    }
                } else {
                    assert_eq!(hi, wh, "`{body}` a={x:e} (upper half)");
                }
                assert_eq!(lo, wl, "`{body}` b={y:e} (lower half)");
            }
        }
    }
    check2(
        "cvt.rn.f16x2.f32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(f(1.0), f(2.0), 0x3c00_4000)],
    );
    check2(
        "cvt.rn.relu.bf16x2.f32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(f(-1.0), f(1.0), 0x0000_3f80)],
    );
    check2(
        "cvt.rz.f16x2.f32 %d, %a, %b;",
        "b32",
        "b32",
        "b32",
        &[(f(1e5), f(65520.0), 0x7bff_7bff)],
    );
}

/// Integer to integer: widening sign- or zero-extends by the source type; narrowing truncates;
/// .sat clamps to the destination's range (negative to 0 for unsigned destinations).
#[test]
fn cvt_int_to_int() {
    check1(
        "cvt.s32.s16 %d, %a;",
        "b16",
        "b32",
        &[(0x8000, 0xffff_8000), (0x7fff, 0x7fff)],
    );
    check1("cvt.u32.u16 %d, %a;", "b16", "b32", &[(0x8000, 0x8000)]);
    check1(
        "cvt.s32.s8 %d, %a;",
        "b8",
        "b32",
        &[(0x80, 0xffff_ff80), (0x7f, 0x7f)],
    );
    check1("cvt.u32.u8 %d, %a;", "b8", "b32", &[(0x80, 0x80)]);
    check1(
        "cvt.u16.u32 %d, %a;",
        "b32",
        "b16",
        &[(0x1234_5678, 0x5678), (0xffff_ffff, 0xffff)],
    );
    check1(
        "cvt.s16.s32 %d, %a;",
        "b32",
        "b16",
        &[(0x1234_8765, 0x8765)],
    );
    check1("cvt.u8.u32 %d, %a;", "b32", "b8", &[(0x1234_56ff, 0xff)]);
    check1(
        "cvt.s64.s32 %d, %a;",
        "b32",
        "b64",
        &[(s32(-1), u64::MAX), (s32(MIN32), s64(MIN32 as i64))],
    );
    check1(
        "cvt.u64.u32 %d, %a;",
        "b32",
        "b64",
        &[(0xffff_ffff, 0xffff_ffff)],
    );
    check1(
        "cvt.s64.u32 %d, %a;",
        "b32",
        "b64",
        &[(0xffff_ffff, 0xffff_ffff)],
    );
    check1("cvt.u64.s32 %d, %a;", "b32", "b64", &[(s32(-1), u64::MAX)]);
    check1(
        "cvt.u32.u64 %d, %a;",
        "b64",
        "b32",
        &[(0x1_2345_6789, 0x2345_6789)],
    );
    check1(
        "cvt.sat.s8.s32 %d, %a;",
        "b32",
        "b8",
        &[(300, 0x7f), (s32(-300), 0x80), (s32(-5), 0xfb), (100, 100)],
    );
    check1(
        "cvt.sat.u16.s32 %d, %a;",
        "b32",
        "b16",
        &[(s32(-5), 0), (70000, 0xffff), (1234, 1234)],
    );
    check1(
        "cvt.sat.u8.s32 %d, %a;",
        "b32",
        "b8",
        &[(s32(-1), 0), (256, 255)],
    );
    check1(
        "cvt.sat.u32.s32 %d, %a;",
        "b32",
        "b32",
        &[(s32(-1), 0), (5, 5)],
    );
    check1(
        "cvt.sat.s32.u32 %d, %a;",
        "b32",
        "b32",
        &[(0xffff_ffff, s32(MAX32)), (5, 5)],
    );
    check1(
        "cvt.sat.s32.s64 %d, %a;",
        "b64",
        "b32",
        &[
            (s64(i64::MIN), s32(MIN32)),
            (s64(i64::MAX), s32(MAX32)),
            (s64(-7), s32(-7)),
        ],
    );
    check1(
        "cvt.sat.u32.u64 %d, %a;",
        "b64",
        "b32",
        &[(1 << 40, 0xffff_ffff)],
    );
    check1("cvt.sat.u64.s64 %d, %a;", "b64", "b64", &[(s64(-1), 0)]);
    check1("cvt.sat.s16.s8 %d, %a;", "b8", "b16", &[(0x80, 0xff80)]);
}

/// cvt.f32.f32 with .rni/.rzi/.rmi/.rpi rounds to an integral value (keeping the sign of zero);
/// .sat on a float destination clamps to [0.0, 1.0] with NaN -> +0.0; .ftz flushes subnormals.
#[test]
fn cvt_float_same_and_sat() {
    let xs = [
        2.5f32,
        -2.5,
        3.5,
        -0.4,
        0.4,
        -2.7,
        2.1,
        -2.1,
        -0.5,
        1e20,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        8388607.5,
        -0.0,
    ];
    type R = fn(f32) -> f32;
    for (m, rf) in [
        ("rni", f32::round_ties_even as R),
        ("rzi", f32::trunc),
        ("rmi", f32::floor),
        ("rpi", f32::ceil),
    ] {
        let cases: Vec<(f32, f32)> = xs.iter().map(|&x| (x, rf(x))).collect();
        specials32(&format!("cvt.{m}.f32.f32 %d, %a;"), &cases);
    }
    specials32(
        "cvt.rni.f32.f32 %d, %a;",
        &[(2.5, 2.0), (-2.5, -2.0), (3.5, 4.0), (-0.4, -0.0)],
    );
    specials32("cvt.rpi.f32.f32 %d, %a;", &[(-0.5, -0.0), (0.2, 1.0)]);
    specials32("cvt.rmi.f32.f32 %d, %a;", &[(0.5, 0.0), (-0.2, -1.0)]);
    specials64(
        "cvt.rni.f64.f64 %d, %a;",
        &[
            (2.5, 2.0),
            (-3.5, -4.0),
            (-0.25, -0.0),
            (4503599627370495.5, 4503599627370496.0),
        ],
    );
    specials32(
        "cvt.sat.f32.f32 %d, %a;",
        &[
            (1.5, 1.0),
            (-0.5, 0.0),
            (0.5, 0.5),
            (f32::NAN, 0.0),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, 0.0),
        ],
    );
    specials32(
        "cvt.ftz.f32.f32 %d, %a;",
        &[(1e-40, 0.0), (-1e-40, -0.0), (1.5, 1.5)],
    );
    specials32(
        "cvt.rzi.sat.f32.f32 %d, %a;",
        &[(2.7, 1.0), (0.7, 0.0), (-3.0, 0.0)],
    );
    check1(
        "cvt.rn.sat.f32.f64 %d, %a;",
        "b64",
        "b32",
        &[
            (g(2.0), f(1.0)),
            (g(-1.0), f(0.0)),
            (g(0.25), f(0.25)),
            (g(f64::NAN), f(0.0)),
        ],
    );
    check1(
        "cvt.rn.sat.f32.s32 %d, %a;",
        "b32",
        "b32",
        &[(5, f(1.0)), (s32(-3), f(0.0)), (0, f(0.0)), (1, f(1.0))],
    );
    check1(
        "cvt.sat.f64.f32 %d, %a;",
        "b32",
        "b64",
        &[(f(3.0), g(1.0)), (f(0.5), g(0.5))],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. mov
// ---------------------------------------------------------------------------------------------

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
