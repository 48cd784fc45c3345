//! Integer logic and bit instructions (PTX ISA): logic ops, shifts, popc/clz/brev, bfe/bfi, prmt.

use super::support::*;

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
