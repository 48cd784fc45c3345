//! The meaning of each PTX opcode and its modifiers: which forms exist (from NVIDIA's PTX
//! ISA), how their operands are read, and what [`Op`] runs them. A form that is not here is
//! refused with its name, never guessed at.

use super::ast::Operand;
use super::ir::*;
use super::lower::{Ctx, LowerError};

/// An opcode's modifiers, consumed as they are understood; any left over is an error.
struct Mods<'a> {
    parts: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn take(&mut self, m: &str) -> bool {
        match self.parts.iter().position(|p| *p == m) {
            Some(i) => {
                self.parts.remove(i);
                true
            }
            None => false,
        }
    }

    fn take_one(&mut self, options: &[&str]) -> Option<&'a str> {
        let i = self.parts.iter().position(|p| options.contains(p))?;
        Some(self.parts.remove(i))
    }

    /// Every type modifier, in order, removed.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        self.parts.retain(|p| match Ty::parse(p) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn rnd(&mut self) -> Option<Rnd> {
        Some(match self.take_one(&["rn", "rz", "rm", "rp"])? {
            "rn" => Rnd::Rn,
            "rz" => Rnd::Rz,
            "rm" => Rnd::Rm,
            _ => Rnd::Rp,
        })
    }

    fn space(&mut self) -> Space {
        match self.take_one(&[
            "global",
            "shared",
            "shared::cta",
            "local",
            "param",
            "param::entry",
            "const",
        ]) {
            Some("global") => Space::Global,
            Some("shared" | "shared::cta") => Space::Shared,
            Some("local") => Space::Local,
            Some("param" | "param::entry") => Space::Param,
            Some("const") => Space::Const,
            _ => Space::Generic,
        }
    }
}

fn one_type(cx: &Ctx, m: &mut Mods, op: &str) -> Result<Ty, LowerError> {
    let t = m.types();
    match t.as_slice() {
        [t] => Ok(*t),
        _ => cx.err(format!("`{op}` needs exactly one type")),
    }
}

fn want(cx: &Ctx, ops: &[Operand], n: usize, op: &str) -> Result<(), LowerError> {
    if ops.len() == n {
        Ok(())
    } else {
        cx.err(format!("`{op}` takes {n} operands, found {}", ops.len()))
    }
}

/// Lowers one instruction.
pub(super) fn lower_inst(cx: &Ctx, opcode: &str, ops: &[Operand]) -> Result<Op, LowerError> {
    let mut it = opcode.split('.');
    let base = it.next().unwrap_or("");
    let mut m = Mods {
        parts: it.collect(),
    };
    let op = lower_base(cx, base, &mut m, ops, opcode)?;
    if !m.parts.is_empty() {
        return cx.err(format!(
            "unsupported instruction `{opcode}` (modifier .{} is not emulated)",
            m.parts.join(".")
        ));
    }
    Ok(op)
}

