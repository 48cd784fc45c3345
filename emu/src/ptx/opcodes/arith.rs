//! Arithmetic, bit manipulation, comparisons and the warp-wide matrix multiply: the
//! forms PTX defines for each type, with their rounding and saturation modifiers.

use super::super::ast::Operand;
use super::super::ir::*;
use super::super::lower::{Ctx, LowerError};
use super::{Mods, one_type, want};

pub(super) fn binary(
    cx: &Ctx,
    base: &str,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    want(cx, ops, 3, opcode)?;
    let rnd = m.rnd();
    let approx = m.take("approx");
    let full = m.take("full");
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let nan = m.take("NaN");
    let (lo, hi, wide) = (m.take("lo"), m.take("hi"), m.take("wide"));
    let ty = one_type(cx, m, opcode)?;
    if ty == Ty::Pred {
        let op = match base {
            "and" => BoolOp::And,
            "or" => BoolOp::Or,
            "xor" => BoolOp::Xor,
            _ => return cx.err(format!("unsupported instruction `{opcode}`")),
        };
        return Ok(Op::PredLogic {
            op,
            d: cx
                .pdst(&ops[0])?
                .map_or_else(|| cx.err("predicate logic into `_`"), Ok)?,
            a: cx.psrc(&ops[1])?,
            b: cx.psrc(&ops[2])?,
        });
    }
    if matches!(ty, Ty::F32 | Ty::F64) {
        let op = match base {
            "add" => FOp2::Add,
            "sub" => FOp2::Sub,
            "mul" => FOp2::Mul,
            "min" if nan => FOp2::MinNaN,
            "max" if nan => FOp2::MaxNaN,
            "min" => FOp2::Min,
            "max" => FOp2::Max,
            "div" if approx && ty == Ty::F32 => FOp2::DivApprox,
            "div" if full && ty == Ty::F32 => FOp2::DivFull,
            "div" if rnd.is_some() => FOp2::Div,
            _ => return cx.err(format!("unsupported instruction `{opcode}`")),
        };
        if (ftz || sat) && ty != Ty::F32 {
            return cx.err(format!("`{opcode}`: .ftz and .sat are f32 only"));
        }
        if sat && !matches!(op, FOp2::Add | FOp2::Sub | FOp2::Mul) {
            return cx.err(format!("`{opcode}`: .sat is not allowed"));
        }
        if rnd.is_some() && !matches!(op, FOp2::Add | FOp2::Sub | FOp2::Mul | FOp2::Div) {
            return cx.err(format!("`{opcode}`: no rounding modifier here"));
        }
        if lo || hi || wide {
            return cx.err(format!("unsupported instruction `{opcode}`"));
        }
        return Ok(Op::F2 {
            op,
            ty,
            rnd: rnd.unwrap_or(Rnd::Rn),
            ftz,
            sat,
            d: cx.reg(&ops[0])?,
            a: cx.src(&ops[1], ty)?,
            b: cx.src(&ops[2], ty)?,
        });
    }
    if !ty.int() || rnd.is_some() || approx || full || ftz || nan {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    let op = match (base, lo, hi, wide, sat) {
        ("add", false, false, false, false) => IntOp::Add,
        ("add", false, false, false, true) if ty == Ty::S32 => IntOp::AddSat,
        ("sub", false, false, false, false) => IntOp::Sub,
        ("sub", false, false, false, true) if ty == Ty::S32 => IntOp::SubSat,
        ("mul", true, false, false, false) => IntOp::MulLo,
        ("mul", false, true, false, false) => IntOp::MulHi,
        ("mul", false, false, true, false) if ty.bits() <= 32 && ty.bits() >= 16 => IntOp::MulWide,
        ("div", false, false, false, false) => IntOp::Div,
        ("rem", false, false, false, false) => IntOp::Rem,
        ("min", false, false, false, false) => IntOp::Min,
        ("max", false, false, false, false) => IntOp::Max,
        ("and", false, false, false, false) => IntOp::And,
        ("or", false, false, false, false) => IntOp::Or,
        ("xor", false, false, false, false) => IntOp::Xor,
        ("shl", false, false, false, false) => IntOp::Shl,
        ("shr", false, false, false, false) => IntOp::Shr,
        _ => return cx.err(format!("unsupported instruction `{opcode}`")),
    };
    // Shift amounts are always .u32.
    let bty = if matches!(op, IntOp::Shl | IntOp::Shr) {
        Ty::U32
    } else {
        ty
    };
    Ok(Op::Int {
        op,
        ty,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], ty)?,
        b: cx.src(&ops[2], bty)?,
    })
}

