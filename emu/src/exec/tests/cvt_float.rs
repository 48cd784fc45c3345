//! cvt between float types (PTX ISA "cvt"): narrowing, packed f16x2/bf16x2, .rni/.sat/.ftz.

use super::exact::*;
use super::support::*;

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
