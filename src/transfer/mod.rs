//! KV transfer between workers, used by the worker (worker/disagg.rs) and by `tandem
//! profile`: the seam between a decode worker's pull of a prompt's KV and how the bytes move
//! (one trait, one implementation per transport), and what the transports and the worker's
//! RPCs share (held blocks, counters, the layout check). [`socket::TcpKv`] is the worker's own
//! KV socket, always there; [`nixl::NixlKv`] reads in place through NVIDIA NIXL
//! (`--kv-transport nixl`). The decode worker tries the transports the source offers, in order,
//! and releases the source's blocks afterwards through the ReleaseKv RPC, whatever moved them.

pub mod nixl;
pub mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{EngineHandle, RequestId};
use crate::kv::BlockId;
use crate::wire::proto::KvLayout;

/// How long a KV transfer, or a call to its source, may make no progress, unless configured.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// The held blocks a pull reads: where, whose, which.
#[derive(Debug, Clone, Copy)]
pub struct KvSource<'a> {
    /// The source worker's gRPC address (host:port); its KV socket is on the same host.
    pub addr: &'a str,
    /// The source's layout, as its GetKvLayout answered.
    pub layout: &'a KvLayout,
    /// The prefill request whose blocks are held.
    pub request_id: &'a str,
    /// The held blocks, in prompt order.
    pub blocks: &'a [u32],
}

/// The blocks a pull writes: a reservation in this worker's engine, in prompt order.
#[derive(Clone, Copy)]
pub struct Reservation<'a> {
    /// The engine that holds the reservation (and owns the memory it lies in).
    pub engine: &'a EngineHandle,
    /// Its request.
    pub id: RequestId,
    /// Its blocks.
    pub blocks: &'a [BlockId],
}

/// Why a pull did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Nothing moved: these two workers cannot exchange these blocks (their layouts differ,
    /// the request names blocks outside what is held or registered).
    #[error("{0}")]
    Refused(String),
    /// The source did not give the KV: unreachable, stalled past the timeout, gone mid-way,
    /// or its hold had ended. The reservation's content is undefined.
    #[error("{0}")]
    Lost(String),
}

/// One way of moving held KV blocks into a reservation. A pull blocks its thread until the
/// bytes are in place or it fails; no pull outlives its timeout.
pub trait KvTransport: Send + Sync {
    /// Its name, as `--kv-transport` and the logs give it.
    fn name(&self) -> &'static str;

    /// Whether the source, by its layout, offers this transport.
    fn offered_by(&self, source: &KvLayout) -> bool;

    /// Copies `source.blocks` into `into.blocks` (as many, in order); the bytes moved.
    fn pull(&self, source: &KvSource<'_>, into: &Reservation<'_>) -> Result<u64, PullError>;
}

/// Bytes a pull of `blocks` blocks moves between workers of `layout`: every rank's K and V of
/// every layer.
pub fn pull_bytes(layout: &KvLayout, blocks: usize) -> u64 {
    blocks as u64
        * u64::from(layout.num_layers)
        * layout.block_bytes
        * u64::from(layout.tp_size.max(1))
}

/// Why two workers' KV caches cannot exchange blocks, if they cannot.
pub fn layout_mismatch(ours: &KvLayout, theirs: &KvLayout) -> Option<String> {
    let fields = [
        ("layers", ours.num_layers, theirs.num_layers),
        (
            "KV heads per rank",
            ours.kv_heads_per_rank,
            theirs.kv_heads_per_rank,
        ),
        ("head dim", ours.head_dim, theirs.head_dim),
        ("block size", ours.block_size, theirs.block_size),
        ("TP size", ours.tp_size, theirs.tp_size),
    ];
    let mut diffs: Vec<String> = fields
        .iter()
        .filter(|f| f.1 != f.2)
        .map(|(n, a, b)| format!("{n} {a} vs {b}"))
        .collect();
    if ours.dtype != theirs.dtype {
        diffs.push(format!("dtype {} vs {}", ours.dtype, theirs.dtype));
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "KV layout mismatch between source {} and puller {}: {}",
            ours.engine_id,
            theirs.engine_id,
            diffs.join(", ")
        )
    })
}

/// A prefill request's held blocks, as its PrefillResponse gave them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKv {
    /// The engine's id of the request.
    pub id: RequestId,
    /// Its blocks, in prompt order.
    pub blocks: Vec<u32>,
}

/// Held requests by client request id, shared by the gRPC service and the KV socket.
pub type HeldMap = Arc<Mutex<HashMap<String, HeldKv>>>;

/// KV transfer counters of a worker, since it started.
#[derive(Debug, Default)]
pub struct TransferCounters {
    pub pulls: AtomicU64,
    pub pulled_bytes: AtomicU64,
    pub pull_micros: AtomicU64,
    pub served_bytes: AtomicU64,
    pub released: AtomicU64,
    pub in_flight: AtomicU64,
    pub nixl_pulls: AtomicU64,
    pub nixl_fallbacks: AtomicU64,
    pub verified: AtomicU64,
}

impl TransferCounters {
    /// What the worker's metrics show of them.
    pub fn totals(&self) -> TransferTotals {
        TransferTotals {
            pulls: self.pulls.load(Ordering::Relaxed),
            pulled_bytes: self.pulled_bytes.load(Ordering::Relaxed),
            pull_seconds: self.pull_micros.load(Ordering::Relaxed) as f64 / 1e6,
            served_bytes: self.served_bytes.load(Ordering::Relaxed),
        }
    }
}

/// KV transfer totals of a worker, for its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferTotals {
    /// Pulls made (decode side).
    pub pulls: u64,
    /// Bytes pulled.
    pub pulled_bytes: u64,
    /// Seconds pulling.
    pub pull_seconds: f64,
    /// Bytes served to pullers (prefill side).
    pub served_bytes: u64,
}
