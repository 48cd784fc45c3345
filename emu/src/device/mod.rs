//! The emulated devices and what the driver API manages on them: contexts (context.rs),
//! memory (memory.rs), streams and events (stream.rs), the work they run (node.rs), stream
//! capture and graphs (graph.rs), and loaded modules (module.rs).
//!
//! Configuration, read once at `cuInit`:
//! - `TANDEM_EMU_DEVICES`: how many devices (default 1);
//! - `TANDEM_EMU_MEMORY_GIB`: memory per device, reported by `cuMemGetInfo` and enforced by
//!   `cuMemAlloc` (default 4; fractions allowed);
//! - `TANDEM_EMU_THREADS`: host threads that run a kernel's blocks (default: all cores).

pub mod context;
pub mod graph;
pub mod memory;
pub mod module;
pub mod node;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use cudarc::driver::sys::CUresult;

/// A driver call's result.
pub type CuResult<T> = Result<T, CUresult>;

/// Writes one line to stderr, prefixed so that it is clear the emulator speaks.
pub fn log(msg: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tandem-emu: {msg}");
}

/// Logs `msg` and returns `code`: every error the emulator gives says why.
pub fn fail<T>(code: CUresult, msg: impl std::fmt::Display) -> CuResult<T> {
    log(format_args!("{msg} ({code:?})"));
    Err(code)
}

/// The SM number of the emulated architecture (compute capability 9.0).
pub const ARCH: u32 = 90;
/// Streaming multiprocessors reported (an H100/H200 SXM has 132).
pub const SM_COUNT: u32 = 132;

/// One emulated GPU.
pub struct Device {
    pub ordinal: usize,
    pub space: Arc<memory::VaSpace>,
    pub budget: memory::Budget,
    pub(crate) primary: Mutex<context::Primary>,
}

/// Every device, created at `cuInit`.
pub struct Driver {
    pub devices: Vec<Arc<Device>>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

fn env_num(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("{name}={v} is not a positive number")),
    }
}

/// Initializes the driver once (`cuInit`).
pub fn init() -> CuResult<&'static Driver> {
    let d = DRIVER.get_or_init(|| {
        let n = env_num("TANDEM_EMU_DEVICES", 1.0)? as usize;
        let gib = env_num("TANDEM_EMU_MEMORY_GIB", 4.0)?;
        if n > 64 {
            return Err(format!("TANDEM_EMU_DEVICES={n}: at most 64"));
        }
        let total = (gib * (1u64 << 30) as f64) as usize;
        let devices = (0..n)
            .map(|ordinal| {
                Ok(Arc::new(Device {
                    ordinal,
                    space: Arc::new(memory::VaSpace::reserve()?),
                    budget: memory::Budget::new(total),
                    primary: Mutex::new(context::Primary::default()),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(Driver { devices })
    });
    match d {
        Ok(d) => Ok(d),
        Err(e) => fail(CUresult::CUDA_ERROR_NOT_INITIALIZED, e),
    }
}

/// The driver, if `cuInit` succeeded.
pub fn driver() -> CuResult<&'static Driver> {
    match DRIVER.get() {
        Some(Ok(d)) => Ok(d),
        Some(Err(_)) | None => Err(CUresult::CUDA_ERROR_NOT_INITIALIZED),
    }
}

/// Device `ordinal`.
pub fn device(ordinal: i32) -> CuResult<&'static Arc<Device>> {
    let d = driver()?;
    usize::try_from(ordinal)
        .ok()
        .and_then(|o| d.devices.get(o))
        .map_or_else(
            || {
                fail(
                    CUresult::CUDA_ERROR_INVALID_DEVICE,
                    format!("device {ordinal} of {}", d.devices.len()),
                )
            },
            Ok,
        )
}

/// Opaque handles handed to C: the address of the object, valid while registered. Every
/// call looks its handles up here, so a stale or made-up handle is an error, not a crash.
pub struct Handles<T> {
    map: Mutex<HashMap<usize, Arc<T>>>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Handles<T> {
    /// Registers `v`; its handle.
    pub fn add(&self, v: Arc<T>) -> usize {
        let h = Arc::as_ptr(&v) as usize;
        if let Ok(mut m) = self.map.lock() {
            m.insert(h, v);
        }
        h
    }

    pub fn get(&self, h: usize) -> Option<Arc<T>> {
        self.map.lock().ok()?.get(&h).cloned()
    }

    pub fn remove(&self, h: usize) -> Option<Arc<T>> {
        self.map.lock().ok()?.remove(&h)
    }

    /// Every registered object.
    pub fn values(&self) -> Vec<Arc<T>> {
        self.map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes every handle whose object satisfies `f`.
    pub fn remove_where(&self, f: impl Fn(&T) -> bool) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|_, v| !f(v));
        }
    }
}
