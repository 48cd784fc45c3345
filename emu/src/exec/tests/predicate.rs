//! Comparison and selection (PTX ISA): setp on integers and floats, selp, and predicate logic.

use super::support::*;

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
