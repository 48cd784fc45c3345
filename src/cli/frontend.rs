//! `tandem frontend` (OpenAI HTTP + router over remote workers) and `tandem serve` (the same,
//! over N local worker processes it starts).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::ModelArgs;
use super::worker::shutdown_signal;
use crate::config::GenerationConfig;
use crate::engine::SamplingParams;
use crate::frontend::chat::ChatTemplate;
use crate::frontend::dispatch::Frontend;
use crate::frontend::http::app;
use crate::frontend::openai::{ApiOptions, Defaults, QueueBounds};
use crate::frontend::reasoning::ReasoningParserKind;
use crate::frontend::tool_calls::ToolParserKind;
use crate::router::pool::Liveness;
use crate::router::{Policy, Router, WorkerPool};
use crate::tokenizer::Tokenizer;
use crate::wire::tls::TlsFiles;
use serde_json::Value;

/// Routing policies on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RouterArg {
    /// Each request to the next healthy worker.
    RoundRobin,
    /// The worker with the most cached prefix and least load.
    Kv,
}

/// HTTP and routing settings shared by `frontend` and `serve`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// HTTP port (0: any free port; the chosen address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Routing policy.
    #[arg(long, value_enum, default_value = "kv")]
    router: RouterArg,
    /// Softmax temperature of the kv policy over worker costs (0: always the cheapest).
    #[arg(long, default_value_t = 0.0)]
    router_temperature: f64,
    /// The kv policy's credit for a prefix block a worker holds in its host KV tier (1 for
    /// one in device memory): onboarding it costs a copy, not a recompute.
    #[arg(long, default_value_t = crate::router::DEFAULT_HOST_BLOCK_WEIGHT)]
    router_host_block_weight: f64,
    /// The kv policy's cost of a prompt block the worker must compute, against 1 for a block
    /// of a request in flight there (NVIDIA Dynamo's overlap_score_weight).
    #[arg(long, default_value_t = crate::router::DEFAULT_OVERLAP_WEIGHT)]
    router_overlap_weight: f64,
    /// Split the model's reasoning out of chat answers (`reasoning_content`).
    #[arg(long, value_enum)]
    reasoning_parser: Option<ReasoningParserKind>,
    /// Parse tool calls out of chat answers when a request has `tools` (tool_choice "auto").
    #[arg(long, value_enum)]
    tool_call_parser: Option<ToolParserKind>,
    /// Accepted for vLLM's command lines: tool_choice "auto" is on with --tool-call-parser.
    #[arg(long, requires = "tool_call_parser")]
    enable_auto_tool_choice: bool,
    /// Every API call must carry `Authorization: Bearer KEY` (/health and /metrics excepted).
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests that may wait for their first token at once (in the workers' queues); past
    /// it a request gets 503 with Retry-After.
    #[arg(long, default_value_t = 4096)]
    max_queued_requests: usize,
    /// Seconds a request may wait for its first token before it gets 503 with Retry-After.
    #[arg(long, default_value_t = 600.0)]
    queue_timeout: f64,
    /// Largest request body accepted (a larger one gets 413).
    #[arg(long, default_value_t = 8 << 20)]
    max_request_body_bytes: usize,
    /// On SIGTERM: seconds requests in flight get to finish before the server exits (and,
    /// for `serve`, what its workers get too).
    #[arg(long, default_value_t = 20.0)]
    shutdown_timeout: f64,
    /// Seconds between health checks (and load polls) of each worker.
    #[arg(long, default_value_t = 0.25)]
    health_check_interval: f64,
    /// Seconds a health check may take before it counts as missed (a busy worker answers
    /// late; a dead one refuses the connection and leaves the pool at once).
    #[arg(long, default_value_t = 1.0)]
    health_check_timeout: f64,
    /// Health checks missed in a row after which a worker leaves the pool.
    #[arg(long, default_value_t = 3)]
    health_check_misses: u32,
    /// PEM CA of the workers' certificates: connect to workers over TLS.
    #[arg(long)]
    worker_tls_ca: Option<PathBuf>,
    /// PEM client certificate to present to workers that require one (with --worker-tls-key).
    #[arg(long, requires = "worker_tls_key")]
    worker_tls_cert: Option<PathBuf>,
    /// PEM private key of --worker-tls-cert.
    #[arg(long, requires = "worker_tls_cert")]
    worker_tls_key: Option<PathBuf>,
    /// The name the workers' certificates carry (default: the host of each address).
    #[arg(long)]
    worker_tls_domain: Option<String>,
    /// Chat template variables every request gets unless it sets its own
    /// (`chat_template_kwargs`); the default answers without thinking, as a JSON object.
    #[arg(long, default_value = r#"{"enable_thinking": false}"#)]
    default_chat_template_kwargs: String,
}

