//! The worker's own KV data socket, the transport that is always there: a decode worker
//! connects to the source's `kv_port`, sends one PullKvRequest frame, and reads a PullKvReply
//! frame followed by the blocks' bytes, rank by rank, layer by layer, block by block, K then V.
//! A frame is a 4-byte little-endian length and a protobuf message. One connection per pull.
//!
//! With the cache in host memory (the CPU backend) each side moves the bytes straight between
//! the socket and its cache, with no copy of its own: the source writes from its held blocks,
//! the puller reads into its reserved ones. A cache in device memory goes through the engine
//! (one copy to or from host memory per side). Both sides give up on a connection that makes
//! no progress for the transfer timeout. TLS, when the workers use it, is rustls over the
//! same socket.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;

use super::{
    HeldMap, KvSource, KvTransport, PullError, Reservation, TransferCounters, layout_mismatch,
    pull_bytes,
};
use crate::backend::KvMemory;
use crate::engine::{EngineHandle, RequestId};
use crate::wire::proto::pull_kv_reply::Status;
use crate::wire::proto::{KvLayout, PullKvReply, PullKvRequest};
use crate::wire::tls::kv::KvClientTls;

/// Largest frame either side accepts: block ids and a layout are far smaller.
const MAX_FRAME: u32 = 4 << 20;

fn write_frame(w: &mut impl Write, m: &impl Message) -> io::Result<()> {
    let body = m.encode_to_vec();
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

fn read_frame<M: Message + Default>(r: &mut impl Read) -> io::Result<M> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte frame (at most {MAX_FRAME})"),
        ));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body)?;
    M::decode(&body[..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether every rank's cache lies in host memory of this process.
fn in_host_memory(memory: &[Vec<KvMemory>]) -> bool {
    !memory.is_empty() && memory.iter().flatten().all(|m| m.device.is_none())
}

/// The (address, length) pieces of `blocks` in host `memory`, in wire order. A block outside
/// a layer's cache is refused before anything moves.
fn spans(memory: &[Vec<KvMemory>], blocks: &[u32]) -> Result<Vec<(usize, usize)>, String> {
    let layers: usize = memory.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(layers * blocks.len() * 2);
    for (rank, layers) in memory.iter().enumerate() {
        for (layer, m) in layers.iter().enumerate() {
            let bb = m.block_bytes;
            for &b in blocks {
                let at = b as usize * bb;
                for (addr, len) in [m.k, m.v] {
                    if at + bb > len {
                        return Err(format!(
                            "block {b} lies outside the KV cache of rank {rank} layer {layer}"
                        ));
                    }
                    out.push((addr + at, bb));
                }
            }
        }
    }
    Ok(out)
}

/// Writes the bytes of `spans` to `w`.
///
/// # Safety
/// Every span lies in memory that stays allocated, and that nothing writes, until this returns.
unsafe fn send_spans(w: &mut impl Write, spans: &[(usize, usize)]) -> io::Result<()> {
    for &(addr, len) in spans {
        // SAFETY: the caller's promise.
        w.write_all(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })?;
    }
    w.flush()
}

/// Fills `spans` from `r`.
///
/// # Safety
/// Every span lies in memory that stays allocated, and that nothing else reads or writes,
/// until this returns.
unsafe fn recv_spans(r: &mut impl Read, spans: &[(usize, usize)]) -> io::Result<()> {
    for &(addr, len) in spans {
        // SAFETY: the caller's promise.
        r.read_exact(unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) })?;
    }
    Ok(())
}

/// An I/O error as a pull reports it: a stall names the timeout.
fn describe(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no progress for {timeout:?} (--kv-transfer-timeout)")
        }
        _ => e.to_string(),
    }
}

fn configure(s: &TcpStream, timeout: Duration) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))
}

/// The source's side: serves pulls of this worker's held blocks.
pub struct KvSocket {
    /// This worker's layout (pullers' must match it).
    pub layout: KvLayout,
    /// What is held, by request id.
    pub held: HeldMap,
    /// The engine whose cache the blocks are in.
    pub engine: Arc<EngineHandle>,
    /// That cache, where the backend exposes it (else the engine copies the blocks out).
    pub memory: Vec<Vec<KvMemory>>,
    /// TLS, as the worker's gRPC serves it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a connection may make no progress.
    pub timeout: Duration,
    /// The worker's transfer counters (bytes served).
    pub counters: Arc<TransferCounters>,
}

