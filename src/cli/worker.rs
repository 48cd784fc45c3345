//! `tandem worker`: one engine behind the gRPC worker service.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tonic::transport::server::TcpIncoming;

use super::ModelArgs;
use crate::backend::Backend;
use crate::engine::hooks::{Hooked, Hooks};
use crate::engine::{EngineHandle, Executor};
use crate::loader::{DeviceKind, LoadedModel, load_cpu, load_cuda};
use crate::server::kv_hub::KvEventHub;
use crate::server::proto::{KvLayout, ModelInfoResponse, worker_server::WorkerServer};
use crate::server::tls::TlsFiles;
use crate::server::worker::WorkerService;
use crate::server::zmq_events::ZmqPublisher;

/// Arguments of `tandem worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// How a decode worker pulls KV from prefill workers: tcp (the workers' KV socket,
    /// always there) or nixl (NVIDIA NIXL reads in place, when both sides offer it; TCP
    /// otherwise, and when a NIXL read fails).
    #[arg(long, value_enum, default_value = "tcp")]
    pub kv_transport: KvTransportKind,
    /// Port of the KV socket that serves this worker's held KV to decode workers (0: any
    /// free port; the layout handshake tells pullers which).
    #[arg(long, default_value_t = 0)]
    kv_port: u16,
    /// Seconds a KV transfer, or a call to its source, may make no progress before it is
    /// given up (its blocks are then freed on both sides).
    #[arg(long, default_value_t = 30.0)]
    kv_transfer_timeout: f64,
    /// A parameter of NIXL's UCX backend, KEY=VALUE, over the plugin's defaults (repeatable;
    /// e.g. ucx_error_handling_mode=none, which UCX_TLS=shm needs).
    #[arg(long = "nixl-ucx-param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    nixl_ucx_params: Vec<(String, String)>,
    /// Check every KV pull byte for byte against the source's digests (reads both copies
    /// once more: a debugging aid).
    #[arg(long)]
    kv_verify: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// gRPC port (0: any free port; the chosen address is printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also publish KV events over ZMQ in vLLM's format, e.g. tcp://*:5557.
    #[arg(long)]
    kv_events_endpoint: Option<String>,
    /// ZMQ topic of the KV events.
    #[arg(long, default_value = "")]
    kv_events_topic: String,
    /// The worker's role in a deployment (reported by ModelInfo; every role serves every RPC).
    #[arg(long, value_enum, default_value = "agg")]
    role: Role,
    /// Address decode workers use to pull KV from this one (default: the bound address).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Serve gRPC over TLS with this PEM certificate (and --tls-key); also the client
    /// certificate this worker presents to the prefill workers it pulls from.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA of the other workers' certificates (pulls go over TLS when given), and of
    /// clients' with --tls-require-client-cert.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name peer workers' certificates carry (default: the host of their address).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Accept only clients with a certificate signed by --tls-ca (mutual TLS).
    #[arg(long, requires = "tls_ca")]
    tls_require_client_cert: bool,
    /// Serve Prometheus metrics (GET /metrics) on this port (0: any free port).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// On SIGTERM: seconds running requests (and pending KV pulls) get to finish before they
    /// are aborted and the worker exits.
    #[arg(long, default_value_t = 20.0)]
    shutdown_timeout: f64,
}

/// A KEY=VALUE flag value.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
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

/// The KV dtype name for `block_bytes` bytes per block of `elems` values (K and V).
fn kv_dtype(block_bytes: usize, elems: usize) -> &'static str {
    if block_bytes == 2 * elems {
        "bf16"
    } else {
        "f32"
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs `tandem worker` until it is stopped.
pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    args.model.pin_cpus()?;
    let spec = args.model.spec(false)?;
    match spec.device {
        DeviceKind::Cpu => serve(args, load_cpu(&spec).context("loading the model")?),
        DeviceKind::Cuda => serve(args, load_cuda(&spec).context("loading the model")?),
    }
}

/// The test hooks the hidden `--debug-*` flags ask for.
fn hooks_of<B: Backend>(args: &ModelArgs, loaded: &LoadedModel<B>) -> anyhow::Result<Hooks> {
    let script = match &args.debug_output_text {
        None => None,
        Some(text) => {
            let tok = loaded
                .tokenizer
                .as_ref()
                .context("--debug-output-text needs the model's tokenizer")?;
            let mut ids = tok.encode(text)?;
            let eos = loaded
                .generation
                .eos_token_ids
                .first()
                .or(loaded.config.eos_token_ids.first())
                .context("--debug-output-text needs an EOS token to end on")?;
            ids.push(*eos);
            Some(ids)
        }
    };
    Ok(Hooks {
        script,
        step_delay: std::time::Duration::from_millis(args.debug_step_delay_ms),
        failed_onboards: args.debug_fail_onboards,
    })
}

