//! Command-line interface: one subcommand per role.

pub mod bench_kernels;
pub mod calibrate;
mod calibrate_reference;
mod calibrate_report;
mod calibrate_runs;
mod calibrate_steps;
pub mod frontend;
pub mod generate;
pub mod preset;
pub mod profile;
mod profile_serving;
mod profile_transfer;
pub mod replay;
pub mod simulate;
pub mod soak;
pub mod trace;
pub mod worker;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::loader::{DeviceKind, LoadFormat, ModelSpec};

/// tandem: a native Rust LLM serving stack for Qwen3.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a completion of one prompt and stream it to stdout.
    Generate(generate::GenerateArgs),
    /// Run one worker: the engine behind a gRPC service.
    Worker(worker::WorkerArgs),
    /// Run the OpenAI-compatible frontend and router over running workers.
    Frontend(frontend::FrontendArgs),
    /// Run the frontend, router and N local workers (the quick start).
    Serve(frontend::ServeArgs),
    /// Replay a Mooncake trace against a server and report AIPerf's metrics.
    Replay(replay::ReplayArgs),
    /// Replay a trace through simulated deployments (the servers' router, scheduler and KV
    /// cache on a simulated clock) and compare them.
    Simulate(simulate::SimulateArgs),
    /// Measure a worker's step and transfer times on its real executor: the profile
    /// `tandem simulate --profile` reads.
    Profile(profile::ProfileArgs),
    /// Check the simulator against the real system on this machine: profile a CPU worker,
    /// run the two reference deployments for real and simulated, print the error per metric.
    Calibrate(calibrate::CalibrateArgs),
    /// Load-test real deployments under faults: capacity, then the trace at multiples of it
    /// while workers are killed; reports every request's fate, leaked blocks and memory.
    Soak(soak::SoakArgs),
    /// A trace's figures, or a scaled copy of it.
    Trace(trace::TraceCmdArgs),
    /// Time every CUDA kernel at Qwen3-32B shapes against measured ceilings (cuda builds).
    BenchKernels(bench_kernels::BenchKernelsArgs),
}

/// Weight formats on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LoadFormatArg {
    /// Read the checkpoint's safetensors.
    Auto,
    /// Generate weights of the real shapes (performance work without a checkpoint).
    Dummy,
}

/// Backends on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DeviceArg {
    /// The f32 reference backend.
    Cpu,
    /// One GPU per tensor-parallel rank (a build with `--features cuda`).
    Cuda,
}

/// Which model to load and how to run it (shared by every command that runs a model).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, safetensors, tokenizer.json). Without it,
    /// the built-in demo model runs (a tiny Qwen3 trained on the King James Bible).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// auto: read the weights; dummy: generate them (reads only config.json).
    #[arg(long, value_enum, default_value = "auto")]
    pub load_format: LoadFormatArg,
    /// Tensor-parallel ranks.
    #[arg(
        long = "tensor-parallel-size",
        visible_alias = "tp",
        default_value_t = 1
    )]
    pub tp: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// KV cache size in GiB (all ranks together).
    #[arg(long, default_value_t = 1.0)]
    pub kv_cache_gib: f64,
    /// Host memory for a second KV tier, GiB (all ranks together; 0: none): blocks evicted
    /// from the KV cache are offloaded there and prefix hits onboarded from it.
    #[arg(long, default_value_t = 0.0)]
    pub host_kv_cache_gib: f64,
    /// Longest sequence (prompt + output); defaults to the model's.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Most sequences running at once.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Token budget of one step (long prompts are prefilled in chunks of at most this).
    #[arg(long, default_value_t = 8192)]
    pub max_num_batched_tokens: usize,
    /// Most prompt tokens one sequence gets per step (0: no cap below the step budget), so
    /// that a long prompt's chunks leave room for the other sequences' decodes.
    #[arg(long, default_value_t = 0)]
    pub long_prefill_token_threshold: usize,
    /// Turn off prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// The model name clients use (default: the model directory's name, or tandem-demo).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Seconds a prefill worker holds a finished prompt's KV for a decode worker to pull.
    #[arg(long, default_value_t = 30.0)]
    pub kv_hold_timeout: f64,
    /// Backend: cpu (reference) or cuda (GPU rank r on device r).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// With --device cuda: fraction of each GPU's memory to use; the KV cache gets what
    /// weights and activations leave (--kv-cache-gib is not used then).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// With --device cuda: no CUDA graphs, every decode step launched kernel by kernel.
    #[arg(long)]
    pub enforce_eager: bool,
    /// Run on these CPU cores only, e.g. 0 or 2,3 (the CPU backend then uses that many
    /// threads for its matrix products). `tandem serve` gives its workers one listed core
    /// each, in turn: one worker per core, not oversubscribed.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Test hook (workers): every request's output is this text's tokens, then EOS.
    #[arg(long, hide = true)]
    pub debug_output_text: Option<String>,
    /// Test hook (workers): every engine step takes this many milliseconds longer.
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_step_delay_ms: u64,
    /// Test hook (workers): the first N batches of host-tier copies with an onboard fail.
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_fail_onboards: u32,
    /// Test hook (workers): every engine step costs this many microseconds of CPU more.
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_step_cpu_us: u64,
    /// Test hook (workers): every token sent costs the worker's gRPC thread this many
    /// microseconds of CPU.
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_token_cpu_us: u64,
}

