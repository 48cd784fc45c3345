//! Stream capture and graphs. A captured stream records its work as graph nodes instead of
//! running it; other streams join the capture by waiting on an event recorded in it, and
//! must be joined back into the origin stream before the capture ends. While a capture is
//! active, "potentially unsafe" calls (allocation, synchronization) are refused as the
//! capture mode says, and invalidate the capture. An instantiated graph replays its nodes
//! in capture order; launches of one executable graph never overlap.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::ThreadId;

use super::context::Context;
use super::node::Node;
use super::stream::Stream;
use super::{CUresult, CuResult, Handles, fail};

/// CU_STREAM_CAPTURE_MODE_*.
pub const MODE_GLOBAL: u32 = 0;
pub const MODE_THREAD_LOCAL: u32 = 1;
pub const MODE_RELAXED: u32 = 2;

struct Member {
    stream: Weak<Stream>,
    id: u64,
    /// Work added since it last joined back into the origin stream.
    pending: bool,
}

/// An active capture.
pub struct Capture {
    pub id: u64,
    mode: u32,
    thread: ThreadId,
    origin: u64,
    nodes: Vec<Arc<Node>>,
    invalid: bool,
    members: Vec<Member>,
}

pub type CaptureRef = Arc<Mutex<Capture>>;

fn active() -> &'static Mutex<Vec<Weak<Mutex<Capture>>>> {
    static A: OnceLock<Mutex<Vec<Weak<Mutex<Capture>>>>> = OnceLock::new();
    A.get_or_init(|| Mutex::new(Vec::new()))
}

thread_local! {
    /// This thread's capture interaction mode (cuThreadExchangeStreamCaptureMode).
    static THREAD_MODE: Cell<u32> = const { Cell::new(MODE_GLOBAL) };
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn lock(c: &CaptureRef) -> CuResult<std::sync::MutexGuard<'_, Capture>> {
    c.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)
}

/// cuStreamBeginCapture.
pub fn begin(s: &Arc<Stream>, mode: u32) -> CuResult<()> {
    if mode > MODE_RELAXED {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("capture mode {mode}"),
        );
    }
    if s.legacy {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            "the legacy (NULL) stream cannot be captured",
        );
    }
    if s.capture().is_some() {
        return fail(
            CUresult::CUDA_ERROR_ILLEGAL_STATE,
            "cuStreamBeginCapture on a stream already being captured",
        );
    }
    s.ctx.check()?;
    let c = Arc::new(Mutex::new(Capture {
        id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        mode,
        thread: std::thread::current().id(),
        origin: s.id,
        nodes: Vec::new(),
        invalid: false,
        members: Vec::new(),
    }));
    if let Ok(mut a) = active().lock() {
        a.retain(|w| w.strong_count() > 0);
        a.push(Arc::downgrade(&c));
    }
    s.set_capture(Some(c));
    Ok(())
}

/// Adds work to a capture.
pub fn add_node(c: &CaptureRef, stream: u64, n: Arc<Node>) -> CuResult<()> {
    let mut g = lock(c)?;
    if g.invalid {
        return Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    }
    g.nodes.push(n);
    if stream != g.origin
        && let Some(m) = g.members.iter_mut().find(|m| m.id == stream)
    {
        m.pending = true;
    }
    Ok(())
}

/// Fails if the capture was invalidated.
pub fn check_live(c: &CaptureRef) -> CuResult<()> {
    if lock(c)?.invalid {
        Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
    } else {
        Ok(())
    }
}

/// Marks a capture invalid: its streams fail until the capture ends, and it ends in error.
pub fn invalidate(c: &CaptureRef) {
    if let Ok(mut g) = c.lock() {
        g.invalid = true;
    }
}

