//! Starting a worker: the engine thread, its KV event hub and publishers, the KV socket (and
//! NIXL), the gRPC service with health, TLS and metrics, and the drain on stop. `tandem
//! worker` (so every worker of `tandem serve`, which runs it as a process) starts here.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::server::TcpIncoming;

use super::kv_hub::KvEventHub;
use super::service::WorkerService;
use super::zmq_events::ZmqPublisher;
use crate::backend::Backend;
use crate::engine::hooks::{Hooked, Hooks};
use crate::engine::{EngineHandle, Executor};
use crate::kv::EventDetail;
use crate::loader::LoadedModel;
use crate::wire::proto::{KvLayout, ModelInfoResponse, worker_server::WorkerServer};
use crate::wire::tls::TlsFiles;

/// Everything a worker is started with besides its model (the flags of `tandem worker`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The model's name, as ModelInfo reports it.
    pub model_name: String,
    /// Tensor-parallel ranks of the loaded model.
    pub tp: usize,
    /// The worker's role in a deployment (reported by ModelInfo; every role serves every RPC).
    pub role: Role,
    /// Address to listen on.
    pub host: String,
    /// gRPC port (0: any free port; the chosen address is printed on stdout).
    pub port: u16,
    /// Port of the KV socket (0: any free port).
    pub kv_port: u16,
    /// Address decode workers use to pull KV from this one (default: the bound address).
    pub advertise_addr: Option<String>,
    /// How this worker pulls KV from prefill workers.
    pub kv_transport: KvTransportKind,
    /// Parameters of NIXL's UCX backend over the plugin's defaults.
    pub nixl_ucx_params: Vec<(String, String)>,
    /// How long a KV transfer, or a call to its source, may make no progress.
    pub kv_transfer_timeout: Duration,
    /// Check every KV pull against the source's digests.
    pub kv_verify: bool,
    /// Also publish KV events over ZMQ in vLLM's format at this endpoint.
    pub kv_events_endpoint: Option<String>,
    /// ZMQ topic of the KV events.
    pub kv_events_topic: String,
    /// TLS of the gRPC and the KV socket (all fields None: plain TCP).
    pub tls: TlsFiles,
    /// Accept only clients with a certificate signed by `tls.ca`.
    pub tls_require_client_cert: bool,
    /// Serve Prometheus metrics (GET /metrics) on this port (0: any free port).
    pub metrics_port: Option<u16>,
    /// On stop: how long running requests (and pending KV pulls) get to finish before they
    /// are aborted.
    pub shutdown_timeout: Duration,
    /// Test hooks (scripted outputs, step delays, failed onboards).
    pub hooks: Hooks,
}

/// Roles of a worker.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Role {
    /// Prefill and decode in one worker.
    Agg,
    /// Computes prompts and holds their KV for decode workers.
    Prefill,
    /// Pulls prompt KV and decodes.
    Decode,
}

/// How KV moves between workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvTransportKind {
    /// The workers' own KV socket.
    Tcp,
    /// NVIDIA NIXL (cargo feature `nixl`, its runtime on LD_LIBRARY_PATH).
    Nixl,
}

/// The KV dtype name for `block_bytes` bytes per block of `elems` values (K and V).
fn kv_dtype(block_bytes: usize, elems: usize) -> &'static str {
    if block_bytes == 2 * elems {
        "bf16"
    } else {
        "f32"
    }
}

/// The KV layout of a loaded model: what transfer handshakes compare.
pub(crate) fn kv_layout<B: Backend>(loaded: &LoadedModel<B>, tp: usize) -> KvLayout {
    let cfg = loaded.engine.config();
    let model_cfg = &loaded.config;
    let kv_heads = model_cfg.num_key_value_heads / tp.max(1);
    let block_bytes = loaded.engine.executor().kv_block_bytes();
    KvLayout {
        num_layers: model_cfg.num_hidden_layers as u32,
        kv_heads_per_rank: kv_heads as u32,
        head_dim: model_cfg.head_dim as u32,
        block_size: cfg.block_size as u32,
        // What the backend stores: f32 on the CPU, bf16 on the GPU.
        dtype: kv_dtype(
            block_bytes,
            2 * cfg.block_size * kv_heads * model_cfg.head_dim,
        )
        .into(),
        tp_size: tp as u32,
        block_bytes: block_bytes as u64,
        engine_id: format!("{:016x}", rand::random::<u64>()),
        nixl: None,
        kv_port: 0,
    }
}

