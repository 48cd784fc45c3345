//! The engine on its own thread: requests go in through a channel, each request's outputs
//! come back on its own stream. A stream whose receiver is dropped aborts its request.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::core::EngineCore;
use super::executor::Executor;
use super::output::RequestOutput;
use super::sequence::{FinishReason, Request, RequestId, validate_request};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::kv::{BlockId, PoolStats};

/// Outputs of one request, ending with one that has a finish reason, or an error.
pub type OutputStream = UnboundedReceiver<Result<RequestOutput>>;

type Reply<T> = Sender<Result<T>>;

enum Command {
    Add(Request, UnboundedSender<Result<RequestOutput>>),
    AddPrefill(Request, UnboundedSender<Result<RequestOutput>>),
    Abort(RequestId),
    ReadHeld(RequestId, Vec<BlockId>, Reply<Vec<Vec<u8>>>),
    ReleaseHeld(RequestId, Sender<bool>),
    Reserve(RequestId, usize, Reply<Vec<BlockId>>),
    WriteReserved(RequestId, Vec<Vec<u8>>, Reply<()>),
    ReadReserved(RequestId, Reply<Vec<Vec<u8>>>),
    CancelReserved(RequestId),
    CommitPrefilled(Request, u32, UnboundedSender<Result<RequestOutput>>),
    ResetPrefixCache(Sender<bool>),
    AbortAll(Sender<usize>),
}

/// A snapshot of the engine's load, published by the engine thread after every step and
/// command (so reading it never waits behind a step).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences running.
    pub running: usize,
    /// Sequences waiting.
    pub waiting: usize,
    /// Prompt tokens not yet computed (waiting and partially prefilled sequences).
    pub queued_prefill_tokens: usize,
    /// KV pool counters.
    pub kv: PoolStats,
    /// Requests aborted while live (a client gone, an Abort call), since start.
    pub aborted: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Prefill requests whose blocks wait for a pull, and reservations for pulls.
    pub handoffs: usize,
    /// Preemptions since start.
    pub preemptions: u64,
    /// Seconds spent copying blocks between the KV tiers, since start.
    pub copy_seconds: f64,
    /// Copies between the tiers that failed (their blocks were recomputed), since start.
    pub copy_failures: u64,
}

impl EngineStats {
    /// Whether nothing runs, waits or waits for a transfer.
    pub fn is_idle(&self) -> bool {
        self.running == 0 && self.waiting == 0 && self.handoffs == 0
    }
}

/// A running engine thread.
pub struct EngineHandle {
    cfg: EngineConfig,
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<EngineStats>>,
    holds: super::HoldView,
}