/// `s` (in capture `mine`, if any) waits on an event recorded by stream `from` in capture
/// `cap`: a stream outside any capture joins it; the origin rejoins a forked stream.
pub fn join(
    s: &Arc<Stream>,
    mine: Option<CaptureRef>,
    cap: &CaptureRef,
    from: u64,
) -> CuResult<()> {
    match mine {
        Some(m) if Arc::ptr_eq(&m, cap) => {
            let mut g = lock(cap)?;
            if g.invalid {
                return Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
            }
            if s.id == g.origin
                && let Some(mem) = g.members.iter_mut().find(|m| m.id == from)
            {
                mem.pending = false;
            }
            Ok(())
        }
        Some(m) => {
            invalidate(&m);
            invalidate(cap);
            fail(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_MERGE,
                "a captured stream waits on an event of another capture",
            )
        }
        None => {
            let mut g = lock(cap)?;
            if g.invalid {
                return Err(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
            }
            g.members.push(Member {
                stream: Arc::downgrade(s),
                id: s.id,
                pending: false,
            });
            drop(g);
            s.set_capture(Some(cap.clone()));
            Ok(())
        }
    }
}

/// cuStreamEndCapture: the graph, or why there is none.
pub fn end(s: &Arc<Stream>) -> CuResult<Graph> {
    let Some(c) = s.capture() else {
        return fail(
            CUresult::CUDA_ERROR_ILLEGAL_STATE,
            "cuStreamEndCapture on a stream that is not being captured",
        );
    };
    let mut g = lock(&c)?;
    if g.origin != s.id {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED,
            "cuStreamEndCapture on a stream the capture did not begin on",
        );
    }
    if g.mode != MODE_RELAXED && g.thread != std::thread::current().id() {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD,
            "cuStreamEndCapture from another thread than the one that began the capture",
        );
    }
    let unjoined = g.members.iter().any(|m| m.pending);
    for m in &g.members {
        if let Some(st) = m.stream.upgrade() {
            st.set_capture(None);
        }
    }
    s.set_capture(None);
    let nodes = std::mem::take(&mut g.nodes);
    let invalid = g.invalid;
    drop(g);
    if let Ok(mut a) = active().lock() {
        a.retain(|w| w.upgrade().is_some_and(|x| !Arc::ptr_eq(&x, &c)));
    }
    if invalid {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
            "the capture was invalidated by an operation not allowed during capture",
        );
    }
    if unjoined {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNJOINED,
            "a stream forked into the capture was not joined back into the origin stream",
        );
    }
    Ok(Graph { nodes })
}

/// (status, id) of cuStreamIsCapturing / cuStreamGetCaptureInfo: 0 none, 1 active,
/// 2 invalidated.
pub fn status(s: &Stream) -> (u32, u64) {
    match s.capture() {
        None => (0, 0),
        Some(c) => match c.lock() {
            Ok(g) if g.invalid => (2, g.id),
            Ok(g) => (1, g.id),
            Err(_) => (2, 0),
        },
    }
}

/// A call the driver treats as potentially unsafe during capture (it is neither captured
/// nor ordered with captured work): refused, and the capture(s) it conflicts with
/// invalidated, as this thread's capture mode says.
pub fn unsafe_call(what: &str) -> CuResult<()> {
    let me = std::thread::current().id();
    let tmode = THREAD_MODE.with(Cell::get);
    if tmode == MODE_RELAXED {
        return Ok(());
    }
    let caps: Vec<CaptureRef> = active()
        .lock()
        .map(|a| a.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    let mut hit = false;
    for c in caps {
        let Ok(mut g) = c.lock() else { continue };
        if g.mode == MODE_RELAXED {
            continue;
        }
        if g.thread == me || (g.mode == MODE_GLOBAL && tmode == MODE_GLOBAL) {
            g.invalid = true;
            hit = true;
        }
    }
    if hit {
        return fail(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            format!("{what} is not allowed while a stream capture is active"),
        );
    }
    Ok(())
}

/// cuThreadExchangeStreamCaptureMode.
pub fn exchange_mode(mode: u32) -> CuResult<u32> {
    if mode > MODE_RELAXED {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("capture mode {mode}"),
        );
    }
    Ok(THREAD_MODE.with(|m| m.replace(mode)))
}

/// Whether any blocking stream of `ctx` is being captured (the legacy stream may then not
/// be used at all).
pub fn blocking_capture_in(ctx: &Context) -> bool {
    ctx.streams
        .lock()
        .map(|v| {
            v.iter()
                .filter_map(Weak::upgrade)
                .any(|s| s.blocking && s.capture().is_some())
        })
        .unwrap_or(false)
}

/// A captured graph.
pub struct Graph {
    pub nodes: Vec<Arc<Node>>,
}

/// An instantiated graph.
pub struct GraphExec {
    pub ctx: Arc<Context>,
    pub nodes: Vec<Arc<Node>>,
    /// Held while a launch runs: launches of one exec are serialized.
    running: Mutex<()>,
}

impl GraphExec {
    pub fn new(ctx: Arc<Context>, g: &Graph) -> Self {
        GraphExec {
            ctx,
            nodes: g.nodes.clone(),
            running: Mutex::new(()),
        }
    }

    /// Runs every node in order (on a stream's worker).
    pub fn run(&self) {
        let _one = self.running.lock();
        for n in &self.nodes {
            if self.ctx.faulted() {
                return;
            }
            if let Err((code, msg)) = n.run(&self.ctx) {
                self.ctx
                    .set_sticky(code, &format!("{msg} (in a graph launch)"));
                return;
            }
        }
    }
}

/// Every graph by handle.
pub fn graphs() -> &'static Handles<Graph> {
    static H: OnceLock<Handles<Graph>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

/// Every executable graph by handle.
pub fn execs() -> &'static Handles<GraphExec> {
    static H: OnceLock<Handles<GraphExec>> = OnceLock::new();
    H.get_or_init(Handles::default)
}
