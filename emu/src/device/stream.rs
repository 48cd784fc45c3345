//! Streams and events. A stream is a queue of jobs run in order by a worker thread of its
//! own, so streams progress independently of the host and of each other, as on a GPU. Events
//! mark a point in a stream; another stream (or the host) waits for that point. While a
//! stream is captured, its work goes into the capture's graph instead (graph.rs).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::context::Context;
use super::graph::{CaptureRef, GraphExec};
use super::node::Node;
use super::{CUresult, CuResult, Handles, fail};

/// One queued job.
pub enum Job {
    Node(Arc<Node>),
    Graph(Arc<GraphExec>),
    /// Marks an event's record `mark` done.
    Record(Arc<Event>, u64),
    /// Waits for an event's record `mark`.
    Wait(Arc<Event>, u64),
    /// Waits for another stream to finish its job `seq` (legacy-stream ordering).
    After(Arc<Stream>, u64),
}

struct State {
    queue: VecDeque<Job>,
    submitted: u64,
    completed: u64,
    capture: Option<CaptureRef>,
    worker: bool,
    stop: bool,
}

/// A stream.
pub struct Stream {
    pub id: u64,
    pub ctx: Arc<Context>,
    /// Synchronizes with the legacy stream (not CU_STREAM_NON_BLOCKING).
    pub blocking: bool,
    /// The context's legacy (NULL) stream.
    pub legacy: bool,
    st: Mutex<State>,
    cv: Condvar,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every stream by handle.
pub fn streams() -> &'static Handles<Stream> {
    static H: OnceLock<Handles<Stream>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

/// Every event by handle.
pub fn events() -> &'static Handles<Event> {
    static H: OnceLock<Handles<Event>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

impl Stream {
    pub fn new(ctx: Arc<Context>, blocking: bool, legacy: bool) -> Arc<Self> {
        let s = Arc::new(Stream {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ctx: ctx.clone(),
            blocking,
            legacy,
            st: Mutex::new(State {
                queue: VecDeque::new(),
                submitted: 0,
                completed: 0,
                capture: None,
                worker: false,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        if !legacy && let Ok(mut v) = ctx.streams.lock() {
            v.retain(|w| w.strong_count() > 0);
            v.push(Arc::downgrade(&s));
        }
        s
    }

    fn state(&self) -> CuResult<std::sync::MutexGuard<'_, State>> {
        self.st.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)
    }

    /// The capture this stream belongs to, if any.
    pub fn capture(&self) -> Option<CaptureRef> {
        self.st.lock().ok()?.capture.clone()
    }

    pub(crate) fn set_capture(&self, c: Option<CaptureRef>) {
        if let Ok(mut s) = self.st.lock() {
            s.capture = c;
        }
    }

    /// Jobs queued and done.
    fn progress(&self) -> (u64, u64) {
        self.st
            .lock()
            .map(|s| (s.submitted, s.completed))
            .unwrap_or((0, 0))
    }

    /// Queues `node`, or adds it to the capture the stream is in.
    pub fn submit(self: &Arc<Self>, node: Node) -> CuResult<()> {
        self.ctx.check()?;
        if let Some(c) = self.capture() {
            return super::graph::add_node(&c, self.id, Arc::new(node));
        }
        self.push(Job::Node(Arc::new(node))).map(drop)
    }

    /// Queues `node` and waits for it (a copy to pageable host memory), then reports any
    /// fault. A captured stream records it instead.
    pub fn submit_and_wait(self: &Arc<Self>, node: Node) -> CuResult<()> {
        self.ctx.check()?;
        if let Some(c) = self.capture() {
            return super::graph::add_node(&c, self.id, Arc::new(node));
        }
        let seq = self.push(Job::Node(Arc::new(node)))?;
        self.wait_for(seq);
        self.ctx.check()
    }

    /// Queues a job; its sequence number.
    pub(crate) fn push(self: &Arc<Self>, job: Job) -> CuResult<u64> {
        // The legacy stream waits for every blocking stream, and they for it.
        let mut before = Vec::new();
        if self.legacy {
            if let Ok(v) = self.ctx.streams.lock() {
                for s in v.iter().filter_map(Weak::upgrade) {
                    let (sub, done) = s.progress();
                    if s.blocking && sub > done {
                        before.push(Job::After(s.clone(), sub));
                    }
                }
            }
        } else if self.blocking {
            let l = self.ctx.legacy();
            let (sub, done) = l.progress();
            if sub > done {
                before.push(Job::After(l, sub));
            }
        }
        let mut st = self.state()?;
        if st.stop {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                "the stream was destroyed",
            );
        }
        for j in before {
            st.queue.push_back(j);
            st.submitted += 1;
        }
        st.queue.push_back(job);
        st.submitted += 1;
        let seq = st.submitted;
        if !st.worker {
            st.worker = true;
            let me = self.clone();
            let name = format!("tandem-emu-stream{}", self.id);
            if std::thread::Builder::new()
                .name(name)
                .spawn(move || me.work())
                .is_err()
            {
                st.worker = false;
                return fail(
                    CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                    "cannot start a stream thread",
                );
            }
        }
        drop(st);
        self.cv.notify_all();
        Ok(seq)
    }

    /// The worker: runs jobs in order until the stream is destroyed and drained.
    fn work(self: Arc<Self>) {
        loop {
            let job = {
                let Ok(mut st) = self.st.lock() else {
                    return;
                };
                loop {
                    if let Some(j) = st.queue.pop_front() {
                        break j;
                    }
                    if st.stop {
                        st.worker = false;
                        return;
                    }
                    st = match self.cv.wait(st) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            };
            self.run(job);
            if let Ok(mut st) = self.st.lock() {
                st.completed += 1;
            }
            self.cv.notify_all();
        }
    }

    fn run(&self, job: Job) {
        let ctx = &self.ctx;
        match job {
            Job::Node(n) => {
                if !ctx.faulted()
                    && let Err((code, msg)) = n.run(ctx)
                {
                    ctx.set_sticky(code, &msg);
                }
            }
            Job::Graph(g) => g.run(),
            Job::Record(e, mark) => e.complete(mark),
            Job::Wait(e, mark) => e.wait_gen(mark),
            Job::After(s, seq) => s.wait_for(seq),
        }
    }

    /// Waits until job `seq` is done.
    pub fn wait_for(&self, seq: u64) {
        let Ok(mut st) = self.st.lock() else {
            return;
        };
        while st.completed < seq {
            st = match self.cv.wait(st) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    /// Waits for everything queued so far.
    pub fn wait_idle(&self) {
        let (sub, _) = self.progress();
        self.wait_for(sub);
    }

    /// cuStreamSynchronize.
    pub fn synchronize(self: &Arc<Self>) -> CuResult<()> {
        if let Some(c) = self.capture() {
            super::graph::invalidate(&c);
            return fail(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                "cuStreamSynchronize on a stream being captured",
            );
        }
        self.wait_idle();
        self.ctx.check()
    }

    /// cuStreamQuery.
    pub fn query(&self) -> CuResult<()> {
        if let Some(c) = self.capture() {
            super::graph::invalidate(&c);
            return fail(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                "cuStreamQuery on a stream being captured",
            );
        }
        self.ctx.check()?;
        let (sub, done) = self.progress();
        if done >= sub {
            Ok(())
        } else {
            Err(CUresult::CUDA_ERROR_NOT_READY)
        }
    }

    /// Stops taking work; the worker finishes what is queued and exits.
    pub fn shutdown(&self) {
        if let Ok(mut st) = self.st.lock() {
            st.stop = true;
        }
        self.cv.notify_all();
    }

    /// Queues a wait for `e`'s latest record (or joins a capture through a captured event).
    pub fn wait_event(self: &Arc<Self>, e: &Arc<Event>, flags: u32) -> CuResult<()> {
        let (mark, captured) = e.snapshot()?;
        let mine = self.capture();
        if let Some((cap, from)) = captured {
            return super::graph::join(self, mine, &cap, from);
        }
        if let Some(c) = mine {
            if flags & 1 != 0 {
                return fail(
                    CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    "cuStreamWaitEvent with CU_EVENT_WAIT_EXTERNAL inside a capture is not emulated",
                );
            }
            super::graph::invalidate(&c);
            return fail(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
                "a captured stream waits on an event recorded outside the capture",
            );
        }
        if flags & 1 != 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "CU_EVENT_WAIT_EXTERNAL outside a capture",
            );
        }
        if mark == 0 {
            return Ok(());
        }
        self.ctx.check()?;
        self.push(Job::Wait(e.clone(), mark)).map(drop)
    }
}

struct EvState {
    /// Records so far, and the last one done.
    mark: u64,
    done: u64,
    time: Option<Instant>,
    /// Recorded on a captured stream: the capture and the stream.
    captured: Option<(CaptureRef, u64)>,
}

/// An event.
pub struct Event {
    pub ctx: Arc<Context>,
    pub flags: u32,
    st: Mutex<EvState>,
    cv: Condvar,
}

/// CU_EVENT_DISABLE_TIMING.
const DISABLE_TIMING: u32 = 2;

impl Event {
    pub fn new(ctx: Arc<Context>, flags: u32) -> Arc<Self> {
        Arc::new(Event {
            ctx,
            flags,
            st: Mutex::new(EvState {
                mark: 0,
                done: 0,
                time: None,
                captured: None,
            }),
            cv: Condvar::new(),
        })
    }

    fn snapshot(&self) -> CuResult<(u64, Option<(CaptureRef, u64)>)> {
        let st = self.st.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        Ok((st.mark, st.captured.clone()))
    }

    /// cuEventRecord on `s`.
    pub fn record(self: &Arc<Self>, s: &Arc<Stream>) -> CuResult<()> {
        if !Arc::ptr_eq(&self.ctx, &s.ctx) {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                "cuEventRecord: the event and the stream belong to different contexts",
            );
        }
        s.ctx.check()?;
        if let Some(c) = s.capture() {
            super::graph::check_live(&c)?;
            if let Ok(mut st) = self.st.lock() {
                st.captured = Some((c, s.id));
            }
            return Ok(());
        }
        let mark = {
            let mut st = self.st.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
            st.mark += 1;
            st.captured = None;
            st.mark
        };
        s.push(Job::Record(self.clone(), mark)).map(drop)
    }

    fn complete(&self, mark: u64) {
        if let Ok(mut st) = self.st.lock()
            && mark > st.done
        {
            st.done = mark;
            st.time = Some(Instant::now());
        }
        self.cv.notify_all();
    }

    fn wait_gen(&self, mark: u64) {
        let Ok(mut st) = self.st.lock() else {
            return;
        };
        while st.done < mark {
            st = match self.cv.wait(st) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    fn not_captured(&self, what: &str) -> CuResult<()> {
        let captured = self
            .st
            .lock()
            .map(|s| s.captured.clone())
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        if let Some((c, _)) = captured {
            super::graph::invalidate(&c);
            return fail(
                CUresult::CUDA_ERROR_CAPTURED_EVENT,
                format!("{what} on an event recorded in a stream capture"),
            );
        }
        Ok(())
    }

    /// cuEventQuery.
    pub fn query(&self) -> CuResult<()> {
        self.not_captured("cuEventQuery")?;
        let st = self.st.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
        if st.done >= st.mark {
            drop(st);
            self.ctx.check()
        } else {
            Err(CUresult::CUDA_ERROR_NOT_READY)
        }
    }

    /// cuEventSynchronize.
    pub fn synchronize(&self) -> CuResult<()> {
        self.not_captured("cuEventSynchronize")?;
        let mark = self.st.lock().map(|s| s.mark).unwrap_or(0);
        self.wait_gen(mark);
        self.ctx.check()
    }

    /// cuEventElapsedTime: milliseconds from `self` to `end`, in host time.
    pub fn elapsed_ms(&self, end: &Event) -> CuResult<f32> {
        if (self.flags | end.flags) & DISABLE_TIMING != 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_HANDLE,
                "cuEventElapsedTime on an event created with CU_EVENT_DISABLE_TIMING",
            );
        }
        let times = |e: &Event| -> CuResult<Option<Instant>> {
            let st = e.st.lock().map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?;
            if st.mark == 0 {
                return fail(
                    CUresult::CUDA_ERROR_INVALID_HANDLE,
                    "cuEventElapsedTime on an event never recorded",
                );
            }
            Ok((st.done >= st.mark).then_some(st.time).flatten())
        };
        match (times(self)?, times(end)?) {
            (Some(a), Some(b)) => {
                let ms = if b >= a {
                    (b - a).as_secs_f64() * 1e3
                } else {
                    -((a - b).as_secs_f64() * 1e3)
                };
                Ok(ms as f32)
            }
            _ => Err(CUresult::CUDA_ERROR_NOT_READY),
        }
    }
}