impl EngineHandle {
    /// Moves `core` onto a new thread that steps while there is work.
    pub fn spawn<E: Executor + 'static>(core: EngineCore<E>) -> Result<Self> {
        let cfg = core.config().clone();
        let (tx, rx) = channel();
        let stats = Arc::new(Mutex::new(snapshot(&core)));
        let published = stats.clone();
        let holds = core.hold_view();
        let thread = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || run(core, rx, &published))
            .map_err(|e| Error::Backend(format!("cannot spawn the engine thread: {e}")))?;
        Ok(EngineHandle {
            cfg,
            tx: Some(tx),
            thread: Some(thread),
            stats,
            holds,
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Submits a request. Invalid requests are refused here; a duplicate id is reported as the
    /// stream's first item.
    pub fn submit(&self, req: Request) -> Result<OutputStream> {
        validate_request(&self.cfg, &req)?;
        let (otx, orx) = unbounded_channel();
        self.send(Command::Add(req, otx))?;
        Ok(orx)
    }

    /// Ends a request; its stream gets a final output with [`FinishReason::Abort`].
    pub fn abort(&self, id: RequestId) -> Result<()> {
        self.send(Command::Abort(id))
    }

    /// Submits a prefill request: it ends after its first token, whose output carries the
    /// blocks now held for a decode worker to pull.
    pub fn submit_prefill(&self, req: Request) -> Result<OutputStream> {
        validate_request(&self.cfg, &req)?;
        let (otx, orx) = unbounded_channel();
        self.send(Command::AddPrefill(req, otx))?;
        Ok(orx)
    }

    /// Copies held blocks of a finished prefill request (one buffer per TP rank).
    pub fn read_held(&self, id: RequestId, blocks: Vec<BlockId>) -> Result<Vec<Vec<u8>>> {
        self.ask(|tx| Command::ReadHeld(id, blocks, tx))?
    }

    /// Frees a held request's blocks; false if none were held.
    pub fn release_held(&self, id: RequestId) -> Result<bool> {
        self.ask(|tx| Command::ReleaseHeld(id, tx))
    }

    /// Reserves blocks for `num_tokens` tokens of KV arriving for `id`.
    pub fn reserve_kv(&self, id: RequestId, num_tokens: usize) -> Result<Vec<BlockId>> {
        self.ask(|tx| Command::Reserve(id, num_tokens, tx))?
    }

    /// Writes pulled KV into a reservation.
    pub fn write_reserved(&self, id: RequestId, shards: Vec<Vec<u8>>) -> Result<()> {
        self.ask(|tx| Command::WriteReserved(id, shards, tx))?
    }

    /// Copies a reservation's blocks (one buffer per TP rank).
    pub fn read_reserved(&self, id: RequestId) -> Result<Vec<Vec<u8>>> {
        self.ask(|tx| Command::ReadReserved(id, tx))?
    }

    /// Which requests' blocks are held now (never waits for the engine thread).
    pub fn holds(&self) -> &super::HoldView {
        &self.holds
    }

    /// Frees a reservation (the pull failed).
    pub fn cancel_reserved(&self, id: RequestId) -> Result<()> {
        self.send(Command::CancelReserved(id))
    }

    /// Starts decoding a request whose prompt KV is in its reservation.
    pub fn commit_prefilled(&self, req: Request, first_token: u32) -> Result<OutputStream> {
        let (otx, orx) = unbounded_channel();
        self.send(Command::CommitPrefilled(req, first_token, otx))?;
        Ok(orx)
    }

    /// Ends every live request (their streams get an abort); returns how many.
    pub fn abort_all(&self) -> Result<usize> {
        self.ask(Command::AbortAll)
    }

    /// Drops the prefix cache; false while requests hold blocks.
    pub fn reset_prefix_cache(&self) -> Result<bool> {
        self.ask(Command::ResetPrefixCache)
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = channel();
        self.send(make(tx))?;
        rx.recv()
            .map_err(|_| Error::Backend("the engine thread has stopped".into()))
    }

    /// The engine's load as of its last step or command (never waits for the engine thread);
    /// an error once the thread has stopped.
    pub fn stats(&self) -> Result<EngineStats> {
        if !self.is_running() {
            return Err(Error::Backend("the engine thread has stopped".into()));
        }
        Ok(*self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the engine thread still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(cmd).ok())
            .ok_or_else(|| Error::Backend("the engine thread has stopped".into()))
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engine's load now.
fn snapshot<E: Executor>(core: &EngineCore<E>) -> EngineStats {
    let (running, waiting) = core.num_requests();
    EngineStats {
        running,
        waiting,
        queued_prefill_tokens: core.queued_prefill_tokens(),
        kv: core.kv_stats(),
        aborted: core.num_aborted(),
        generated_tokens: core.num_generated(),
        handoffs: core.num_handoffs(),
        preemptions: core.num_preemptions(),
        copy_seconds: core.copy_seconds(),
        copy_failures: core.num_copy_failures(),
    }
}

fn run<E: Executor>(mut core: EngineCore<E>, rx: Receiver<Command>, stats: &Mutex<EngineStats>) {
    let mut streams: HashMap<RequestId, UnboundedSender<Result<RequestOutput>>> = HashMap::new();
    loop {
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = snapshot(&core);
        let cmd = if core.has_work() {
            match rx.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            // Idle: wait for a command, waking up when a KV hold expires.
            let wait = core
                .next_hold_expiry()
                .map(|t| t.saturating_duration_since(std::time::Instant::now()));
            let got = match wait {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d),
            };
            match got {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        core.expire_held(std::time::Instant::now());
        if let Some(cmd) = cmd {
            match cmd {
                Command::Add(req, out) => {
                    let id = req.id;
                    admit(&mut streams, id, out, core.add_request(req));
                }
                Command::AddPrefill(req, out) => {
                    let id = req.id;
                    admit(&mut streams, id, out, core.add_prefill_request(req));
                }
                Command::CommitPrefilled(req, first, out) => {
                    let id = req.id;
                    admit(&mut streams, id, out, core.commit_prefilled(req, first));
                }
                Command::ReadHeld(id, blocks, reply) => {
                    let _ = reply.send(core.read_held(id, &blocks));
                }
                Command::ReadReserved(id, reply) => {
                    let _ = reply.send(core.read_reserved(id));
                }
                Command::ReleaseHeld(id, reply) => {
                    let _ = reply.send(core.release_held(id));
                }
                Command::Reserve(id, n, reply) => {
                    let _ = reply.send(core.reserve_kv(id, n));
                }
                Command::WriteReserved(id, shards, reply) => {
                    let _ = reply.send(core.write_reserved(id, &shards));
                }
                Command::AbortAll(reply) => {
                    let ids = core.abort_all();
                    for id in &ids {
                        if let Some(s) = streams.remove(id) {
                            let _ = s.send(Ok(aborted(*id)));
                        }
                    }
                    let _ = reply.send(ids.len());
                }
                Command::ResetPrefixCache(reply) => {
                    let _ = reply.send(core.reset_prefix_cache());
                }
                Command::CancelReserved(id) => {
                    core.cancel_reserved(id);
                }
                Command::Abort(id) => {
                    if core.abort(id)
                        && let Some(s) = streams.remove(&id)
                    {
                        let _ = s.send(Ok(aborted(id)));
                    }
                }
            }
            continue;
        }
        // Clients that went away lose their requests before they cost another step.
        streams.retain(|&id, s| {
            let open = !s.is_closed();
            if !open {
                core.abort(id);
            }
            open
        });
        let result = core.step();
        // Published before the outputs go out: whoever sees a step's tokens sees its stats.
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = snapshot(&core);
        match result {
            Ok(outputs) => {
                for o in outputs {
                    let (id, done) = (o.id, o.finish.is_some());
                    let delivered = streams.get(&id).is_some_and(|s| s.send(Ok(o)).is_ok());
                    if !delivered && !done {
                        core.abort(id);
                    }
                    if done || !delivered {
                        streams.remove(&id);
                    }
                }
            }
            Err(f) => {
                tracing::error!(error = %f.error, requests = f.failed.len(), "engine step failed");
                for id in f.failed {
                    if let Some(s) = streams.remove(&id) {
                        let _ = s.send(Err(Error::Backend(format!(
                            "engine step failed: {}",
                            f.error
                        ))));
                    }
                }
            }
        }
    }
}

/// Registers an accepted request's stream, or tells the stream why it was refused.
fn admit(
    streams: &mut HashMap<RequestId, UnboundedSender<Result<RequestOutput>>>,
    id: RequestId,
    out: UnboundedSender<Result<RequestOutput>>,
    accepted: Result<()>,
) {
    match accepted {
        Ok(()) => {
            streams.insert(id, out);
        }
        Err(e) => {
            let _ = out.send(Err(e));
        }
    }
}

fn aborted(id: RequestId) -> RequestOutput {
    RequestOutput {
        id,
        token: None,
        finish: Some(FinishReason::Abort),
        prompt_tokens: 0,
        cached_tokens: 0,
        held_blocks: None,
        timing: None,
        steps: Vec::new(),
    }
}
