//! Prefill/decode disaggregation on the worker: the Prefill and Decode RPCs and the transfer
//! service's RPCs (layout handshake, release, digests). The decode side pulls the held blocks
//! through a [`KvTransport`] (transfer/), then asks the source to release them: the
//! answer says whether they were still held throughout, and so whether the bytes are theirs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tonic::Status;
use tonic::transport::Channel;

use super::service::{RpcStream, WorkerService, status_of};
use crate::engine::{self, EngineHandle, FinishReason, RequestId, validate_request};
use crate::transfer::{
    HeldKv, KvSource, KvTransport, PullError, Reservation, TransferCounters, layout_mismatch,
};
use crate::wire::KV_SOURCE_LOST;
use crate::wire::convert::{WorkerClock, response_of, sampling_from_proto};
use crate::wire::proto;
use crate::wire::proto::worker_client::WorkerClient;

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
        let received = crate::timeline::now_ns();
        let sampling = r
            .sampling
            .ok_or_else(|| Status::invalid_argument("sampling parameters are required"))?;
        let mut params = sampling_from_proto(sampling);
        let wanted = params.max_tokens;
        params.max_tokens = 1;
        let (id, _live) = self.register(&r.request_id)?;
        let queued = crate::timeline::now_ns();
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
            let blocks = last.held_blocks.clone().unwrap_or_default();
            let mut held = self
                .held
                .lock()
                .map_err(|_| Status::internal("lock poisoned"))?;
            // Forget holds that expired unpulled.
            let holds = self.engine.holds();
            held.retain(|_, h| holds.contains(h.id));
            held.insert(
                r.request_id.clone(),
                HeldKv {
                    id,
                    blocks: blocks.clone(),
                },
            );
            blocks
        } else {
            blocking(&self.engine, move |e| e.release_held(id)).await?;
            Vec::new()
        };
        let timeline = r.timeline.then(|| {
            WorkerClock {
                received,
                queued,
                kv_pull: None,
            }
            .to_proto(&last.steps)
        });
        let resp = response_of(last);
        crate::engine::hooks::spin(self.token_cpu);
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
            sent_ns: if r.timeline {
                crate::timeline::now_ns()
            } else {
                0
            },
            timeline,
        })
    }

    /// Decode: reserve, pull, release at the source, then stream the rest.
    pub(super) async fn do_decode(
        &self,
        d: proto::DecodeRequest,
    ) -> Result<RpcStream<proto::GenerateResponse>, Status> {
        let received = crate::timeline::now_ns();
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
        // From here the reservation goes back to the pool on any exit, this future dropped
        // (the client gone) included, unless the request is committed.
        let reserved = Reserved {
            engine: self.engine.clone(),
            id,
            committed: false,
        };
        if local.len() != d.source_block_ids.len() {
            return Err(Status::invalid_argument(format!(
                "{} source blocks for a {n}-token prompt ({} blocks here)",
                d.source_block_ids.len(),
                local.len()
            )));
        }
        let (addr, rid) = (d.source_addr.clone(), r.request_id.clone());
        let timed = r.timeline;
        let peer = self.peer(&addr)?;
        let pull_start = crate::timeline::now_ns();
        let pulled = async {
            let layout = self
                .source_layout(&addr, &d.source_engine_id, peer.clone())
                .await
                .map_err(source_lost)?;
            if let Some(why) = layout_mismatch(&layout, &self.layout) {
                return Err(Status::failed_precondition(why));
            }
            let started = Instant::now();
            let _pulling = Pulling::start(&self.transfers.in_flight);
            let (transports, counters) = (self.transports.clone(), self.transfers.clone());
            let (a, i, src, engine) = (
                addr.clone(),
                rid.clone(),
                d.source_block_ids.clone(),
                self.engine.clone(),
            );
            // A pull blocks its thread and ends within its timeout; the reservation travels
            // with it, so that a dropped Decode frees it only once nothing writes there.
            let (reserved, pulled) = tokio::task::spawn_blocking(move || {
                let source = KvSource {
                    addr: &a,
                    layout: &layout,
                    request_id: &i,
                    blocks: &src,
                };
                let into = Reservation {
                    engine: &engine,
                    id,
                    blocks: &local,
                };
                (
                    reserved,
                    pull_through(&transports, &source, &into, &counters),
                )
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            let (transport, bytes) = pulled.map_err(|e| match e {
                PullError::Refused(m) => Status::failed_precondition(m),
                PullError::Lost(m) => Status::data_loss(format!("{KV_SOURCE_LOST}{m}")),
            })?;
            let t = &self.transfers;
            t.pulls.fetch_add(1, Ordering::Relaxed);
            t.pulled_bytes.fetch_add(bytes, Ordering::Relaxed);
            t.pull_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            if transport == "nixl" {
                t.nixl_pulls.fetch_add(1, Ordering::Relaxed);
            }
            if self.verify {
                self.verify_pull(peer.clone(), &rid, &d.source_block_ids, id)
                    .await?;
            }
            Ok(reserved)
        };
        let reserved = match pulled.await {
            Ok(r) => r,
            Err(s) => {
                // The source frees its copy now rather than at its hold's timeout.
                let mut p = peer;
                tokio::spawn(async move {
                    let _ = p
                        .release_kv(proto::ReleaseKvRequest { request_id: rid })
                        .await;
                });
                return Err(s);
            }
        };
        // The source frees its copy; its answer says whether the blocks were held until now,
        // and so whether what was read is this prompt's KV.
        let released = peer
            .clone()
            .release_kv(proto::ReleaseKvRequest { request_id: rid })
            .await
            .map(|r| r.into_inner().released);
        match released {
            Ok(true) => {}
            Ok(false) => {
                return Err(Status::data_loss(format!(
                    "{KV_SOURCE_LOST}the hold at {addr} ended before the pull completed"
                )));
            }
            Err(s) => {
                return Err(Status::data_loss(format!(
                    "{KV_SOURCE_LOST}the release at {addr} failed, so the pull cannot be \
                     trusted: {}",
                    s.message()
                )));
            }
        }
        reserved.commit();
        let pull_end = crate::timeline::now_ns();
        let outputs = self
            .engine
            .commit_prefilled(request, d.first_token)
            .map_err(status_of)?;
        let clock = timed.then_some(WorkerClock {
            received,
            queued: pull_end,
            kv_pull: Some((pull_start, pull_end)),
        });
        Ok(self.responses(outputs, live, clock))
    }

    /// A client of the worker at `addr` (connecting on first use, and again after a failure),
    /// whose calls give up after the transfer timeout.
    fn peer(&self, addr: &str) -> Result<WorkerClient<Channel>, Status> {
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?;
        if let Some(c) = peers.get(addr) {
            return Ok(WorkerClient::new(c.clone()));
        }
        let channel = crate::wire::tls::endpoint(addr, self.peer_tls.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad source address {addr}: {e}")))?
            .connect_timeout(self.transfer_timeout)
            .timeout(self.transfer_timeout)
            .connect_lazy();
        peers.insert(addr.to_string(), channel.clone());
        Ok(WorkerClient::new(channel))
    }

    /// The layout of the source at `addr` whose engine is `engine_id`: asked once per source
    /// process (a restarted one has another engine id, and is asked again).
    async fn source_layout(
        &self,
        addr: &str,
        engine_id: &str,
        mut peer: WorkerClient<Channel>,
    ) -> Result<proto::KvLayout, Status> {
        let known = self
            .layouts
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?
            .get(addr)
            .filter(|l| !engine_id.is_empty() && l.engine_id == engine_id)
            .cloned();
        if let Some(l) = known {
            return Ok(l);
        }
        let layout = peer
            .get_kv_layout(proto::KvLayoutRequest {})
            .await?
            .into_inner();
        if let Ok(mut layouts) = self.layouts.lock() {
            layouts.insert(addr.to_string(), layout.clone());
        }
        Ok(layout)
    }

    /// Checks the reservation against the source's digests of the blocks it holds.
    async fn verify_pull(
        &self,
        mut peer: WorkerClient<Channel>,
        request_id: &str,
        blocks: &[u32],
        id: RequestId,
    ) -> Result<(), Status> {
        let theirs = peer
            .kv_digest(proto::KvDigestRequest {
                request_id: request_id.to_string(),
                block_ids: blocks.to_vec(),
            })
            .await
            .map_err(source_lost)?
            .into_inner()
            .digests;
        let ours = digests(&blocking(&self.engine, move |e| e.read_reserved(id)).await?);
        if ours != theirs {
            return Err(Status::data_loss(format!(
                "{KV_SOURCE_LOST}the pulled KV differs from the source's (digests {ours:x?} \
                 here, {theirs:x?} there)"
            )));
        }
        self.transfers.verified.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// KvDigest: per-rank digests of held blocks.
    pub(super) async fn do_kv_digest(
        &self,
        r: proto::KvDigestRequest,
    ) -> Result<proto::KvDigestResponse, Status> {
        let held = self
            .held
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?
            .get(&r.request_id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("no KV is held for request {}", r.request_id))
            })?;
        let blocks = r.block_ids;
        let shards = blocking(&self.engine, move |e| e.read_held(held.id, blocks)).await?;
        Ok(proto::KvDigestResponse {
            digests: digests(&shards),
        })
    }

    /// ReleaseKv: frees a held request's blocks. It answers from the engine's published holds
    /// (a busy engine answers at once) and frees them on the engine thread after.
    pub(super) async fn do_release_kv(
        &self,
        r: proto::ReleaseKvRequest,
    ) -> Result<proto::ReleaseKvResponse, Status> {
        let held = self
            .held
            .lock()
            .map_err(|_| Status::internal("lock poisoned"))?
            .remove(&r.request_id);
        let released = match held {
            Some(h) => {
                let valid = self.engine.holds().contains(h.id);
                let e = self.engine.clone();
                tokio::task::spawn_blocking(move || e.release_held(h.id));
                valid
            }
            None => false,
        };
        self.transfers
            .released
            .fetch_add(u64::from(released), Ordering::Relaxed);
        Ok(proto::ReleaseKvResponse { released })
    }
}

/// What KvDigest answers and `--kv-verify` compares: an xxh3-64 of each rank's bytes.
fn digests(shards: &[Vec<u8>]) -> Vec<u64> {
    shards
        .iter()
        .map(|s| xxhash_rust::xxh3::xxh3_64(s))
        .collect()
}

/// Pulls through the first of `transports` the source offers that succeeds: its name and the
/// bytes moved. A transport that fails leaves the next to try (the blocks stay held at the
/// source until the release); a refusal or loss from the last is the pull's.
fn pull_through(
    transports: &[Arc<dyn KvTransport>],
    source: &KvSource<'_>,
    into: &Reservation<'_>,
    counters: &TransferCounters,
) -> Result<(&'static str, u64), PullError> {
    let offered: Vec<&Arc<dyn KvTransport>> = transports
        .iter()
        .filter(|t| t.offered_by(source.layout))
        .collect();
    let mut last = PullError::Refused(format!(
        "no KV transport of this worker ({}) is offered by the source at {}",
        transports
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        source.addr
    ));
    for (k, t) in offered.iter().enumerate() {
        match t.pull(source, into) {
            Ok(bytes) => return Ok((t.name(), bytes)),
            Err(e) => {
                let next = offered.get(k + 1).map(|n| n.name());
                tracing::warn!(request = source.request_id, transport = t.name(), next, error = %e, "KV pull failed");
                if t.name() == "nixl" && next.is_some() {
                    counters.nixl_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                last = e;
            }
        }
    }
    Err(last)
}

/// A reservation for a pull: cancelled when dropped, unless committed.
struct Reserved {
    engine: Arc<EngineHandle>,
    id: RequestId,
    committed: bool,
}

impl Reserved {
    /// The reservation becomes the request's (commit_prefilled takes it).
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.engine.cancel_reserved(self.id);
        }
    }
}

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