fn lower_base(
    cx: &Ctx,
    base: &str,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    match base {
        "mov" => mov(cx, m, ops, opcode),
        "ld" | "ldu" => ld(cx, m, ops, opcode),
        "st" => st(cx, m, ops, opcode),
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl"
        | "shr" => binary(cx, base, m, ops, opcode),
        "mad" | "fma" => ternary(cx, base, m, ops, opcode),
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "rcp" | "sqrt" | "rsqrt"
        | "ex2" | "lg2" | "sin" | "cos" | "tanh" => unary(cx, base, m, ops, opcode),
        "bfe" | "bfi" => bitfield(cx, base, m, ops, opcode),
        "prmt" => prmt(cx, m, ops, opcode),
        "setp" => setp(cx, m, ops, opcode),
        "selp" => {
            want(cx, ops, 4, opcode)?;
            let ty = one_type(cx, m, opcode)?;
            Ok(Op::Selp {
                bits: ty.bits(),
                d: cx.reg(&ops[0])?,
                a: cx.src(&ops[1], ty)?,
                b: cx.src(&ops[2], ty)?,
                c: cx.psrc(&ops[3])?,
            })
        }
        "cvt" => cvt(cx, m, ops, opcode),
        "cvta" => {
            want(cx, ops, 2, opcode)?;
            let to = m.take("to");
            let space = m.space();
            if space == Space::Generic {
                return cx.err(format!("`{opcode}` needs a state space"));
            }
            let ty = one_type(cx, m, opcode)?;
            if !matches!(ty, Ty::U32 | Ty::U64) {
                return cx.err(format!("`{opcode}`: size must be .u32 or .u64"));
            }
            Ok(Op::Cvta {
                to,
                space,
                d: cx.reg(&ops[0])?,
                a: cx.src(&ops[1], ty)?,
            })
        }
        "isspacep" => {
            want(cx, ops, 2, opcode)?;
            let space = m.space();
            Ok(Op::IsSpace {
                space,
                d: cx
                    .pdst(&ops[0])?
                    .map_or_else(|| cx.err("isspacep needs a predicate"), Ok)?,
                a: cx.src(&ops[1], Ty::U64)?,
            })
        }
        "bra" => {
            want(cx, ops, 1, opcode)?;
            let uni = m.take("uni");
            let Operand::Name(l) = &ops[0] else {
                return cx.err("bra needs a label");
            };
            Ok(Op::Bra {
                target: cx.label(l)?,
                uni,
            })
        }
        "ret" | "exit" => {
            m.take("uni");
            want(cx, ops, 0, opcode)?;
            Ok(Op::Exit)
        }
        "bar" | "barrier" => {
            m.take("cta");
            if m.take("warp") {
                m.take("sync");
                want(cx, ops, 1, opcode)?;
                return Ok(Op::BarWarp {
                    mask: cx.src(&ops[0], Ty::B32)?,
                });
            }
            let aligned = base == "bar" || m.take("aligned");
            // `bar.sync`, `barrier.sync`, or plain `bar` (an old spelling of bar.sync).
            let sync = m.take("sync") || (base == "bar" && m.parts.is_empty());
            if !sync {
                return cx.err(format!(
                    "unsupported instruction `{opcode}` (only the .sync barrier is emulated)"
                ));
            }
            if ops.is_empty() || ops.len() > 2 {
                return cx.err(format!("`{opcode}` takes 1 or 2 operands"));
            }
            Ok(Op::Bar {
                id: cx.src(&ops[0], Ty::U32)?,
                count: ops.get(1).map(|o| cx.src(o, Ty::U32)).transpose()?,
                aligned,
            })
        }
        "shfl" => {
            if !m.take("sync") {
                return cx.err("shfl without .sync is not supported on sm_70 and later");
            }
            let mode = match m.take_one(&["up", "down", "bfly", "idx"]) {
                Some("up") => ShflMode::Up,
                Some("down") => ShflMode::Down,
                Some("bfly") => ShflMode::Bfly,
                Some(_) => ShflMode::Idx,
                None => return cx.err(format!("`{opcode}` needs a mode")),
            };
            let ty = one_type(cx, m, opcode)?;
            if ty != Ty::B32 {
                return cx.err(format!("`{opcode}`: only .b32"));
            }
            want(cx, ops, 5, opcode)?;
            let (d, p) = match &ops[0] {
                Operand::Pair(d, p) => (
                    cx.dst(&Operand::Name(d.clone()))?,
                    cx.pdst(&Operand::Name(p.clone()))?,
                ),
                o => (cx.dst(o)?, None),
            };
            Ok(Op::Shfl {
                mode,
                d,
                p,
                a: cx.src(&ops[1], Ty::B32)?,
                b: cx.src(&ops[2], Ty::B32)?,
                c: cx.src(&ops[3], Ty::B32)?,
                mask: cx.src(&ops[4], Ty::B32)?,
            })
        }
        "vote" => {
            if !m.take("sync") {
                return cx.err("vote without .sync is not supported on sm_70 and later");
            }
            let mode = match m.take_one(&["all", "any", "uni", "ballot"]) {
                Some("all") => VoteMode::All,
                Some("any") => VoteMode::Any,
                Some("uni") => VoteMode::Uni,
                Some(_) => VoteMode::Ballot,
                None => return cx.err(format!("`{opcode}` needs a mode")),
            };
            let ty = one_type(cx, m, opcode)?;
            want(cx, ops, 3, opcode)?;
            let (d, dp) = if mode == VoteMode::Ballot {
                if ty != Ty::B32 {
                    return cx.err("vote.ballot is .b32");
                }
                (cx.dst(&ops[0])?, None)
            } else {
                if ty != Ty::Pred {
                    return cx.err(format!("`{opcode}` is .pred"));
                }
                (Dst::Sink, cx.pdst(&ops[0])?)
            };
            Ok(Op::Vote {
                mode,
                d,
                dp,
                a: cx.psrc(&ops[1])?,
                mask: cx.src(&ops[2], Ty::B32)?,
            })
        }
        "activemask" => {
            one_type(cx, m, opcode)?;
            want(cx, ops, 1, opcode)?;
            Ok(Op::Activemask {
                d: cx.reg(&ops[0])?,
            })
        }
        "atom" | "red" => atom(cx, base == "atom", m, ops, opcode),
        "mma" => mma(cx, m, ops, opcode),
        "membar" => {
            m.take_one(&["cta", "gl", "sys"]);
            Ok(Op::Nop)
        }
        "fence" => {
            m.take_one(&["sc", "acq_rel"]);
            m.take_one(&["cta", "gpu", "sys", "cluster"]);
            Ok(Op::Nop)
        }
        "nanosleep" => {
            m.types();
            Ok(Op::Nop)
        }
        _ => cx.err(format!("unsupported instruction `{opcode}`")),
    }
}

