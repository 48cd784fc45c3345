//! Floating-point semantics of PTX (ISA §9.7.3, cvt §9.7.9.21): directed rounding of the
//! basic operations, flush-to-zero, saturation, min/max NaN rules, and the conversions
//! between f64, f32, f16, bf16 and integers with their rounding and clamping.
//!
//! Round-to-nearest results come from the host's IEEE operations. A directed rounding starts
//! from the nearest result r and the sign of r − x, where x is the exact result: r − x is
//! known exactly from an error-free transformation (the exact error of a sum or product, or
//! the exact residual of a quotient or square root), and r moves one step when it lies on
//! the wrong side of x.

use crate::ptx::ir::Rnd;

/// Flushes an f32 subnormal to a zero of its sign.
#[inline]
pub fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// `.sat`: clamps to [0, 1], NaN to +0.
#[inline]
pub fn sat(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// `.sat` of an f64 result.
#[inline]
pub fn sat64(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Moves a nearest-rounded `r` to the directed rounding of x, given `ord` = sign(r − x).
fn direct32(r: f32, ord: std::cmp::Ordering, rnd: Rnd) -> f32 {
    use std::cmp::Ordering::*;
    if r.is_nan() {
        return r;
    }
    match (rnd, ord) {
        (Rnd::Rn, _) | (_, Equal) => r,
        (Rnd::Rm, Greater) => r.next_down(),
        (Rnd::Rp, Less) => r.next_up(),
        (Rnd::Rz, Greater) if r > 0.0 || (r == 0.0 && r.is_sign_positive()) => r.next_down(),
        (Rnd::Rz, Less) if r < 0.0 || (r == 0.0 && r.is_sign_negative()) => r.next_up(),
        _ => r,
    }
}

fn direct64(r: f64, ord: std::cmp::Ordering, rnd: Rnd) -> f64 {
    use std::cmp::Ordering::*;
    if r.is_nan() {
        return r;
    }
    match (rnd, ord) {
        (Rnd::Rn, _) | (_, Equal) => r,
        (Rnd::Rm, Greater) => r.next_down(),
        (Rnd::Rp, Less) => r.next_up(),
        (Rnd::Rz, Greater) if r > 0.0 => r.next_down(),
        (Rnd::Rz, Less) if r < 0.0 => r.next_up(),
        _ => r,
    }
}

/// The directed rounding of a finite f64 result x that overflowed to `r` = ±inf under
/// round-to-nearest: toward zero (and away from the infinity's direction) it is the largest
/// finite value of that sign (IEEE 754 §7.4).
fn overflow64(r: f64, rnd: Rnd) -> f64 {
    let ord = if r > 0.0 {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Less
    };
    direct64(r, ord, rnd)
}

/// sign(r − x) for an f32 `r` nearest to x = s + e (s, e f64 with e exact error of s).
fn ord_dd(r: f32, s: f64, e: f64) -> std::cmp::Ordering {
    if r.is_infinite() && s.is_finite() {
        // Overflow: x is finite, beyond the largest f32.
        return if r > 0.0 {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        };
    }
    let d = (r as f64 - s) - e;
    d.partial_cmp(&0.0).unwrap_or(std::cmp::Ordering::Equal)
}

/// s + e == a + b exactly (Knuth's TwoSum), for finite s.
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// a + b in f32 with rounding `rnd`.
pub fn add32(a: f32, b: f32, rnd: Rnd) -> f32 {
    let r = a + b;
    if rnd == Rnd::Rn || !r.is_finite() && (a.is_infinite() || b.is_infinite()) {
        return r;
    }
    // A sum of two f32 is exact in f64 unless their exponents are far apart; TwoSum makes
    // it exact in any case.
    let (s, e) = two_sum(a as f64, b as f64);
    let mut out = direct32(r, ord_dd(r, s, e), rnd);
    // An exact zero sum of opposite signs (x + -x, and also +0 + -0) is -0 only when
    // rounding down, +0 otherwise (IEEE 754 §6.3; PTX add.rnd is IEEE 754 compliant).
    if out == 0.0 && s == 0.0 && e == 0.0 && a.is_sign_negative() != b.is_sign_negative() {
        out = if rnd == Rnd::Rm { -0.0 } else { 0.0 };
    }
    out
}

/// a * b in f32 with rounding `rnd`.
pub fn mul32(a: f32, b: f32, rnd: Rnd) -> f32 {
    let r = a * b;
    if rnd == Rnd::Rn || !r.is_finite() && (a.is_infinite() || b.is_infinite()) {
        return r;
    }
    // The product of two f32 is exact in f64 (48 significant bits).
    let p = a as f64 * b as f64;
    direct32(r, ord_dd(r, p, 0.0), rnd)
}

/// fma(a, b, c) in f32 with rounding `rnd`.
pub fn fma32(a: f32, b: f32, c: f32, rnd: Rnd) -> f32 {
    let r = a.mul_add(b, c);
    if rnd == Rnd::Rn || !r.is_finite() && (a.is_infinite() || b.is_infinite() || c.is_infinite()) {
        return r;
    }
    let p = a as f64 * b as f64;
    let (s, e) = two_sum(p, c as f64);
    // An exact zero a*b + c of opposite signs is -0 only when rounding down (IEEE 754 §6.3).
    if s == 0.0 && e == 0.0 && p.is_sign_negative() != c.is_sign_negative() {
        return if rnd == Rnd::Rm { -0.0 } else { 0.0 };
    }
    direct32(r, ord_dd(r, s, e), rnd)
}

/// a / b in f32 with rounding `rnd` (IEEE).
pub fn div32(a: f32, b: f32, rnd: Rnd) -> f32 {
    let r = a / b;
    if rnd == Rnd::Rn || r.is_nan() || b == 0.0 || a.is_infinite() {
        return r;
    }
    if r.is_infinite() {
        // Overflow of a finite quotient.
        let ord = if r > 0.0 {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        };
        return direct32(r, ord, rnd);
    }
    // r − a/b has the sign of (r·b − a)·sign(b); r·b is exact in f64.
    let res = r as f64 * b as f64 - a as f64;
    let ord = (res * b.signum() as f64)
        .partial_cmp(&0.0)
        .unwrap_or(std::cmp::Ordering::Equal);
    direct32(r, ord, rnd)
}

/// sqrt(x) in f32 with rounding `rnd` (IEEE).
pub fn sqrt32(x: f32, rnd: Rnd) -> f32 {
    let r = x.sqrt();
    if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    let res = r as f64 * r as f64 - x as f64;
    direct32(
        r,
        res.partial_cmp(&0.0).unwrap_or(std::cmp::Ordering::Equal),
        rnd,
    )
}

/// a + b in f64 with rounding `rnd`.
pub fn add64(a: f64, b: f64, rnd: Rnd) -> f64 {
    let (s, e) = two_sum(a, b);
    if rnd == Rnd::Rn || !s.is_finite() {
        if s.is_infinite() && a.is_finite() && b.is_finite() {
            return overflow64(s, rnd);
        }
        return s;
    }
    // An exact zero sum of opposite signs is -0 only when rounding down (IEEE 754 §6.3).
    if s == 0.0 && a.is_sign_negative() != b.is_sign_negative() {
        return if rnd == Rnd::Rm { -0.0 } else { 0.0 };
    }
    // s is the nearest; x = s + e exactly, so sign(s − x) = −sign(e).
    let ord = 0.0f64.partial_cmp(&e).unwrap_or(std::cmp::Ordering::Equal);
    direct64(s, ord, rnd)
}

/// a * b in f64 with rounding `rnd`.
pub fn mul64(a: f64, b: f64, rnd: Rnd) -> f64 {
    let p = a * b;
    if rnd == Rnd::Rn || !p.is_finite() {
        if p.is_infinite() && a.is_finite() && b.is_finite() {
            return overflow64(p, rnd);
        }
        return p;
    }
    // The exact error a*b - p, rounded once by the fma: its sign is kept unless it lies below
    // the smallest subnormal, as it can when p is subnormal. There compute it 2^200 times
    // larger: scaling the smaller operand (|.| < 2^-511 as |a*b| < 2^-1022) and p is exact.
    let e = if p.abs() < f64::MIN_POSITIVE {
        let k = 2f64.powi(200);
        let (x, y) = if a.abs() < b.abs() {
            (a * k, b)
        } else {
            (a, b * k)
        };
        x.mul_add(y, -(p * k))
    } else {
        a.mul_add(b, -p)
    };
    let ord = 0.0f64.partial_cmp(&e).unwrap_or(std::cmp::Ordering::Equal);
    direct64(p, ord, rnd)
}

/// a / b in f64 with rounding `rnd`.
pub fn div64(a: f64, b: f64, rnd: Rnd) -> f64 {
    let r = a / b;
    if rnd == Rnd::Rn || !r.is_finite() || b == 0.0 {
        if r.is_infinite() && a.is_finite() && b.is_finite() && b != 0.0 {
            return overflow64(r, rnd);
        }
        return r;
    }
    // The residual a − r·b of a quotient is exact in f64 (fma computes it exactly), except
    // for a subnormal r, where it can lie below the smallest subnormal: there compute it 2^200
    // times larger (a is then below 4 and r subnormal, so both scale exactly).
    let res = if r.abs() < f64::MIN_POSITIVE {
        let k = 2f64.powi(200);
        (-(r * k)).mul_add(b, a * k)
    } else {
        (-r).mul_add(b, a)
    };
    let ord = (-res * b.signum())
        .partial_cmp(&0.0)
        .unwrap_or(std::cmp::Ordering::Equal);
    direct64(r, ord, rnd)
}

/// sqrt(x) in f64 with rounding `rnd`.
pub fn sqrt64(x: f64, rnd: Rnd) -> f64 {
    let r = x.sqrt();
    if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    let res = (-r).mul_add(r, x);
    let ord = 0.0f64
        .partial_cmp(&res)
        .unwrap_or(std::cmp::Ordering::Equal);
    direct64(r, ord, rnd)
}

/// `min.f32`: a NaN operand yields the other; −0 < +0.
pub fn min32(a: f32, b: f32) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f32::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_negative() {
                a
            } else {
                b
            }
        }
        _ => {
            if a < b {
                a
            } else {
                b
            }
        }
    }
}