impl HttpArgs {
    /// How the worker pools tell dead workers from busy ones.
    fn liveness(&self) -> anyhow::Result<Liveness> {
        for (name, v) in [
            ("--health-check-interval", self.health_check_interval),
            ("--health-check-timeout", self.health_check_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number of seconds");
            }
        }
        if self.health_check_misses == 0 {
            bail!("--health-check-misses must be at least 1");
        }
        Ok(Liveness {
            interval: std::time::Duration::from_secs_f64(self.health_check_interval),
            timeout: std::time::Duration::from_secs_f64(self.health_check_timeout),
            misses: self.health_check_misses,
        })
    }

    /// The API options these flags and the model's generation config give.
    fn api_options(&self, generation: &GenerationConfig) -> anyhow::Result<ApiOptions> {
        let kwargs: Value = serde_json::from_str(&self.default_chat_template_kwargs)
            .context("--default-chat-template-kwargs is not JSON")?;
        let Value::Object(template_kwargs) = kwargs else {
            bail!("--default-chat-template-kwargs must be a JSON object");
        };
        if !(self.shutdown_timeout.is_finite() && self.shutdown_timeout >= 0.0) {
            bail!("--shutdown-timeout must be a number of seconds");
        }
        if !(self.queue_timeout.is_finite() && self.queue_timeout > 0.0) {
            bail!("--queue-timeout must be a positive number of seconds");
        }
        if self.max_queued_requests == 0 || self.max_request_body_bytes == 0 {
            bail!("--max-queued-requests and --max-request-body-bytes must be positive");
        }
        Ok(ApiOptions {
            defaults: Defaults(SamplingParams::from_generation_config(generation)),
            reasoning: self.reasoning_parser,
            tool_parser: self.tool_call_parser,
            template_kwargs,
            queue: QueueBounds {
                max_queued: self.max_queued_requests,
                timeout: std::time::Duration::from_secs_f64(self.queue_timeout),
            },
            max_body_bytes: self.max_request_body_bytes,
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
        })
    }
}

/// Arguments of `tandem frontend`.
#[derive(Debug, Args)]
pub struct FrontendArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Aggregated workers, comma-separated: host:port, or dns:NAME:PORT for every address NAME
    /// resolves to, re-resolved every 2 s (a Kubernetes headless Service).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prefill_workers",
        conflicts_with = "prefill_workers"
    )]
    workers: Vec<String>,
    /// Prefill workers of a disaggregated deployment, as --workers (needs --decode-workers).
    #[arg(long, value_delimiter = ',', requires = "decode_workers")]
    prefill_workers: Vec<String>,
    /// Decode workers of a disaggregated deployment, as --workers (needs --prefill-workers).
    #[arg(long, value_delimiter = ',', requires = "prefill_workers")]
    decode_workers: Vec<String>,
    /// Model directory to take the tokenizer and chat template from (default: the demo model's).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The model name clients use (default: the model directory's name, or tandem-demo).
    #[arg(long)]
    served_model_name: Option<String>,
}

/// Arguments of `tandem serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    http: HttpArgs,
    /// Aggregated worker processes to start.
    #[arg(long, default_value_t = 1, conflicts_with = "prefill")]
    workers: usize,
    /// Prefill worker processes of a disaggregated deployment (needs --decode).
    #[arg(long, requires = "decode")]
    prefill: Option<usize>,
    /// Decode worker processes of a disaggregated deployment (needs --prefill).
    #[arg(long, requires = "prefill")]
    decode: Option<usize>,
    /// Workers publish KV events over ZMQ in vLLM's format: worker i binds this endpoint's port
    /// plus i (prefill workers first, then decode workers), e.g. tcp://*:5557.
    #[arg(long)]
    kv_events_endpoint: Option<String>,
    /// How decode workers pull KV from prefill workers: tcp or nixl (see `tandem worker`).
    #[arg(long, value_enum, default_value = "tcp")]
    kv_transport: crate::worker::start::KvTransportKind,
}

