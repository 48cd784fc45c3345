//! Real tandem processes on loopback, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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

/// Starts `tandem ARGS` and waits for its "listening on ADDR" line.
pub fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tandem starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.split("listening on ").nth(1) {
                    break a.trim().to_string();
                }
            }
            _ => {
                let status = child.wait().unwrap();
                panic!("tandem {args:?} exited before listening: {status}");
            }
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
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

/// A demo-model worker with a small cache, block size 16.
pub fn demo_worker(extra: &[&str]) -> Proc {
    let mut args = vec!["worker"];
    args.extend_from_slice(DEMO);
    args.extend_from_slice(extra);
    spawn(&args)
}