fn mov(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
    want(cx, ops, 2, opcode)?;
    let ty = one_type(cx, m, opcode)?;
    if ty == Ty::Pred {
        return Ok(Op::MovPred {
            d: cx
                .pdst(&ops[0])?
                .map_or_else(|| cx.err("mov.pred to `_`"), Ok)?,
            a: cx.psrc(&ops[1])?,
        });
    }
    match (&ops[0], &ops[1]) {
        (Operand::Vec(parts), a) => {
            let part_bits = ty.bits() / parts.len() as u32;
            Ok(Op::Unpack {
                d: parts.iter().map(|p| cx.dst(p)).collect::<Result<_, _>>()?,
                a: cx.src(a, ty)?,
                part_bits,
            })
        }
        (d, Operand::Vec(parts)) => {
            let part_bits = ty.bits() / parts.len() as u32;
            let part_ty = match part_bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => return cx.err(format!("`{opcode}`: cannot pack {} parts", parts.len())),
            };
            Ok(Op::Pack {
                d: cx.reg(d)?,
                parts: parts
                    .iter()
                    .map(|p| cx.src(p, part_ty))
                    .collect::<Result<_, _>>()?,
                part_bits,
            })
        }
        (d, a) => Ok(Op::Mov {
            d: cx.reg(d)?,
            a: cx.src(a, ty)?,
            bits: ty.bits(),
        }),
    }
}

/// Memory-access qualifiers that change nothing for an in-order emulator: caching hints,
/// and the default or stronger orderings (every access is performed in program order).
fn mem_hints(m: &mut Mods) {
    loop {
        let hint = m.parts.iter().position(|p| {
            matches!(
                *p,
                "nc" | "ca"
                    | "cg"
                    | "cs"
                    | "lu"
                    | "cv"
                    | "wb"
                    | "wt"
                    | "weak"
                    | "volatile"
                    | "relaxed"
                    | "acquire"
                    | "release"
                    | "cta"
                    | "gpu"
                    | "sys"
            ) || p.starts_with("L1::")
                || p.starts_with("L2::")
        });
        match hint {
            Some(i) => {
                m.parts.remove(i);
            }
            None => return,
        }
    }
}

