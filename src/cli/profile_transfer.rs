//! The KV transfer's part of `tandem profile`: pulls of several sizes through the real
//! transfer service on loopback (the worker's KV socket, the puller's side of it, the release
//! RPC), timed with the engine idle and again while it steps (the pull's threads then wait for
//! the core the engine holds, as beside a busy worker), with the CPU each side spends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::ProgressBar;

use crate::backend::Backend;
use crate::engine::{EngineCore, EngineHandle, Executor, ModelExecutor, Request, SamplingParams};
use crate::transfer::socket::TcpKv;
use crate::transfer::{KvSource, KvTransport, Reservation};
use crate::wire::convert::sampling_to_proto;
use crate::wire::proto::{self, worker_client::WorkerClient, worker_server::WorkerServer};
use crate::worker::kv_hub::KvEventHub;
use crate::worker::service::WorkerService;

/// What the pulls measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfers {
    /// An idle engine's pull: fixed s, bytes/s.
    pub latency_s: f64,
    pub bytes_per_s: f64,
    /// A pull beside a stepping engine: fixed s, bytes/s.
    pub busy_latency_s: f64,
    pub busy_bytes_per_s: f64,
    /// CPU per byte on the source's side and on the puller's.
    pub source_cpu_per_byte: f64,
    pub dest_cpu_per_byte: f64,
}

/// CPU seconds this thread has run.
fn thread_cpu() -> f64 {
    cpu_of(libc::RUSAGE_THREAD)
}

/// CPU seconds this process has run, its ended threads included.
fn process_cpu() -> f64 {
    cpu_of(libc::RUSAGE_SELF)
}

fn cpu_of(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Keeps the engine stepping (one long generation after another) until `stop` is set.
fn keep_busy(engine: Arc<EngineHandle>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let cfg = engine.config().clone();
        let vocab = cfg.vocab_size.max(2) as u32;
        let mut id = 1u64 << 52;
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let prompt: Vec<u32> = (0..16u32).map(|i| (i * 131 + id as u32) % vocab).collect();
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(
                    (cfg.max_model_len.saturating_sub(32))
                        .min(cfg.num_blocks * cfg.block_size / 4)
                        .max(1),
                )
            };
            let Ok(mut out) = engine.submit(Request { id, prompt, params }) else {
                return;
            };
            while let Some(Ok(o)) = out.blocking_recv() {
                if o.finish.is_some() {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    let _ = engine.abort(id);
                }
            }
        }
    })
}

