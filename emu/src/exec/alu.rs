//! Per-lane semantics of the arithmetic, comparison and conversion instructions: pure
//! functions of register bits (each register slot holds a value zero- or sign-extended from
//! its type's width, as the ISA's register rules give).

use super::float::{self, Half, mask};
use crate::ptx::ir::*;

/// `v` truncated to `ty`'s width and extended back to 64 bits as the type says.
#[inline]
pub fn norm(v: u64, ty: Ty) -> u64 {
    let bits = ty.bits();
    if bits >= 64 {
        return v;
    }
    if ty.signed() {
        let s = 64 - bits;
        (((v << s) as i64) >> s) as u64
    } else {
        v & mask(bits)
    }
}

/// The value of `v` as the signed integer of `bits` bits.
#[inline]
fn sx(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// An integer register value as an exact i128, per its type.
#[inline]
pub fn int_value(v: u64, ty: Ty) -> i128 {
    if ty.signed() {
        sx(v, ty.bits()) as i128
    } else {
        (v & mask(ty.bits())) as i128
    }
}

/// The wider type of `mul.wide` / `mad.wide` on `ty`.
pub fn wide(ty: Ty) -> Ty {
    match (ty.bits(), ty.signed()) {
        (16, true) => Ty::S32,
        (16, false) => Ty::U32,
        (_, true) => Ty::S64,
        (_, false) => Ty::U64,
    }
}

/// Two-operand integer operations.
pub fn int_op(op: IntOp, ty: Ty, a: u64, b: u64) -> u64 {
    let n = ty.bits();
    let m = mask(n);
    let (ua, ub) = (a & m, b & m);
    let (sa, sb) = (sx(a, n), sx(b, n));
    let signed = ty.signed();
    let r = match op {
        IntOp::Add => ua.wrapping_add(ub),
        IntOp::Sub => ua.wrapping_sub(ub),
        IntOp::AddSat => (sa as i32).saturating_add(sb as i32) as i64 as u64,
        IntOp::SubSat => (sa as i32).saturating_sub(sb as i32) as i64 as u64,
        IntOp::MulLo => ua.wrapping_mul(ub),
        IntOp::MulHi => {
            if signed {
                ((sa as i128 * sb as i128) >> n) as u64
            } else {
                ((ua as u128 * ub as u128) >> n) as u64
            }
        }
        IntOp::MulWide => {
            let w = if signed {
                (sa as i128 * sb as i128) as u64
            } else {
                (ua as u128 * ub as u128) as u64
            };
            return norm(w, wide(ty));
        }
        // Division by zero is unspecified (machine-specific) in the ISA; this gives all ones
        // for the quotient and the dividend for the remainder.
        IntOp::Div => {
            if ub == 0 {
                m
            } else if signed {
                sa.wrapping_div(sb) as u64
            } else {
                ua / ub
            }
        }
        IntOp::Rem => {
            if ub == 0 {
                ua
            } else if signed {
                sa.wrapping_rem(sb) as u64
            } else {
                ua % ub
            }
        }
        IntOp::Min => {
            if signed {
                sa.min(sb) as u64
            } else {
                ua.min(ub)
            }
        }
        IntOp::Max => {
            if signed {
                sa.max(sb) as u64
            } else {
                ua.max(ub)
            }
        }
        IntOp::And => ua & ub,
        IntOp::Or => ua | ub,
        IntOp::Xor => ua ^ ub,
        // Shift amounts (always u32) above the width clamp to it.
        IntOp::Shl => {
            let s = (b & 0xffff_ffff).min(n as u64) as u32;
            if s >= n { 0 } else { ua << s }
        }
        IntOp::Shr => {
            let s = (b & 0xffff_ffff).min(n as u64) as u32;
            if signed {
                (sa >> s.min(63)) as u64
            } else if s >= n {
                0
            } else {
                ua >> s
            }
        }
    };
    norm(r, ty)
}

/// `mad` on integers.
pub fn mad(op: MadOp, ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    let n = ty.bits();
    match op {
        MadOp::Lo => norm(int_op(IntOp::MulLo, ty, a, b).wrapping_add(c), ty),
        MadOp::Hi => norm(int_op(IntOp::MulHi, ty, a, b).wrapping_add(c), ty),
        MadOp::HiSat => {
            let hi = sx(int_op(IntOp::MulHi, ty, a, b), n);
            (hi as i32).saturating_add(sx(c, n) as i32) as i64 as u64
        }
        MadOp::Wide => {
            let w = wide(ty);
            norm(int_op(IntOp::MulWide, ty, a, b).wrapping_add(c), w)
        }
    }
}

/// One-operand integer operations (`popc`, `clz` give a u32 count).
pub fn int_un(op: IntUn, ty: Ty, a: u64) -> u64 {
    let n = ty.bits();
    let ua = a & mask(n);
    match op {
        IntUn::Neg => norm(ua.wrapping_neg(), ty),
        IntUn::Abs => norm(sx(a, n).wrapping_abs() as u64, ty),
        IntUn::Not => norm(!ua, ty),
        IntUn::Cnot => (ua == 0) as u64,
        IntUn::Popc => ua.count_ones() as u64,
        IntUn::Clz => (ua.leading_zeros() - (64 - n)) as u64,
        IntUn::Brev => norm(ua.reverse_bits() >> (64 - n), ty),
    }
}

/// `bfe`: extract `len` bits from `pos`, sign-filled for signed types.
pub fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let n = ty.bits() as u64;
    let (pos, len) = (pos & 0xff, len & 0xff);
    let msb = n - 1;
    let sbit = if !ty.signed() || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(msb)) & 1
    };
    let mut d = 0u64;
    for i in 0..n {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    norm(d, ty)
}

