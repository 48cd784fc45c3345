//! Where weights come from: safetensors files (single or sharded) or generated dummy values.
//! Every tensor is read as the slice one tensor-parallel rank needs, converted to f32.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, Metadata};
use serde::Deserialize;

use crate::backend::HostTensor;
use crate::error::{Error, Result};

/// The part of a `[rows, cols]` weight one rank takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shard {
    /// The whole tensor.
    Full,
    /// Rows `start..start + len` (column-parallel layers, vocab-parallel embeddings).
    Rows(usize, usize),
    /// Columns `start..start + len` (row-parallel layers).
    Cols(usize, usize),
}

impl Shard {
    fn ranges(self, rows: usize, cols: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        match self {
            Shard::Full => (0..rows, 0..cols),
            Shard::Rows(s, n) => (s..s + n, 0..cols),
            Shard::Cols(s, n) => (0..rows, s..s + n),
        }
    }
}

struct WeightFile {
    path: PathBuf,
    bytes: FileBytes,
    header_len: usize,
    meta: Metadata,
}

/// A safetensors file's bytes: mapped from disk, or compiled into the binary (the demo model).
enum FileBytes {
    Mapped(Mmap),
    Static(&'static [u8]),
}

impl FileBytes {
    fn get(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Static(b) => b,
        }
    }
}

impl WeightFile {
    fn new(path: PathBuf, bytes: FileBytes) -> Result<Self> {
        let (header_len, meta) = SafeTensors::read_metadata(bytes.get()).map_err(|e| {
            Error::Weights(format!(
                "{}: not a valid safetensors file: {e}",
                path.display()
            ))
        })?;
        Ok(WeightFile {
            path,
            bytes,
            header_len,
            meta,
        })
    }
}

/// A source of named weights: a checkpoint's files, or dummy values.
pub struct WeightSource(Source);

enum Source {
    Safetensors {
        files: Vec<WeightFile>,
        index: HashMap<String, usize>,
    },
    Dummy {
        seed: u64,
    },
}

#[derive(Deserialize)]
struct IndexJson {
    weight_map: HashMap<String, String>,
}

impl WeightSource {
    /// Deterministic pseudo-random values of the right shapes (`--load-format dummy`).
    pub fn dummy(seed: u64) -> Self {
        WeightSource(Source::Dummy { seed })
    }