/// Times KV pulls through the real transfer service on loopback: prefill a prompt (its
/// blocks held), pull them as a decode worker does into a reservation, release them at the
/// source; each size `repeats` times with the engine idle, then as many times while it steps.
pub fn measure_transfers<B: Backend>(
    engine: EngineCore<ModelExecutor<B>>,
    layout: proto::KvLayout,
    sizes: &[usize],
    repeats: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Transfers> {
    let memory = engine.executor().kv_memory();
    let engine = Arc::new(EngineHandle::spawn(engine)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let timeout = crate::transfer::DEFAULT_TRANSFER_TIMEOUT;
        let svc = WorkerService::new(
            engine.clone(),
            Arc::new(KvEventHub::new()),
            proto::ModelInfoResponse::default(),
            layout.clone(),
            addr.clone(),
        )
        .with_kv_socket(
            std::net::TcpListener::bind("127.0.0.1:0")?,
            memory.clone(),
            &crate::wire::tls::TlsFiles::default(),
            false,
            timeout,
        )?;
        // The puller's side of the same socket: this engine pulls its own held blocks into
        // a reservation, as a decode worker would.
        let tcp = Arc::new(TcpKv::new(layout.clone(), memory, None, timeout));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServer::new(svc))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        let mut c = WorkerClient::connect(format!("http://{addr}")).await?;
        let source_layout = c
            .get_kv_layout(proto::KvLayoutRequest {})
            .await?
            .into_inner();
        let vocab = engine.config().vocab_size as u32;
        // (bytes, seconds) idle and busy; (bytes, source CPU, puller CPU) of idle pulls.
        let (mut idle, mut busy, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut background = None;
        for pass in 0..2 {
            if pass == 1 {
                background = Some(keep_busy(engine.clone(), stop.clone()));
            }
            for (k, &tokens) in sizes.iter().enumerate() {
                for r in 0..repeats {
                    let id = format!("transfer-{pass}-{k}-{r}");
                    let prompt: Vec<u32> = (0..tokens as u32 - 1)
                        .map(|i| (i * 7919 + k as u32 * 104_729 + r as u32 * 31) % vocab)
                        .collect();
                    let sampling = greedy(2);
                    let pre = c
                        .prefill(proto::GenerateRequest {
                            request_id: id.clone(),
                            prompt_token_ids: prompt.clone(),
                            sampling: Some(sampling),
                            timeline: false,
                        })
                        .await?
                        .into_inner();
                    let local = 1u64 << 50 | (pass * 1_000_000 + k * repeats + r) as u64;
                    let e = engine.clone();
                    let n = prompt.len();
                    let dst = tokio::task::spawn_blocking(move || e.reserve_kv(local, n)).await??;
                    let (e, t, source_layout, a, i) = (
                        engine.clone(),
                        tcp.clone(),
                        source_layout.clone(),
                        addr.clone(),
                        id.clone(),
                    );
                    let src = pre.block_ids.clone();
                    let started = Instant::now();
                    let cpu_before = process_cpu();
                    let (bytes, puller_cpu) = tokio::task::spawn_blocking(move || {
                        let t0 = thread_cpu();
                        let source = KvSource {
                            addr: &a,
                            layout: &source_layout,
                            request_id: &i,
                            blocks: &src,
                        };
                        let into = Reservation {
                            engine: &e,
                            id: local,
                            blocks: &dst,
                        };
                        let bytes = t.pull(&source, &into);
                        (bytes, thread_cpu() - t0)
                    })
                    .await?;
                    let bytes = bytes? as f64;
                    // The release, as a decode worker asks for it before it trusts the bytes.
                    c.release_kv(proto::ReleaseKvRequest { request_id: id })
                        .await?;
                    let seconds = started.elapsed().as_secs_f64();
                    if pass == 0 {
                        idle.push((bytes, seconds));
                        // The source's side is the rest of this process's CPU meanwhile (its
                        // serving thread has ended by now; the engine was idle).
                        let source = (process_cpu() - cpu_before - puller_cpu).max(0.0);
                        cpu.push((bytes, source, puller_cpu));
                    } else {
                        busy.push((bytes, seconds));
                    }
                    engine.cancel_reserved(local)?;
                    bar.inc(1);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(b) = background {
            let _ = b.join();
        }
        let (latency_s, bytes_per_s) = fit_line(&idle);
        let (busy_latency_s, busy_bytes_per_s) = fit_line(&busy);
        let total: f64 = cpu.iter().map(|c| c.0).sum::<f64>().max(1.0);
        Ok(Transfers {
            latency_s,
            bytes_per_s,
            busy_latency_s,
            busy_bytes_per_s,
            source_cpu_per_byte: cpu.iter().map(|c| c.1).sum::<f64>() / total,
            dest_cpu_per_byte: cpu.iter().map(|c| c.2).sum::<f64>() / total,
        })
    })
}

/// Greedy sampling of exactly `n` tokens, as a gRPC request carries it.
fn greedy(n: usize) -> proto::SamplingParams {
    sampling_to_proto(&SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    })
}

/// Least squares t = a + bytes / rate over the samples: (a, rate).
pub fn fit_line(samples: &[(f64, f64)]) -> (f64, f64) {
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in samples {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
    }
    let slope = if sxx > 0.0 {
        (sxy / sxx).max(1e-15)
    } else {
        my / mx.max(1.0)
    };
    let latency = (my - slope * mx).max(0.0);
    (latency, 1.0 / slope)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_through_transfer_times_is_fitted() {
        let pts: Vec<(f64, f64)> = [1e6, 4e6, 16e6]
            .iter()
            .map(|&b| (b, 0.002 + b / 2e9))
            .collect();
        let (lat, rate) = super::fit_line(&pts);
        assert!(
            (lat - 0.002).abs() < 1e-9 && (rate / 2e9 - 1.0).abs() < 1e-9,
            "{lat} {rate}"
        );
    }
}
