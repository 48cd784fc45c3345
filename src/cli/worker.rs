//! `tandem worker`: one engine behind the gRPC worker service.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::ModelArgs;
use crate::backend::Backend;
use crate::engine::hooks::Hooks;
use crate::loader::{DeviceKind, LoadedModel, load_cpu, load_cuda};
use crate::wire::tls::TlsFiles;
use crate::worker::start::{KvTransportKind, Role, WorkerConfig};

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
pub(super) fn hooks_of<B: Backend>(
    args: &ModelArgs,
    loaded: &LoadedModel<B>,
) -> anyhow::Result<Hooks> {
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
        step_cpu: std::time::Duration::from_micros(args.debug_step_cpu_us),
        failed_onboards: args.debug_fail_onboards,
        token_cpu: std::time::Duration::from_micros(args.debug_token_cpu_us),
    })
}

fn serve<B: Backend>(args: WorkerArgs, loaded: LoadedModel<B>) -> anyhow::Result<()> {
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        anyhow::bail!("--shutdown-timeout must be a number of seconds");
    }
    if !(args.kv_transfer_timeout.is_finite() && args.kv_transfer_timeout > 0.0) {
        anyhow::bail!("--kv-transfer-timeout must be a positive number of seconds");
    }
    let cfg = WorkerConfig {
        model_name: args.model.model_name(),
        tp: args.model.tp,
        role: args.role,
        host: args.host,
        port: args.port,
        kv_port: args.kv_port,
        advertise_addr: args.advertise_addr,
        kv_transport: args.kv_transport,
        nixl_ucx_params: args.nixl_ucx_params,
        kv_transfer_timeout: Duration::from_secs_f64(args.kv_transfer_timeout),
        kv_verify: args.kv_verify,
        kv_events_endpoint: args.kv_events_endpoint,
        kv_events_topic: args.kv_events_topic,
        tls: TlsFiles {
            cert: args.tls_cert,
            key: args.tls_key,
            ca: args.tls_ca,
            domain: args.tls_domain,
        },
        tls_require_client_cert: args.tls_require_client_cert,
        metrics_port: args.metrics_port,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        hooks: hooks_of(&args.model, &loaded)?,
    };
    crate::worker::start::run(cfg, loaded, shutdown_signal())
}