impl ModelArgs {
    /// The name the model is served under.
    pub fn model_name(&self) -> String {
        Self::name_for(self.served_model_name.as_deref(), self.model.as_deref())
    }

    /// The served name: the explicit one, else the directory's name, else tandem-demo.
    pub fn name_for(served: Option<&str>, model: Option<&std::path::Path>) -> String {
        if let Some(n) = served {
            return n.to_string();
        }
        match model {
            None => crate::model::demo::NAME.into(),
            Some(p) => p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }

    /// These arguments as the command line of the `slot`th worker a deployment starts: with
    /// --cpus, that worker gets one of the listed cores, in turn (one worker per core).
    pub fn to_cli_args_on(&self, slot: usize) -> Vec<String> {
        let mut a = self.to_cli_args();
        if !self.cpus.is_empty() {
            let at = a
                .iter()
                .position(|f| f == "--cpus")
                .expect("to_cli_args writes --cpus");
            a[at + 1] = self.cpus[slot % self.cpus.len()].to_string();
        }
        a
    }

    /// These arguments as a command line without --cpus: for a process that is given its
    /// cores apart (a calibration's workers and profiles).
    pub fn to_cli_args_but_cpus(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut it = self.to_cli_args().into_iter();
        while let Some(a) = it.next() {
            if a == "--cpus" {
                it.next();
            } else {
                out.push(a);
            }
        }
        out
    }

    /// These arguments as a command line (for starting worker processes with the same model).
    pub fn to_cli_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut flag = |k: &str, v: String| a.extend([k.to_string(), v]);
        if let Some(m) = &self.model {
            flag("--model", m.display().to_string());
        }
        if self.load_format == LoadFormatArg::Dummy {
            flag("--load-format", "dummy".into());
        }
        flag("--tensor-parallel-size", self.tp.to_string());
        flag("--block-size", self.block_size.to_string());
        flag("--kv-cache-gib", self.kv_cache_gib.to_string());
        if self.host_kv_cache_gib > 0.0 {
            flag("--host-kv-cache-gib", self.host_kv_cache_gib.to_string());
        }
        if let Some(l) = self.max_model_len {
            flag("--max-model-len", l.to_string());
        }
        flag("--max-num-seqs", self.max_num_seqs.to_string());
        flag(
            "--max-num-batched-tokens",
            self.max_num_batched_tokens.to_string(),
        );
        flag("--served-model-name", self.model_name());
        flag("--kv-hold-timeout", self.kv_hold_timeout.to_string());
        flag(
            "--long-prefill-token-threshold",
            self.long_prefill_token_threshold.to_string(),
        );
        if !self.cpus.is_empty() {
            let list: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
            flag("--cpus", list.join(","));
        }
        if let Some(t) = &self.debug_output_text {
            flag("--debug-output-text", t.clone());
        }
        if self.debug_step_delay_ms > 0 {
            flag(
                "--debug-step-delay-ms",
                self.debug_step_delay_ms.to_string(),
            );
        }
        if self.debug_step_cpu_us > 0 {
            flag("--debug-step-cpu-us", self.debug_step_cpu_us.to_string());
        }
        if self.debug_token_cpu_us > 0 {
            flag("--debug-token-cpu-us", self.debug_token_cpu_us.to_string());
        }
        if self.debug_fail_onboards > 0 {
            flag(
                "--debug-fail-onboards",
                self.debug_fail_onboards.to_string(),
            );
        }
        if self.no_prefix_caching {
            a.push("--no-prefix-caching".into());
        }
        if self.device == DeviceArg::Cuda {
            a.extend(["--device".into(), "cuda".into()]);
            a.extend([
                "--gpu-memory-utilization".into(),
                self.gpu_memory_utilization.to_string(),
            ]);
            if self.enforce_eager {
                a.push("--enforce-eager".into());
            }
        }
        a
    }

