//! Integer arithmetic (PTX ISA): add/sub, mul, mad, div/rem, min/max, neg/abs.

use super::support::*;

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