pub(super) fn ternary(
    cx: &Ctx,
    base: &str,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    want(cx, ops, 4, opcode)?;
    let rnd = m.rnd();
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let (lo, hi, wide) = (m.take("lo"), m.take("hi"), m.take("wide"));
    let ty = one_type(cx, m, opcode)?;
    if matches!(ty, Ty::F32 | Ty::F64) {
        // fma, and mad on floats, need a rounding modifier (mad.f32 without one is the
        // pre-sm_20 form, which was not fused).
        let Some(rnd) = rnd else {
            return cx.err(format!("`{opcode}` needs a rounding modifier"));
        };
        // A directed rounding of an f64 fma needs the exact error of the fused result, which
        // is not implemented: refused rather than approximated.
        if (ftz || sat) && ty != Ty::F32 || lo || hi || wide || (ty == Ty::F64 && rnd != Rnd::Rn) {
            return cx.err(format!("unsupported instruction `{opcode}`"));
        }
        return Ok(Op::Fma {
            ty,
            rnd,
            ftz,
            sat,
            d: cx.reg(&ops[0])?,
            a: cx.src(&ops[1], ty)?,
            b: cx.src(&ops[2], ty)?,
            c: cx.src(&ops[3], ty)?,
        });
    }
    if base != "mad" || !ty.int() || rnd.is_some() || ftz {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    let op = match (lo, hi, wide, sat) {
        (true, false, false, false) => MadOp::Lo,
        (false, true, false, false) => MadOp::Hi,
        (false, true, false, true) if ty == Ty::S32 => MadOp::HiSat,
        (false, false, true, false) if ty.bits() == 16 || ty.bits() == 32 => MadOp::Wide,
        _ => return cx.err(format!("unsupported instruction `{opcode}`")),
    };
    let cty = if op == MadOp::Wide {
        if ty.signed() { Ty::S64 } else { Ty::U64 }
    } else {
        ty
    };
    Ok(Op::Mad {
        op,
        ty,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], ty)?,
        b: cx.src(&ops[2], ty)?,
        c: cx.src(&ops[3], cty)?,
    })
}

pub(super) fn unary(
    cx: &Ctx,
    base: &str,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    want(cx, ops, 2, opcode)?;
    let rnd = m.rnd();
    let approx = m.take("approx");
    let ftz = m.take("ftz");
    let ty = one_type(cx, m, opcode)?;
    if ty == Ty::Pred && base == "not" {
        return Ok(Op::PredNot {
            d: cx
                .pdst(&ops[0])?
                .map_or_else(|| cx.err("not.pred into `_`"), Ok)?,
            a: cx.psrc(&ops[1])?,
        });
    }
    if matches!(ty, Ty::F32 | Ty::F64) {
        let f32_only = |op| {
            if ty == Ty::F32 {
                Ok(op)
            } else {
                cx.err(format!("unsupported instruction `{opcode}`"))
            }
        };
        let op = match (base, approx, rnd.is_some()) {
            ("neg", false, false) => FOp1::Neg,
            ("abs", false, false) => FOp1::Abs,
            ("rcp", true, false) => f32_only(FOp1::RcpApprox)?,
            ("rcp", false, true) => FOp1::Rcp,
            ("sqrt", true, false) => f32_only(FOp1::SqrtApprox)?,
            ("sqrt", false, true) => FOp1::Sqrt,
            ("rsqrt", true, false) => FOp1::RsqrtApprox,
            ("ex2", true, false) => f32_only(FOp1::Ex2)?,
            ("lg2", true, false) => f32_only(FOp1::Lg2)?,
            ("sin", true, false) => f32_only(FOp1::Sin)?,
            ("cos", true, false) => f32_only(FOp1::Cos)?,
            ("tanh", true, false) if !ftz => f32_only(FOp1::Tanh)?,
            _ => return cx.err(format!("unsupported instruction `{opcode}`")),
        };
        if ftz && ty != Ty::F32 {
            return cx.err(format!("`{opcode}`: .ftz is f32 only"));
        }
        return Ok(Op::F1 {
            op,
            ty,
            rnd: rnd.unwrap_or(Rnd::Rn),
            ftz,
            d: cx.reg(&ops[0])?,
            a: cx.src(&ops[1], ty)?,
        });
    }
    if !ty.int() || rnd.is_some() || approx || ftz {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    let op = match base {
        "neg" if ty.signed() => IntUn::Neg,
        "abs" if ty.signed() => IntUn::Abs,
        "not" => IntUn::Not,
        "cnot" => IntUn::Cnot,
        "popc" if matches!(ty, Ty::B32 | Ty::B64) => IntUn::Popc,
        "clz" if matches!(ty, Ty::B32 | Ty::B64) => IntUn::Clz,
        "brev" if matches!(ty, Ty::B32 | Ty::B64) => IntUn::Brev,
        _ => return cx.err(format!("unsupported instruction `{opcode}`")),
    };
    Ok(Op::IntUn {
        op,
        ty,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], ty)?,
    })
}