    /// Opens the safetensors weights of `dir`: through model.safetensors.index.json when present,
    /// else model.safetensors, else every `*.safetensors` file in it.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let idx: IndexJson = serde_json::from_str(&text).map_err(|e| {
                Error::Weights(format!("{}: malformed index: {e}", index_path.display()))
            })?;
            let mut files: Vec<String> = idx.weight_map.into_values().collect();
            files.sort();
            files.dedup();
            files
        } else if dir.join("model.safetensors").exists() {
            vec!["model.safetensors".to_string()]
        } else {
            let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            let mut files: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".safetensors"))
                .collect();
            files.sort();
            files
        };
        if names.is_empty() {
            return Err(Error::Weights(format!(
                "no *.safetensors weights in {}",
                dir.display()
            )));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the file is opened read-only; tandem never writes weight files while serving.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let f = WeightFile::new(path, FileBytes::Mapped(mmap))?;
            for tensor in f.meta.tensors().keys() {
                index.insert(tensor.clone(), i);
            }
            files.push(f);
        }
        Ok(WeightSource(Source::Safetensors { files, index }))
    }

    /// One safetensors file compiled into the binary; `name` labels its errors.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self> {
        let f = WeightFile::new(PathBuf::from(name), FileBytes::Static(bytes))?;
        let index = f.meta.tensors().keys().map(|t| (t.clone(), 0)).collect();
        Ok(WeightSource(Source::Safetensors {
            files: vec![f],
            index,
        }))
    }

    /// Reads `shard` of the tensor `name`, which must have exactly `shape` (1-D or 2-D).
    pub fn get(&self, name: &str, shape: &[usize], shard: Shard) -> Result<HostTensor> {
        let (rows, cols) = match *shape {
            [c] => (1, c),
            [r, c] => (r, c),
            _ => {
                return Err(Error::Weights(format!(
                    "{name}: unsupported rank {}",
                    shape.len()
                )));
            }
        };
        let (rr, cr) = shard.ranges(rows, cols);
        let out_shape = if shape.len() == 1 {
            vec![cr.len()]
        } else {
            vec![rr.len(), cr.len()]
        };
        match &self.0 {
            Source::Dummy { seed } => {
                let is_norm = shape.len() == 1;
                let salt = xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), *seed);
                let mut data = Vec::with_capacity(rr.len() * cr.len());
                for r in rr {
                    for c in cr.clone() {
                        data.push(dummy_value(salt, (r * cols + c) as u64, is_norm));
                    }
                }
                Ok(HostTensor::new(out_shape, data))
            }
            Source::Safetensors { files, index } => {
                let f = &files[*index.get(name).ok_or_else(|| {
                    Error::Weights(format!("tensor {name} not found in the checkpoint"))
                })?];
                let info = f
                    .meta
                    .info(name)
                    .ok_or_else(|| Error::Weights(format!("tensor {name} not found")))?;
                if info.shape != shape {
                    return Err(Error::Weights(format!(
                        "{}: tensor {name} has shape {:?}, the config implies {shape:?}",
                        f.path.display(),
                        info.shape
                    )));
                }
                let size = match info.dtype {
                    Dtype::F32 => 4,
                    Dtype::BF16 | Dtype::F16 => 2,
                    other => {
                        return Err(Error::Weights(format!(
                            "{}: tensor {name} has dtype {other:?}; tandem reads bf16, f16 and f32",
                            f.path.display()
                        )));
                    }
                };
                let (start, end) = info.data_offsets;
                let bytes = f
                    .bytes
                    .get()
                    .get(8 + f.header_len + start..8 + f.header_len + end)
                    .filter(|b| b.len() == rows * cols * size)
                    .ok_or_else(|| {
                        Error::Weights(format!("{}: tensor {name} is truncated", f.path.display()))
                    })?;
                let mut data = Vec::with_capacity(rr.len() * cr.len());
                for r in rr {
                    let row = &bytes[(r * cols + cr.start) * size..(r * cols + cr.end) * size];
                    match info.dtype {
                        Dtype::F32 => data.extend(
                            row.chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        ),
                        Dtype::BF16 => data.extend(
                            row.chunks_exact(2)
                                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                        ),
                        _ => data.extend(
                            row.chunks_exact(2)
                                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                        ),
                    }
                }
                Ok(HostTensor::new(out_shape, data))
            }
        }
    }
}

/// A value of a dummy weight: uniform with standard deviation 0.02 (transformers' init),
/// around 1 for norm weights. A pure function of (tensor, index), so every TP shard agrees.
fn dummy_value(salt: u64, idx: u64, is_norm: bool) -> f32 {
    let mut z = salt ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    let v = u * 0.02 * 3f32.sqrt();
    if is_norm { 1.0 + v } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn reads_every_float_dtype_and_shards() {
        let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf16b: Vec<u8> = vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let f16b: Vec<u8> = vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let views = vec![
            ("a", TensorView::new(Dtype::F32, vec![3, 4], &f32b).unwrap()),
            (
                "b",
                TensorView::new(Dtype::BF16, vec![3, 4], &bf16b).unwrap(),
            ),
            ("c", TensorView::new(Dtype::F16, vec![3, 4], &f16b).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let src = WeightSource::open(dir.path()).unwrap();
        for name in ["a", "b", "c"] {
            assert_eq!(
                src.get(name, &[3, 4], Shard::Full).unwrap().data,
                vals,
                "{name}"
            );
            assert_eq!(
                src.get(name, &[3, 4], Shard::Rows(1, 1)).unwrap().data,
                vals[4..8].to_vec()
            );
            let cols = src.get(name, &[3, 4], Shard::Cols(2, 2)).unwrap();
            assert_eq!(cols.shape, vec![3, 2]);
            assert_eq!(
                cols.data,
                vec![vals[2], vals[3], vals[6], vals[7], vals[10], vals[11]]
            );
        }
        let e = src.get("a", &[4, 3], Shard::Full).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
    }

    #[test]
    fn dummy_shards_agree_with_the_full_tensor() {
        let src = WeightSource::dummy(9);
        let full = src.get("w", &[6, 8], Shard::Full).unwrap();
        let right = src.get("w", &[6, 8], Shard::Cols(4, 4)).unwrap();
        assert_eq!(right.data[..4], full.data[4..8]);
        let norm = src.get("n", &[8], Shard::Full).unwrap();
        assert!(norm.data.iter().all(|v| (v - 1.0).abs() < 0.05));
        let std = (full.data.iter().map(|v| v * v).sum::<f32>() / 48.0).sqrt();
        assert!(std > 0.01 && std < 0.03, "std {std}");
    }
}