/// `max.f32`: a NaN operand yields the other; −0 < +0.
pub fn max32(a: f32, b: f32) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f32::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_positive() {
                a
            } else {
                b
            }
        }
        _ => {
            if a > b {
                a
            } else {
                b
            }
        }
    }
}

/// `min.f64` (same rules as [`min32`]).
pub fn min64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_negative() {
                a
            } else {
                b
            }
        }
        _ => a.min(b),
    }
}

/// `max.f64` (same rules as [`max32`]).
pub fn max64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            if a.is_sign_positive() {
                a
            } else {
                b
            }
        }
        _ => a.max(b),
    }
}

/// `div.approx.f32`: a · (1/b); for 2^126 < |b| < 2^128 the ISA gives NaN when a is
/// infinite and a zero of the quotient's sign otherwise.
pub fn div_approx32(a: f32, b: f32) -> f32 {
    const BIG: f32 = 8.507_059e37; // 2^126
    if b.is_finite() && b.abs() > BIG {
        if a.is_infinite() {
            return f32::NAN;
        }
        return 0.0f32.copysign(a) * b.signum();
    }
    a / b
}

/// A 16-bit float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

/// The next representable 16-bit value above (`up`) or below `bits` (sign-magnitude format).
fn step16(bits: u16, up: bool) -> u16 {
    let neg = bits & 0x8000 != 0;
    let mag = bits & 0x7fff;
    match (neg, up) {
        // +0 stepping down becomes the smallest negative subnormal.
        (false, false) if mag == 0 => 0x8001,
        (true, true) if mag == 0 => 0x0001,
        (false, true) | (true, false) => bits + 1,
        (false, false) | (true, true) => bits - 1,
    }
}

