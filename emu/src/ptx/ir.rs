//! The executable form of a kernel: every operand resolved to a register slot, a predicate,
//! an immediate or a special register; every branch to an instruction index; every symbol to
//! an address in its state space. The interpreter (exec/) runs this.

/// A 64-bit register slot of a thread (every PTX register, whatever its declared width).
pub type Reg = u32;
/// A predicate register (one bit per lane of a warp).
pub type Pred = u32;

/// Generic addresses of the shared window (shared offset + this) and of the local window.
/// Both lie above every user-space address of x86-64 and AArch64 Linux, so they can never
/// be mistaken for device or host memory.
pub const SHARED_WINDOW: u64 = 1 << 48;
/// See [`SHARED_WINDOW`].
pub const LOCAL_WINDOW: u64 = 2 << 48;
/// Size of each window.
pub const WINDOW_SIZE: u64 = 1 << 48;

/// A value type of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    BF16,
    F16x2,
    BF16x2,
    F32,
    F64,
    Pred,
}

impl Ty {
    /// From a modifier without its dot (`u32`).
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::BF16,
            "f16x2" => Ty::F16x2,
            "bf16x2" => Ty::BF16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::BF16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::Pred => 1,
        }
    }

    /// Bytes in memory.
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    /// A signed integer type.
    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    /// A floating-point type (scalar or packed).
    pub fn float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::BF16 | Ty::F16x2 | Ty::BF16x2 | Ty::F32 | Ty::F64
        )
    }

    /// An integer or bit type.
    pub fn int(self) -> bool {
        !self.float() && self != Ty::Pred
    }
}

/// A per-lane special register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    Clock,
    ClockHi,
    Clock64,
    GlobalTimer,
    DynamicSmemSize,
    TotalSmemSize,
}

/// A source operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Reg(Reg),
    /// Bits of the value (an f32 in the low 32 bits).
    Imm(u64),
    Sreg(Sreg),
}

/// A predicate source: a register (possibly negated) or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PSrc {
    Pred(Pred, bool),
    Const(bool),
}

/// A destination register, or `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    Reg(Reg),
    Sink,
}

/// A state space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Local,
    Param,
    Const,
    Generic,
}

impl Space {
    /// Name as PTX writes it.
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Param => "param",
            Space::Const => "const",
            Space::Generic => "generic",
        }
    }
}

/// `[base + disp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub base: Option<Reg>,
    pub disp: i64,
}

/// IEEE rounding of a float result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward minus infinity.
    Rm,
    /// Toward plus infinity.
    Rp,
}

/// Two-operand integer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    Add,
    AddSat,
    Sub,
    SubSat,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// `mad` variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadOp {
    Lo,
    Hi,
    HiSat,
    Wide,
}

/// One-operand integer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntUn {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
}

/// Two-operand float operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp2 {
    Add,
    Sub,
    Mul,
    Min,
    Max,
    /// `min.NaN` / `max.NaN`: a NaN operand gives NaN.
    MinNaN,
    MaxNaN,
    /// `div.approx`: a * (1 / b).
    DivApprox,
    /// `div.full`: 2 ulp over the whole range.
    DivFull,
    /// `div.rn/rz/rm/rp`: IEEE.
    Div,
}

/// One-operand float operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp1 {
    Neg,
    Abs,
    RcpApprox,
    Rcp,
    SqrtApprox,
    Sqrt,
    RsqrtApprox,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// `setp` comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Predicate logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// How `cvt` rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvtRnd {
    /// No modifier (exact conversions, integer width changes).
    None,
    /// `.rn .rz .rm .rp`: rounding of a float result.
    Float(Rnd),
    /// `.rni .rzi .rmi .rpi`: rounding to an integral value.
    Int(Rnd),
}

/// Atomic operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

/// `shfl.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// `vote.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// `prmt` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrmtMode {
    Generic,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

/// Element types of `mma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaIn {
    Bf16,
    F16,
}

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

/// An instruction: its operation, guard predicate and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inst {
    pub op: Op,
    /// `@p` (false) / `@!p` (true).
    pub guard: Option<(Pred, bool)>,
    /// The PTX text, for error messages.
    pub text: u32,
}

/// A parameter of a kernel: its offset and size in the parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSlot {
    pub offset: usize,
    pub size: usize,
}

/// A kernel ready to run.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<ParamSlot>,
    /// Bytes of the parameter buffer.
    pub param_bytes: usize,
    /// 64-bit register slots per thread.
    pub regs: usize,
    /// Predicate registers.
    pub preds: usize,
    /// Static shared memory bytes (the dynamic part starts after, at `dyn_shared_align`).
    pub shared_bytes: usize,
    /// Alignment of the dynamic shared array, if the kernel declares one.
    pub dyn_shared_align: Option<usize>,
    /// Local memory bytes per thread.
    pub local_bytes: usize,
    /// `.maxntid` product.
    pub max_threads: Option<u32>,
    /// `.reqntid`.
    pub req_threads: Option<[u32; 3]>,
    /// The code.
    pub code: Vec<Inst>,
    /// Per instruction text index: (PTX line, source file, source line) for messages.
    pub texts: Vec<InstText>,
}

/// Where an instruction came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InstText {
    /// The opcode as written.
    pub opcode: String,
    /// Line in the PTX.
    pub ptx_line: u32,
    /// Source file and line from `.loc`, if any.
    pub source: Option<(String, u32)>,
}

impl Kernel {
    /// "opcode (PTX line N, file.cu:M)" for instruction `pc`.
    pub fn describe(&self, pc: usize) -> String {
        let Some(t) = self
            .code
            .get(pc)
            .and_then(|i| self.texts.get(i.text as usize))
        else {
            return format!("instruction {pc}");
        };
        match &t.source {
            Some((f, l)) => format!("{} (PTX line {}, {f}:{l})", t.opcode, t.ptx_line),
            None => format!("{} (PTX line {})", t.opcode, t.ptx_line),
        }
    }
}