/// `endpoint` (transport://host:port) with its port moved up by `offset`.
fn endpoint_plus(endpoint: &str, offset: usize) -> anyhow::Result<String> {
    let bad =
        || anyhow::anyhow!("--kv-events-endpoint {endpoint:?}: expected transport://host:port");
    let (head, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    if !head.contains("://") {
        return Err(bad());
    }
    let port: usize = port.parse().map_err(|_| bad())?;
    let port = u16::try_from(port + offset).map_err(|_| {
        anyhow::anyhow!(
            "--kv-events-endpoint {endpoint:?}: port {} is out of range",
            port + offset
        )
    })?;
    Ok(format!("{head}:{port}"))
}

fn tokenizer_of(model: Option<&PathBuf>) -> anyhow::Result<Tokenizer> {
    match model {
        None => Ok(crate::model::demo::tokenizer()?),
        Some(dir) => {
            let path = dir.join("tokenizer.json");
            if !path.exists() {
                bail!(
                    "{} has no tokenizer.json, which the frontend needs",
                    dir.display()
                );
            }
            Ok(Tokenizer::from_file(&path)?)
        }
    }
}

async fn run_http(http: &HttpArgs, fe: Arc<Frontend>, track_kv: bool) -> anyhow::Result<()> {
    fe.router.pool().start(track_kv);
    if let Some(decode) = &fe.decode {
        decode.pool().start(false);
    }
    let listener = tokio::net::TcpListener::bind((http.host.as_str(), http.port))
        .await
        .with_context(|| format!("binding {}:{}", http.host, http.port))?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "tandem frontend listening on {}",
        listener.local_addr()?
    )?;
    out.flush()?;
    // On SIGTERM: stop accepting, let requests in flight finish within --shutdown-timeout.
    let signaled = Arc::new(tokio::sync::Notify::new());
    let notify = signaled.clone();
    // No Nagle: streamed tokens are small writes, and a delayed ACK would hold each one.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, app(fe)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing the requests in flight");
        notify.notify_one();
    });
    let timeout = std::time::Duration::from_secs_f64(http.shutdown_timeout);
    tokio::select! {
        r = server => r?,
        _ = async { signaled.notified().await; tokio::time::sleep(timeout).await } => {
            tracing::warn!("shutdown timeout: dropping the requests still in flight");
        }
    }
    Ok(())
}

/// A frontend over aggregated workers, or over prefill workers plus a decode pool.
fn frontend_over(
    http: &HttpArgs,
    addrs: &[String],
    decode: Option<&[String]>,
    name: String,
    model: Option<&PathBuf>,
) -> anyhow::Result<Arc<Frontend>> {
    let liveness = http.liveness()?;
    let tls = TlsFiles {
        cert: http.worker_tls_cert.clone(),
        key: http.worker_tls_key.clone(),
        ca: http.worker_tls_ca.clone(),
        domain: http.worker_tls_domain.clone(),
    }
    .client()?;
    if tls.is_none() && http.worker_tls_cert.is_some() {
        bail!("--worker-tls-cert needs --worker-tls-ca");
    }
    let pool =
        WorkerPool::with_options(addrs, liveness, tls.clone()).map_err(anyhow::Error::msg)?;
    let policy = match http.router {
        RouterArg::RoundRobin => Policy::RoundRobin,
        RouterArg::Kv => Policy::Kv {
            temperature: http.router_temperature,
            host_weight: http.router_host_block_weight,
            overlap_weight: http.router_overlap_weight,
        },
    };
    policy.validate().map_err(anyhow::Error::msg)?;
    // Decode workers are picked by load alone: no cached prefix matters to them.
    let decode = decode
        .map(|d| {
            WorkerPool::with_options(d, liveness, tls.clone())
                .map(|p| Router::new(Policy::kv(0.0), p))
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let template = ChatTemplate::from_model_dir(model.map(PathBuf::as_path))?;
    let generation = match model {
        Some(dir) => GenerationConfig::from_dir(dir)?,
        None => crate::model::demo::generation_config()?,
    };
    Ok(Arc::new(Frontend::new(
        name,
        tokenizer_of(model)?,
        template,
        Router::new(policy, pool),
        decode,
        http.api_options(&generation)?,
    )))
}

/// Runs `tandem frontend` until it is stopped.
pub fn frontend(args: FrontendArgs) -> anyhow::Result<()> {
    let name = ModelArgs::name_for(args.served_model_name.as_deref(), args.model.as_deref());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (addrs, decode) = if args.prefill_workers.is_empty() {
            (&args.workers, None)
        } else {
            (&args.prefill_workers, Some(args.decode_workers.as_slice()))
        };
        let fe = frontend_over(&args.http, addrs, decode, name, args.model.as_ref())?;
        run_http(&args.http, fe, args.http.router == RouterArg::Kv).await
    })
}

