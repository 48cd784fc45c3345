//! Float div, rcp, sqrt, rsqrt and .approx ex2/lg2/sin/cos/tanh (PTX ISA, exact or bounds).

use super::exact::*;
use super::support::*;

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
