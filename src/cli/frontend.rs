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
    /// Worker addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    workers: Vec<String>,
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
    #[arg(long, default_value_t = 1)]
    workers: usize,
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

fn frontend_over(
    http: &HttpArgs,
    addrs: &[String],
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
    let template = ChatTemplate::from_model_dir(model.map(PathBuf::as_path))?;
    Ok(Arc::new(Frontend::new(
        name,
        tokenizer_of(model)?,
        template,
        Router::new(policy, pool),
    )))
}

/// Runs `tandem frontend` until it is stopped.
pub fn frontend(args: FrontendArgs) -> anyhow::Result<()> {
    let name = ModelArgs::name_for(args.served_model_name.as_deref(), args.model.as_deref());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let fe = frontend_over(&args.http, &args.workers, name, args.model.as_ref())?;
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

/// Runs `tandem serve`: starts the workers, then the frontend over them.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..args.workers {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("worker")
                .args(args.model.to_cli_args())
                .args(["--port", "0"])
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
                    None => bail!("worker {i} exited while starting: {}", child.wait().await?),
                }
            };
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            addrs.push(addr);
            children.push(child);
        }
        let fe = frontend_over(
            &args.http,
            &addrs,
            args.model.model_name(),
            args.model.model.as_ref(),
        )?;
        let result = run_http(&args.http, fe, args.http.router == RouterArg::Kv).await;
        drop(children);
        result
    })
}