impl KvSocket {
    /// Serves pulls from `listener`, a thread per connection, for the life of the process.
    pub fn spawn(self, listener: TcpListener) -> io::Result<()> {
        let socket = Arc::new(self);
        std::thread::Builder::new()
            .name("kv-socket".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let s = socket.clone();
                            let spawned = std::thread::Builder::new()
                                .name("kv-serve".into())
                                .spawn(move || s.serve(stream));
                            if let Err(e) = spawned {
                                tracing::warn!(error = %e, "cannot serve a KV pull");
                            }
                        }
                        Err(e) => {
                            // Out of descriptors, say: the puller retries or fails over.
                            tracing::warn!(error = %e, "the KV socket cannot accept");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })?;
        Ok(())
    }

    fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let served = configure(&stream, self.timeout).and_then(|()| match &self.tls {
            None => self.serve_pull(&mut { stream }),
            Some(cfg) => {
                let conn = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, stream);
                self.serve_pull(&mut tls)?;
                tls.conn.send_close_notify();
                tls.flush()
            }
        });
        if let Err(e) = served {
            tracing::warn!(peer, error = %describe(&e, self.timeout), "a KV pull was not served");
        }
    }

    fn serve_pull(&self, io: &mut (impl Read + Write)) -> io::Result<()> {
        let req: PullKvRequest = read_frame(io)?;
        let refuse = |io: &mut _, status: Status, message: String| {
            tracing::info!(request = %req.request_id, ?status, message, "KV pull refused");
            write_frame(
                io,
                &PullKvReply {
                    status: status as i32,
                    message,
                    bytes: 0,
                },
            )
        };
        let (id, blocks) = match self.check(&req) {
            Ok(plan) => plan,
            Err((status, message)) => return refuse(io, status, message),
        };
        let bytes = pull_bytes(&self.layout, blocks.len());
        let ok = PullKvReply {
            status: Status::Ok as i32,
            message: String::new(),
            bytes,
        };
        if in_host_memory(&self.memory) {
            let spans = match spans(&self.memory, &blocks) {
                Ok(s) => s,
                Err(why) => return refuse(io, Status::Invalid, why),
            };
            write_frame(io, &ok)?;
            // SAFETY: the blocks are held for `id`: the engine neither frees nor writes them
            // while the hold lasts, and the memory lives as long as the engine, which `self`
            // keeps. Whether the hold lasted through the send is what the puller's ReleaseKv
            // asks afterwards.
            unsafe { send_spans(io, &spans)? };
        } else {
            let shards = match self.engine.read_held(id, blocks) {
                Ok(s) => s,
                Err(e) => return refuse(io, Status::Failed, e.to_string()),
            };
            write_frame(io, &ok)?;
            for s in &shards {
                io.write_all(s)?;
            }
            io.flush()?;
        }
        self.counters
            .served_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The request's engine id and blocks, if it may be served.
    fn check(&self, req: &PullKvRequest) -> Result<(RequestId, Vec<u32>), (Status, String)> {
        let theirs = req
            .layout
            .as_ref()
            .ok_or((Status::Invalid, "the puller's layout is required".into()))?;
        if let Some(why) = layout_mismatch(&self.layout, theirs) {
            return Err((Status::Mismatch, why));
        }
        if req.block_ids.is_empty() {
            return Err((Status::Invalid, "no blocks to pull".into()));
        }
        let not_held = || {
            (
                Status::NotHeld,
                format!("no KV is held for request {}", req.request_id),
            )
        };
        let held = self
            .held
            .lock()
            .map_err(|_| (Status::Failed, "lock poisoned".to_string()))?
            .get(&req.request_id)
            .cloned()
            .ok_or_else(not_held)?;
        if !self.engine.holds().contains(held.id) {
            return Err(not_held());
        }
        if let Some(b) = req.block_ids.iter().find(|b| !held.blocks.contains(b)) {
            return Err((
                Status::Invalid,
                format!("block {b} is not held for request {}", req.request_id),
            ));
        }
        Ok((held.id, req.block_ids.clone()))
    }
}

/// The host of a `host:port` (or `[v6]:port`) address.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The puller's side of the KV socket.
pub struct TcpKv {
    layout: KvLayout,
    memory: Vec<Vec<KvMemory>>,
    tls: Option<KvClientTls>,
    timeout: Duration,
}

impl TcpKv {
    /// Pulls into the cache `memory` of a worker of `layout` (through the engine where it is
    /// empty or in device memory), over TLS with `tls`, giving up after `timeout` without
    /// progress.
    pub fn new(
        layout: KvLayout,
        memory: Vec<Vec<KvMemory>>,
        tls: Option<KvClientTls>,
        timeout: Duration,
    ) -> Self {
        TcpKv {
            layout: KvLayout {
                nixl: None,
                ..layout
            },
            memory,
            tls,
            timeout,
        }
    }

