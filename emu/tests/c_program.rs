//! The libraries serve a plain C program, not only tandem: tests/c/driver_smoke.c is compiled
//! with the system C compiler against libcuda.so (laid out under the driver's names, as
//! scripts/cuda-emu.sh lays it out) and run.

use std::path::PathBuf;
use std::process::Command;

/// The emulator's shared library, built now (`cargo test` builds the crate's rlib for its
/// tests, not its cdylib): its path as cargo reports the artifact.
fn built_library() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--profile",
            "test",
            "-p",
            "tandem-emu",
            "--lib",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building the emulator's library: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lib = stdout
        .split('"')
        .find(|s| s.ends_with("/libtandem_emu.so"))
        .map(PathBuf::from)
        .expect("cargo reports the libtandem_emu.so artifact");
    assert!(lib.is_file(), "{} is missing", lib.display());
    lib
}

#[test]
fn a_c_program_runs_on_the_emulated_device() {
    let lib = built_library();
    let dir = tempfile_dir();
    std::fs::copy(&lib, dir.join("libcuda.so")).unwrap();
    std::os::unix::fs::symlink("libcuda.so", dir.join("libcuda.so.1")).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/driver_smoke.c");
    let exe = dir.join("driver_smoke");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .arg("-std=c99")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg(format!("-L{}", dir.display()))
        .arg("-lcuda")
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(built.success(), "compiling {}", src.display());
    let out = Command::new(&exe)
        .env("TANDEM_EMU_MEMORY_GIB", "0.25")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system temp dir.
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tandem-emu-c-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