fn vec_n(m: &mut Mods) -> u8 {
    match m.take_one(&["v2", "v4"]) {
        Some("v2") => 2,
        Some("v4") => 4,
        _ => 1,
    }
}

fn ld(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
    want(cx, ops, 2, opcode)?;
    mem_hints(m);
    let space = m.space();
    mem_hints(m);
    let n = vec_n(m);
    let ty = one_type(cx, m, opcode)?;
    if ty == Ty::Pred || (n > 1 && ty.bits() * n as u32 > 128) {
        return cx.err(format!("`{opcode}`: bad type for a load"));
    }
    let mut d = [Dst::Sink; 4];
    match &ops[0] {
        Operand::Vec(v) if v.len() == n as usize && n > 1 => {
            for (i, o) in v.iter().enumerate() {
                d[i] = cx.dst(o)?;
            }
        }
        o if n == 1 => d[0] = cx.dst(o)?,
        _ => return cx.err(format!("`{opcode}` needs {n} destinations")),
    }
    Ok(Op::Ld {
        space,
        ty,
        n,
        d,
        addr: cx.addr(&ops[1], space)?,
    })
}

fn st(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
    want(cx, ops, 2, opcode)?;
    mem_hints(m);
    let space = m.space();
    mem_hints(m);
    let n = vec_n(m);
    let ty = one_type(cx, m, opcode)?;
    if ty == Ty::Pred || (n > 1 && ty.bits() * n as u32 > 128) {
        return cx.err(format!("`{opcode}`: bad type for a store"));
    }
    if space == Space::Param || space == Space::Const {
        return cx.err(format!(
            "`{opcode}`: the {} space is read-only",
            space.name()
        ));
    }
    let mut a = [Src::Imm(0); 4];
    match &ops[1] {
        Operand::Vec(v) if v.len() == n as usize && n > 1 => {
            for (i, o) in v.iter().enumerate() {
                a[i] = cx.src(o, ty)?;
            }
        }
        o if n == 1 => a[0] = cx.src(o, ty)?,
        _ => return cx.err(format!("`{opcode}` needs {n} sources")),
    }
    Ok(Op::St {
        space,
        ty,
        n,
        a,
        addr: cx.addr(&ops[0], space)?,
    })
}

