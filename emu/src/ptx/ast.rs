//! The parsed form of a PTX module: what the text says, before any meaning is given to it
//! (lower.rs turns a function's statements into executable code).

/// A PTX module: its header and its functions and module-scope variables.
#[derive(Debug, Default)]
pub struct Module {
    /// `.version major.minor`.
    pub version: (u32, u32),
    /// `.target` entries (e.g. `sm_80`).
    pub target: Vec<String>,
    /// `.address_size` (64 unless stated).
    pub address_size: u32,
    /// Module-scope `.global`, `.const` and `.shared` variables.
    pub vars: Vec<VarDecl>,
    /// `.entry` and `.func` definitions and declarations.
    pub funcs: Vec<Func>,
    /// `.file` index to file name (for error messages).
    pub files: Vec<(u32, String)>,
}

/// A variable in a state space (`.shared .align 4 .b8 x[128];`).
#[derive(Debug, Clone)]
pub struct VarDecl {
    /// `.shared`, `.global`, `.const`, `.local`.
    pub space: String,
    /// `.extern` (a dynamically sized `.shared` array).
    pub external: bool,
    /// `.align` (0: the type's own).
    pub align: u32,
    /// Element type (`.b8`, `.u32`, ...).
    pub ty: String,
    /// Name.
    pub name: String,
    /// `None`: a scalar; `Some(None)`: `name[]`; `Some(Some(n))`: `name[n]`.
    pub array: Option<Option<u64>>,
    /// Initializer values, as integers of the element type's width.
    pub init: Vec<u64>,
    /// Source line.
    pub line: u32,
}

/// A kernel parameter (`.param .u64 name` or `.param .align 8 .b8 name[16]`).
#[derive(Debug, Clone)]
pub struct ParamDecl {
    /// Name.
    pub name: String,
    /// Element type.
    pub ty: String,
    /// `.align` (0: the type's own).
    pub align: u32,
    /// Array length, if an array.
    pub array: Option<u64>,
}

/// `.entry` or `.func`.
#[derive(Debug, Clone)]
pub struct Func {
    /// Name.
    pub name: String,
    /// A kernel (`.entry`), else a device function.
    pub entry: bool,
    /// Parameters in order.
    pub params: Vec<ParamDecl>,
    /// `.maxntid` (up to three dimensions).
    pub maxntid: Option<Vec<u32>>,
    /// `.reqntid`.
    pub reqntid: Option<Vec<u32>>,
    /// The body, `None` for a declaration.
    pub body: Option<Vec<Stmt>>,
    /// Source line of the definition.
    pub line: u32,
}

/// One statement of a function body.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// `.reg .ty name;` or `.reg .ty name<count>;` (names `name0` … `name{count-1}`).
    Reg {
        ty: String,
        name: String,
        count: Option<u32>,
    },
    /// A variable local to the function (`.shared`, `.local`).
    Var(VarDecl),
    /// `name:`.
    Label(String),
    /// An instruction.
    Inst(Inst),
    /// `{`: a nested scope.
    Open,
    /// `}`.
    Close,
    /// `.loc file line`: the source position of the instructions that follow.
    Loc { file: u32, line: u32 },
}

/// One instruction as written.
#[derive(Debug, Clone)]
pub struct Inst {
    /// `@p` or `@!p`: (predicate, negated).
    pub guard: Option<(String, bool)>,
    /// The full opcode with its modifiers (`add.ftz.f32`).
    pub opcode: String,
    /// Operands in order.
    pub operands: Vec<Operand>,
    /// Source line.
    pub line: u32,
}

/// An instruction operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register, special register, symbol, label, or the sink `_`.
    Name(String),
    /// `!p`.
    Not(String),
    /// An integer (two's complement bits).
    Int(u64),
    /// An f32 literal (bits).
    F32(u32),
    /// An f64 literal (bits).
    F64(u64),
    /// `{a, b, ...}`.
    Vec(Vec<Operand>),
    /// `[base+offset]`: base is a register or a symbol (or none: an absolute address).
    Addr { base: Option<String>, offset: i64 },
    /// `d|p`: a value and a predicate destination.
    Pair(String, String),
    /// `(a, b)`: a call's argument list.
    Paren(Vec<Operand>),
}