/// `bfi`: insert the low `len` bits of `a` into `b` at `pos`.
pub fn bfi(ty: Ty, a: u64, b: u64, pos: u64, len: u64) -> u64 {
    let n = ty.bits() as u64;
    let (pos, len) = (pos & 0xff, len & 0xff);
    let mut f = b;
    for i in 0..len {
        if pos + i < n {
            f = (f & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
        }
    }
    norm(f, ty)
}

/// `prmt.b32`: bytes of {b, a} (a = bytes 0-3) selected by `c`.
pub fn prmt(mode: PrmtMode, a: u64, b: u64, c: u64) -> u64 {
    let x = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let byte = |i: u64| (x >> (8 * (i & 7))) & 0xff;
    let sel = |s: u64| {
        let v = byte(s & 7);
        if s & 8 != 0 {
            // Replicate the sign of the chosen byte.
            if v & 0x80 != 0 { 0xff } else { 0 }
        } else {
            v
        }
    };
    let sels: [u64; 4] = match mode {
        PrmtMode::Generic => [c & 0xf, (c >> 4) & 0xf, (c >> 8) & 0xf, (c >> 12) & 0xf],
        _ => {
            let k = c & 3;
            match mode {
                PrmtMode::F4e => [k, k + 1, k + 2, k + 3],
                // Backward 4 extract (PTX ISA, prmt): d.b0..d.b3 are bytes k, k-1, k-2, k-3
                // of {b, a}, wrapping around 8 (c = 1 gives bytes 1 0 7 6).
                PrmtMode::B4e => [k, (k + 7) & 7, (k + 6) & 7, (k + 5) & 7],
                PrmtMode::Rc8 => [k; 4],
                PrmtMode::Ecl => [k, k.max(1), k.max(2), 3],
                PrmtMode::Ecr => [0, k.min(1), k.min(2), k],
                _ => {
                    let lo = (k & 1) * 2;
                    [lo, lo + 1, lo, lo + 1]
                }
            }
        }
    };
    let mut d = 0u64;
    for (i, s) in sels.iter().enumerate() {
        d |= sel(*s) << (8 * i);
    }
    d
}

/// An f32 register value, flushed if `ftz`.
#[inline]
pub fn f32v(v: u64, ftz: bool) -> f32 {
    let x = f32::from_bits(v as u32);
    if ftz { float::ftz(x) } else { x }
}

/// An f32 result as register bits, flushed and saturated as asked.
#[inline]
pub fn f32r(x: f32, ftz: bool, sat: bool) -> u64 {
    let x = if ftz { float::ftz(x) } else { x };
    let x = if sat { float::sat(x) } else { x };
    x.to_bits() as u64
}

/// Two-operand float operations.
#[allow(clippy::too_many_arguments)]
pub fn f_op2(op: FOp2, ty: Ty, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64) -> u64 {
    if ty == Ty::F64 {
        let (x, y) = (f64::from_bits(a), f64::from_bits(b));
        let r = match op {
            FOp2::Add => float::add64(x, y, rnd),
            FOp2::Sub => float::add64(x, -y, rnd),
            FOp2::Mul => float::mul64(x, y, rnd),
            FOp2::Min => float::min64(x, y),
            FOp2::Max => float::max64(x, y),
            FOp2::MinNaN | FOp2::MaxNaN if x.is_nan() || y.is_nan() => f64::NAN,
            FOp2::MinNaN => float::min64(x, y),
            FOp2::MaxNaN => float::max64(x, y),
            FOp2::Div | FOp2::DivApprox | FOp2::DivFull => float::div64(x, y, rnd),
        };
        return r.to_bits();
    }
    let (x, y) = (f32v(a, ftz), f32v(b, ftz));
    let r = match op {
        FOp2::Add => float::add32(x, y, rnd),
        FOp2::Sub => float::add32(x, -y, rnd),
        FOp2::Mul => float::mul32(x, y, rnd),
        FOp2::Min => float::min32(x, y),
        FOp2::Max => float::max32(x, y),
        FOp2::MinNaN | FOp2::MaxNaN if x.is_nan() || y.is_nan() => f32::NAN,
        FOp2::MinNaN => float::min32(x, y),
        FOp2::MaxNaN => float::max32(x, y),
        FOp2::DivApprox => float::div_approx32(x, y),
        FOp2::DivFull => x / y,
        FOp2::Div => float::div32(x, y, rnd),
    };
    f32r(r, ftz, sat)
}

/// `fma` on floats.
#[allow(clippy::too_many_arguments)]
pub fn fma(ty: Ty, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    if ty == Ty::F64 {
        return f64::from_bits(a)
            .mul_add(f64::from_bits(b), f64::from_bits(c))
            .to_bits();
    }
    let r = float::fma32(f32v(a, ftz), f32v(b, ftz), f32v(c, ftz), rnd);
    f32r(r, ftz, sat)
}

/// One-operand float operations. The approximate ones are computed to within their
/// documented bounds (most exactly), with the ISA's special values.
pub fn f_op1(op: FOp1, ty: Ty, rnd: Rnd, ftz: bool, a: u64) -> u64 {
    if ty == Ty::F64 {
        let x = f64::from_bits(a);
        let r = match op {
            FOp1::Neg => -x,
            FOp1::Abs => x.abs(),
            FOp1::Rcp => float::div64(1.0, x, rnd),
            FOp1::Sqrt => float::sqrt64(x, rnd),
            FOp1::RsqrtApprox => 1.0 / x.sqrt(),
            _ => f64::NAN,
        };
        return r.to_bits();
    }
    let x = f32v(a, ftz);
    let r = match op {
        FOp1::Neg => -x,
        FOp1::Abs => x.abs(),
        FOp1::RcpApprox => 1.0 / x,
        FOp1::Rcp => float::div32(1.0, x, rnd),
        FOp1::SqrtApprox => x.sqrt(),
        FOp1::Sqrt => float::sqrt32(x, rnd),
        FOp1::RsqrtApprox => (1.0 / (x as f64).sqrt()) as f32,
        FOp1::Ex2 => x.exp2(),
        FOp1::Lg2 => x.log2(),
        FOp1::Sin => x.sin(),
        FOp1::Cos => x.cos(),
        FOp1::Tanh => x.tanh(),
    };
    f32r(r, ftz, false)
}

/// `setp`'s comparison.
pub fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if matches!(ty, Ty::F32 | Ty::F64) {
        let (x, y) = if ty == Ty::F64 {
            (f64::from_bits(a), f64::from_bits(b))
        } else {
            (f32v(a, ftz) as f64, f32v(b, ftz) as f64)
        };
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !nan && x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt => !nan && x < y,
            Cmp::Le => !nan && x <= y,
            Cmp::Gt => !nan && x > y,
            Cmp::Ge => !nan && x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    let (x, y) = (int_value(a, ty), int_value(b, ty));
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
        _ => false,
    }
}

