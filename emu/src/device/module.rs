//! Loaded modules: the kernels of a PTX image, ready to launch, and the device memory of
//! its global variables.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};

use super::context::Context;
use super::{ARCH, CUresult, CuResult, Handles, fail};
use crate::ptx::{self, LoadError, ir::Kernel};

/// Shared memory a block may use without opting in (48 KiB), and with (227 KiB on sm_90).
pub const SHARED_DEFAULT: usize = 48 << 10;
pub const SHARED_OPTIN: usize = 227 << 10;

/// A module.
pub struct Module {
    pub ctx: Arc<Context>,
    kernels: HashMap<String, Arc<Kernel>>,
    /// Global variables: name to (address, size).
    pub globals: HashMap<String, (u64, usize)>,
    funcs: Mutex<HashMap<String, Arc<Function>>>,
}

/// A kernel of a module.
pub struct Function {
    pub kernel: Arc<Kernel>,
    pub ctx: Arc<Context>,
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
    pub max_dyn_shared: AtomicUsize,
}

pub fn modules() -> &'static Handles<Module> {
    static H: OnceLock<Handles<Module>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

pub fn functions() -> &'static Handles<Function> {
    static H: OnceLock<Handles<Function>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

/// PTX `.target sm_NN` numbers newer than the device cannot run; nor can PTX newer than
/// ISA 9.0 (what nvcc 13.0 writes).
fn check_target(text: &str) -> CuResult<()> {
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix(".target") {
            for sm in t.split(',').map(str::trim) {
                let num: String = sm
                    .trim_start_matches("sm_")
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = num.parse::<u32>()
                    && n > ARCH
                {
                    return fail(
                        CUresult::CUDA_ERROR_INVALID_PTX,
                        format!("PTX for {sm} cannot run on the emulated sm_{ARCH}"),
                    );
                }
            }
        }
        if let Some(v) = line.strip_prefix(".version") {
            let mut it = v.trim().split('.');
            let major: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            if major > 9 {
                return fail(
                    CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
                    format!("PTX ISA {} is newer than 9.0", v.trim()),
                );
            }
        }
    }
    Ok(())
}

impl Module {
    /// Loads the image at `image` (PTX text or a fatbin) into `ctx`.
    ///
    /// # Safety
    /// `image` must be a valid image pointer (see [`ptx::fatbin::ptx_of_image`]).
    pub unsafe fn load(ctx: &Arc<Context>, image: *const u8) -> CuResult<Arc<Module>> {
        ctx.check()?;
        // SAFETY: the caller's contract.
        let text = match unsafe { ptx::fatbin::ptx_of_image(image, ARCH) } {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
                    format!("cuModuleLoadData: {e}"),
                );
            }
        };
        check_target(&text)?;
        let parsed = match ptx::Parsed::new(&text) {
            Ok(p) => p,
            Err(e) => {
                return fail(
                    CUresult::CUDA_ERROR_INVALID_PTX,
                    format!("cuModuleLoadData: {e}"),
                );
            }
        };
        let mut globals = HashMap::new();
        let mut addrs = HashMap::new();
        let free_all = |g: &HashMap<String, (u64, usize)>| {
            for (a, _) in g.values() {
                let _ = ctx.free(*a);
            }
        };
        for g in parsed.globals() {
            let a = match ctx.alloc(g.size.max(1)) {
                Ok(a) => a,
                Err(e) => {
                    free_all(&globals);
                    return Err(e);
                }
            };
            // SAFETY: a fresh allocation of at least init.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    g.init.as_ptr(),
                    a as *mut u8,
                    g.init.len().min(g.size),
                )
            };
            addrs.insert(g.name.clone(), a);
            globals.insert(g.name, (a, g.size));
        }
        let kernels = match parsed.lower(&addrs) {
            Ok(k) => k,
            Err(e) => {
                free_all(&globals);
                let code = match e {
                    LoadError::Lower(_) => CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    _ => CUresult::CUDA_ERROR_INVALID_PTX,
                };
                return fail(code, format!("cuModuleLoadData: {e}"));
            }
        };
        for k in &kernels {
            if k.shared_bytes > SHARED_DEFAULT {
                free_all(&globals);
                return fail(
                    CUresult::CUDA_ERROR_INVALID_PTX,
                    format!(
                        "kernel {} declares {} bytes of static shared memory (at most {SHARED_DEFAULT})",
                        k.name, k.shared_bytes
                    ),
                );
            }
        }
        Ok(Arc::new(Module {
            ctx: ctx.clone(),
            kernels: kernels.into_iter().map(|k| (k.name.clone(), k)).collect(),
            globals,
            funcs: Mutex::new(HashMap::new()),
        }))
    }

    /// The kernel `name` (the same handle each time).
    pub fn function(&self, name: &str) -> CuResult<Arc<Function>> {
        let Some(k) = self.kernels.get(name) else {
            return fail(
                CUresult::CUDA_ERROR_NOT_FOUND,
                format!("cuModuleGetFunction: no kernel named {name}"),
            );
        };
        let mut f = self
            .funcs
            .lock()
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        let func = f
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Function {
                    kernel: k.clone(),
                    ctx: self.ctx.clone(),
                    max_dyn_shared: AtomicUsize::new(SHARED_DEFAULT.saturating_sub(k.shared_bytes)),
                })
            })
            .clone();
        Ok(func)
    }

    /// Frees the module's global variables (cuModuleUnload).
    pub fn unload(&self) {
        for (a, _) in self.globals.values() {
            let _ = self.ctx.free(*a);
        }
        if let Ok(f) = self.funcs.lock() {
            for func in f.values() {
                functions().remove(Arc::as_ptr(func) as usize);
            }
        }
    }
}
