//! Mooncake traces (AIPerf's `mooncake_trace` format): one JSON object per line with
//! `timestamp` (ms), `input_length`, `output_length` and `hash_ids` (one per 512-token block,
//! equal ids meaning equal blocks). Prompts are synthesized so that equal ids give equal tokens.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Tokens each hash id stands for.
pub const TRACE_BLOCK_TOKENS: usize = 512;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TraceRequest {
    /// When to send it, in ms from the start.
    pub timestamp: u64,
    /// Prompt tokens.
    pub input_length: usize,
    /// Tokens to generate.
    pub output_length: usize,
    /// One id per 512-token block of the prompt (the last may be partial).
    pub hash_ids: Vec<u64>,
}

/// The reference workload, compiled in: the Mooncake conversation trace (data/traces/).
const REFERENCE_XZ: &[u8] =
    include_bytes!("../../data/traces/mooncake_conversation_trace.jsonl.xz");

/// What `--trace` defaults to, as the command line names it.
pub const REFERENCE_NAME: &str = "the built-in Mooncake conversation trace";

/// Reads a trace (`.xz` files are decompressed); every malformed line is reported with its
/// line number.
pub fn load(path: &Path) -> Result<Vec<TraceRequest>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = if path.extension().is_some_and(|e| e == "xz") {
        unxz(&bytes).map_err(|e| Error::io(path, e))?
    } else {
        String::from_utf8(bytes).map_err(|e| {
            Error::InvalidRequest(format!("{}: not UTF-8 text: {e}", path.display()))
        })?
    };
    parse(&text).map_err(|e| match e {
        Error::InvalidRequest(m) => Error::InvalidRequest(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// The reference trace (12,031 requests over 59 minutes; see data/traces/README.md).
pub fn reference() -> Result<Vec<TraceRequest>> {
    let text = unxz(REFERENCE_XZ)
        .map_err(|e| Error::InvalidRequest(format!("the built-in trace is corrupt: {e}")))?;
    parse(&text)
}

/// The trace at `path`, or the reference trace without one.
pub fn load_or_reference(path: Option<&Path>) -> Result<Vec<TraceRequest>> {
    match path {
        Some(p) => load(p),
        None => reference(),
    }
}

fn unxz(bytes: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    liblzma::read::XzDecoder::new(bytes).read_to_string(&mut text)?;
    Ok(text)
}

/// Parses trace text (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<TraceRequest>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceRequest>(line) {
            Ok(r) if r.hash_ids.len() != r.input_length.div_ceil(TRACE_BLOCK_TOKENS) => {
                bad.push(format!(
                    "line {}: {} hash ids for {} input tokens (expected {})",
                    i + 1,
                    r.hash_ids.len(),
                    r.input_length,
                    r.input_length.div_ceil(TRACE_BLOCK_TOKENS)
                ))
            }
            Ok(r) if r.input_length == 0 || r.output_length == 0 => bad.push(format!(
                "line {}: input_length and output_length must be positive",
                i + 1
            )),
            Ok(r) => out.push(r),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        let shown: Vec<_> = bad.iter().take(10).cloned().collect();
        let more = if bad.len() > 10 {
            format!(" (and {} more)", bad.len() - 10)
        } else {
            String::new()
        };
        return Err(Error::InvalidRequest(format!(
            "malformed trace: {}{more}",
            shown.join("; ")
        )));
    }
    if out.is_empty() {
        return Err(Error::InvalidRequest("the trace has no requests".into()));
    }
    Ok(out)
}

/// Figures of a trace, to check a loader against and to describe a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStats {
    /// Requests.
    pub requests: usize,
    /// Last timestamp, ms.
    pub duration_ms: u64,
    /// Mean, median, 99th percentile and max of the input lengths.
    pub input: (f64, usize, usize, usize),
    /// Mean and max of the output lengths.
    pub output: (f64, usize),
    /// Block references and distinct blocks.
    pub block_refs: usize,
    /// Distinct hash ids.
    pub unique_blocks: usize,
    /// Fraction of block references that repeat an earlier block.
    pub repeat_fraction: f64,
    /// Fraction of input tokens an infinite prefix cache serves in trace order.
    pub cached_token_fraction: f64,
}