/// A float register value of a scalar float type, exactly as an f64.
fn float_value(v: u64, ty: Ty, ftz: bool) -> f64 {
    match ty {
        Ty::F64 => f64::from_bits(v),
        Ty::F32 => f32v(v, ftz) as f64,
        Ty::F16 => float::half_value(v as u16, Half::F16) as f64,
        _ => float::half_value(v as u16, Half::Bf16) as f64,
    }
}

/// A value (exact f64) to a float type with rounding `rnd`, as register bits.
fn to_float(x: f64, ty: Ty, rnd: Rnd) -> u64 {
    match ty {
        Ty::F64 => x.to_bits(),
        Ty::F32 => float::f64_to_f32(x, rnd).to_bits() as u64,
        Ty::F16 => f64_to_half(x, rnd, Half::F16) as u64,
        _ => f64_to_half(x, rnd, Half::Bf16) as u64,
    }
}

/// f64 to a 16-bit format, rounded once: the f32 nearest to x is exact when x came from an
/// f32 or narrower; otherwise the directed rounding through f32 keeps its direction, and a
/// nearest rounding is checked against both neighbours.
fn f64_to_half(x: f64, rnd: Rnd, fmt: Half) -> u16 {
    let x32 = x as f32;
    if x32 as f64 == x || x.is_nan() || x.is_infinite() {
        return float::f32_to_half(x32, rnd, fmt);
    }
    let via = float::f32_to_half(float::f64_to_f32(x, rnd), rnd, fmt);
    if rnd != Rnd::Rn {
        return via;
    }
    // The two 16-bit values around x; take the nearer, ties to even.
    let lo = float::f32_to_half(float::f64_to_f32(x, Rnd::Rm), Rnd::Rm, fmt);
    let hi = float::f32_to_half(float::f64_to_f32(x, Rnd::Rp), Rnd::Rp, fmt);
    let (vl, vh) = (
        float::half_value(lo, fmt) as f64,
        float::half_value(hi, fmt) as f64,
    );
    let (dl, dh) = (x - vl, vh - x);
    if dl < dh || (dl == dh && lo & 1 == 0) {
        lo
    } else {
        hi
    }
}

