//! The seam between a decode worker's pull of a prompt's KV and how the bytes move: one trait,
//! one implementation per transport. [`super::kv_tcp::TcpKv`] is the worker's own KV socket,
//! always there; [`super::nixl::NixlKv`] reads in place through NVIDIA NIXL
//! (`--kv-transport nixl`). The decode worker tries the transports the source offers, in order,
//! and releases the source's blocks afterwards through the ReleaseKv RPC, whatever moved them.

use super::proto::KvLayout;
use crate::engine::{EngineHandle, RequestId};
use crate::kv::BlockId;

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
