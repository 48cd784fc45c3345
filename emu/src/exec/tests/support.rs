//! Shared test helpers: the lane harness, float runners, operand generator, memory-test helpers.
//!
//! The harness runs one instruction form per lane over edge-case operands; the tests compare
//! every lane with the value the PTX ISA defines: from the ISA's pseudo-code for the integer
//! and bit instructions, and for IEEE-rounded floating-point results from exact integer
//! arithmetic rounded by the IEEE 754 rules (see exact.rs), never from the interpreter's code.

use super::exact::{F32, F64};
use crate::exec::testing::*;

// ---------------------------------------------------------------------------------------------
// Harness: lane i loads operand %a, %b, %c, %e from element i of one buffer each, runs the body,
// and stores %d to element i of the output buffer.
// ---------------------------------------------------------------------------------------------

pub(super) const OPERANDS: [&str; 4] = ["a", "b", "c", "e"];

/// Bytes of a `.b8`/`.b16`/`.b32`/`.b64` element.
pub(super) fn size_of(t: &str) -> usize {
    match t {
        "b8" => 1,
        "b16" => 2,
        "b32" => 4,
        "b64" => 8,
        _ => panic!("bad type {t}"),
    }
}

/// The register type holding a value of type `t` (PTX has no 8-bit registers in practice).
pub(super) fn reg_of(t: &str) -> &str {
    if t == "b8" { "b16" } else { t }
}

/// Runs `body` on one lane per input element. `ins` are the operand columns (their PTX type and
/// values, low bits used); `out` is the type %d is stored with.
pub(super) fn run(body: &str, ins: &[(&str, &[u64])], out: &str) -> Result<Vec<u64>, String> {
    let n = ins[0].1.len();
    assert!(n > 0 && n <= 1024 && ins.iter().all(|(_, v)| v.len() == n));
    let mut params = Vec::new();
    let mut text = String::from(
        "    .reg .b32 %tx;\n    .reg .b64 %ti, %pa, %off;\n    .reg .pred %p<8>;\n    \
         .reg .b16 %h<8>;\n    .reg .b32 %t<8>;\n    .reg .b64 %u<8>;\n",
    );
    for (i, (t, _)) in ins.iter().enumerate() {
        text += &format!("    .reg .{} %{};\n", reg_of(t), OPERANDS[i]);
        params.push(format!(".param .u64 pin{i}"));
    }
    text += &format!("    .reg .{} %d;\n", reg_of(out));
    params.push(".param .u64 pout".to_string());
    text += "    mov.u32 %tx, %tid.x;\n    cvt.u64.u32 %ti, %tx;\n";
    for (i, (t, _)) in ins.iter().enumerate() {
        text += &format!(
            "    ld.param.u64 %pa, [pin{i}];\n    mul.lo.u64 %off, %ti, {};\n    \
             add.u64 %pa, %pa, %off;\n    ld.global.{t} %{}, [%pa];\n",
            size_of(t),
            OPERANDS[i]
        );
    }
    text += body;
    text += &format!(
        "\n    ld.param.u64 %pa, [pout];\n    mul.lo.u64 %off, %ti, {};\n    \
         add.u64 %pa, %pa, %off;\n    st.global.{out} [%pa], %d;\n    ret;",
        size_of(out)
    );
    let ptx = module("k", &params.join(", "), &text);
    let mut args: Vec<Arg> = ins
        .iter()
        .map(|(t, v)| {
            let w = size_of(t);
            Arg::Buf(
                v.iter()
                    .flat_map(|x| x.to_le_bytes()[..w].to_vec())
                    .collect(),
            )
        })
        .collect();
    args.push(Arg::Buf(vec![0; n * size_of(out)]));
    let bufs = launch(&ptx, "k", [1, 1, 1], [n as u32, 1, 1], &args)?;
    let w = size_of(out);
    Ok(bufs[ins.len()]
        .chunks_exact(w)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect())
}

pub(super) fn lanes(body: &str, ins: &[(&str, &[u64])], out: &str) -> Vec<u64> {
    run(body, ins, out).unwrap_or_else(|e| panic!("`{body}`: {e}"))
}

pub(super) fn mask(t: &str) -> u64 {
    match size_of(t) {
        8 => u64::MAX,
        w => (1u64 << (8 * w)) - 1,
    }
}