/// `cvt` between scalar types.
pub fn cvt(dty: Ty, sty: Ty, rnd: CvtRnd, ftz: bool, sat: bool, a: u64) -> u64 {
    let df = dty.float();
    let sf = sty.float();
    if df {
        let mut x = if sf {
            float_value(a, sty, ftz)
        } else {
            let v = int_value(a, sty);
            match (dty, rnd) {
                (Ty::F32, CvtRnd::Float(r)) => float::int_to_f32(v, r) as f64,
                (_, CvtRnd::Float(r)) => float::int_to_f64(v, r),
                _ => v as f64,
            }
        };
        if let CvtRnd::Int(r) = rnd {
            x = float::round_int64(x, r);
        }
        if sat {
            x = float::sat64(x);
        }
        let r = match rnd {
            CvtRnd::Float(r) => r,
            _ => Rnd::Rn,
        };
        let bits = to_float(x, dty, r);
        return if dty == Ty::F32 && ftz {
            float::ftz(f32::from_bits(bits as u32)).to_bits() as u64
        } else {
            bits
        };
    }
    if sf {
        let x = float_value(a, sty, ftz);
        let r = match rnd {
            CvtRnd::Int(r) => r,
            _ => Rnd::Rz,
        };
        let v = float::float_to_int(x, r, dty.bits(), dty.signed(), sty == Ty::F64);
        return norm(v, dty);
    }
    let v = int_value(a, sty);
    let out = if sat {
        let bits = dty.bits();
        let (lo, hi) = if dty.signed() {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        };
        v.clamp(lo, hi) as u64
    } else {
        v as u64
    };
    norm(out, dty)
}

