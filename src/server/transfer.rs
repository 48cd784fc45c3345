//! Prefill/decode disaggregation on the worker: the Prefill and Decode RPCs and the transfer
//! service (layout handshake, one-sided pull of held blocks, release). The bytes travel over
//! gRPC (TCP), in chunks, one stream of chunks per tensor-parallel rank's shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::Status;

use super::proto;
use super::worker::{RpcStream, WorkerService, response_of, sampling_from_proto, status_of};
use crate::engine::{self, EngineHandle, FinishReason, RequestId, validate_request};

/// Bytes per KvChunk message (well under gRPC's default 4 MiB message limit).
pub const CHUNK_BYTES: usize = 1 << 20;

/// HTTP/2 flow-control window of transfer connections (the default 64 KiB would make a bulk
/// transfer wait on a round trip every 64 KiB).
pub const WINDOW_BYTES: u32 = 32 << 20;

/// Largest HTTP/2 frame a worker sends (the 16 KiB default means 64 frames per chunk).
pub const FRAME_BYTES: u32 = (1 << 24) - 1;

/// Why two workers' KV caches cannot exchange blocks, if they cannot.
pub fn layout_mismatch(ours: &proto::KvLayout, theirs: &proto::KvLayout) -> Option<String> {
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

async fn blocking<T: Send + 'static>(
    engine: &Arc<EngineHandle>,
    f: impl FnOnce(&EngineHandle) -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let e = engine.clone();
    tokio::task::spawn_blocking(move || f(&e))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status_of)
}

