//! The executable form of a kernel: every operand resolved to a register slot, a predicate,
//! an immediate or a special register; every branch to an instruction index; every symbol to
//! an address in its state space. The interpreter (exec/) runs this.

mod op;
mod types;

pub use op::*;
pub use types::*;

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