/// `cvt.rnd{.relu}{.satfinite}.{bf16x2,f16x2}.f32 d, a, b`: a to the upper half.
pub fn cvt_pack(dty: Ty, rnd: Rnd, relu: bool, satfinite: bool, a: u64, b: u64) -> u64 {
    let fmt = if dty == Ty::BF16x2 {
        Half::Bf16
    } else {
        Half::F16
    };
    let one = |v: u64| -> u64 {
        let mut x = f32::from_bits(v as u32);
        if relu && !x.is_nan() && x < 0.0 {
            x = 0.0;
        }
        let mut h = float::f32_to_half(x, rnd, fmt);
        if satfinite && !x.is_nan() {
            let max = if fmt == Half::Bf16 { 0x7f7f } else { 0x7bff };
            if h & 0x7fff > max {
                h = (h & 0x8000) | max;
            }
        }
        h as u64
    };
    (one(a) << 16) | one(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_forms() {
        // Wrapping, widening and high halves, signed and unsigned.
        assert_eq!(
            int_op(IntOp::Add, Ty::S32, 0x7fff_ffff, 1) as i64,
            i32::MIN as i64
        );
        assert_eq!(
            int_op(IntOp::AddSat, Ty::S32, 0x7fff_ffff, 1),
            i32::MAX as u64
        );
        assert_eq!(
            int_op(IntOp::MulWide, Ty::S32, (-3i64) as u64, 5) as i64,
            -15
        );
        assert_eq!(
            int_op(IntOp::MulWide, Ty::U32, 0xffff_ffff, 2),
            0x1_ffff_fffe
        );
        assert_eq!(int_op(IntOp::MulHi, Ty::U32, 0x8000_0000, 4), 2);
        assert_eq!(int_op(IntOp::MulHi, Ty::S64, (-1i64) as u64, 2) as i64, -1);
        assert_eq!(int_op(IntOp::Div, Ty::S32, (-7i64) as u64, 2) as i64, -3);
        assert_eq!(int_op(IntOp::Rem, Ty::S32, (-7i64) as u64, 2) as i64, -1);
        assert_eq!(int_op(IntOp::Shr, Ty::S32, (-8i64) as u64, 40) as i64, -1);
        assert_eq!(int_op(IntOp::Shr, Ty::U32, 0x8000_0000, 40), 0);
        assert_eq!(int_op(IntOp::Shl, Ty::B32, 1, 32), 0);
        assert_eq!(int_op(IntOp::Min, Ty::U32, (-1i64) as u64, 3), 3);
        assert_eq!(int_op(IntOp::Min, Ty::S32, (-1i64) as u64, 3) as i64, -1);
        assert_eq!(
            mad(MadOp::Wide, Ty::U32, 0xffff_ffff, 0xffff_ffff, 1),
            0xffff_fffe_0000_0002
        );
        assert_eq!(mad(MadOp::Lo, Ty::S32, 3, 4, (-20i64) as u64) as i64, -8);
        assert_eq!(int_un(IntUn::Clz, Ty::B32, 1), 31);
        assert_eq!(int_un(IntUn::Popc, Ty::B64, u64::MAX), 64);
        assert_eq!(int_un(IntUn::Brev, Ty::B32, 1), 0x8000_0000);
        assert_eq!(bfe(Ty::S32, 0xf0, 4, 4) as i64, -1);
        assert_eq!(bfe(Ty::U32, 0xf0, 4, 4), 0xf);
        assert_eq!(bfi(Ty::B32, 0xff, 0, 8, 4), 0xf00);
        assert_eq!(
            prmt(PrmtMode::Generic, 0x4433_2211, 0x8877_6655, 0x3210),
            0x4433_2211
        );
        assert_eq!(
            prmt(PrmtMode::Generic, 0x4433_2211, 0x8877_6655, 0x7654),
            0x8877_6655
        );
        assert_eq!(prmt(PrmtMode::Generic, 0x0000_0080, 0, 0x4448), 0xff);
    }

    #[test]
    fn comparisons_with_nan_and_unsigned() {
        let nan = f32::NAN.to_bits() as u64;
        let one = 1f32.to_bits() as u64;
        assert!(!compare(Cmp::Ne, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Neu, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Nan, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Lt, Ty::S32, false, (-1i64) as u64, 0));
        assert!(!compare(Cmp::Lt, Ty::U32, false, 0xffff_ffff, 0));
    }

    #[test]
    fn conversions() {
        let f = |x: f32| x.to_bits() as u64;
        assert_eq!(
            cvt(Ty::S32, Ty::F32, CvtRnd::Int(Rnd::Rn), false, false, f(2.5)),
            2
        );
        assert_eq!(
            cvt(
                Ty::U8,
                Ty::F32,
                CvtRnd::Int(Rnd::Rz),
                false,
                false,
                f(300.0)
            ),
            255
        );
        assert_eq!(
            cvt(
                Ty::F32,
                Ty::S32,
                CvtRnd::Float(Rnd::Rn),
                false,
                false,
                (-3i64) as u64
            ),
            f(-3.0)
        );
        assert_eq!(
            cvt(Ty::S64, Ty::S32, CvtRnd::None, false, false, 0xffff_ffff) as i64,
            -1
        );
        assert_eq!(
            cvt(Ty::U64, Ty::U32, CvtRnd::None, false, false, 0xffff_ffff),
            0xffff_ffff
        );
        assert_eq!(
            cvt(Ty::S8, Ty::S32, CvtRnd::None, true, true, 1000) as i64,
            127
        );
        assert_eq!(
            cvt(Ty::U16, Ty::S32, CvtRnd::None, false, true, (-5i64) as u64),
            0
        );
        assert_eq!(
            cvt(Ty::F32, Ty::BF16, CvtRnd::None, false, false, 0x3f80),
            f(1.0)
        );
        assert_eq!(
            cvt(
                Ty::BF16,
                Ty::F32,
                CvtRnd::Float(Rnd::Rn),
                false,
                false,
                f(1.0)
            ),
            0x3f80
        );
        assert_eq!(
            cvt(
                Ty::F32,
                Ty::F32,
                CvtRnd::Int(Rnd::Rm),
                false,
                false,
                f(-1.5)
            ),
            f(-2.0)
        );
        assert_eq!(
            cvt(Ty::F32, Ty::F32, CvtRnd::None, false, true, f(7.0)),
            f(1.0)
        );
        // a to the upper half, b to the lower.
        assert_eq!(
            cvt_pack(Ty::BF16x2, Rnd::Rn, false, false, f(1.0), f(2.0)),
            0x3f80_4000
        );
        assert_eq!(
            cvt_pack(Ty::F16x2, Rnd::Rn, true, false, f(-1.0), f(1.0)),
            0x0000_3c00
        );
    }
}