/// How KV moves between workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvTransportKind {
    /// The workers' own KV socket.
    Tcp,
    /// NVIDIA NIXL (cargo feature `nixl`, its runtime on LD_LIBRARY_PATH).
    Nixl,
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

fn serve<B: Backend>(args: WorkerArgs, mut loaded: LoadedModel<B>) -> anyhow::Result<()> {
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        anyhow::bail!("--shutdown-timeout must be a number of seconds");
    }
    if !(args.kv_transfer_timeout.is_finite() && args.kv_transfer_timeout > 0.0) {
        anyhow::bail!("--kv-transfer-timeout must be a positive number of seconds");
    }
    let transfer_timeout = std::time::Duration::from_secs_f64(args.kv_transfer_timeout);
    let hub = Arc::new(KvEventHub::new());
    let (tx, rx) = std::sync::mpsc::channel();
    loaded.engine.set_event_sink(tx);
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
    let cfg = loaded.engine.config().clone();
    let layout = kv_layout(&loaded, args.model.tp);
    let info = ModelInfoResponse {
        model: args.model.model_name(),
        block_size: cfg.block_size as u32,
        max_model_len: cfg.max_model_len as u32,
        total_blocks: cfg.num_blocks as u64,
        tp_size: args.model.tp as u32,
        vocab_size: cfg.vocab_size as u32,
        role: match args.role {
            Role::Agg => "agg",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
        .into(),
    };
    let hooks = hooks_of(&args.model, &loaded)?;
    let memory = loaded.engine.executor().kv_memory();
    let core = loaded.engine.map_executor(|e| Hooked::new(e, hooks));
    let engine = Arc::new(EngineHandle::spawn(core)?);
    let nixl = match args.kv_transport {
        KvTransportKind::Tcp => None,
        KvTransportKind::Nixl => Some(Arc::new(crate::server::nixl::NixlKv::open(
            &memory,
            engine.clone(),
            &layout.engine_id,
            transfer_timeout,
            &args.nixl_ucx_params,
        )?)),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if let Some(endpoint) = &args.kv_events_endpoint {
            let publisher = ZmqPublisher::bind(endpoint).await?;
            tokio::spawn(publisher.run(hub.clone(), args.kv_events_topic.clone()));
        }
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "tandem worker listening on {addr}")?;
        out.flush()?;
        let (health, reporter) = crate::server::health::health_service(engine.clone());
        let service = WorkerService::new(
            engine.clone(),
            hub.clone(),
            info,
            layout,
            args.advertise_addr
                .clone()
                .unwrap_or_else(|| addr.to_string()),
        );
        let tls = TlsFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            ca: args.tls_ca.clone(),
            domain: args.tls_domain.clone(),
        };
        let kv_listener = std::net::TcpListener::bind((args.host.as_str(), args.kv_port))
            .with_context(|| format!("binding the KV port {}:{}", args.host, args.kv_port))?;
        let service = service
            .with_peer_tls(tls.client()?)
            .with_kv_socket(
                kv_listener,
                memory,
                &tls,
                args.tls_require_client_cert,
                transfer_timeout,
            )?
            .with_kv_verify(args.kv_verify);
        let service = match nixl {
            Some(n) => service.with_nixl(n),
            None => service,
        };
        let draining = service.drain_flag();
        if let Some(port) = args.metrics_port {
            let view = service.metrics_view();
            let listener = tokio::net::TcpListener::bind((args.host.as_str(), port))
                .await
                .with_context(|| format!("binding the metrics port {}:{port}", args.host))?;
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
        if let Some(cfg) = tls.server(args.tls_require_client_cert)? {
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
            _ = shutdown_signal() => {}
        }
        // Drain: refuse new work (the frontend routes around a worker whose Health says not
        // ready), let running requests and pending KV pulls finish within the timeout, abort
        // the rest, end the event streams, then stop serving.
        tracing::info!(timeout_s = args.shutdown_timeout, "shutting down: draining");
        draining.store(true, std::sync::atomic::Ordering::Release);
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_secs_f64(args.shutdown_timeout);
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
