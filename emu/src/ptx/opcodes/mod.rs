//! The meaning of each PTX opcode and its modifiers: which forms exist (from NVIDIA's PTX
//! ISA), how their operands are read, and what [`Op`] runs them. A form that is not here is
//! refused with its name, never guessed at.

use super::ast::Operand;
use super::ir::*;
use super::lower::{Ctx, LowerError};

mod arith;
mod memory;

use arith::*;
use memory::*;

/// An opcode's modifiers, consumed as they are understood; any left over is an error.
pub(super) struct Mods<'a> {
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

pub(super) fn one_type(cx: &Ctx, m: &mut Mods, op: &str) -> Result<Ty, LowerError> {
    let t = m.types();
    match t.as_slice() {
        [t] => Ok(*t),
        _ => cx.err(format!("`{op}` needs exactly one type")),
    }
}

pub(super) fn want(cx: &Ctx, ops: &[Operand], n: usize, op: &str) -> Result<(), LowerError> {
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