pub(super) fn bitfield(
    cx: &Ctx,
    base: &str,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    let ty = one_type(cx, m, opcode)?;
    if base == "bfe" {
        want(cx, ops, 4, opcode)?;
        if !matches!(ty, Ty::U32 | Ty::U64 | Ty::S32 | Ty::S64) {
            return cx.err(format!("unsupported instruction `{opcode}`"));
        }
        return Ok(Op::Bfe {
            ty,
            d: cx.reg(&ops[0])?,
            a: cx.src(&ops[1], ty)?,
            b: cx.src(&ops[2], Ty::U32)?,
            c: cx.src(&ops[3], Ty::U32)?,
        });
    }
    want(cx, ops, 5, opcode)?;
    if !matches!(ty, Ty::B32 | Ty::B64) {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    Ok(Op::Bfi {
        ty,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], ty)?,
        b: cx.src(&ops[2], ty)?,
        c: cx.src(&ops[3], Ty::U32)?,
        e: cx.src(&ops[4], Ty::U32)?,
    })
}

pub(super) fn prmt(
    cx: &Ctx,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    want(cx, ops, 4, opcode)?;
    let mode = match m.take_one(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]) {
        None => PrmtMode::Generic,
        Some("f4e") => PrmtMode::F4e,
        Some("b4e") => PrmtMode::B4e,
        Some("rc8") => PrmtMode::Rc8,
        Some("ecl") => PrmtMode::Ecl,
        Some("ecr") => PrmtMode::Ecr,
        Some(_) => PrmtMode::Rc16,
    };
    if one_type(cx, m, opcode)? != Ty::B32 {
        return cx.err(format!("`{opcode}` is .b32"));
    }
    Ok(Op::Prmt {
        mode,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], Ty::B32)?,
        b: cx.src(&ops[2], Ty::B32)?,
        c: cx.src(&ops[3], Ty::B32)?,
    })
}

