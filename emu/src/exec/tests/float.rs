//! IEEE-rounded float add/sub/mul/fma, .ftz/.sat, min/max, neg/abs (PTX ISA, vs exact.rs).

use super::exact::*;
use super::support::*;

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