fn half_to_f32(bits: u16, fmt: Half) -> f32 {
    match fmt {
        Half::F16 => half::f16::from_bits(bits).to_f32(),
        Half::Bf16 => f32::from_bits((bits as u32) << 16),
    }
}

/// f32 to a 16-bit format with rounding `rnd`.
pub fn f32_to_half(x: f32, rnd: Rnd, fmt: Half) -> u16 {
    let r = match fmt {
        Half::F16 => half::f16::from_f32(x).to_bits(),
        Half::Bf16 => half::bf16::from_f32(x).to_bits(),
    };
    if x.is_nan() {
        // The canonical quiet NaN of the format.
        return match fmt {
            Half::F16 => 0x7fff,
            Half::Bf16 => 0x7fff,
        };
    }
    if rnd == Rnd::Rn {
        return r;
    }
    let rv = half_to_f32(r, fmt);
    let ord = rv.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal);
    use std::cmp::Ordering::*;
    let toward_zero_down = rv > 0.0 || (rv == 0.0 && r & 0x8000 == 0);
    match (rnd, ord) {
        (_, Equal) => r,
        (Rnd::Rm, Greater) => step16(r, false),
        (Rnd::Rp, Less) => step16(r, true),
        (Rnd::Rz, Greater) if toward_zero_down => step16(r, false),
        (Rnd::Rz, Less) if !toward_zero_down => step16(r, true),
        _ => r,
    }
}

