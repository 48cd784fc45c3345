//! From a parsed function to an executable [`Kernel`]: registers get slots, labels become
//! instruction indices, variables get offsets in their state space, parameters get offsets
//! in the parameter buffer. The meaning of each opcode is in opcodes/

use std::collections::HashMap;

use super::ast::{Func, Operand, Stmt, VarDecl};
use super::ir::*;
use super::opcodes::lower_inst;

/// A failure to accept a kernel, naming it and the PTX line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kernel {kernel}, PTX line {line}: {msg}")]
pub struct LowerError {
    pub kernel: String,
    pub line: u32,
    pub msg: String,
}

/// What a name stands for.
#[derive(Debug, Clone, Copy)]
enum Sym {
    Reg(Reg),
    Pred(Pred),
    /// A variable: its address in its state space.
    Var(Space, u64),
    /// A kernel parameter: offset and size in the parameter buffer.
    Param(u64),
}

/// The lowering state of one function.
pub(super) struct Ctx<'a> {
    kernel: &'a str,
    pub(super) line: u32,
    scopes: Vec<HashMap<String, Sym>>,
    regs: u32,
    preds: u32,
    labels: HashMap<String, u32>,
}

/// Size and alignment of a declared variable or parameter.
fn var_layout(ty: &str, align: u32, array: Option<u64>) -> (u64, u64) {
    let elem = Ty::parse(ty.trim_start_matches('.')).map_or(1, |t| t.bytes() as u64);
    let size = elem * array.unwrap_or(1);
    let align = if align > 0 { align as u64 } else { elem };
    (size, align.max(1))
}

/// Module-scope variables visible to a kernel: name to (space, address).
pub type Globals = HashMap<String, (Space, u64)>;

impl<'a> Ctx<'a> {
    pub(super) fn err<T>(&self, msg: impl Into<String>) -> Result<T, LowerError> {
        Err(LowerError {
            kernel: self.kernel.to_string(),
            line: self.line,
            msg: msg.into(),
        })
    }

    fn lookup(&self, name: &str) -> Option<Sym> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn declare(&mut self, name: String, sym: Sym) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name, sym);
        }
    }

    /// The instruction index of a label.
    pub(super) fn label(&self, name: &str) -> Result<u32, LowerError> {
        match self.labels.get(name) {
            Some(&i) => Ok(i),
            None => self.err(format!("unknown label `{name}`")),
        }
    }

    /// A register or immediate source; `ty` decides how float literals are read.
    pub(super) fn src(&self, op: &Operand, ty: Ty) -> Result<Src, LowerError> {
        match op {
            Operand::Name(n) => {
                if let Some(s) = sreg(n) {
                    return Ok(Src::Sreg(s));
                }
                match self.lookup(n) {
                    Some(Sym::Reg(r)) => Ok(Src::Reg(r)),
                    Some(Sym::Var(_, a)) => Ok(Src::Imm(a)),
                    Some(Sym::Param(off)) => Ok(Src::Imm(off)),
                    Some(Sym::Pred(_)) => self.err(format!("predicate `{n}` used as a value")),
                    None => self.err(format!("unknown name `{n}`")),
                }
            }
            Operand::Int(v) => Ok(Src::Imm(if ty == Ty::F32 {
                // An integer literal where a float is expected is that value as a float.
                (*v as i64 as f32).to_bits() as u64
            } else if ty == Ty::F64 {
                (*v as i64 as f64).to_bits()
            } else {
                *v
            })),
            Operand::F32(b) => Ok(Src::Imm(if ty == Ty::F64 {
                (f32::from_bits(*b) as f64).to_bits()
            } else {
                *b as u64
            })),
            Operand::F64(b) => Ok(Src::Imm(if ty == Ty::F32 {
                (f64::from_bits(*b) as f32).to_bits() as u64
            } else {
                *b
            })),
            other => self.err(format!("bad source operand {other:?}")),
        }
    }

    /// A destination register.
    pub(super) fn reg(&self, op: &Operand) -> Result<Reg, LowerError> {
        match op {
            Operand::Name(n) => match self.lookup(n) {
                Some(Sym::Reg(r)) => Ok(r),
                _ => self.err(format!("`{n}` is not a register")),
            },
            other => self.err(format!("bad destination {other:?}")),
        }
    }

    /// A destination register or `_`.
    pub(super) fn dst(&self, op: &Operand) -> Result<Dst, LowerError> {
        match op {
            Operand::Name(n) if n == "_" => Ok(Dst::Sink),
            _ => Ok(Dst::Reg(self.reg(op)?)),
        }
    }

    /// A predicate register by name.
    pub(super) fn pred_name(&self, n: &str) -> Result<Pred, LowerError> {
        match self.lookup(n) {
            Some(Sym::Pred(p)) => Ok(p),
            _ => self.err(format!("`{n}` is not a predicate")),
        }
    }

    /// A predicate destination.
    pub(super) fn pdst(&self, op: &Operand) -> Result<Option<Pred>, LowerError> {
        match op {
            Operand::Name(n) if n == "_" => Ok(None),
            Operand::Name(n) => Ok(Some(self.pred_name(n)?)),
            other => self.err(format!("bad predicate destination {other:?}")),
        }
    }

    /// A predicate source: `p`, `!p`, or a constant.
    pub(super) fn psrc(&self, op: &Operand) -> Result<PSrc, LowerError> {
        match op {
            Operand::Name(n) => Ok(PSrc::Pred(self.pred_name(n)?, false)),
            Operand::Not(n) => Ok(PSrc::Pred(self.pred_name(n)?, true)),
            Operand::Int(v) => Ok(PSrc::Const(*v != 0)),
            other => self.err(format!("bad predicate operand {other:?}")),
        }
    }

    /// `[base + offset]` in `space` (a symbol base must live in that space, or be generic).
    pub(super) fn addr(&self, op: &Operand, space: Space) -> Result<Addr, LowerError> {
        let Operand::Addr { base, offset } = op else {
            return self.err(format!("expected an address, found {op:?}"));
        };
        let Some(name) = base else {
            return Ok(Addr {
                base: None,
                disp: *offset,
            });
        };
        match self.lookup(name) {
            Some(Sym::Reg(r)) => Ok(Addr {
                base: Some(r),
                disp: *offset,
            }),
            Some(Sym::Param(off)) if space == Space::Param => Ok(Addr {
                base: None,
                disp: off as i64 + offset,
            }),
            Some(Sym::Var(s, a)) if s == space => Ok(Addr {
                base: None,
                disp: a as i64 + offset,
            }),
            Some(Sym::Var(s, a)) if space == Space::Generic => {
                let window = match s {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                Ok(Addr {
                    base: None,
                    disp: (a + window) as i64 + offset,
                })
            }
            Some(_) => self.err(format!(
                "`{name}` is not addressable in the {} space",
                space.name()
            )),
            None => self.err(format!("unknown name `{name}`")),
        }
    }
}