pub(super) fn setp(
    cx: &Ctx,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    let cmp = match m.take_one(&[
        "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu",
        "gtu", "geu", "num", "nan",
    ]) {
        Some("eq") => Cmp::Eq,
        Some("ne") => Cmp::Ne,
        Some("lt" | "lo") => Cmp::Lt,
        Some("le" | "ls") => Cmp::Le,
        Some("gt" | "hi") => Cmp::Gt,
        Some("ge" | "hs") => Cmp::Ge,
        Some("equ") => Cmp::Equ,
        Some("neu") => Cmp::Neu,
        Some("ltu") => Cmp::Ltu,
        Some("leu") => Cmp::Leu,
        Some("gtu") => Cmp::Gtu,
        Some("geu") => Cmp::Geu,
        Some("num") => Cmp::Num,
        Some(_) => Cmp::Nan,
        None => return cx.err(format!("`{opcode}` needs a comparison")),
    };
    let comb = match m.take_one(&["and", "or", "xor"]) {
        Some("and") => Some(BoolOp::And),
        Some("or") => Some(BoolOp::Or),
        Some("xor") => Some(BoolOp::Xor),
        _ => None,
    };
    let ftz = m.take("ftz");
    let ty = one_type(cx, m, opcode)?;
    let float_only = matches!(
        cmp,
        Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu | Cmp::Num | Cmp::Nan
    );
    if (float_only || ftz) && !matches!(ty, Ty::F32 | Ty::F64)
        || ftz && ty != Ty::F32
        || !matches!(ty, Ty::F32 | Ty::F64) && !ty.int()
    {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    // Bit-size types compare only for (in)equality.
    if matches!(ty, Ty::B16 | Ty::B32 | Ty::B64 | Ty::B8) && !matches!(cmp, Cmp::Eq | Cmp::Ne) {
        return cx.err(format!("`{opcode}`: .b types compare only eq/ne"));
    }
    want(cx, ops, if comb.is_some() { 4 } else { 3 }, opcode)?;
    let (p, q) = match &ops[0] {
        Operand::Pair(p, q) => (
            cx.pdst(&Operand::Name(p.clone()))?,
            cx.pdst(&Operand::Name(q.clone()))?,
        ),
        o => (cx.pdst(o)?, None),
    };
    Ok(Op::Setp {
        cmp,
        ty,
        ftz,
        p,
        q,
        a: cx.src(&ops[1], ty)?,
        b: cx.src(&ops[2], ty)?,
        comb: match comb {
            Some(b) => Some((b, cx.psrc(&ops[3])?)),
            None => None,
        },
    })
}

pub(super) fn mma(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
    if !(m.take("sync")
        && m.take("aligned")
        && m.take("m16n8k16")
        && m.take("row")
        && m.take("col"))
    {
        return cx.err(format!(
            "unsupported instruction `{opcode}` (only mma.sync.aligned.m16n8k16.row.col is emulated)"
        ));
    }
    let tys = m.types();
    let [dty, aty, bty, cty] = tys[..] else {
        return cx.err(format!("`{opcode}` needs four types"));
    };
    let ab = match (aty, bty) {
        (Ty::BF16, Ty::BF16) if dty == Ty::F32 && cty == Ty::F32 => MmaIn::Bf16,
        (Ty::F16, Ty::F16)
            if matches!(dty, Ty::F32 | Ty::F16) && matches!(cty, Ty::F32 | Ty::F16) =>
        {
            MmaIn::F16
        }
        _ => return cx.err(format!("unsupported instruction `{opcode}`")),
    };
    want(cx, ops, 4, opcode)?;
    let list = |o: &Operand, n: usize| -> Result<Vec<Operand>, LowerError> {
        match o {
            Operand::Vec(v) if v.len() == n => Ok(v.clone()),
            _ => cx.err(format!("`{opcode}`: expected a vector of {n} registers")),
        }
    };
    let (dn, cn) = (
        if dty == Ty::F32 { 4 } else { 2 },
        if cty == Ty::F32 { 4 } else { 2 },
    );
    let mut d = [Dst::Sink; 4];
    for (i, o) in list(&ops[0], dn)?.iter().enumerate() {
        d[i] = cx.dst(o)?;
    }
    let mut a = [Src::Imm(0); 4];
    for (i, o) in list(&ops[1], 4)?.iter().enumerate() {
        a[i] = cx.src(o, Ty::B32)?;
    }
    let mut b = [Src::Imm(0); 2];
    for (i, o) in list(&ops[2], 2)?.iter().enumerate() {
        b[i] = cx.src(o, Ty::B32)?;
    }
    let mut c = [Src::Imm(0); 4];
    for (i, o) in list(&ops[3], cn)?.iter().enumerate() {
        c[i] = cx.src(o, cty)?;
    }
    Ok(Op::Mma {
        ab,
        d_f32: dty == Ty::F32,
        c_f32: cty == Ty::F32,
        d,
        a,
        b,
        c,
    })
}
