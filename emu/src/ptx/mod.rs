//! PTX: parsing the text (lex, parse), and turning each kernel into the interpreter's form
//! (lower, opcodes). Modules arrive as text or inside fatbins (fatbin).

pub mod ast;
pub mod fatbin;
pub mod ir;
mod lex;
pub mod lower;
mod opcodes;
pub mod parse;

use std::collections::HashMap;
use std::sync::Arc;

/// A syntax error, with its line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("PTX line {line}: {msg}")]
pub struct ParseError {
    pub line: u32,
    pub msg: String,
}

/// Why a module cannot be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Lower(#[from] lower::LowerError),
    #[error("{0}")]
    Image(String),
}

/// A module-scope variable to place in device memory before the kernels are lowered.
#[derive(Debug, Clone)]
pub struct GlobalVar {
    pub name: String,
    pub space: ir::Space,
    pub size: usize,
    pub align: usize,
    /// Initial bytes (zeros after them).
    pub init: Vec<u8>,
}

/// A parsed module whose kernels are not yet lowered: the caller places its global variables
/// (`globals`), then calls [`Parsed::lower`].
pub struct Parsed {
    module: ast::Module,
}

impl Parsed {
    /// Parses PTX text.
    pub fn new(text: &str) -> Result<Self, LoadError> {
        let module = parse::parse(text)?;
        if module.address_size != 64 {
            return Err(LoadError::Image(format!(
                ".address_size {} is not supported (64 only)",
                module.address_size
            )));
        }
        Ok(Parsed { module })
    }

    /// The `.global` and `.const` variables to allocate.
    pub fn globals(&self) -> Vec<GlobalVar> {
        self.module
            .vars
            .iter()
            .filter(|v| v.space == ".global" || v.space == ".const")
            .map(|v| {
                let elem = ir::Ty::parse(v.ty.trim_start_matches('.')).map_or(1, |t| t.bytes());
                let n = v.array.flatten().unwrap_or(1) as usize;
                let mut init = Vec::new();
                for x in &v.init {
                    init.extend_from_slice(&x.to_le_bytes()[..elem as usize]);
                }
                GlobalVar {
                    name: v.name.clone(),
                    space: if v.space == ".const" {
                        ir::Space::Const
                    } else {
                        ir::Space::Global
                    },
                    size: elem as usize * n,
                    align: if v.align > 0 {
                        v.align as usize
                    } else {
                        elem as usize
                    },
                    init,
                }
            })
            .collect()
    }

    /// Every kernel, lowered, given the device addresses of the global variables.
    pub fn lower(
        &self,
        addresses: &HashMap<String, u64>,
    ) -> Result<Vec<Arc<ir::Kernel>>, LoadError> {
        let globals: lower::Globals = self
            .globals()
            .into_iter()
            .filter_map(|g| addresses.get(&g.name).map(|&a| (g.name, (g.space, a))))
            .collect();
        let shared: Vec<ast::VarDecl> = self
            .module
            .vars
            .iter()
            .filter(|v| v.space == ".shared")
            .cloned()
            .collect();
        self.module
            .funcs
            .iter()
            .filter(|f| f.entry && f.body.is_some())
            .map(|f| {
                lower::lower(f, &globals, &shared, &self.module.files)
                    .map(Arc::new)
                    .map_err(LoadError::from)
            })
            .collect()
    }
}