fn sreg(n: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = n.split_once('.') {
        let d = dim(d)?;
        return Some(match base {
            "%tid" => Sreg::Tid(d),
            "%ntid" => Sreg::Ntid(d),
            "%ctaid" => Sreg::Ctaid(d),
            "%nctaid" => Sreg::Nctaid(d),
            _ => return None,
        });
    }
    Some(match n {
        "%laneid" => Sreg::LaneId,
        "%warpid" => Sreg::WarpId,
        "%nwarpid" => Sreg::NWarpId,
        "%smid" => Sreg::SmId,
        "%nsmid" => Sreg::NSmId,
        "%gridid" => Sreg::GridId,
        "%lanemask_eq" => Sreg::LanemaskEq,
        "%lanemask_lt" => Sreg::LanemaskLt,
        "%lanemask_le" => Sreg::LanemaskLe,
        "%lanemask_gt" => Sreg::LanemaskGt,
        "%lanemask_ge" => Sreg::LanemaskGe,
        "%clock" => Sreg::Clock,
        "%clock_hi" => Sreg::ClockHi,
        "%clock64" => Sreg::Clock64,
        "%globaltimer" => Sreg::GlobalTimer,
        "%dynamic_smem_size" => Sreg::DynamicSmemSize,
        "%total_smem_size" => Sreg::TotalSmemSize,
        _ => return None,
    })
}

/// Shared or local layout of a function: the next free offset.
struct Layout {
    shared: u64,
    local: u64,
    dyn_align: Option<u64>,
}

impl Layout {
    fn place(&mut self, v: &VarDecl) -> Result<(Space, u64), String> {
        let (size, align) = var_layout(&v.ty, v.align, v.array.flatten());
        match v.space.as_str() {
            ".shared" if v.external || v.array == Some(None) => {
                // The dynamic shared array: after every static variable (placed at launch).
                let a = self.dyn_align.unwrap_or(1).max(align);
                self.dyn_align = Some(a);
                Ok((Space::Shared, u64::MAX))
            }
            ".shared" => {
                let at = self.shared.next_multiple_of(align);
                self.shared = at + size;
                Ok((Space::Shared, at))
            }
            ".local" => {
                let at = self.local.next_multiple_of(align);
                self.local = at + size;
                Ok((Space::Local, at))
            }
            s => Err(format!(
                "variables of {s} inside a function are not supported"
            )),
        }
    }
}