    /// Pins this process to `--cpus` (the threads it starts later inherit the set) and sizes
    /// the CPU backend's thread pool to it. Call before loading the model.
    pub fn pin_cpus(&self) -> anyhow::Result<()> {
        if self.cpus.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it, and
        // sched_setaffinity reads it for the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &self.cpus {
                if c >= libc::CPU_SETSIZE as usize {
                    bail!("--cpus: there is no CPU {c}");
                }
                libc::CPU_SET(c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                bail!(
                    "--cpus {:?}: {}",
                    self.cpus,
                    std::io::Error::last_os_error()
                );
            }
        }
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            // SAFETY: set before any thread that reads the environment is started.
            unsafe { std::env::set_var("MATMUL_NUM_THREADS", self.cpus.len().to_string()) };
        }
        Ok(())
    }

    /// The loader's view of these arguments.
    pub fn spec(&self, progress: bool) -> anyhow::Result<ModelSpec> {
        if !(self.kv_cache_gib.is_finite() && self.kv_cache_gib > 0.0) {
            bail!("--kv-cache-gib must be positive");
        }
        if !(self.host_kv_cache_gib.is_finite() && self.host_kv_cache_gib >= 0.0) {
            bail!("--host-kv-cache-gib must be 0 or more");
        }
        if self.host_kv_cache_gib > 0.0 && self.no_prefix_caching {
            bail!("--host-kv-cache-gib holds evicted prefix-cache blocks: it needs prefix caching");
        }
        if !(self.kv_hold_timeout.is_finite() && self.kv_hold_timeout > 0.0) {
            bail!("--kv-hold-timeout must be positive");
        }
        if !(self.gpu_memory_utilization > 0.0 && self.gpu_memory_utilization <= 1.0) {
            bail!("--gpu-memory-utilization must be in (0, 1]");
        }
        Ok(ModelSpec {
            model: self.model.clone(),
            load_format: match self.load_format {
                LoadFormatArg::Auto => LoadFormat::Auto,
                LoadFormatArg::Dummy => LoadFormat::Dummy,
            },
            tp_size: self.tp,
            block_size: self.block_size,
            kv_cache_bytes: (self.kv_cache_gib * (1u64 << 30) as f64) as usize,
            max_model_len: self.max_model_len,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            enable_prefix_caching: !self.no_prefix_caching,
            long_prefill_token_threshold: self.long_prefill_token_threshold,
            progress,
            kv_hold_timeout: std::time::Duration::from_secs_f64(self.kv_hold_timeout),
            host_kv_cache_bytes: (self.host_kv_cache_gib * (1u64 << 30) as f64) as usize,
            device: match self.device {
                DeviceArg::Cpu => DeviceKind::Cpu,
                DeviceArg::Cuda => DeviceKind::Cuda,
            },
            gpu_memory_utilization: self.gpu_memory_utilization,
            enforce_eager: self.enforce_eager,
        })
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::generate(args),
        Command::Worker(args) => worker::worker(args),
        Command::Frontend(args) => frontend::frontend(args),
        Command::Serve(args) => frontend::serve(args),
        Command::Replay(args) => replay::replay(args),
        Command::Simulate(args) => simulate::simulate_cmd(args),
        Command::Trace(args) => trace::trace_cmd(args),
        Command::Soak(args) => soak::soak(args),
        Command::Profile(args) => profile::profile(args),
        Command::Calibrate(args) => calibrate::calibrate(args),
        Command::BenchKernels(args) => bench_kernels::bench_kernels(args),
    }
}
