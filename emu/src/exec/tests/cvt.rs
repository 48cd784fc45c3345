//! cvt between integers and floats and between integer types (PTX ISA "cvt").

use super::exact::*;
use super::support::*;

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
