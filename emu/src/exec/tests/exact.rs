//! The float reference: exact integer values rounded by IEEE 754 rules (ISA .rn/.rz/.rm/.rp).

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Rm {
    /// To nearest, ties to even.
    N,
    /// Toward zero.
    Z,
    /// Toward -inf.
    M,
    /// Toward +inf.
    P,
}

pub(super) const MODES: [(Rm, &str); 4] =
    [(Rm::N, "rn"), (Rm::Z, "rz"), (Rm::M, "rm"), (Rm::P, "rp")];

/// An IEEE binary format: fraction bits and exponent bits.
#[derive(Clone, Copy)]
pub(super) struct Fmt {
    man: u32,
    ebits: u32,
}

pub(super) const F16: Fmt = Fmt { man: 10, ebits: 5 };

pub(super) const BF16: Fmt = Fmt { man: 7, ebits: 8 };

pub(super) const F32: Fmt = Fmt { man: 23, ebits: 8 };

pub(super) const F64: Fmt = Fmt { man: 52, ebits: 11 };

/// A finite value (-1)^neg * mag * 2^exp.
pub(super) type Exact = (bool, u128, i32);

impl Fmt {
    pub(super) fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }

    pub(super) fn inf(self) -> u64 {
        ((1u64 << self.ebits) - 1) << self.man
    }

    pub(super) fn sign(self) -> u64 {
        1 << (self.man + self.ebits)
    }

    pub(super) fn is_nan(self, bits: u64) -> bool {
        bits & !self.sign() > self.inf()
    }

    /// The exact value of finite `bits`.
    pub(super) fn parts(self, bits: u64) -> Exact {
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
    pub(super) fn round(self, (neg, mag, exp): Exact, r: Rm) -> u64 {
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
pub(super) fn exact_add(a: Exact, b: Exact, r: Rm) -> Exact {
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

pub(super) fn exact_mul(a: Exact, b: Exact) -> Exact {
    (a.0 ^ b.0, a.1 * b.1, a.2 + b.2)
}

/// a / b (b != 0) truncated to at least 70 significant bits, with a sticky bit below them: this
/// rounds to any format of up to 64 bits exactly as the infinitely precise quotient does.
pub(super) fn exact_div(a: Exact, b: Exact) -> Exact {
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
pub(super) fn exact_sqrt(a: Exact) -> Exact {
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

pub(super) fn p32(x: f32) -> Exact {
    F32.parts(x.to_bits() as u64)
}

pub(super) fn p64(x: f64) -> Exact {
    F64.parts(x.to_bits())
}
