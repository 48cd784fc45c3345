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
use crate::router::{Policy, Router, WorkerPool};
use crate::server::chat::ChatTemplate;
use crate::server::dispatch::Frontend;
use crate::server::http::app;
use crate::tokenizer::Tokenizer;

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
}

fn tokenizer_of(model: Option<&PathBuf>) -> anyhow::Result<Tokenizer> {
    match model {
        None => Ok(Tokenizer::byte_level()),
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
    axum::serve(listener, app(fe))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
    let pool = WorkerPool::new(addrs).map_err(anyhow::Error::msg)?;
    let policy = match http.router {
        RouterArg::RoundRobin => Policy::RoundRobin,
        RouterArg::Kv => Policy::Kv {
            temperature: http.router_temperature,
        },
    };
    // Decode workers are picked by load alone: no cached prefix matters to them.
    let decode = decode
        .map(|d| WorkerPool::new(d).map(|p| Router::new(Policy::Kv { temperature: 0.0 }, p)))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let template = ChatTemplate::from_model_dir(model.map(PathBuf::as_path))?;
    Ok(Arc::new(Frontend::new(
        name,
        tokenizer_of(model)?,
        template,
        Router::new(policy, pool),
        decode,
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

/// Starts `n` worker processes with `role` and extra flags; returns them and their addresses.
async fn start_workers(
    args: &ServeArgs,
    role: &str,
    extra: &[&str],
    n: usize,
) -> anyhow::Result<(Vec<tokio::process::Child>, Vec<String>)> {
    let exe = std::env::current_exe()?;
    let (mut children, mut addrs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("worker")
            .args(args.model.to_cli_args())
            .args(["--port", "0", "--role", role])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        stop_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("starting a worker")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = loop {
            match lines.next_line().await? {
                Some(l) => {
                    if let Some(a) = l.split("listening on ").nth(1) {
                        break a.trim().to_string();
                    }
                }
                None => bail!(
                    "{role} worker {i} exited while starting: {}",
                    child.wait().await?
                ),
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        addrs.push(addr);
        children.push(child);
    }
    Ok((children, addrs))
}

/// Runs `tandem serve`: starts the workers (aggregated, or prefill and decode), then the
/// frontend over them; the workers stop with it.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.prefill == Some(0) || args.decode == Some(0) {
        bail!("worker counts must be at least 1");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let name = args.model.model_name();
        let model = args.model.model.as_ref();
        let (children, fe) = match (args.prefill, args.decode) {
            (Some(p), Some(d)) => {
                let (mut children, prefill) = start_workers(&args, "prefill", &[], p).await?;
                // Decode workers keep no prefix cache, as in the reference deployment.
                let no_cache: &[&str] = if args.model.no_prefix_caching {
                    &[]
                } else {
                    &["--no-prefix-caching"]
                };
                let (more, decode) = start_workers(&args, "decode", no_cache, d).await?;
                children.extend(more);
                (
                    children,
                    frontend_over(&args.http, &prefill, Some(&decode), name, model)?,
                )
            }
            _ => {
                let (children, addrs) = start_workers(&args, "agg", &[], args.workers).await?;
                (
                    children,
                    frontend_over(&args.http, &addrs, None, name, model)?,
                )
            }
        };
        let result = run_http(&args.http, fe, args.http.router == RouterArg::Kv).await;
        drop(children);
        result
    })
}
