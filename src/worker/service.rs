//! The worker's gRPC service over an engine thread: generation, load and cache control,
//! KV event streams, draining; the disaggregation RPCs are in disagg.rs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::kv_hub::{EventBatch, KvEventHub};
use super::metrics::WorkerMetrics;
use crate::backend::KvMemory;
use crate::engine::{self, EngineHandle, RequestId};
use crate::error::Error;
use crate::kv::KvEvent;
use crate::transfer::socket::{KvSocket, TcpKv};
use crate::transfer::{DEFAULT_TRANSFER_TIMEOUT, HeldMap, KvTransport, TransferCounters};
use crate::wire::convert::{WorkerClock, response_of, sampling_from_proto};
use crate::wire::proto::{self, worker_server::Worker};

/// A server-streaming RPC's response stream.
pub type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Maps an engine error to the gRPC status a client should see.
pub fn status_of(e: Error) -> Status {
    match e {
        Error::InvalidRequest(_) | Error::InvalidSampling(_) => {
            Status::invalid_argument(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// The gRPC form of a KV event batch.
pub fn batch_to_proto(b: &EventBatch) -> proto::KvEventBatch {
    use proto::kv_event::Event;
    let events = b
        .events
        .iter()
        .map(|e| proto::KvEvent {
            event: Some(match e {
                KvEvent::BlockStored {
                    block_hashes,
                    parent_block_hash,
                    token_ids,
                    block_size,
                    medium,
                } => Event::Stored(proto::BlockStored {
                    block_hashes: block_hashes.clone(),
                    parent_block_hash: *parent_block_hash,
                    token_ids: token_ids.clone(),
                    block_size: *block_size as u32,
                    medium: medium.as_str().into(),
                }),
                KvEvent::BlockRemoved {
                    block_hashes,
                    medium,
                } => Event::Removed(proto::BlockRemoved {
                    block_hashes: block_hashes.clone(),
                    medium: medium.as_str().into(),
                }),
                KvEvent::AllBlocksCleared => Event::Cleared(proto::AllBlocksCleared {}),
            }),
        })
        .collect();
    proto::KvEventBatch {
        sequence: b.sequence,
        timestamp: b.timestamp,
        events,
        snapshot: b.snapshot,
    }
}

/// Forgets a request id when its stream ends, however it ends.
pub(super) struct LiveId {
    ids: Arc<Mutex<HashMap<String, RequestId>>>,
    key: String,
}

impl Drop for LiveId {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&self.key);
        }
    }
}

/// What a worker's /metrics shows: its engine's stats, its transfers, its requests' timing.
#[derive(Clone)]
pub struct MetricsView {
    engine: Arc<EngineHandle>,
    transfers: Arc<TransferCounters>,
    metrics: Arc<WorkerMetrics>,
}

impl MetricsView {
    /// The Prometheus text of the worker now.
    pub fn render(&self) -> String {
        let stats = self.engine.stats().unwrap_or_default();
        self.metrics.render(&stats, &self.transfers.totals())
    }
}

/// The gRPC face of one worker.
pub struct WorkerService {
    pub(super) engine: Arc<EngineHandle>,
    hub: Arc<KvEventHub>,
    info: proto::ModelInfoResponse,
    /// This worker's KV cache layout, for transfer handshakes.
    pub(super) layout: proto::KvLayout,
    /// Where decode workers reach this worker's transfer service.
    pub(super) transfer_addr: String,
    ids: Arc<Mutex<HashMap<String, RequestId>>>,
    /// Finished prefill requests whose blocks are held, by request id (shared with the KV
    /// socket that serves them).
    pub(super) held: HeldMap,
    pub(super) transfers: Arc<TransferCounters>,
    pub(super) metrics: Arc<WorkerMetrics>,
    /// Set when the worker shuts down: Health says not ready, new work is refused.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// TLS towards the prefill workers it pulls from (None: plain TCP).
    pub(super) peer_tls: Option<tonic::transport::ClientTlsConfig>,
    /// How this worker pulls KV, in order of preference.
    pub(super) transports: Vec<Arc<dyn KvTransport>>,
    /// Clients of the prefill workers it pulls from, and their layouts, by address.
    pub(super) peers: Mutex<HashMap<String, tonic::transport::Channel>>,
    pub(super) layouts: Mutex<HashMap<String, proto::KvLayout>>,
    /// How long a pull, or a call to its source, may make no progress.
    pub(super) transfer_timeout: Duration,
    /// Check every pull against the source's digests (--kv-verify).
    pub(super) verify: bool,
    /// Test hook: CPU every token sent costs (--debug-token-cpu-us).
    pub(super) token_cpu: Duration,
    next_id: AtomicU64,
}

impl WorkerService {
    /// A service over a running engine and its KV event hub.
    pub fn new(
        engine: Arc<EngineHandle>,
        hub: Arc<KvEventHub>,
        info: proto::ModelInfoResponse,
        layout: proto::KvLayout,
        transfer_addr: String,
    ) -> Self {
        let block_bytes = layout.block_bytes * u64::from(layout.num_layers * layout.tp_size);
        WorkerService {
            engine,
            hub,
            info,
            layout,
            transfer_addr,
            ids: Arc::default(),
            held: HeldMap::default(),
            transfers: Arc::default(),
            metrics: Arc::new(WorkerMetrics::with_block_bytes(block_bytes)),
            draining: Arc::default(),
            peer_tls: None,
            transports: Vec::new(),
            peers: Mutex::default(),
            layouts: Mutex::default(),
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            verify: false,
            token_cpu: Duration::ZERO,
            next_id: AtomicU64::new(1),
        }
    }

    /// Serves this worker's held KV on `listener` (its port goes into the layout) and pulls
    /// over the same kind of socket from others, in `memory` (the engine's cache, where the
    /// backend exposes it), with TLS as the gRPC has it; no transfer waits longer than
    /// `timeout` without progress.
    pub fn with_kv_socket(
        mut self,
        listener: std::net::TcpListener,
        memory: Vec<Vec<KvMemory>>,
        tls: &crate::wire::tls::TlsFiles,
        require_client_cert: bool,
        timeout: Duration,
    ) -> crate::Result<Self> {
        let io = |e| crate::error::Error::io("the KV socket", e);
        let port = listener.local_addr().map_err(io)?.port();
        self.layout.kv_port = u32::from(port);
        self.transfer_timeout = timeout;
        let socket = KvSocket {
            layout: proto::KvLayout {
                nixl: None,
                ..self.layout.clone()
            },
            held: self.held.clone(),
            engine: self.engine.clone(),
            memory: memory.clone(),
            tls: crate::wire::tls::kv::server(tls, require_client_cert)?,
            timeout,
            counters: self.transfers.clone(),
        };
        socket.spawn(listener).map_err(io)?;
        let tcp = TcpKv::new(
            self.layout.clone(),
            memory,
            crate::wire::tls::kv::client(tls)?,
            timeout,
        );
        self.transports.push(Arc::new(tcp));
        Ok(self)
    }

    /// Moves KV through `nixl` first: the layout handshake offers it, and pulls use it when
    /// the source offers it too (the KV socket otherwise, and when a NIXL read fails).
    pub fn with_nixl(mut self, nixl: Arc<crate::transfer::nixl::NixlKv>) -> Self {
        self.layout.nixl = Some(nixl.peer());
        self.transports.insert(0, nixl);
        self
    }

    /// Checks every pull byte for byte against the source's digests (a debugging aid: it
    /// reads both copies once more).
    pub fn with_kv_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Test hook: every token sent costs this much CPU on the sending thread.
    pub fn with_token_cpu(mut self, cpu: Duration) -> Self {
        self.token_cpu = cpu;
        self
    }

    /// Pulls KV from peers over TLS with `tls`.
    pub fn with_peer_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        self.peer_tls = tls;
        self
    }

    /// What its /metrics endpoint shows.
    pub fn metrics_view(&self) -> MetricsView {
        MetricsView {
            engine: self.engine.clone(),
            transfers: self.transfers.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The gRPC responses of an engine output stream, each finished request's timing recorded.
    /// With `clock` (the request asked for its timeline), each response says when it left,
    /// and the last one what the worker saw of the request.
    pub(super) fn responses(
        &self,
        outputs: crate::engine::OutputStream,
        live: LiveId,
        clock: Option<WorkerClock>,
    ) -> RpcStream<proto::GenerateResponse> {
        let metrics = self.metrics.clone();
        let token_cpu = self.token_cpu;
        let stream = UnboundedReceiverStream::new(outputs).map(move |item| {
            let _ = &live;
            crate::engine::hooks::spin(token_cpu);
            if let Ok(o) = &item
                && let Some(t) = &o.timing
            {
                metrics.observe(t);
            }
            let o = item.map_err(status_of)?;
            let timeline = clock
                .filter(|_| o.finish.is_some())
                .map(|c| c.to_proto(&o.steps));
            let mut r = response_of(o);
            if clock.is_some() {
                r.sent_ns = crate::timeline::now_ns();
                r.timeline = timeline;
            }
            Ok(r)
        });
        Box::pin(stream)
    }

    /// The flag that, once set, drains this worker (shared with its shutdown).
    pub fn drain_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }

    /// Refuses new work while the worker drains: the frontend takes the worker out of its
    /// pool on UNAVAILABLE and sends the request elsewhere.
    pub(super) fn check_serving(&self) -> Result<(), Status> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Status::unavailable("the worker is shutting down"));
        }
        Ok(())
    }

    /// Gives a client's request id an engine id, refusing ids that are live.
    pub(super) fn register(&self, request_id: &str) -> Result<(RequestId, LiveId), Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| Status::internal("id map poisoned"))?;
        if ids.contains_key(request_id) {
            return Err(Status::already_exists(format!(
                "request {request_id} is already running"
            )));
        }
        ids.insert(request_id.to_string(), id);
        Ok((
            id,
            LiveId {
                ids: self.ids.clone(),
                key: request_id.to_string(),
            },
        ))
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type GenerateStream = RpcStream<proto::GenerateResponse>;
    type SubscribeKvEventsStream = RpcStream<proto::KvEventBatch>;

    async fn generate(
        &self,
        req: Request<proto::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        self.check_serving()?;
        let received = crate::timeline::now_ns();
        let r = req.into_inner();
        let sampling = r
            .sampling
            .ok_or_else(|| Status::invalid_argument("sampling parameters are required"))?;
        let (id, live) = self.register(&r.request_id)?;
        let request = engine::Request {
            id,
            prompt: r.prompt_token_ids,
            params: sampling_from_proto(sampling),
        };
        // Queued as it is handed to the engine thread, which may start its step at once.
        let queued = crate::timeline::now_ns();
        let outputs = self.engine.submit(request).map_err(status_of)?;
        let clock = r.timeline.then_some(WorkerClock {
            received,
            queued,
            kv_pull: None,
        });
        Ok(Response::new(self.responses(outputs, live, clock)))
    }

    async fn abort(
        &self,
        req: Request<proto::AbortRequest>,
    ) -> Result<Response<proto::AbortResponse>, Status> {
        let id = self
            .ids
            .lock()
            .map_err(|_| Status::internal("id map poisoned"))?
            .get(&req.get_ref().request_id)
            .copied();
        if let Some(id) = id {
            self.engine.abort(id).map_err(status_of)?;
        }
        Ok(Response::new(proto::AbortResponse {
            found: id.is_some(),
        }))
    }

    async fn health(
        &self,
        _: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        // Answered here, never by the engine thread: a busy engine is a live one. The service
        // starts only once the engine has loaded.
        Ok(Response::new(proto::HealthResponse {
            ready: self.engine.is_running() && !self.draining.load(Ordering::Acquire),
        }))
    }

    async fn load(
        &self,
        _: Request<proto::LoadRequest>,
    ) -> Result<Response<proto::LoadResponse>, Status> {
        // The engine's last published stats: a busy engine answers at once.
        let s = self.engine.stats().map_err(status_of)?;
        let t = &self.transfers;
        Ok(Response::new(proto::LoadResponse {
            running: s.running as u32,
            waiting: s.waiting as u32,
            used_blocks: (s.kv.total_blocks - s.kv.free_blocks) as u64,
            total_blocks: s.kv.total_blocks as u64,
            cached_blocks: s.kv.cached_blocks as u64,
            queued_prefill_tokens: s.queued_prefill_tokens as u64,
            aborted_requests: s.aborted,
            generated_tokens: s.generated_tokens,
            kv_pulls: t.pulls.load(Ordering::Relaxed),
            kv_pulled_bytes: t.pulled_bytes.load(Ordering::Relaxed),
            kv_pull_seconds: t.pull_micros.load(Ordering::Relaxed) as f64 / 1e6,
            kv_served_bytes: t.served_bytes.load(Ordering::Relaxed),
            kv_released: t.released.load(Ordering::Relaxed),
            kv_pulls_in_flight: t.in_flight.load(Ordering::Relaxed) as u32,
            kv_pulls_nixl: t.nixl_pulls.load(Ordering::Relaxed),
            kv_nixl_fallbacks: t.nixl_fallbacks.load(Ordering::Relaxed),
            kv_pulls_verified: t.verified.load(Ordering::Relaxed),
        }))
    }

    async fn model_info(
        &self,
        _: Request<proto::ModelInfoRequest>,
    ) -> Result<Response<proto::ModelInfoResponse>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    type DecodeStream = RpcStream<proto::GenerateResponse>;

    async fn prefill(
        &self,
        req: Request<proto::GenerateRequest>,
    ) -> Result<Response<proto::PrefillResponse>, Status> {
        self.check_serving()?;
        self.do_prefill(req.into_inner()).await.map(Response::new)
    }

    async fn decode(
        &self,
        req: Request<proto::DecodeRequest>,
    ) -> Result<Response<Self::DecodeStream>, Status> {
        self.check_serving()?;
        self.do_decode(req.into_inner()).await.map(Response::new)
    }

    async fn get_kv_layout(
        &self,
        _: Request<proto::KvLayoutRequest>,
    ) -> Result<Response<proto::KvLayout>, Status> {
        Ok(Response::new(self.layout.clone()))
    }

    async fn kv_digest(
        &self,
        req: Request<proto::KvDigestRequest>,
    ) -> Result<Response<proto::KvDigestResponse>, Status> {
        self.do_kv_digest(req.into_inner()).await.map(Response::new)
    }

    async fn release_kv(
        &self,
        req: Request<proto::ReleaseKvRequest>,
    ) -> Result<Response<proto::ReleaseKvResponse>, Status> {
        self.do_release_kv(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reset_prefix_cache(
        &self,
        _: Request<proto::ResetPrefixCacheRequest>,
    ) -> Result<Response<proto::ResetPrefixCacheResponse>, Status> {
        let engine = self.engine.clone();
        let reset = tokio::task::spawn_blocking(move || engine.reset_prefix_cache())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status_of)?;
        Ok(Response::new(proto::ResetPrefixCacheResponse { reset }))
    }

    async fn subscribe_kv_events(
        &self,
        req: Request<proto::SubscribeKvEventsRequest>,
    ) -> Result<Response<Self::SubscribeKvEventsStream>, Status> {
        let sub = self.hub.subscribe(req.get_ref().resume_after);
        let initial =
            futures::stream::iter(sub.initial.into_iter().map(|b| Ok(batch_to_proto(&b))));
        let live = futures::stream::unfold(Some(sub.live), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(b) => Some((Ok(batch_to_proto(&b)), Some(rx))),
                Err(RecvError::Lagged(n)) => Some((
                    Err(Status::data_loss(format!(
                        "subscriber fell {n} batches behind: resubscribe"
                    ))),
                    None,
                )),
                Err(RecvError::Closed) => None,
            }
        });
        Ok(Response::new(Box::pin(initial.chain(live))))
    }
}