    fn pull_over(
        &self,
        io: &mut (impl Read + Write),
        source: &KvSource<'_>,
        into: &Reservation<'_>,
    ) -> Result<u64, PullError> {
        let broke = |e: io::Error| {
            PullError::Lost(format!(
                "the KV pull from {} broke: {}",
                source.addr,
                describe(&e, self.timeout)
            ))
        };
        let req = PullKvRequest {
            request_id: source.request_id.to_string(),
            block_ids: source.blocks.to_vec(),
            layout: Some(self.layout.clone()),
        };
        write_frame(io, &req).map_err(broke)?;
        let reply: PullKvReply = read_frame(io).map_err(broke)?;
        match Status::try_from(reply.status) {
            Ok(Status::Ok) => {}
            Ok(Status::Mismatch | Status::Invalid) => {
                return Err(PullError::Refused(reply.message));
            }
            _ => return Err(PullError::Lost(reply.message)),
        }
        let want = pull_bytes(&self.layout, into.blocks.len());
        if reply.bytes != want {
            return Err(PullError::Lost(format!(
                "the source sends {} bytes of KV, {want} expected",
                reply.bytes
            )));
        }
        if in_host_memory(&self.memory) {
            let spans = spans(&self.memory, into.blocks).map_err(PullError::Refused)?;
            // SAFETY: reserved blocks are the pull's alone: the engine does not touch them
            // until the request is committed or the reservation cancelled, and both wait for
            // the pull; the memory lives as long as the engine `into` borrows.
            unsafe { recv_spans(io, &spans) }.map_err(broke)?;
        } else {
            let tp = self.layout.tp_size.max(1) as usize;
            let per_rank = (want / tp as u64) as usize;
            let mut shards = Vec::with_capacity(tp);
            for _ in 0..tp {
                let mut shard = vec![0; per_rank];
                io.read_exact(&mut shard).map_err(broke)?;
                shards.push(shard);
            }
            into.engine
                .write_reserved(into.id, shards)
                .map_err(|e| PullError::Lost(format!("writing the pulled KV: {e}")))?;
        }
        Ok(want)
    }
}

impl KvTransport for TcpKv {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn offered_by(&self, source: &KvLayout) -> bool {
        source.kv_port != 0
    }

    fn pull(&self, source: &KvSource<'_>, into: &Reservation<'_>) -> Result<u64, PullError> {
        if source.blocks.len() != into.blocks.len() {
            return Err(PullError::Refused(format!(
                "{} source blocks for {} here",
                source.blocks.len(),
                into.blocks.len()
            )));
        }
        let host = host_of(source.addr);
        let port = u16::try_from(source.layout.kv_port)
            .map_err(|_| PullError::Refused(format!("KV port {}", source.layout.kv_port)))?;
        let addr = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| PullError::Refused(format!("bad source address {}", source.addr)))?;
        let stream = TcpStream::connect_timeout(&addr, self.timeout)
            .and_then(|s| configure(&s, self.timeout).map(|()| s))
            .map_err(|e| {
                PullError::Lost(format!(
                    "cannot reach the KV socket of {} at {addr}: {}",
                    source.addr,
                    describe(&e, self.timeout)
                ))
            })?;
        match &self.tls {
            None => self.pull_over(&mut { stream }, source, into),
            Some(tls) => {
                let refused = |e: String| PullError::Refused(format!("TLS towards {host}: {e}"));
                let name = tls.server_name(host).map_err(|e| refused(e.to_string()))?;
                let conn = rustls::ClientConnection::new(tls.config(), name)
                    .map_err(|e| refused(e.to_string()))?;
                self.pull_over(&mut rustls::StreamOwned::new(conn, stream), source, into)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_wire_order_and_refuse_blocks_outside() {
        let layer = |base: usize| KvMemory {
            k: (base, 4 * 8),
            v: (base + 1000, 4 * 8),
            block_bytes: 8,
            device: None,
        };
        let memory = vec![vec![layer(0), layer(2000)], vec![layer(5000)]];
        let s = spans(&memory, &[3, 1]).unwrap();
        assert_eq!(
            s,
            vec![
                (24, 8),
                (1024, 8),
                (8, 8),
                (1008, 8),
                (2024, 8),
                (3024, 8),
                (2008, 8),
                (3008, 8),
                (5024, 8),
                (6024, 8),
                (5008, 8),
                (6008, 8),
            ]
        );
        let e = spans(&memory, &[4]).unwrap_err();
        assert!(e.contains("block 4 lies outside"), "{e}");
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let req = PullKvRequest {
            request_id: "r".into(),
            block_ids: vec![1, 2, 3],
            layout: None,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let back: PullKvRequest = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(back, req);
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend([0; 16]);
        let e = read_frame::<PullKvRequest>(&mut &huge[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A truncated frame is an error, not a hang or a short message.
        assert!(read_frame::<PullKvRequest>(&mut &buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:50051"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7"), "::1");
        assert_eq!(host_of("prefill-0.tandem:50051"), "prefill-0.tandem");
    }
}