/// Lowers function `f` of a module whose module-scope variables are `globals` (and whose
/// module-scope `.shared` variables are `shared_vars`, placed in every kernel).
pub fn lower(
    f: &Func,
    globals: &Globals,
    shared_vars: &[VarDecl],
    files: &[(u32, String)],
) -> Result<Kernel, LowerError> {
    let body = f.body.as_deref().unwrap_or(&[]);
    let mut cx = Ctx {
        kernel: &f.name,
        line: f.line,
        scopes: vec![HashMap::new()],
        regs: 0,
        preds: 0,
        labels: HashMap::new(),
    };
    if !f.entry {
        return cx.err("device functions (.func) cannot be launched");
    }
    for (name, &(space, addr)) in globals {
        cx.declare(name.clone(), Sym::Var(space, addr));
    }
    // Parameters: laid out in order at their alignment.
    let mut params = Vec::new();
    let mut off = 0u64;
    for p in &f.params {
        let (size, align) = var_layout(&p.ty, p.align, p.array);
        off = off.next_multiple_of(align);
        params.push(ParamSlot {
            offset: off as usize,
            size: size as usize,
        });
        cx.declare(p.name.clone(), Sym::Param(off));
        off += size;
    }
    // Every variable is placed before any instruction is lowered: the dynamic shared array
    // (if any) goes after all static shared variables, wherever they are declared.
    let mut layout = Layout {
        shared: 0,
        local: 0,
        dyn_align: None,
    };
    let mut placed = Vec::new();
    let body_vars = body.iter().filter_map(|s| match s {
        Stmt::Var(v) => Some(v),
        _ => None,
    });
    for v in shared_vars.iter().chain(body_vars) {
        match layout.place(v) {
            Ok(p) => placed.push(p),
            Err(m) => {
                return Err(LowerError {
                    kernel: f.name.clone(),
                    line: v.line,
                    msg: m,
                });
            }
        }
    }
    let dyn_at = layout
        .dyn_align
        .map_or(layout.shared, |a| layout.shared.next_multiple_of(a));
    let mut placed = placed
        .into_iter()
        .map(|(s, a)| (s, if a == u64::MAX { dyn_at } else { a }));
    for v in shared_vars {
        if let Some((s, a)) = placed.next() {
            cx.declare(v.name.clone(), Sym::Var(s, a));
        }
    }
    // Labels: the index of the instruction that follows each.
    let mut n = 0u32;
    for s in body {
        match s {
            Stmt::Inst(_) => n += 1,
            Stmt::Label(l) => {
                cx.labels.insert(l.clone(), n);
            }
            _ => {}
        }
    }
    let file_name = |id: u32| {
        files
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| {
                std::path::Path::new(n)
                    .file_name()
                    .map_or(n.clone(), |b| b.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("file{id}"))
    };
    let mut code = Vec::new();
    let mut texts = Vec::new();
    let mut source = None;
    for s in body {
        match s {
            Stmt::Open => cx.scopes.push(HashMap::new()),
            Stmt::Close => {
                cx.scopes.pop();
            }
            Stmt::Label(_) => {}
            Stmt::Loc { file, line } => source = Some((file_name(*file), *line)),
            Stmt::Reg { ty, name, count } => {
                let pred = ty == ".pred";
                let names: Vec<String> = match count {
                    Some(c) => (0..*c).map(|i| format!("{name}{i}")).collect(),
                    None => vec![name.clone()],
                };
                for nm in names {
                    let sym = if pred {
                        cx.preds += 1;
                        Sym::Pred(cx.preds - 1)
                    } else {
                        cx.regs += 1;
                        Sym::Reg(cx.regs - 1)
                    };
                    cx.declare(nm, sym);
                }
            }
            Stmt::Var(v) => {
                if let Some((space, a)) = placed.next() {
                    cx.declare(v.name.clone(), Sym::Var(space, a));
                }
            }
            Stmt::Inst(i) => {
                cx.line = i.line;
                let guard = match &i.guard {
                    Some((p, neg)) => Some((cx.pred_name(p)?, *neg)),
                    None => None,
                };
                let op = lower_inst(&cx, &i.opcode, &i.operands)?;
                texts.push(InstText {
                    opcode: i.opcode.clone(),
                    ptx_line: i.line,
                    source: source.clone(),
                });
                code.push(Inst {
                    op,
                    guard,
                    text: texts.len() as u32 - 1,
                });
            }
        }
    }
    if !matches!(
        code.last().map(|i| &i.op),
        Some(Op::Exit) | Some(Op::Bra { .. })
    ) {
        // Falling off the end of a kernel is an implicit return.
        texts.push(InstText {
            opcode: "ret (implicit)".into(),
            ptx_line: cx.line,
            source: None,
        });
        code.push(Inst {
            op: Op::Exit,
            guard: None,
            text: texts.len() as u32 - 1,
        });
    }
    let threads = |v: &Vec<u32>| v.iter().product::<u32>();
    Ok(Kernel {
        name: f.name.clone(),
        params,
        param_bytes: off as usize,
        regs: cx.regs as usize,
        preds: cx.preds as usize,
        shared_bytes: dyn_at as usize,
        dyn_shared_align: layout.dyn_align.map(|a| a as usize),
        local_bytes: layout.local as usize,
        max_threads: f.maxntid.as_ref().map(threads),
        req_threads: f.reqntid.as_ref().map(|v| {
            let mut r = [1u32; 3];
            for (i, x) in v.iter().take(3).enumerate() {
                r[i] = *x;
            }
            r
        }),
        code,
        texts,
    })
}