/// Unary instruction: cases are (a, expected d).
pub(super) fn check1(body: &str, ta: &str, out: &str, cases: &[(u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let d = lanes(body, &[(ta, &a)], out);
    for (i, &(a, want)) in cases.iter().enumerate() {
        assert_eq!(d[i], want & mask(out), "`{body}` a={a:#x} (lane {i})");
    }
}

/// Binary instruction: cases are (a, b, expected d).
pub(super) fn check2(body: &str, ta: &str, tb: &str, out: &str, cases: &[(u64, u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let d = lanes(body, &[(ta, &a), (tb, &b)], out);
    for (i, &(a, b, want)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            want & mask(out),
            "`{body}` a={a:#x} b={b:#x} (lane {i})"
        );
    }
}

/// Ternary instruction: cases are (a, b, c, expected d).
pub(super) fn check3(body: &str, t: [&str; 3], out: &str, cases: &[(u64, u64, u64, u64)]) {
    let a: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let b: Vec<u64> = cases.iter().map(|c| c.1).collect();
    let c: Vec<u64> = cases.iter().map(|c| c.2).collect();
    let d = lanes(body, &[(t[0], &a), (t[1], &b), (t[2], &c)], out);
    for (i, &(a, b, c, want)) in cases.iter().enumerate() {
        assert_eq!(
            d[i],
            want & mask(out),
            "`{body}` a={a:#x} b={b:#x} c={c:#x} (lane {i})"
        );
    }
}

/// Two's-complement bit patterns of signed values, as operand columns hold them.
pub(super) fn s16(v: i16) -> u64 {
    v as u16 as u64
}

pub(super) fn s32(v: i32) -> u64 {
    v as u32 as u64
}

pub(super) fn s64(v: i64) -> u64 {
    v as u64
}

pub(super) fn f(v: f32) -> u64 {
    v.to_bits() as u64
}

pub(super) fn g(v: f64) -> u64 {
    v.to_bits()
}

pub(super) const MIN32: i32 = i32::MIN;

pub(super) const MAX32: i32 = i32::MAX;

// ---------------------------------------------------------------------------------------------
// Floating-point operands and runners
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator of test operands.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }

    /// An f32 with random sign and fraction and unbiased exponent `e` (subnormal below -126).
    pub(super) fn f32_at(&mut self, e: i32) -> f32 {
        let e = e.clamp(-127, 127);
        let bits = (self.next() as u32 & 0x807f_ffff) | (((e + 127) as u32) << 23);
        f32::from_bits(bits)
    }

    pub(super) fn f64_at(&mut self, e: i32) -> f64 {
        let e = e.clamp(-1023, 1023);
        let bits = (self.next() & 0x800f_ffff_ffff_ffff) | (((e + 1023) as u64) << 52);
        f64::from_bits(bits)
    }
}

/// Runs a binary f32 instruction over `pairs` and compares it bit for bit with `want`.
pub(super) fn check_f32_2(body: &str, pairs: &[(f32, f32)], want: &dyn Fn(f32, f32) -> u64) {
    let a: Vec<u64> = pairs.iter().map(|p| f(p.0)).collect();
    let b: Vec<u64> = pairs.iter().map(|p| f(p.1)).collect();
    let d = lanes(body, &[("b32", &a), ("b32", &b)], "b32");
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let w = want(x, y);
        let ok = if F32.is_nan(w) {
            F32.is_nan(d[i])
        } else {
            d[i] == w
        };
        assert!(
            ok,
            "`{body}` a={x:e} ({:#x}) b={y:e} ({:#x}): got {:e} ({:#x}), want {:e} ({w:#x})",
            x.to_bits(),
            y.to_bits(),
            f32::from_bits(d[i] as u32),
            d[i],
            f32::from_bits(w as u32)
        );
    }
}

pub(super) fn check_f64_2(body: &str, pairs: &[(f64, f64)], want: &dyn Fn(f64, f64) -> u64) {
    let a: Vec<u64> = pairs.iter().map(|p| g(p.0)).collect();
    let b: Vec<u64> = pairs.iter().map(|p| g(p.1)).collect();
    let d = lanes(body, &[("b64", &a), ("b64", &b)], "b64");
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let w = want(x, y);
        let ok = if F64.is_nan(w) {
            F64.is_nan(d[i])
        } else {
            d[i] == w
        };
        assert!(
            ok,
            "`{body}` a={x:e} b={y:e}: got {:e} ({:#x}), want {:e} ({w:#x})",
            f64::from_bits(d[i]),
            d[i],
            f64::from_bits(w)
        );
    }
}

/// Runs a unary f32 instruction over `xs`.
pub(super) fn un32(body: &str, xs: &[f32]) -> Vec<f32> {
    let a: Vec<u64> = xs.iter().map(|&x| f(x)).collect();
    lanes(body, &[("b32", &a)], "b32")
        .into_iter()
        .map(|b| f32::from_bits(b as u32))
        .collect()
}

pub(super) fn un64(body: &str, xs: &[f64]) -> Vec<f64> {
    let a: Vec<u64> = xs.iter().map(|&x| g(x)).collect();
    lanes(body, &[("b64", &a)], "b64")
        .into_iter()
        .map(f64::from_bits)
        .collect()
}

/// Checks special-value results bit for bit (NaN: any NaN).
pub(super) fn specials32(body: &str, cases: &[(f32, f32)]) {
    let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let d = un32(body, &xs);
    for (i, &(x, w)) in cases.iter().enumerate() {
        let ok = if w.is_nan() {
            d[i].is_nan()
        } else {
            d[i].to_bits() == w.to_bits()
        };
        assert!(ok, "`{body}` a={x:e}: got {:e}, want {w:e}", d[i]);
    }
}

pub(super) fn specials64(body: &str, cases: &[(f64, f64)]) {
    let xs: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let d = un64(body, &xs);
    for (i, &(x, w)) in cases.iter().enumerate() {
        let ok = if w.is_nan() {
            d[i].is_nan()
        } else {
            d[i].to_bits() == w.to_bits()
        };
        assert!(ok, "`{body}` a={x:e}: got {:e}, want {w:e}", d[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory tests: module-scope declarations and failing launches
// ---------------------------------------------------------------------------------------------

/// A module with module-scope declarations `decls` before one kernel.
pub(super) fn module_with(decls: &str, name: &str, params: &str, body: &str) -> String {
    format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n\n{decls}\n\n.visible .entry {name}({params})\n{{\n{body}\n}}\n"
    )
}

/// The error of a launch that must fail.
pub(super) fn err_of(r: Result<Vec<Vec<u8>>, String>) -> String {
    match r {
        Ok(_) => panic!("the launch succeeded; expected an error"),
        Err(e) => e,
    }
}
