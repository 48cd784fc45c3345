//! The value types, state spaces and operation modifiers an [`Op`](super::Op) carries.

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