/// Computes [`TraceStats`].
pub fn stats(reqs: &[TraceRequest]) -> TraceStats {
    let mut inputs: Vec<usize> = reqs.iter().map(|r| r.input_length).collect();
    inputs.sort_unstable();
    let n = reqs.len();
    let pct = |p: f64| inputs[((n - 1) as f64 * p).round() as usize];
    let mut seen = HashSet::new();
    let (mut refs, mut cached, mut total) = (0usize, 0usize, 0usize);
    for r in reqs {
        // A prefix cache serves the leading run of blocks it has seen, whole blocks only.
        let mut leading = true;
        for (i, h) in r.hash_ids.iter().enumerate() {
            refs += 1;
            let block_len = TRACE_BLOCK_TOKENS.min(r.input_length - i * TRACE_BLOCK_TOKENS);
            let hit = !seen.insert(*h);
            leading &= hit;
            if leading {
                cached += block_len;
            }
        }
        total += r.input_length;
    }
    TraceStats {
        requests: n,
        duration_ms: reqs.iter().map(|r| r.timestamp).max().unwrap_or(0),
        input: (total as f64 / n as f64, pct(0.5), pct(0.99), inputs[n - 1]),
        output: (
            reqs.iter().map(|r| r.output_length).sum::<usize>() as f64 / n as f64,
            reqs.iter().map(|r| r.output_length).max().unwrap_or(0),
        ),
        block_refs: refs,
        unique_blocks: seen.len(),
        repeat_fraction: (refs - seen.len()) as f64 / refs as f64,
        cached_token_fraction: cached as f64 / total as f64,
    }
}

/// The prompt of a trace request: block `h` is the same 512 token ids wherever it appears,
/// drawn from `vocab` ids (`first_id..first_id + vocab`, e.g. a tokenizer's ordinary tokens).
pub fn synthesize(r: &TraceRequest, first_id: u32, vocab: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(r.input_length);
    for (i, &h) in r.hash_ids.iter().enumerate() {
        let len = TRACE_BLOCK_TOKENS.min(r.input_length - i * TRACE_BLOCK_TOKENS);
        for j in 0..len as u64 {
            let mut z =
                h.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
            // Multiply-high maps the 64-bit draw onto the vocabulary without a division.
            out.push(first_id + (((z ^ (z >> 29)) as u128 * vocab as u128) >> 64) as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_reported_with_numbers() {
        let text = "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1, 2]}\n\
                    {\"timestamp\": 5, \"input_length\": 10}\n\n\
                    not json\n\
                    {\"timestamp\": 9, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1]}\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("line 2: missing field"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        assert!(
            e.contains("line 5: 1 hash ids for 600 input tokens (expected 2)"),
            "{e}"
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn equal_ids_give_equal_blocks() {
        let a = TraceRequest {
            timestamp: 0,
            input_length: 1000,
            output_length: 1,
            hash_ids: vec![7, 8],
        };
        let b = TraceRequest {
            timestamp: 0,
            input_length: 700,
            output_length: 1,
            hash_ids: vec![7, 9],
        };
        let (pa, pb) = (synthesize(&a, 10, 100), synthesize(&b, 10, 100));
        assert_eq!((pa.len(), pb.len()), (1000, 700));
        assert_eq!(pa[..512], pb[..512]);
        assert_ne!(pa[512..700], pb[512..700]);
        assert!(pa.iter().all(|&t| (10..110).contains(&t)));
        let s = stats(&[a, b]);
        assert_eq!((s.block_refs, s.unique_blocks), (4, 3));
        assert!((s.cached_token_fraction - 512.0 / 1700.0).abs() < 1e-12);
    }
}
