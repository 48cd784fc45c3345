//! One instruction of a warp: the arithmetic, comparison, conversion, memory and control
//! forms, each over the lanes that execute it; warp-synchronous ones go to collective.rs.

use super::FaultWhat;
use super::alu;
use super::warp::{BlockCtx, Flow, Warp, lanes};
use crate::ptx::ir::*;

impl Warp {
    pub(super) fn exec(
        &mut self,
        op: &Op,
        a: u32,
        group: u32,
        b: &mut BlockCtx,
    ) -> Result<Flow, FaultWhat> {
        match *op {
            Op::Mov { d, a: s, bits } => {
                for l in lanes(a) {
                    let v = self.val(s, l, b) & float_mask(bits);
                    self.set(d, l, v);
                }
            }
            Op::Pack {
                d,
                ref parts,
                part_bits,
            } => {
                for l in lanes(a) {
                    let mut v = 0u64;
                    for (i, p) in parts.iter().enumerate() {
                        v |= (self.val(*p, l, b) & float_mask(part_bits)) << (i as u32 * part_bits);
                    }
                    self.set(d, l, v);
                }
            }
            Op::Unpack {
                ref d,
                a: s,
                part_bits,
            } => {
                for l in lanes(a) {
                    let v = self.val(s, l, b);
                    for (i, p) in d.iter().enumerate() {
                        if let Dst::Reg(r) = p {
                            self.set(*r, l, (v >> (i as u32 * part_bits)) & float_mask(part_bits));
                        }
                    }
                }
            }
            Op::MovPred { d, a: s } => {
                for l in lanes(a) {
                    let v = self.pval(s, l);
                    self.set_pred(d, l, v);
                }
            }
            Op::Int {
                op,
                ty,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::int_op(op, ty, self.val(x, l, b), self.val(y, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Mad {
                op,
                ty,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::mad(
                        op,
                        ty,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::IntUn { op, ty, d, a: x } => {
                for l in lanes(a) {
                    let v = alu::int_un(op, ty, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Bfe {
                ty,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::bfe(ty, self.val(x, l, b), self.val(y, l, b), self.val(z, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Bfi {
                ty,
                d,
                a: x,
                b: y,
                c: z,
                e,
            } => {
                for l in lanes(a) {
                    let v = alu::bfi(
                        ty,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                        self.val(e, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::Prmt {
                mode,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::prmt(
                        mode,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::F2 {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::f_op2(op, ty, rnd, ftz, sat, self.val(x, l, b), self.val(y, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Fma {
                ty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
                b: y,
                c: z,
            } => {
                for l in lanes(a) {
                    let v = alu::fma(
                        ty,
                        rnd,
                        ftz,
                        sat,
                        self.val(x, l, b),
                        self.val(y, l, b),
                        self.val(z, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::F1 {
                op,
                ty,
                rnd,
                ftz,
                d,
                a: x,
            } => {
                for l in lanes(a) {
                    let v = alu::f_op1(op, ty, rnd, ftz, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a: x,
                b: y,
                comb,
            } => {
                for l in lanes(a) {
                    let t = alu::compare(cmp, ty, ftz, self.val(x, l, b), self.val(y, l, b));
                    let (pv, qv) = match comb {
                        None => (t, !t),
                        Some((op, c)) => {
                            let c = self.pval(c, l);
                            (bool_op(op, t, c), bool_op(op, !t, c))
                        }
                    };
                    if let Some(p) = p {
                        self.set_pred(p, l, pv);
                    }
                    if let Some(q) = q {
                        self.set_pred(q, l, qv);
                    }
                }
            }
            Op::Selp {
                bits,
                d,
                a: x,
                b: y,
                c,
            } => {
                for l in lanes(a) {
                    let v = if self.pval(c, l) {
                        self.val(x, l, b)
                    } else {
                        self.val(y, l, b)
                    };
                    self.set(d, l, v & float_mask(bits));
                }
            }
            Op::PredLogic { op, d, a: x, b: y } => {
                for l in lanes(a) {
                    let v = bool_op(op, self.pval(x, l), self.pval(y, l));
                    self.set_pred(d, l, v);
                }
            }
            Op::PredNot { d, a: x } => {
                for l in lanes(a) {
                    let v = !self.pval(x, l);
                    self.set_pred(d, l, v);
                }
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                ftz,
                sat,
                d,
                a: x,
            } => {
                for l in lanes(a) {
                    let v = alu::cvt(dty, sty, rnd, ftz, sat, self.val(x, l, b));
                    self.set(d, l, v);
                }
            }
            Op::CvtPack {
                dty,
                rnd,
                relu,
                satfinite,
                d,
                a: x,
                b: y,
            } => {
                for l in lanes(a) {
                    let v = alu::cvt_pack(
                        dty,
                        rnd,
                        relu,
                        satfinite,
                        self.val(x, l, b),
                        self.val(y, l, b),
                    );
                    self.set(d, l, v);
                }
            }
            Op::Cvta { to, space, d, a: x } => {
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for l in lanes(a) {
                    let v = self.val(x, l, b);
                    let r = if to {
                        v.wrapping_sub(window)
                    } else {
                        v.wrapping_add(window)
                    };
                    self.set(d, l, r);
                }
            }
            Op::IsSpace { space, d, a: x } => {
                for l in lanes(a) {
                    let v = self.val(x, l, b);
                    let in_shared = (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&v);
                    let in_local = (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&v);
                    let r = match space {
                        Space::Shared => in_shared,
                        Space::Local => in_local,
                        Space::Global | Space::Const => !in_shared && !in_local,
                        _ => false,
                    };
                    self.set_pred(d, l, r);
                }
            }
            Op::Ld {
                space,
                ty,
                n,
                d,
                addr,
            } => self.load(space, ty, n, &d, addr, a, b)?,
            Op::St {
                space,
                ty,
                n,
                a: s,
                addr,
            } => self.store(space, ty, n, &s, addr, a, b)?,
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b: x,
                c: y,
            } => self.atom(space, op, ty, d, addr, x, y, a, b)?,
            Op::Bra { target, .. } => return Ok(Flow::Branch { target, taken: a }),
            Op::Exit => return Ok(Flow::Exit(a)),
            Op::Bar { .. }
            | Op::BarWarp { .. }
            | Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::Activemask { .. }
            | Op::Mma { .. } => return self.collective(op, a, group, b),
            Op::Nop => {}
        }
        Ok(Flow::Next)
    }
}

#[inline]
pub(super) fn bool_op(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

/// The low `bits` bits.
#[inline]
pub(super) fn float_mask(bits: u32) -> u64 {
    super::float::mask(bits)
}