fn binary(
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

fn ternary(
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

fn unary(
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

fn bitfield(
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

fn prmt(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
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

fn setp(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
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

fn cvt(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
    let frnd = m.rnd();
    let irnd = match m.take_one(&["rni", "rzi", "rmi", "rpi"]) {
        Some("rni") => Some(Rnd::Rn),
        Some("rzi") => Some(Rnd::Rz),
        Some("rmi") => Some(Rnd::Rm),
        Some("rpi") => Some(Rnd::Rp),
        _ => None,
    };
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let relu = m.take("relu");
    let satfinite = m.take("satfinite");
    let tys = m.types();
    let [dty, sty] = tys[..] else {
        return cx.err(format!("`{opcode}` needs two types"));
    };
    if matches!(dty, Ty::BF16x2 | Ty::F16x2) {
        want(cx, ops, 3, opcode)?;
        let Some(rnd) = frnd.filter(|_| sty == Ty::F32 && irnd.is_none() && !ftz && !sat) else {
            return cx.err(format!("unsupported instruction `{opcode}`"));
        };
        return Ok(Op::CvtPack {
            dty,
            rnd,
            relu,
            satfinite,
            d: cx.reg(&ops[0])?,
            a: cx.src(&ops[1], Ty::F32)?,
            b: cx.src(&ops[2], Ty::F32)?,
        });
    }
    want(cx, ops, 2, opcode)?;
    if relu || satfinite || matches!(sty, Ty::BF16x2 | Ty::F16x2 | Ty::Pred) || dty == Ty::Pred {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    let df = dty.float();
    let sf = sty.float();
    // Which rounding each conversion takes (PTX ISA, cvt): float results of int sources or of
    // narrower float formats need .rn/.rz/.rm/.rp; integer results of float sources, and
    // float-to-same-float, need .rni/.rzi/.rmi/.rpi; others take none.
    // Lossy float-to-float: to a narrower format, or between the two 16-bit formats.
    let narrowing =
        df && sf && (dty.bits() < sty.bits() || (dty.bits() == sty.bits() && dty != sty));
    let rnd = match (frnd, irnd) {
        (Some(r), None) if df && (!sf || narrowing) => CvtRnd::Float(r),
        (None, Some(r)) if sf && (!df || dty == sty) => CvtRnd::Int(r),
        // Neither int<->float (which round) nor a lossy float narrowing.
        (None, None) if df == sf && !narrowing => CvtRnd::None,
        _ => {
            return cx.err(format!(
                "`{opcode}`: rounding modifier missing or not allowed"
            ));
        }
    };
    if ftz && dty != Ty::F32 && sty != Ty::F32 {
        return cx.err(format!("`{opcode}`: .ftz needs an f32 operand"));
    }
    Ok(Op::Cvt {
        dty,
        sty,
        rnd,
        ftz,
        sat,
        d: cx.reg(&ops[0])?,
        a: cx.src(&ops[1], sty)?,
    })
}

fn atom(
    cx: &Ctx,
    result: bool,
    m: &mut Mods,
    ops: &[Operand],
    opcode: &str,
) -> Result<Op, LowerError> {
    mem_hints(m);
    let space = m.space();
    mem_hints(m);
    let noftz = m.take("noftz");
    let op = match m.take_one(&[
        "add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas",
    ]) {
        Some("add") => AtomOp::Add,
        Some("min") => AtomOp::Min,
        Some("max") => AtomOp::Max,
        Some("inc") => AtomOp::Inc,
        Some("dec") => AtomOp::Dec,
        Some("and") => AtomOp::And,
        Some("or") => AtomOp::Or,
        Some("xor") => AtomOp::Xor,
        Some("exch") => AtomOp::Exch,
        Some(_) => AtomOp::Cas,
        None => return cx.err(format!("`{opcode}` needs an operation")),
    };
    let ty = one_type(cx, m, opcode)?;
    // PTX ISA 9.4: .add.noftz.f32 keeps subnormals on global memory, where plain .add.f32
    // flushes them; the IR has no flag for it, so refuse it rather than flush silently.
    if noftz && ty == Ty::F32 {
        return cx.err(format!(
            "unsupported instruction `{opcode}` (.noftz.f32 is not emulated)"
        ));
    }
    if !matches!(space, Space::Global | Space::Shared | Space::Generic) {
        return cx.err(format!(
            "`{opcode}`: atomics act on global or shared memory"
        ));
    }
    // The type/operation pairs of the ISA's atom table.
    let ok = match op {
        AtomOp::And | AtomOp::Or | AtomOp::Xor | AtomOp::Exch => {
            matches!(ty, Ty::B32 | Ty::B64)
        }
        AtomOp::Cas => matches!(ty, Ty::B32 | Ty::B64 | Ty::B16),
        AtomOp::Add => matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::F32 | Ty::F64),
        AtomOp::Inc | AtomOp::Dec => ty == Ty::U32,
        AtomOp::Min | AtomOp::Max => matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64),
    };
    if !ok || (!result && op == AtomOp::Cas) || (!result && op == AtomOp::Exch) {
        return cx.err(format!("unsupported instruction `{opcode}`"));
    }
    let n_src = if op == AtomOp::Cas { 2 } else { 1 };
    let first = usize::from(result);
    want(cx, ops, first + 1 + n_src, opcode)?;
    Ok(Op::Atom {
        space,
        op,
        ty,
        d: if result { cx.dst(&ops[0])? } else { Dst::Sink },
        addr: cx.addr(&ops[first], space)?,
        b: cx.src(&ops[first + 1], ty)?,
        c: if op == AtomOp::Cas {
            cx.src(&ops[first + 2], ty)?
        } else {
            Src::Imm(0)
        },
    })
}

fn mma(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
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
