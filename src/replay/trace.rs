//! Mooncake traces (AIPerf's `mooncake_trace` format): one JSON object per line with
//! `timestamp` (ms), `input_length`, `output_length` and `hash_ids` (one per block of the
//! trace's block size, 512 tokens in the Mooncake traces; equal ids meaning equal blocks).
//! Prompts are synthesized so that equal ids give equal tokens. A trace can be scaled down
//! (fewer requests, shorter prompts and outputs, slower or faster arrivals) to fit small
//! workers while keeping its prefix structure.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Tokens each hash id stands for in the Mooncake traces (AIPerf's
/// `--prompt-input-tokens-block-size`, Dynamo's `trace_block_size`).
pub const TRACE_BLOCK_TOKENS: usize = 512;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
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

/// Reads a trace of `block` tokens per hash id (`.xz` files are decompressed); every
/// malformed line is reported with its line number.
pub fn load(path: &Path, block: usize) -> Result<Vec<TraceRequest>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = if path.extension().is_some_and(|e| e == "xz") {
        unxz(&bytes).map_err(|e| Error::io(path, e))?
    } else {
        String::from_utf8(bytes).map_err(|e| {
            Error::InvalidRequest(format!("{}: not UTF-8 text: {e}", path.display()))
        })?
    };
    parse(&text, block).map_err(|e| match e {
        Error::InvalidRequest(m) => Error::InvalidRequest(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// The reference trace (12,031 requests over 59 minutes; see data/traces/README.md).
pub fn reference() -> Result<Vec<TraceRequest>> {
    let text = unxz(REFERENCE_XZ)
        .map_err(|e| Error::InvalidRequest(format!("the built-in trace is corrupt: {e}")))?;
    parse(&text, TRACE_BLOCK_TOKENS)
}

/// The trace at `path` (of `block` tokens per hash id), or the reference trace without one.
pub fn load_or_reference(path: Option<&Path>, block: usize) -> Result<Vec<TraceRequest>> {
    match path {
        Some(p) => load(p, block),
        None if block == TRACE_BLOCK_TOKENS => reference(),
        None => Err(Error::InvalidRequest(format!(
            "the built-in trace has {TRACE_BLOCK_TOKENS} tokens per hash id, not {block} \
             (--trace-block-size is for --trace files; --length-scale shrinks the built-in one)"
        ))),
    }
}

fn unxz(bytes: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    liblzma::read::XzDecoder::new(bytes).read_to_string(&mut text)?;
    Ok(text)
}

/// Parses trace text of `block` tokens per hash id (see [`load`]).
pub fn parse(text: &str, block: usize) -> Result<Vec<TraceRequest>> {
    if block == 0 {
        return Err(Error::InvalidRequest(
            "the trace block size (tokens per hash id) must be positive".into(),
        ));
    }
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceRequest>(line) {
            Ok(r) if r.hash_ids.len() != r.input_length.div_ceil(block) => bad.push(format!(
                "line {}: {} hash ids for {} input tokens (expected {} at {block} tokens per \
                 hash id: is --trace-block-size right?)",
                i + 1,
                r.hash_ids.len(),
                r.input_length,
                r.input_length.div_ceil(block)
            )),
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

/// Computes [`TraceStats`] of a trace of `block` tokens per hash id.
pub fn stats(reqs: &[TraceRequest], block: usize) -> TraceStats {
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
            let block_len = block.min(r.input_length - i * block);
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

/// The prompt of a trace request of `block` tokens per hash id: block `h` is the same token
/// ids wherever it appears (the first n of them in a partial block), drawn from `vocab` ids
/// (`first_id..first_id + vocab`, e.g. a tokenizer's ordinary tokens).
pub fn synthesize(r: &TraceRequest, first_id: u32, vocab: u32, block: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(r.input_length);
    synthesize_into(r, first_id, vocab, block, &mut out);
    out
}

/// [`synthesize`], appending to `out` (whose capacity the caller chose).
pub fn synthesize_into(
    r: &TraceRequest,
    first_id: u32,
    vocab: u32,
    block: usize,
    out: &mut Vec<u32>,
) {
    for (i, &h) in r.hash_ids.iter().enumerate() {
        let len = block.min(r.input_length - i * block);
        // One 64-bit mix a block, then 32-bit work a token (murmur3's finalizer, a bijection,
        // of its index keyed by the block's low half, xored with the high half), which
        // vectorizes: a whole trace's prompts are about a tenth of the simulator's time
        // otherwise. Two blocks' tokens agree only where their 64-bit seeds do.
        let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let (lo, hi) = (z as u32, (z >> 32) as u32);
        out.extend((0..len as u32).map(|j| {
            let mut x = lo ^ j.wrapping_mul(0x9E37_79B9);
            x = (x ^ (x >> 16)).wrapping_mul(0x85EB_CA6B);
            x = (x ^ (x >> 13)).wrapping_mul(0xC2B2_AE35);
            x = (x ^ (x >> 16)) ^ hi;
            // Multiply-high maps the 32-bit draw onto the vocabulary without a division.
            first_id + ((x as u64 * vocab as u64) >> 32) as u32
        }));
    }
}

/// How to scale a trace down (or up) to the workers at hand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Keep the first N requests.
    pub first: Option<usize>,
    /// Multiply prompt and output lengths by this (a hash id then stands for
    /// `block × length` tokens): the prefix structure is kept.
    pub length: f64,
    /// Divide the timestamps by this (2: twice the request rate).
    pub speedup: f64,
    /// Cap prompts at this many tokens (whole trailing blocks are dropped).
    pub max_input: Option<usize>,
    /// Cap outputs at this many tokens.
    pub max_output: Option<usize>,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            first: None,
            length: 1.0,
            speedup: 1.0,
            max_input: None,
            max_output: None,
        }
    }
}

/// `reqs` (of `block` tokens per hash id) scaled by `s`; returns them and their block size.
pub fn scale(
    reqs: &[TraceRequest],
    block: usize,
    s: &Scaling,
) -> Result<(Vec<TraceRequest>, usize)> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(s.length) && positive(s.speedup)) {
        return bad("the length scale and the speedup must be positive".into());
    }
    let new_block = (block as f64 * s.length).round() as usize;
    if new_block == 0 || (new_block as f64 - block as f64 * s.length).abs() > 1e-9 * block as f64 {
        return bad(format!(
            "a length scale of {} makes blocks of {:.3} tokens: it must turn the {block}-token \
             blocks into a whole number of tokens",
            s.length,
            block as f64 * s.length
        ));
    }
    if s.max_input == Some(0) || s.max_output == Some(0) {
        return bad("length caps must be positive".into());
    }
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs.iter().take(s.first.unwrap_or(usize::MAX)) {
        let n = r.hash_ids.len();
        let last = r.input_length - (n - 1) * block;
        let last = ((last as f64 * s.length).ceil() as usize).clamp(1, new_block);
        let mut ids = r.hash_ids.clone();
        let mut input = (n - 1) * new_block + last;
        if let Some(cap) = s.max_input
            && input > cap
        {
            // Whole blocks only, so that a kept block is still the same block everywhere.
            let keep = (cap / new_block).max(1);
            ids.truncate(keep);
            input = keep * new_block;
        }
        let output = ((r.output_length as f64 * s.length).round() as usize).max(1);
        out.push(TraceRequest {
            timestamp: (r.timestamp as f64 / s.speedup).round() as u64,
            input_length: input,
            output_length: s.max_output.map_or(output, |c| output.min(c)),
            hash_ids: ids,
        });
    }
    if out.is_empty() {
        return bad("the scaled trace has no requests".into());
    }
    Ok((out, new_block))
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
        let e = parse(text, 512).unwrap_err().to_string();
        assert!(e.contains("line 2: missing field"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        assert!(
            e.contains("line 5: 1 hash ids for 600 input tokens (expected 2"),
            "{e}"
        );
        assert!(parse("", 512).is_err());
        assert!(parse(text, 0).unwrap_err().to_string().contains("positive"));
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
        let (pa, pb) = (synthesize(&a, 10, 100, 512), synthesize(&b, 10, 100, 512));
        assert_eq!((pa.len(), pb.len()), (1000, 700));
        assert_eq!(pa[..512], pb[..512]);
        assert_ne!(pa[512..700], pb[512..700]);
        assert!(pa.iter().all(|&t| (10..110).contains(&t)));
        let s = stats(&[a, b], 512);
        assert_eq!((s.block_refs, s.unique_blocks), (4, 3));
        assert!((s.cached_token_fraction - 512.0 / 1700.0).abs() < 1e-12);
    }

    #[test]
    fn equal_ids_give_equal_tokens_at_any_block_size() {
        let req = |ids: Vec<u64>, input| TraceRequest {
            timestamp: 0,
            input_length: input,
            output_length: 4,
            hash_ids: ids,
        };
        for block in [1, 16, 64, 512] {
            let a = req(vec![3, 4, 5], 2 * block + 1);
            let b = req(vec![3, 4, 9], 3 * block);
            let (pa, pb) = (synthesize(&a, 0, 50, block), synthesize(&b, 0, 50, block));
            assert_eq!((pa.len(), pb.len()), (2 * block + 1, 3 * block));
            assert_eq!(pa[..2 * block], pb[..2 * block], "block {block}");
            // A partial last block is the first tokens of the same block in full.
            let c = req(vec![3, 4, 9], 2 * block + 1);
            assert_eq!(synthesize(&c, 0, 50, block)[2 * block], pb[2 * block]);
        }
    }

    #[test]
    fn scaling_keeps_the_prefix_structure() {
        let reqs = vec![
            TraceRequest {
                timestamp: 1000,
                input_length: 1100,
                output_length: 300,
                hash_ids: vec![0, 1, 2],
            },
            TraceRequest {
                timestamp: 3000,
                input_length: 600,
                output_length: 5,
                hash_ids: vec![0, 7],
            },
        ];
        let s = Scaling {
            length: 1.0 / 32.0,
            speedup: 2.0,
            ..Scaling::default()
        };
        let (out, block) = scale(&reqs, 512, &s).unwrap();
        assert_eq!(block, 16);
        // 2 full blocks and 76 of 512 tokens: 32 + ceil(76 / 32) = 35 tokens.
        assert_eq!(
            (out[0].input_length, out[0].output_length, out[0].timestamp),
            (35, 9, 500)
        );
        assert_eq!((out[1].input_length, out[1].output_length), (19, 1));
        // Still a valid trace at the new block size, with the same shared block 0.
        let text: Vec<String> = out
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        assert_eq!(parse(&text.join("\n"), block).unwrap(), out);
        assert_eq!(
            synthesize(&out[0], 0, 99, block)[..16],
            synthesize(&out[1], 0, 99, block)[..16]
        );
        let capped = scale(
            &reqs,
            512,
            &Scaling {
                max_input: Some(20),
                max_output: Some(3),
                first: Some(1),
                ..s
            },
        )
        .unwrap()
        .0;
        assert_eq!(
            (
                capped.len(),
                capped[0].input_length,
                capped[0].hash_ids.len(),
                capped[0].output_length
            ),
            (1, 16, 1, 3)
        );
        for bad in [
            Scaling {
                length: 0.3,
                ..Scaling::default()
            },
            Scaling {
                length: 0.0,
                ..Scaling::default()
            },
            Scaling {
                max_input: Some(0),
                ..Scaling::default()
            },
        ] {
            assert!(scale(&reqs, 512, &bad).is_err(), "{bad:?}");
        }
    }
}
