//! The operations of the executable form.

use super::types::*;

/// An operation. Types and modifiers are resolved here, once, so the interpreter only
/// dispatches.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `mov`: the value, truncated to `bits` (zero-extended in the slot).
    Mov { d: Reg, a: Src, bits: u32 },
    /// `mov.bN d, {a, b, ...}`: parts from low to high.
    Pack {
        d: Reg,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.bN {a, b, ...}, s`.
    Unpack { d: Vec<Dst>, a: Src, part_bits: u32 },
    /// `mov.pred`.
    MovPred { d: Pred, a: PSrc },
    /// Two-operand integer operation on `ty`.
    Int {
        op: IntOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `mad` on `ty`.
    Mad {
        op: MadOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// One-operand integer operation.
    IntUn { op: IntUn, ty: Ty, d: Reg, a: Src },
    /// `bfe`.
    Bfe {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfi`.
    Bfi {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        e: Src,
    },
    /// `prmt.b32`.
    Prmt {
        mode: PrmtMode,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// Two-operand float operation (`ty` F32 or F64).
    F2 {
        op: FOp2,
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `fma` / `mad` on floats.
    Fma {
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// One-operand float operation.
    F1 {
        op: FOp1,
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        d: Reg,
        a: Src,
    },
    /// `setp`: p = cmp BoolOp c, q = !cmp BoolOp c.
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: Option<Pred>,
        q: Option<Pred>,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, PSrc)>,
    },
    /// `selp`: d = c ? a : b.
    Selp {
        bits: u32,
        d: Reg,
        a: Src,
        b: Src,
        c: PSrc,
    },
    /// `and/or/xor.pred`.
    PredLogic {
        op: BoolOp,
        d: Pred,
        a: PSrc,
        b: PSrc,
    },
    /// `not.pred`.
    PredNot { d: Pred, a: PSrc },
    /// `cvt` between scalar types.
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: CvtRnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvt.rn.bf16x2.f32 d, a, b` / `.f16x2`: a to the upper half, b to the lower.
    CvtPack {
        dty: Ty,
        rnd: Rnd,
        relu: bool,
        satfinite: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `cvta`: `to` converts a generic address to `space`, else `space` to generic.
    Cvta {
        to: bool,
        space: Space,
        d: Reg,
        a: Src,
    },
    /// `isspacep`.
    IsSpace { space: Space, d: Pred, a: Src },
    /// `ld` of `n` elements.
    Ld {
        space: Space,
        ty: Ty,
        n: u8,
        d: [Dst; 4],
        addr: Addr,
    },
    /// `st` of `n` elements.
    St {
        space: Space,
        ty: Ty,
        n: u8,
        a: [Src; 4],
        addr: Addr,
    },
    /// `atom` (with a result) or `red` (without).
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: Dst,
        addr: Addr,
        b: Src,
        c: Src,
    },
    /// `bra` to an instruction index.
    Bra { target: u32, uni: bool },
    /// `ret` from the kernel or `exit`.
    Exit,
    /// `bar.sync` / `barrier.sync`: barrier `id`, `count` threads (all when None).
    Bar {
        id: Src,
        count: Option<Src>,
        aligned: bool,
    },
    /// `bar.warp.sync`.
    BarWarp { mask: Src },
    /// `shfl.sync`.
    Shfl {
        mode: ShflMode,
        d: Dst,
        p: Option<Pred>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    /// `vote.sync`: the predicate result, or the ballot into a register.
    Vote {
        mode: VoteMode,
        d: Dst,
        dp: Option<Pred>,
        a: PSrc,
        mask: Src,
    },
    /// `activemask.b32`.
    Activemask { d: Reg },
    /// `mma.sync.aligned.m16n8k16.row.col`: D (4 f32 or 2 f16x2 regs) = A B + C.
    Mma {
        ab: MmaIn,
        d_f32: bool,
        c_f32: bool,
        d: [Dst; 4],
        a: [Src; 4],
        b: [Src; 2],
        c: [Src; 4],
    },
    /// Memory ordering only (membar, fence) or a hint (nanosleep, prefetch): nothing to emulate
    /// when every access is performed in program order.
    Nop,
}
