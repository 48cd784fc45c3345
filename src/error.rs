//! The crate's error type: every failure on an input path ends here, never in a panic.

use std::path::PathBuf;

/// Errors of the tandem library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// config.json (or generation_config.json) is missing, malformed or describes an unsupported model.
    #[error("model config: {0}")]
    Config(String),
    /// A weight file is missing, malformed, or holds a tensor of the wrong name, shape or dtype.
    #[error("weights: {0}")]
    Weights(String),
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request the engine refuses (prompt too long, empty prompt, duplicate id, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Sampling parameters outside their valid range.
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),
    /// Engine configuration that cannot work (block size 0, too few blocks, bad TP size, ...).
    #[error("engine config: {0}")]
    EngineConfig(String),
    /// A failure inside a compute backend.
    #[error("backend: {0}")]
    Backend(String),
    /// A copy between the device KV cache and the host tier failed; the step that needed it
    /// did not complete.
    #[error("KV tier copy: {0}")]
    KvCopy(String),
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