impl WorkerService {
    /// Prefill: run the prompt to its first token and hold its blocks.
    pub(super) async fn do_prefill(
        &self,
        r: proto::GenerateRequest,
    ) -> Result<proto::PrefillResponse, Status> {
        let sampling = r
            .sampling
            .ok_or_else(|| Status::invalid_argument("sampling parameters are required"))?;
        let mut params = sampling_from_proto(sampling);
        let wanted = params.max_tokens;
        params.max_tokens = 1;
        let (id, _live) = self.register(&r.request_id)?;
        let mut out = self
            .engine
            .submit_prefill(engine::Request {
                id,
                prompt: r.prompt_token_ids,
                params,
            })
            .map_err(status_of)?;
        let last = loop {
            match out.recv().await {
                Some(Ok(o)) if o.finish.is_some() => {
                    if let Some(t) = &o.timing {
                        self.metrics.observe(t);
                    }
                    break o;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(status_of(e)),
                None => return Err(Status::internal("the engine dropped the request")),
            }
        };
        let token = last
            .token
            .clone()
            .ok_or_else(|| Status::aborted("the prefill was aborted"))?;
        // The engine stopped after one token; the request itself ends only on a stop token or
        // when one token was all it asked for.
        let finish = match last.finish {
            Some(FinishReason::Stop) => "stop",
            Some(FinishReason::Length) if wanted <= 1 => "length",
            Some(FinishReason::Abort) => return Err(Status::aborted("the prefill was aborted")),
            _ => "",
        };
        let block_ids = if finish.is_empty() {
            self.held
                .lock()
                .map_err(|_| Status::internal("lock poisoned"))?
                .insert(r.request_id.clone(), id);
            last.held_blocks.clone().unwrap_or_default()
        } else {
            blocking(&self.engine, move |e| e.release_held(id)).await?;
            Vec::new()
        };
        let resp = response_of(last);
        Ok(proto::PrefillResponse {
            first_token: token.token,
            logprob: resp.logprob,
            top_logprobs: resp.top_logprobs,
            finish_reason: finish.to_string(),
            prompt_tokens: resp.prompt_tokens,
            cached_tokens: resp.cached_tokens,
            engine_id: self.layout.engine_id.clone(),
            transfer_addr: self.transfer_addr.clone(),
            block_ids,
        })
    }

    /// Decode: reserve, pull, write, release at the source, then stream the rest.
    pub(super) async fn do_decode(
        &self,
        d: proto::DecodeRequest,
    ) -> Result<RpcStream<proto::GenerateResponse>, Status> {
        let r = d
            .request
            .ok_or_else(|| Status::invalid_argument("the request is required"))?;
        let sampling = r
            .sampling
            .ok_or_else(|| Status::invalid_argument("sampling parameters are required"))?;
        let request = engine::Request {
            id: 0,
            prompt: r.prompt_token_ids,
            params: sampling_from_proto(sampling),
        };
        validate_request(self.engine.config(), &request).map_err(status_of)?;
        let (id, live) = self.register(&r.request_id)?;
        let request = engine::Request { id, ..request };
        let n = request.prompt.len();
        let local = blocking(&self.engine, move |e| e.reserve_kv(id, n))
            .await
            .map_err(|s| Status::resource_exhausted(s.message().to_string()))?;
        let pulled = async {
            if local.len() != d.source_block_ids.len() {
                return Err(Status::invalid_argument(format!(
                    "{} source blocks for a {n}-token prompt ({} blocks here)",
                    d.source_block_ids.len(),
                    local.len()
                )));
            }
            let started = std::time::Instant::now();
            let _pulling = Pulling::start(&self.transfers.in_flight);
            let t = &self.transfers;
            let count = |bytes: u64| {
                t.pulls.fetch_add(1, Ordering::Relaxed);
                t.pulled_bytes.fetch_add(bytes, Ordering::Relaxed);
                t.pull_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            };
            match self
                .nixl_pull(&d.source_addr, &d.source_block_ids, &local, &r.request_id)
                .await
            {
                Ok(Some(bytes)) => {
                    t.nixl_pulls.fetch_add(1, Ordering::Relaxed);
                    count(bytes);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    // The blocks are still held at the source: TCP gets them instead.
                    tracing::warn!(request = %r.request_id, error = %e, "NIXL read failed; pulling over TCP");
                    t.nixl_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
            let shards = pull(
                &d.source_addr,
                &r.request_id,
                d.source_block_ids.clone(),
                self.layout.clone(),
                self.peer_tls.as_ref(),
            )
            .await
            .map_err(source_lost)?;
            count(shards.iter().map(|s| s.len() as u64).sum());
            blocking(&self.engine, move |e| e.write_reserved(id, shards)).await
        };
        if let Err(s) = pulled.await {
            // Nothing leaks: the reservation goes back to the pool.
            let _ = self.engine.cancel_reserved(id);
            return Err(s);
        }
        // The source frees its copy now; if this is lost, its hold times out.
        let (addr, rid) = (d.source_addr.clone(), r.request_id.clone());
        let tls = self.peer_tls.clone();
        tokio::spawn(async move {
            let Ok(ep) = crate::server::tls::endpoint(&addr, tls.as_ref()) else {
                return;
            };
            if let Ok(ch) = ep.connect().await {
                let _ = proto::worker_client::WorkerClient::new(ch)
                    .release_kv(proto::ReleaseKvRequest { request_id: rid })
                    .await;
            }
        });
        let outputs = self
            .engine
            .commit_prefilled(request, d.first_token)
            .map_err(status_of)?;
        Ok(self.responses(outputs, live))
    }

    /// The pull through NIXL, when this worker and the source both offer it: the bytes read
    /// into `local`; None when either does not (TCP then); an error when the read failed.
    async fn nixl_pull(
        &self,
        source_addr: &str,
        source_blocks: &[u32],
        local: &[crate::kv::BlockId],
        request_id: &str,
    ) -> Result<Option<u64>, String> {
        let Some(nixl) = self.nixl.clone() else {
            return Ok(None);
        };
        let ep = crate::server::tls::endpoint(source_addr, self.peer_tls.as_ref())
            .map_err(|e| e.to_string())?;
        let ch = ep.connect().await.map_err(|e| e.to_string())?;
        let theirs = proto::worker_client::WorkerClient::new(ch)
            .get_kv_layout(proto::KvLayoutRequest {})
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        // A mismatch is for the TCP path to refuse, with its message.
        let Some(peer) = theirs.nixl.clone() else {
            return Ok(None);
        };
        if layout_mismatch(&self.layout, &theirs).is_some() {
            return Ok(None);
        }
        let (src, dst, note) = (
            source_blocks.to_vec(),
            local.to_vec(),
            request_id.to_string(),
        );
        tokio::task::spawn_blocking(move || nixl.read(&peer, &src, &dst, &note))
            .await
            .map_err(|e| e.to_string())?
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// PullKv: checks the puller's layout, then streams each rank's shard of the blocks.
    pub(super) async fn do_pull_kv(
        &self,
        p: proto::PullKvRequest,
    ) -> Result<RpcStream<proto::KvChunk>, Status> {
        let theirs = p
            .layout
            .ok_or_else(|| Status::invalid_argument("the puller's layout is required"))?;
        if let Some(why) = layout_mismatch(&self.layout, &theirs) {
            return Err(Status::failed_precondition(why));
        }
        let id: RequestId = *self
            .held
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?
            .get(&p.request_id)
            .ok_or_else(|| {
                Status::not_found(format!("no KV is held for request {}", p.request_id))
            })?;
        let blocks = p.block_ids;
        let shards = blocking(&self.engine, move |e| e.read_held(id, blocks))
            .await
            .map_err(|s| {
                if s.code() != tonic::Code::InvalidArgument {
                    return s;
                }
                // The hold expired (or never covered these blocks): forget it.
                if let Ok(mut held) = self.held.lock() {
                    held.remove(&p.request_id);
                }
                Status::not_found(format!(
                    "no KV is held for request {}: {}",
                    p.request_id,
                    s.message()
                ))
            })?;
        let bytes: usize = shards.iter().map(Vec::len).sum();
        self.transfers
            .served_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let chunks: Vec<Result<proto::KvChunk, Status>> = shards
            .into_iter()
            .enumerate()
            .flat_map(|(rank, data)| {
                let data = bytes::Bytes::from(data);
                (0..data.len())
                    .step_by(CHUNK_BYTES)
                    .map(move |at| {
                        Ok(proto::KvChunk {
                            rank: rank as u32,
                            data: data.slice(at..(at + CHUNK_BYTES).min(data.len())),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    /// ReleaseKv: frees a held request's blocks.
    pub(super) async fn do_release_kv(
        &self,
        r: proto::ReleaseKvRequest,
    ) -> Result<proto::ReleaseKvResponse, Status> {
        let id = self
            .held
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?
            .remove(&r.request_id);
        let released = match id {
            Some(id) => blocking(&self.engine, move |e| e.release_held(id)).await?,
            None => false,
        };
        self.transfers
            .released
            .fetch_add(u64::from(released), Ordering::Relaxed);
        Ok(proto::ReleaseKvResponse { released })
    }
}

/// How a decode worker says that the prompt's KV could not be had from its source (the
/// prefill worker is gone, its hold expired, the stream broke): DATA_LOSS with this prefix.
/// The decode worker itself is fine; the frontend computes the prompt again elsewhere.
pub const KV_SOURCE_LOST: &str = "the KV source failed: ";

/// A pull's failure as the Decode RPC reports it: source trouble is [`KV_SOURCE_LOST`];
/// a puller that cannot pull at all (bad address, layout mismatch) stays as it is.
fn source_lost(s: Status) -> Status {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => s,
        code => Status::data_loss(format!("{KV_SOURCE_LOST}{code:?}: {}", s.message())),
    }
}

/// Counts a pull in progress for as long as it lives (a cancelled Decode included).
struct Pulling<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Pulling<'a> {
    fn start(n: &'a std::sync::atomic::AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Pulling(n)
    }
}

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pulls `blocks` of `request_id` from the worker at `addr` (over TLS with `tls`): one
/// buffer per TP rank.
pub async fn pull(
    addr: &str,
    request_id: &str,
    blocks: Vec<u32>,
    layout: proto::KvLayout,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Vec<Vec<u8>>, Status> {
    let unreachable = |e: tonic::transport::Error| {
        Status::unavailable(format!("cannot reach the prefill worker at {addr}: {e}"))
    };
    let channel = crate::server::tls::endpoint(addr, tls)
        .map_err(|e| Status::invalid_argument(format!("bad source address {addr}: {e}")))?
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES))
        .connect()
        .await
        .map_err(unreachable)?;
    let mut c = proto::worker_client::WorkerClient::new(channel);
    let n = blocks.len();
    let tp = layout.tp_size.max(1) as usize;
    let expect = n * layout.num_layers as usize * layout.block_bytes as usize;
    let req = proto::PullKvRequest {
        request_id: request_id.to_string(),
        block_ids: blocks,
        // The source compares shapes; it needs no NIXL metadata.
        layout: Some(proto::KvLayout {
            nixl: None,
            ..layout
        }),
    };
    let mut stream = c.pull_kv(req).await?.into_inner();
    // Not `vec![Vec::with_capacity(expect); tp]`: clones of an empty Vec drop the capacity.
    let mut shards: Vec<Vec<u8>> = (0..tp).map(|_| Vec::with_capacity(expect)).collect();
    while let Some(chunk) = stream.message().await? {
        let shard = shards
            .get_mut(chunk.rank as usize)
            .ok_or_else(|| Status::data_loss(format!("chunk for rank {} of {tp}", chunk.rank)))?;
        shard.extend_from_slice(&chunk.data);
    }
    if let Some((r, s)) = shards.iter().enumerate().find(|(_, s)| s.len() != expect) {
        return Err(Status::data_loss(format!(
            "rank {r} sent {} bytes of KV, expected {expect}",
            s.len()
        )));
    }
    Ok(shards)
}
