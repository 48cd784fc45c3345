//! tandem workers under NVIDIA Dynamo 1.6.1, all real processes on loopback: tandem workers,
//! python/tandem_dynamo bridges, Dynamo's own frontend (`python -m dynamo.frontend`, file
//! discovery: no etcd, no NATS), and tandem's frontend over the same workers to compare with
//! (tests/python/dynamo_serving.py holds the client-side assertions).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::{DEMO, Proc, demo_worker, free_port, spawn};
use common::python::dynamo_python;

const MODEL: &str = "tandem-demo";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Python process of the Dynamo deployment, killed when dropped; its stderr is kept in a
/// file so a test can read what it logged.
struct Py {
    child: Child,
    log: PathBuf,
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Py {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One Dynamo deployment's shared state: its discovery directory and a HOME for Dynamo's
/// caches, both private to the test.
struct Dynamo {
    dir: tempfile::TempDir,
}

impl Dynamo {
    fn new() -> Self {
        Dynamo {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str], log: &str) -> (Command, PathBuf) {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let log = self.dir.path().join(log);
        let mut c = Command::new(dynamo_python());
        c.args(args)
            .current_dir(repo().join("python"))
            .env("PYTHONPATH", repo().join("python"))
            .env("DYN_FILE_KV", self.dir.path().join("kv"))
            .env("HOME", &home)
            // Every socket on loopback, and a quick exit on SIGTERM.
            .env("DYN_TCP_RPC_HOST", "127.0.0.1")
            .env("DYN_EVENT_PLANE_HOST", "127.0.0.1")
            .env("DYN_TCP_RESPONSE_STREAM_HOST", "127.0.0.1")
            .env("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "1")
            .env("DYN_SELF_HOST_METADATA", "0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        (c, log)
    }

    /// A bridge for the worker at `worker`; waits for its "ready" line.
    fn bridge(&self, worker: &str, extra: &[&str]) -> Py {
        let model = repo().join("models").join(MODEL);
        let mut args = vec![
            "-m",
            "tandem_dynamo",
            "--worker",
            worker,
            "--model-path",
            model.to_str().unwrap(),
            "--discovery-backend",
            "file",
        ];
        args.extend_from_slice(extra);
        let name = format!("bridge-{}.log", worker.replace(':', "-"));
        let (mut c, log) = self.command(&args, &name);
        let mut child = c.spawn().expect("python starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let py = Py { child, log };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.starts_with("tandem_dynamo ready") => py,
            other => panic!(
                "bridge for {worker} did not start ({other:?}):\n{}",
                py.log()
            ),
        }
    }

    /// Dynamo's frontend on a free port; waits until it lists `instances` generate endpoints.
    fn frontend(&self, router: &str, instances: usize, extra: &[&str]) -> (Py, String) {
        let port = free_port().to_string();
        let mut args = vec![
            "-m",
            "dynamo.frontend",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            &port,
            "--discovery-backend",
            "file",
            "--router-mode",
            router,
        ];
        args.extend_from_slice(extra);
        let (mut c, log) = self.command(&args, "frontend.log");
        let child = c.stdout(Stdio::null()).spawn().expect("python starts");
        let py = Py { child, log };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if generate_instances(&url) >= instances && has_model(&url) {
                return (py, url);
            }
            assert!(
                Instant::now() < deadline,
                "Dynamo's frontend did not see {instances} workers:\n{}",
                py.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn get(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl").args(["-sf", url]).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn generate_instances(url: &str) -> usize {
    get(&format!("{url}/health"))
        .and_then(|h| h["instances"].as_array().cloned())
        .map_or(0, |v| {
            v.iter().filter(|i| i["endpoint"] == "generate").count()
        })
}

fn has_model(url: &str) -> bool {
    get(&format!("{url}/v1/models"))
        .and_then(|m| m["data"].as_array().cloned())
        .is_some_and(|d| d.iter().any(|m| m["id"] == MODEL))
}

/// A tandem worker publishing its KV events on a ZMQ port of its own; (worker, endpoint).
fn worker_with_events(extra: &[&str]) -> (Proc, String) {
    let port = free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let mut args = vec!["--port", "0", "--kv-events-endpoint", &bind];
    args.extend_from_slice(extra);
    (demo_worker(&args), bind)
}

fn run_checks(mode: &str, dynamo: &str, tandem: &str, workers: &[&str]) -> String {
    let mut args = vec![
        repo()
            .join("tests/python/dynamo_serving.py")
            .display()
            .to_string(),
        mode.into(),
        dynamo.into(),
        tandem.into(),
        MODEL.into(),
    ];
    args.extend(workers.iter().map(|w| w.to_string()));
    let out = Command::new(dynamo_python())
        .args(&args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dynamo_serving.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn tandem_frontend(flags: &[&str]) -> (Proc, String) {
    let mut args = vec!["frontend", "--port", "0"];
    args.extend_from_slice(flags);
    let p = spawn(&args);
    let url = format!("http://{}", p.addr);
    (p, url)
}

#[test]
fn aggregated_workers_behind_dynamos_kv_router_and_round_robin() {
    let (w1, e1) = worker_with_events(&[]);
    let (w2, e2) = worker_with_events(&[]);
    let workers = format!("{},{}", w1.addr, w2.addr);
    let (_own, own_url) = tandem_frontend(&["--workers", &workers, "--router", "kv"]);

    let dynamo = Dynamo::new();
    let b1 = dynamo.bridge(&w1.addr, &["--kv-events-endpoint", &e1]);
    let _b2 = dynamo.bridge(&w2.addr, &["--kv-events-endpoint", &e2]);
    let (front, url) = dynamo.frontend("kv", 2, &[]);
    let out = run_checks("agg", &url, &own_url, &[&w1.addr, &w2.addr]);
    assert!(out.starts_with("ok"), "{out}");
    // The refusal names the field where an operator looks: the bridge's log (Dynamo 1.6.1's
    // frontend passes the status, not the message).
    let refused = "sampling_options.n = 2 is not supported by tandem";
    let logs = b1.log() + &_b2.log();
    assert!(
        logs.contains(refused),
        "no bridge log names the field:\n{logs}"
    );
    drop(front);

    let (_front, url) = dynamo.frontend("round-robin", 2, &[]);
    let out = run_checks("rr", &url, &own_url, &[&w1.addr, &w2.addr]);
    assert!(out.starts_with("ok"), "{out}");
}

#[test]
fn disaggregated_workers_behind_dynamos_prefill_router() {
    let (p, ep) = worker_with_events(&["--role", "prefill", "--kv-hold-timeout", "3"]);
    let d = demo_worker(&["--port", "0", "--role", "decode"]);
    let (_own, own_url) =
        tandem_frontend(&["--prefill-workers", &p.addr, "--decode-workers", &d.addr]);
    let dynamo = Dynamo::new();
    let _bp = dynamo.bridge(&p.addr, &["--kv-events-endpoint", &ep]);
    let _bd = dynamo.bridge(&d.addr, &[]);
    let (_front, url) = dynamo.frontend("kv", 2, &[]);
    let out = run_checks("disagg", &url, &own_url, &[&p.addr, &d.addr]);
    assert!(out.starts_with("ok"), "{out}");
}

/// Waits for a child to exit; its status, or None after `timeout`.
fn exits_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_bridge_waits_for_its_worker_and_a_dead_worker_leaves_dynamo() {
    let dynamo = Dynamo::new();
    let model = repo().join("models").join(MODEL);
    // Bridge 0 starts before its worker and waits for it.
    let port = free_port().to_string();
    let addr0 = format!("127.0.0.1:{port}");
    let (mut c, log) = dynamo.command(
        &[
            "-m",
            "tandem_dynamo",
            "--worker",
            &addr0,
            "--model-path",
            model.to_str().unwrap(),
            "--discovery-backend",
            "file",
        ],
        "waiting-bridge.log",
    );
    let mut bridges = vec![Py {
        child: c.spawn().unwrap(),
        log,
    }];
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        bridges[0].child.try_wait().unwrap().is_none(),
        "the bridge gave up before its worker came:\n{}",
        bridges[0].log()
    );
    // Slow steps, so that a stream is still running when its worker dies.
    let slow = ["--debug-step-delay-ms", "20"];
    let mut args = vec!["worker", "--port", &port];
    args.extend_from_slice(DEMO);
    args.extend_from_slice(&slow);
    let mut workers = vec![spawn(&args)];
    workers.push(demo_worker(&[&["--port", "0"][..], &slow[..]].concat()));
    bridges.push(dynamo.bridge(&workers[1].addr, &[]));
    let (_front, url) = dynamo.frontend("round-robin", 2, &["--migration-limit", "3"]);

    // A long stream in flight when its worker dies: the bridge reports EngineShutdown, and
    // Dynamo (--migration-limit) finishes it on the other worker.
    let script = r#"
import json, sys, httpx
url, ended, tokens = sys.argv[1], "completed", 0
try:
    with httpx.stream("POST", f"{url}/v1/completions", timeout=60, json={
            "model": "tandem-demo", "prompt": "In the beginning", "max_tokens": 150,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        for n, line in enumerate(r.iter_lines()):
            if n == 4:
                print("streaming", flush=True)
                sys.stdin.readline()
            if "error" in line:
                ended = "error"
            if line.startswith("data: {") and '"usage":{' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
except httpx.HTTPError as e:
    ended = "error"
print("ended", ended, tokens, flush=True)
"#;
    let mut client = Command::new(dynamo_python())
        .args(["-c", script, &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "streaming");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let busy: Vec<bool> = workers
        .iter()
        .map(|w| rt.block_on(common::grpc::load(&w.addr)).running > 0)
        .collect();
    let dead = busy
        .iter()
        .position(|&b| b)
        .expect("one worker runs the stream");
    let _ = workers[dead].child.kill();
    let _ = workers[dead].child.wait();
    use std::io::Write;
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = exits_within(&mut client, Duration::from_secs(90));
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(status.is_some(), "a stream hung after its worker died");
    assert_eq!(
        rest.trim(),
        "ended completed 150",
        "the in-flight stream was not migrated"
    );

    // The dead worker's bridge leaves (saying why), Dynamo drops it, the rest is served.
    let bridge = &mut bridges[dead];
    let exited = exits_within(&mut bridge.child, Duration::from_secs(20));
    assert!(
        exited.is_some_and(|s| !s.success()),
        "the bridge of a dead worker did not exit with an error ({exited:?}):\n{}",
        bridge.log()
    );
    assert!(bridge.log().contains("is gone"), "{}", bridge.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while generate_instances(&url) > 1 {
        assert!(
            Instant::now() < deadline,
            "Dynamo still lists the dead worker"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Requests after the failover succeed.
    for _ in 0..4 {
        dynamo_completion(&url, 3);
    }
}

#[test]
fn a_bridge_refuses_a_block_size_or_model_path_it_cannot_serve() {
    let w = demo_worker(&["--port", "0"]);
    let dynamo = Dynamo::new();
    let run = |extra: &[&str], model: &Path| {
        let mut args = vec![
            "-m",
            "tandem_dynamo",
            "--worker",
            &w.addr,
            "--model-path",
            model.to_str().unwrap(),
            "--discovery-backend",
            "file",
        ];
        args.extend_from_slice(extra);
        let (mut c, log) = dynamo.command(&args, "refusing-bridge.log");
        let status = c.status().unwrap();
        (status, std::fs::read_to_string(log).unwrap())
    };
    let model = repo().join("models").join(MODEL);
    let (status, log) = run(&["--kv-cache-block-size", "64"], &model);
    assert!(!status.success());
    assert!(
        log.contains("--kv-cache-block-size 64") && log.contains("block size 16"),
        "{log}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (status, log) = run(&[], empty.path());
    assert!(!status.success());
    assert!(log.contains("no tokenizer.json"), "{log}");
}

/// A completion through Dynamo's frontend at `url`; its JSON answer.
fn dynamo_completion(url: &str, max_tokens: u32) -> serde_json::Value {
    let body = format!(
        r#"{{"model":"{MODEL}","prompt":"And God said","max_tokens":{max_tokens},"temperature":0}}"#
    );
    let out = Command::new("curl")
        .args(["-sf", &format!("{url}/v1/completions"), "-H"])
        .arg("content-type: application/json")
        .arg("-d")
        .arg(body)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "completion failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bridges_reach_workers_that_require_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, [(wc, wk), (bc, bk)]) = common::pki::pki(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ca, wc, wk, bc, bk) = (s(&ca), s(&wc), s(&wk), s(&bc), s(&bk));
    let tls = [
        "--tls-cert",
        &wc,
        "--tls-key",
        &wk,
        "--tls-ca",
        &ca,
        "--tls-domain",
        "localhost",
        "--tls-require-client-cert",
    ];
    let mut prefill_args = vec!["--role", "prefill"];
    prefill_args.extend_from_slice(&tls);
    let (p, ep) = worker_with_events(&prefill_args);
    let mut decode_args = vec!["--port", "0", "--role", "decode"];
    decode_args.extend_from_slice(&tls);
    let d = demo_worker(&decode_args);
    let dynamo = Dynamo::new();

    // Without a client certificate the worker never answers: the bridge gives up, saying so.
    let model = repo().join("models").join(MODEL);
    let (mut c, log) = dynamo.command(
        &[
            "-m",
            "tandem_dynamo",
            "--worker",
            &d.addr,
            "--model-path",
            model.to_str().unwrap(),
            "--discovery-backend",
            "file",
            "--worker-tls-ca",
            &ca,
            "--worker-tls-domain",
            "localhost",
            "--wait-for-worker",
            "3",
        ],
        "bridge-without-cert.log",
    );
    let status = c.status().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("was not ready within 3 s"), "{text}");

    let client = [
        "--worker-tls-ca",
        ca.as_str(),
        "--worker-tls-cert",
        bc.as_str(),
        "--worker-tls-key",
        bk.as_str(),
        "--worker-tls-domain",
        "localhost",
    ];
    let mut with_events = vec!["--kv-events-endpoint", ep.as_str()];
    with_events.extend_from_slice(&client);
    let bp = dynamo.bridge(&p.addr, &with_events);
    let bd = dynamo.bridge(&d.addr, &client);
    let (_front, url) = dynamo.frontend("kv", 2, &[]);
    // A request that ends at its first token: the decode bridge releases the prefill
    // worker's hold itself, over TLS too.
    for max_tokens in [1, 8] {
        let a = dynamo_completion(&url, max_tokens);
        assert_eq!(
            a["usage"]["completion_tokens"],
            max_tokens,
            "{a}\n{}",
            bd.log()
        );
    }
    let logs = bp.log() + &bd.log();
    assert!(!logs.contains("releasing"), "a release failed:\n{logs}");
}