/// Makes a child process receive SIGTERM when this process dies, however it dies (Linux),
/// so that workers never outlive `tandem serve`.
fn stop_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Stops the workers as an orchestrator would: SIGTERM (they drain), then SIGKILL for those
/// still there after their shutdown timeout and a grace second.
pub(crate) async fn stop_workers(mut children: Vec<tokio::process::Child>, timeout: f64) {
    #[cfg(unix)]
    for c in &children {
        if let Some(pid) = c.id() {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let grace = std::time::Duration::from_secs_f64(timeout + 1.0);
    let all = futures::future::join_all(children.iter_mut().map(|c| c.wait()));
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!("workers still running after their shutdown timeout: killing them");
    }
    // kill_on_drop takes care of any that did not exit.
}

/// Starts `n` worker processes with `role` and extra flags, the first being worker number
/// `first` of the deployment; returns them and their addresses.
async fn start_workers(
    args: &ServeArgs,
    role: &str,
    extra: &[&str],
    (first, n): (usize, usize),
) -> anyhow::Result<(Vec<tokio::process::Child>, Vec<String>)> {
    let (mut children, mut addrs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut argv: Vec<String> = vec!["worker".into()];
        let mut model = args.model.clone();
        if role == "decode" {
            // Without a prefix cache there is nothing for a host tier to hold.
            model.host_kv_cache_gib = 0.0;
        }
        argv.extend(model.to_cli_args_on(first + i));
        argv.extend(["--port", "0", "--role", role].map(String::from));
        argv.extend([
            "--shutdown-timeout".into(),
            args.http.shutdown_timeout.to_string(),
        ]);
        argv.extend(extra.iter().map(|s| s.to_string()));
        if args.kv_transport == crate::worker::start::KvTransportKind::Nixl {
            argv.extend(["--kv-transport", "nixl"].map(String::from));
        }
        if let Some(ep) = &args.kv_events_endpoint {
            let ep = endpoint_plus(ep, first + i)?;
            tracing::info!(role, worker = i, endpoint = %ep, "KV events over ZMQ");
            argv.extend(["--kv-events-endpoint".into(), ep]);
        }
        let (child, addr) = spawn_tandem(&argv)
            .await
            .with_context(|| format!("{role} worker {i}"))?;
        addrs.push(addr);
        children.push(child);
    }
    Ok((children, addrs))
}

/// Starts `tandem ARGV` as a child that dies with this process, and waits for the address it
/// prints ("... listening on ADDR"); its further output is drained.
pub(crate) async fn spawn_tandem(
    argv: &[String],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(argv).stdout(Stdio::piped()).kill_on_drop(true);
    stop_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("starting tandem")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = loop {
        match lines.next_line().await? {
            Some(l) => {
                if let Some(a) = l.split("listening on ").nth(1) {
                    break a.trim().to_string();
                }
            }
            None => bail!("it exited while starting: {}", child.wait().await?),
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// Waits until the frontend at `base` (http://host:port) answers /health with success.
pub(crate) async fn wait_healthy(base: &str, within: std::time::Duration) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    while t.elapsed() < within {
        if reqwest::get(format!("{base}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the deployment did not become healthy within {within:?}")
}

/// Runs `tandem serve`: starts the workers (aggregated, or prefill and decode), then the
/// frontend over them; the workers stop with it.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.prefill == Some(0) || args.decode == Some(0) {
        bail!("worker counts must be at least 1");
    }
    if let Some(ep) = &args.kv_events_endpoint {
        let n = args.prefill.unwrap_or(args.workers) + args.decode.unwrap_or(0);
        endpoint_plus(ep, n - 1)?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let name = args.model.model_name();
        let model = args.model.model.as_ref();
        let (children, fe) = match (args.prefill, args.decode) {
            (Some(p), Some(d)) => {
                let (mut children, prefill) = start_workers(&args, "prefill", &[], (0, p)).await?;
                // Decode workers keep no prefix cache, as in the reference deployment.
                let no_cache: &[&str] = if args.model.no_prefix_caching {
                    &[]
                } else {
                    &["--no-prefix-caching"]
                };
                let (more, decode) = start_workers(&args, "decode", no_cache, (p, d)).await?;
                children.extend(more);
                (
                    children,
                    frontend_over(&args.http, &prefill, Some(&decode), name, model)?,
                )
            }
            _ => {
                let (children, addrs) = start_workers(&args, "agg", &[], (0, args.workers)).await?;
                (
                    children,
                    frontend_over(&args.http, &addrs, None, name, model)?,
                )
            }
        };
        let result = run_http(&args.http, fe, args.http.router == RouterArg::Kv).await;
        stop_workers(children, args.http.shutdown_timeout).await;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint_plus;

    #[test]
    fn kv_event_endpoints_count_up_from_the_base_port() {
        assert_eq!(endpoint_plus("tcp://*:5557", 2).unwrap(), "tcp://*:5559");
        assert_eq!(
            endpoint_plus("tcp://127.0.0.1:5557", 0).unwrap(),
            "tcp://127.0.0.1:5557"
        );
        for bad in ["5557", "tcp://*", "tcp://*:x", "tcp://*:65535"] {
            assert!(endpoint_plus(bad, 1).is_err(), "{bad}");
        }
    }
}
