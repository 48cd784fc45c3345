//! Loads, stores and atomics: state spaces, vector widths, and the caching and ordering
//! qualifiers an in-order emulator may accept without changing what it computes.

use super::super::ast::Operand;
use super::super::ir::*;
use super::super::lower::{Ctx, LowerError};
use super::{Mods, one_type, want};

/// Memory-access qualifiers that change nothing for an in-order emulator: caching hints,
/// and the default or stronger orderings (every access is performed in program order).
pub(super) fn mem_hints(m: &mut Mods) {
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

pub(super) fn vec_n(m: &mut Mods) -> u8 {
    match m.take_one(&["v2", "v4"]) {
        Some("v2") => 2,
        Some("v4") => 4,
        _ => 1,
    }
}

pub(super) fn ld(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
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

pub(super) fn st(cx: &Ctx, m: &mut Mods, ops: &[Operand], opcode: &str) -> Result<Op, LowerError> {
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

pub(super) fn atom(
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
