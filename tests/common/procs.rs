//! Real tandem processes on loopback, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    /// The address the process printed ("... listening on ADDR").
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a process may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts `tandem ARGS` and waits for its "listening on ADDR" line; a process that exits or
/// stays silent for [`START_TIMEOUT`] fails the test with what it printed.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_with_env(args, &[])
}

/// [`spawn`] with environment variables set for the child.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tandem starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stdout after the address too, so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.split("listening on ").nth(1) {
                    let addr = a.trim().to_string();
                    return Proc { child, addr };
                }
                seen.push(line);
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tandem {args:?} printed no address in {START_TIMEOUT:?}; its stdout:\n{}",
                    seen.join("\n")
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!(
                    "tandem {args:?} exited before listening: {status}; its stdout:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// Runs `tandem ARGS` to completion: (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("tandem runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Small-cache settings of the demo model used by the serving tests (block size 16).
pub const DEMO: &[&str] = &[
    "--max-model-len",
    "512",
    "--kv-cache-gib",
    "0.05",
    "--block-size",
    "16",
];

/// `tandem serve --port 0 EXTRA` on the demo model; returns it and its base URL.
pub fn serve(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(extra);
    args.extend_from_slice(DEMO);
    let p = spawn(&args);
    let base = format!("http://{}", p.addr);
    (p, base)
}

/// A frontend over `prefill` and `decode` workers, with `extra` flags.
#[allow(dead_code)]
pub fn disagg_frontend(prefill: &[&str], decode: &str, extra: &[&str]) -> Proc {
    let workers = prefill.join(",");
    let mut args = vec![
        "frontend",
        "--port",
        "0",
        "--prefill-workers",
        &workers,
        "--decode-workers",
        decode,
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// A demo-model worker with a small cache, block size 16.
pub fn demo_worker(extra: &[&str]) -> Proc {
    let mut args = vec!["worker"];
    args.extend_from_slice(DEMO);
    args.extend_from_slice(extra);
    spawn(&args)
}

/// A port nothing listens on now (the OS's choice, released at once).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