/// A 16-bit float's value.
pub fn half_value(bits: u16, fmt: Half) -> f32 {
    half_to_f32(bits, fmt)
}

/// f64 to f32 with rounding `rnd`.
pub fn f64_to_f32(x: f64, rnd: Rnd) -> f32 {
    let r = x as f32;
    if rnd == Rnd::Rn || x.is_nan() {
        return r;
    }
    direct32(r, ord_dd(r, x, 0.0), rnd)
}

/// An integer (as i128, exact for every PTX integer type) to f32 with rounding `rnd`.
pub fn int_to_f32(v: i128, rnd: Rnd) -> f32 {
    let r = v as f32;
    if rnd == Rnd::Rn {
        return r;
    }
    // r is finite and integral (|v| < 2^64), so it compares exactly as an i128.
    direct32(r, (r as i128).cmp(&v), rnd)
}

/// An integer to f64 with rounding `rnd`.
pub fn int_to_f64(v: i128, rnd: Rnd) -> f64 {
    let r = v as f64;
    if rnd == Rnd::Rn {
        return r;
    }
    direct64(r, (r as i128).cmp(&v), rnd)
}

/// Rounds to an integral value in the float format.
pub fn round_int64(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
    }
}

/// A float to an integer of `bits` (signed or not) after rounding `rnd`: out-of-range values
/// clamp to the type's range; NaN gives 0, or 1 << (bits − 1) when the source is f64 or the
/// destination is 64 bits wide (PTX ISA, cvt).
pub fn float_to_int(x: f64, rnd: Rnd, bits: u32, signed: bool, src_f64: bool) -> u64 {
    if x.is_nan() {
        return if src_f64 || bits == 64 {
            1u64 << (bits - 1)
        } else {
            0
        };
    }
    let r = round_int64(x, rnd);
    if signed {
        let lo = -(1i128 << (bits - 1));
        let hi = (1i128 << (bits - 1)) - 1;
        let v = if r <= lo as f64 {
            lo
        } else if r >= hi as f64 {
            hi
        } else {
            r as i128
        };
        v as u64 & mask(bits)
    } else {
        let hi = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        if r <= 0.0 {
            0
        } else if r >= hi as f64 {
            hi
        } else {
            r as u64
        }
    }
}

