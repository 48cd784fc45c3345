//! Compiles proto/worker.proto with the protoc shipped by `protoc-bin-vendored`, so a fresh
//! machine needs no protobuf install; with the `cuda` feature, also compiles kernels/*.cu
//! into fatbins embedded in the binary (see `cuda_kernels`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // KV chunks as `Bytes`: the server slices one buffer per rank without copying.
        .bytes(".tandem.worker.v1.KvChunk.data")
        .compile_with_config(config, &["proto/worker.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/worker.proto");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_kernels::build()?;
    }
    Ok(())
}

/// nvcc from `NVCC`, else from scripts/install-nvcc.sh's directory, else from PATH; each
/// kernels/*.cu becomes one fatbin (sm_90a SASS, sm_80 SASS and compute_80 PTX for newer
/// chips), listed in `$OUT_DIR/kernels.rs` for `include_bytes!`.
mod cuda_kernels {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Every kernel uses bf16 mma.sync at most, so all of them also build for sm_80.
    const GENCODE: &[&str] = &[
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_80,code=[sm_80,compute_80]",
    ];

    fn find_nvcc() -> Result<PathBuf, String> {
        println!("cargo:rerun-if-env-changed=NVCC");
        println!("cargo:rerun-if-env-changed=TANDEM_NVCC_DIR");
        if let Some(p) = std::env::var_os("NVCC") {
            return Ok(PathBuf::from(p));
        }
        let dir = std::env::var_os("TANDEM_NVCC_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nvcc"));
        let local = dir.join("nvidia/cu13/bin/nvcc");
        if local.is_file() {
            return Ok(local);
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nvcc"))
                .find(|p| p.is_file())
        });
        on_path.ok_or_else(|| {
            format!(
                "the cuda feature needs nvcc: run scripts/install-nvcc.sh (installs the pinned \
                 nvcc into {}), or set NVCC to an nvcc 13.0",
                dir.display()
            )
        })
    }

    pub fn build() -> Result<(), Box<dyn std::error::Error>> {
        let nvcc = find_nvcc()?;
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        println!("cargo:rerun-if-changed={}", src_dir.display());
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&src_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")))
            .collect();
        sources.sort();
        for s in &sources {
            println!("cargo:rerun-if-changed={}", s.display());
        }
        let units: Vec<&PathBuf> = sources
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .collect();
        // One nvcc per file, all at once: CI has few cores but nvcc is mostly single-threaded.
        let jobs: Vec<_> = units
            .iter()
            .map(|src| {
                let stem = src
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("kernel")
                    .to_string();
                let fatbin = out.join(format!("{stem}.fatbin"));
                let child = Command::new(&nvcc)
                    .args([
                        "-fatbin",
                        "-O3",
                        "-std=c++17",
                        "--use_fast_math",
                        "-lineinfo",
                    ])
                    .arg("-I")
                    .arg(&src_dir)
                    .args(GENCODE)
                    .arg("-o")
                    .arg(&fatbin)
                    .arg(src.as_path())
                    .spawn()
                    .map_err(|e| format!("cannot run {}: {e}", nvcc.display()));
                (stem, fatbin, child)
            })
            .collect();
        let mut listing = String::from(
            "/// Each kernel file's fatbin: (module name, bytes).\n\
             pub const KERNEL_FATBINS: &[(&str, &[u8])] = &[\n",
        );
        for (stem, fatbin, child) in jobs {
            let status = child?.wait()?;
            if !status.success() {
                return Err(format!("nvcc failed on kernels/{stem}.cu ({status})").into());
            }
            listing.push_str(&format!(
                "    ({stem:?}, include_bytes!({:?})),\n",
                fatbin.display().to_string()
            ));
        }
        listing.push_str("];\n");
        std::fs::write(out.join("kernels.rs"), listing)?;
        Ok(())
    }
}