/// Runs a worker over a loaded model until `shutdown` resolves (the CLI passes SIGTERM and
/// Ctrl-C), then drains it: `tandem worker` and every worker of `tandem serve` start here.
pub fn run<B: Backend>(
    cfg: WorkerConfig,
    mut loaded: LoadedModel<B>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let transfer_timeout = cfg.kv_transfer_timeout;
    let hub = Arc::new(KvEventHub::new());
    let (tx, rx) = std::sync::mpsc::channel();
    loaded.engine.set_event_sink(tx, EventDetail::Full);
    {
        let hub = hub.clone();
        std::thread::Builder::new()
            .name("kv-events".into())
            .spawn(move || {
                // One batch per wake-up: everything the engine sent since the last one.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    hub.publish(batch);
                }
            })?;
    }
    let engine_cfg = loaded.engine.config().clone();
    let layout = kv_layout(&loaded, cfg.tp);
    let info = ModelInfoResponse {
        model: cfg.model_name.clone(),
        block_size: engine_cfg.block_size as u32,
        max_model_len: engine_cfg.max_model_len as u32,
        total_blocks: engine_cfg.num_blocks as u64,
        tp_size: cfg.tp as u32,
        vocab_size: engine_cfg.vocab_size as u32,
        role: match cfg.role {
            Role::Agg => "agg",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
        .into(),
        max_num_seqs: engine_cfg.max_num_seqs as u32,
        max_num_batched_tokens: engine_cfg.max_num_batched_tokens as u32,
    };
    let hooks = cfg.hooks.clone();
    let memory = loaded.engine.executor().kv_memory();
    let core = loaded.engine.map_executor(|e| Hooked::new(e, hooks));
    let engine = Arc::new(EngineHandle::spawn(core)?);
    let nixl = match cfg.kv_transport {
        KvTransportKind::Tcp => None,
        KvTransportKind::Nixl => Some(Arc::new(crate::transfer::nixl::NixlKv::open(
            &memory,
            engine.clone(),
            &layout.engine_id,
            transfer_timeout,
            &cfg.nixl_ucx_params,
        )?)),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if let Some(endpoint) = &cfg.kv_events_endpoint {
            let publisher = ZmqPublisher::bind(endpoint).await?;
            tokio::spawn(publisher.run(hub.clone(), cfg.kv_events_topic.clone()));
        }
        let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .with_context(|| format!("binding {}:{}", cfg.host, cfg.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "tandem worker listening on {addr}")?;
        out.flush()?;
        let (health, reporter) = super::health::health_service(engine.clone());
        let service = WorkerService::new(
            engine.clone(),
            hub.clone(),
            info,
            layout,
            cfg.advertise_addr
                .clone()
                .unwrap_or_else(|| addr.to_string()),
        );
        let tls = &cfg.tls;
        let kv_listener = std::net::TcpListener::bind((cfg.host.as_str(), cfg.kv_port))
            .with_context(|| format!("binding the KV port {}:{}", cfg.host, cfg.kv_port))?;
        let service = service
            .with_peer_tls(tls.client()?)
            .with_kv_socket(
                kv_listener,
                memory,
                tls,
                cfg.tls_require_client_cert,
                transfer_timeout,
            )?
            .with_kv_verify(cfg.kv_verify)
            .with_token_cpu(cfg.hooks.token_cpu);
        let service = match nixl {
            Some(n) => service.with_nixl(n),
            None => service,
        };
        let draining = service.drain_flag();
        if let Some(port) = cfg.metrics_port {
            let view = service.metrics_view();
            let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), port))
                .await
                .with_context(|| format!("binding the metrics port {}:{port}", cfg.host))?;
            writeln!(out, "tandem worker metrics on {}", listener.local_addr()?)?;
            out.flush()?;
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let view = view.clone();
                    async move { view.render() }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            });
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(cfg) = tls.server(cfg.tls_require_client_cert)? {
            builder = builder.tls_config(cfg).context("TLS settings")?;
        }
        let server = builder
            .add_service(health)
            .add_service(WorkerServer::new(service))
            // No Nagle: a token is a few bytes, and a delayed ACK would hold the next one.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => return r.context("serving"),
            _ = shutdown => {}
        }
        // Drain: refuse new work (the frontend routes around a worker whose Health says not
        // ready), let running requests and pending KV pulls finish within the timeout, abort
        // the rest, end the event streams, then stop serving.
        tracing::info!(
            timeout_s = cfg.shutdown_timeout.as_secs_f64(),
            "shutting down: draining"
        );
        draining.store(true, std::sync::atomic::Ordering::Release);
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let deadline = tokio::time::Instant::now() + cfg.shutdown_timeout;
        let mut server_done = false;
        while !engine.stats().is_ok_and(|s| s.is_idle()) && tokio::time::Instant::now() < deadline {
            tokio::select! {
                r = &mut server => { r.context("serving")?; server_done = true; break; }
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
        let aborted = engine.abort_all().unwrap_or(0);
        if aborted > 0 {
            tracing::warn!(
                aborted,
                "shutdown timeout: aborted the requests still running"
            );
        }
        hub.close();
        let _ = stop.send(());
        if !server_done
            && tokio::time::timeout(std::time::Duration::from_secs(2), &mut server)
                .await
                .is_err()
        {
            tracing::warn!("connections still open after the drain: closing them");
        }
        tracing::info!("worker stopped");
        Ok(())
    })
}