/// The low `bits` bits set.
#[inline]
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_brackets_the_exact_result() {
        // 1 + 2^-30 is not an f32: rz/rm give 1, rp gives the next f32 after 1.
        let tiny = 2f32.powi(-30);
        assert_eq!(add32(1.0, tiny, Rnd::Rn), 1.0);
        assert_eq!(add32(1.0, tiny, Rnd::Rz), 1.0);
        assert_eq!(add32(1.0, tiny, Rnd::Rm), 1.0);
        assert_eq!(add32(1.0, tiny, Rnd::Rp), 1.0f32.next_up());
        assert_eq!(add32(-1.0, -tiny, Rnd::Rm), (-1.0f32).next_down());
        assert_eq!(add32(-1.0, -tiny, Rnd::Rz), -1.0);
        // 1/3 rounds down toward zero and up toward +inf.
        let rz = div32(1.0, 3.0, Rnd::Rz);
        let rp = div32(1.0, 3.0, Rnd::Rp);
        assert!((rz as f64) < 1.0 / 3.0 && (rp as f64) > 1.0 / 3.0);
        assert_eq!(rz.next_up(), rp);
        // Overflow: toward zero stays finite, toward +inf does not.
        assert_eq!(mul32(f32::MAX, 2.0, Rnd::Rz), f32::MAX);
        assert_eq!(mul32(f32::MAX, 2.0, Rnd::Rp), f32::INFINITY);
        assert_eq!(mul32(f32::MAX, -2.0, Rnd::Rp), -f32::MAX);
        // x + (-x) is +0, except rounding down.
        assert!(add32(1.0, -1.0, Rnd::Rm).is_sign_negative());
        assert!(add32(1.0, -1.0, Rnd::Rz).is_sign_positive());
        // sqrt(2) is bracketed.
        let (lo, hi) = (sqrt32(2.0, Rnd::Rm), sqrt32(2.0, Rnd::Rp));
        assert!((lo as f64) < 2f64.sqrt() && (hi as f64) > 2f64.sqrt());
        assert_eq!(fma32(1.0, 1.0, tiny, Rnd::Rp), 1.0f32.next_up());
        assert_eq!(add64(1.0, 2f64.powi(-60), Rnd::Rp), 1.0f64.next_up());
        assert_eq!(div64(1.0, 3.0, Rnd::Rz).next_up(), div64(1.0, 3.0, Rnd::Rp));
    }

    #[test]
    fn min_max_and_saturation() {
        assert_eq!(min32(f32::NAN, 2.0), 2.0);
        assert_eq!(max32(3.0, f32::NAN), 3.0);
        assert!(min32(f32::NAN, f32::NAN).is_nan());
        assert!(min32(0.0, -0.0).is_sign_negative());
        assert!(max32(-0.0, 0.0).is_sign_positive());
        assert_eq!(sat(f32::NAN), 0.0);
        assert_eq!(sat(1.5), 1.0);
        assert_eq!(ftz(f32::from_bits(1)), 0.0);
        assert!(ftz(-f32::from_bits(1)).is_sign_negative());
        assert_eq!(div_approx32(1.0, 2f32.powi(127)), 0.0);
        assert!(div_approx32(f32::INFINITY, 2f32.powi(127)).is_nan());
    }

    #[test]
    fn sixteen_bit_conversions() {
        // 1 + 2^-9 lies between two bf16 values (1 and 1 + 2^-7).
        let x = 1.0 + 2f32.powi(-9);
        assert_eq!(f32_to_half(x, Rnd::Rn, Half::Bf16), 0x3f80);
        assert_eq!(f32_to_half(x, Rnd::Rz, Half::Bf16), 0x3f80);
        assert_eq!(f32_to_half(x, Rnd::Rp, Half::Bf16), 0x3f81);
        assert_eq!(f32_to_half(-x, Rnd::Rm, Half::Bf16), 0xbf81);
        // Overflow of f16: toward zero gives the largest finite value.
        assert_eq!(f32_to_half(1e6, Rnd::Rz, Half::F16), 0x7bff);
        assert_eq!(f32_to_half(1e6, Rnd::Rn, Half::F16), 0x7c00);
        assert_eq!(half_value(0x3f80, Half::Bf16), 1.0);
        assert_eq!(half_value(0x3c00, Half::F16), 1.0);
    }

    #[test]
    fn float_to_int_clamps() {
        assert_eq!(float_to_int(2.5, Rnd::Rn, 32, true, false), 2);
        assert_eq!(
            float_to_int(-2.5, Rnd::Rm, 32, true, false) as u32 as i32,
            -3
        );
        assert_eq!(
            float_to_int(1e20, Rnd::Rz, 32, true, false),
            i32::MAX as u64
        );
        assert_eq!(float_to_int(-1.0, Rnd::Rz, 32, false, false), 0);
        assert_eq!(float_to_int(f64::NAN, Rnd::Rz, 32, true, false), 0);
        assert_eq!(
            float_to_int(f64::NAN, Rnd::Rz, 32, false, true),
            0x8000_0000
        );
        assert_eq!(float_to_int(f64::NAN, Rnd::Rz, 64, true, false), 1 << 63);
        assert_eq!(int_to_f32(16_777_217, Rnd::Rz), 16_777_216.0);
        assert_eq!(int_to_f32(16_777_217, Rnd::Rp), 16_777_218.0);
    }
}
