//! CUDA graphs for decode steps: the whole forward pass of a pure-decode step is captured
//! once per batch size of a ladder (1, 2, 4, 8, 16, 24, ... up to max_num_seqs) and replayed
//! with the batch padded to the next size; prefill and mixed steps run eagerly.
//!
//! The model code is not graph-aware. A capture first runs the forward pass dry to learn its
//! host inputs (token ids, positions, slots, attention metadata, logit rows) and gives each a
//! static buffer kept with the graph, then runs it again with the stream in capture mode,
//! every upload going to its static buffer. A replay runs the forward
//! pass "dry": the shape checks run and the uploads refresh those static buffers in the same
//! order, but no kernel, GEMM or collective is issued; then the graph is launched. Anything a
//! replay cannot reproduce (different upload sizes) drops the graph and the step runs eagerly.
//!
//! Shapes are frozen per graph: block tables are padded to max_model_len / block_size blocks
//! and the flash-decoding split count is the one for a max_model_len context. Padding rows
//! decode token 0 at position 0 and write their K/V to a scratch block that every layer cache
//! holds after its last real block.

use std::collections::{HashMap, HashSet};

use cudarc::driver::{CudaGraph, sys};
use xxhash_rust::xxh3::xxh3_64;

use super::device::cuda_err;
use super::{Buf, CudaBackend, CudaTensor};
use crate::backend::AttnSeq;
use crate::backend::ModelInput;
use crate::error::{Error, Result};

/// Which decode steps get graphs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraphConfig {
    /// Largest batch captured (max_num_seqs).
    pub max_batch: usize,
    /// Block-table width every graph is captured with.
    pub max_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
}

/// The capture ladder up to `max`: 1, 2, 4, then every multiple of 8, then `max` itself.
pub fn ladder(max: usize) -> Vec<usize> {
    let mut l: Vec<usize> = [1, 2, 4]
        .into_iter()
        .chain((8..=max).step_by(8))
        .filter(|&b| b <= max)
        .collect();
    if l.last() != Some(&max) && max > 0 {
        l.push(max);
    }
    l
}

/// One captured step and the buffers it reads and writes.
struct DecodeGraph {
    graph: CudaGraph,
    /// Static upload buffers, with their length in u32s.
    statics: Vec<(Buf, usize)>,
    /// Upload call k of a step writes static buffer call_map[k].
    call_map: Vec<usize>,
    /// The logits, where every replay leaves them.
    out: CudaTensor,
}

/// What upload_u32 does with the data of the step being run.
pub(crate) enum Mode {
    /// Copy to a fresh arena buffer.
    Eager,
    /// A dry run before a capture: record every upload (its data and role).
    Plan {
        uploads: Vec<(Vec<u32>, &'static str)>,
    },
    /// Capture: upload call k goes to the static buffer `call_map[k]`, allocated before the
    /// capture began (see [`CudaBackend::capture`]).
    Capture {
        statics: Vec<(Buf, Vec<u32>)>,
        call_map: Vec<usize>,
        cursor: usize,
    },
    /// Refresh the static buffers of graph `batch`, call by call.
    Replay {
        batch: usize,
        cursor: usize,
        written: HashMap<usize, u64>,
        ok: bool,
    },
}

/// A rank's graphs and the state of the step in flight.
pub(crate) struct Graphs {
    pub(crate) cfg: Option<GraphConfig>,
    graphs: HashMap<usize, DecodeGraph>,
    failed: HashSet<usize>,
    pub(crate) mode: Mode,
    /// Real blocks per layer cache; block `num_blocks` is the padding rows' scratch block.
    pub(crate) num_blocks: Option<usize>,
}

// SAFETY: the graph handles are used only by the rank that owns the backend, one step at a
// time (the backend moves to its rank thread before its first step).
unsafe impl Send for Graphs {}

impl Graphs {
    pub(crate) fn new() -> Self {
        Graphs {
            cfg: None,
            graphs: HashMap::new(),
            failed: HashSet::new(),
            mode: Mode::Eager,
            num_blocks: None,
        }
    }

    /// Whether the step in flight is captured or replayed (shapes must be frozen).
    pub(crate) fn frozen(&self) -> bool {
        !matches!(self.mode, Mode::Eager)
    }

    /// The batch size and block-table width to run `input` with, if it can use a graph.
    fn plan(&self, input: &ModelInput) -> Option<(usize, GraphConfig, usize)> {
        let cfg = self.cfg?;
        let scratch = self.num_blocks?;
        let n = input.tokens.len();
        let seqs = &input.attn.seqs;
        let decode = n > 0
            && seqs.len() == n
            && input.positions.len() == n
            && input.slots.len() == n
            && input.attn.block_size == cfg.block_size
            && input.logit_rows.iter().copied().eq(0..n)
            && seqs.iter().enumerate().all(|(i, s)| {
                s.query_start == i
                    && s.query_len == 1
                    && s.block_table.len() <= cfg.max_blocks
                    && s.context_len <= cfg.max_blocks * cfg.block_size
            });
        if !decode || !matches!(self.mode, Mode::Eager) {
            return None;
        }
        let b = ladder(cfg.max_batch).into_iter().find(|&b| b >= n)?;
        (!self.failed.contains(&b)).then_some((b, cfg, scratch))
    }
}

/// `input` padded to `b` rows and `cfg.max_blocks`-wide block tables.
fn pad(input: &ModelInput, b: usize, cfg: GraphConfig, scratch: usize) -> ModelInput {
    let mut p = input.clone();
    let n = input.tokens.len();
    p.tokens.resize(b, 0);
    p.positions.resize(b, 0);
    p.slots.resize(b, (scratch * cfg.block_size) as u32);
    for s in &mut p.attn.seqs {
        s.block_table.resize(cfg.max_blocks, 0);
    }
    let mut table = vec![0; cfg.max_blocks];
    table[0] = scratch as u32;
    p.attn.seqs.extend((n..b).map(|i| AttnSeq {
        query_start: i,
        query_len: 1,
        context_len: 1,
        block_table: table.clone(),
    }));
    p.logit_rows = (0..b).collect();
    p
}

/// A non-owning view of a graph's output.
fn view(t: &CudaTensor) -> CudaTensor {
    CudaTensor {
        rows: t.rows,
        cols: t.cols,
        buf: Buf::Static(t.ptr()),
    }
}

impl CudaBackend {
    /// Turns on decode graphs for batches up to `max_batch` and contexts up to `max_model_len`.
    pub fn enable_decode_graphs(&self, max_batch: usize, max_model_len: usize, block_size: usize) {
        if let Ok(mut g) = self.graphs.lock() {
            g.cfg = (max_batch > 0 && block_size > 0).then(|| GraphConfig {
                max_batch,
                max_blocks: max_model_len.div_ceil(block_size),
                block_size,
            });
        }
    }

    /// Decode graphs captured so far, by batch size.
    pub fn captured_graphs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graphs
            .lock()
            .map(|g| g.graphs.keys().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    fn graphs(&self) -> Result<std::sync::MutexGuard<'_, Graphs>> {
        self.graphs
            .lock()
            .map_err(|_| Error::Backend("graph state poisoned".into()))
    }

    /// The data of one upload of the step in flight, wherever the mode puts it. `role`
    /// names what it is: uploads of one role with equal data share a static buffer (every
    /// layer uploads the same positions, slots and attention metadata).
    pub(crate) fn upload_u32_as(&self, data: &[u32], role: &'static str) -> Result<Buf> {
        let mut guard = self.graphs()?;
        let Graphs { mode, graphs, .. } = &mut *guard;
        match mode {
            Mode::Eager => {
                drop(guard);
                let buf = self.dev.alloc(data.len() * 4)?;
                self.dev.htod(buf.ptr(), data)?;
                Ok(buf)
            }
            Mode::Plan { uploads } => {
                uploads.push((data.to_vec(), role));
                drop(guard);
                // The dry run launches nothing: any buffer of the right size will do.
                self.dev.alloc(data.len() * 4)
            }
            Mode::Capture {
                statics,
                call_map,
                cursor,
            } => {
                let k = *cursor;
                *cursor += 1;
                let j = call_map.get(k).copied();
                match j.and_then(|j| statics.get(j)) {
                    Some((buf, planned)) if planned.as_slice() == data => {
                        Ok(Buf::Static(buf.ptr()))
                    }
                    _ => Err(Error::Backend(format!(
                        "graph capture: upload {k} ({role}) differs from the planning pass"
                    ))),
                }
            }
            Mode::Replay {
                batch,
                cursor,
                written,
                ok,
            } => {
                let k = *cursor;
                *cursor += 1;
                let found = graphs.get(batch).and_then(|dg| {
                    let j = *dg.call_map.get(k)?;
                    let (buf, len) = &dg.statics[j];
                    (*len == data.len()).then_some((j, buf.ptr()))
                });
                let Some((j, ptr)) = found else {
                    *ok = false;
                    return Err(Error::Backend(format!(
                        "graph replay: upload {k} ({role}) differs"
                    )));
                };
                let h = xxh3_64(bytemuck::cast_slice(data));
                match written.get(&j) {
                    Some(&prev) if prev != h => {
                        *ok = false;
                        return Err(Error::Backend(format!(
                            "graph replay: {role} no longer equal across layers"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.dev.htod(ptr, data)?;
                        written.insert(j, h);
                    }
                }
                Ok(Buf::Static(ptr))
            }
        }
    }

    /// Runs one forward pass `step` over `input`: replayed from a graph when it is a decode
    /// step of a captured (or capturable) batch size, eagerly otherwise.
    pub(crate) fn graph_step(
        &self,
        input: &ModelInput,
        step: &mut impl FnMut(&ModelInput) -> Result<CudaTensor>,
    ) -> Result<CudaTensor> {
        let plan = self.graphs()?.plan(input);
        let Some((b, cfg, scratch)) = plan else {
            return step(input);
        };
        let padded = pad(input, b, cfg, scratch);
        let captured = self.graphs()?.graphs.contains_key(&b);
        let result = if captured {
            self.replay(b, &padded, step)
        } else {
            self.capture(b, &padded, step)
        };
        match result {
            Ok(out) => Ok(out),
            Err(e) => {
                tracing::warn!(batch = b, error = %e, "decode graph dropped; running eagerly");
                let mut g = self.graphs()?;
                g.graphs.remove(&b);
                g.failed.insert(b);
                drop(g);
                step(input)
            }
        }
    }

    fn replay(
        &self,
        b: usize,
        padded: &ModelInput,
        step: &mut impl FnMut(&ModelInput) -> Result<CudaTensor>,
    ) -> Result<CudaTensor> {
        self.graphs()?.mode = Mode::Replay {
            batch: b,
            cursor: 0,
            written: HashMap::new(),
            ok: true,
        };
        self.dev.set_dry(true);
        let dry = step(padded);
        self.dev.set_dry(false);
        let mut g = self.graphs()?;
        let mode = std::mem::replace(&mut g.mode, Mode::Eager);
        drop(dry?);
        let dg = g
            .graphs
            .get(&b)
            .ok_or_else(|| Error::Backend("graph vanished".into()))?;
        match mode {
            Mode::Replay {
                cursor, ok: true, ..
            } if cursor == dg.call_map.len() => {
                dg.graph.launch().map_err(cuda_err("graph launch"))?;
                Ok(view(&dg.out))
            }
            _ => Err(Error::Backend(
                "graph replay: the step's uploads changed".into(),
            )),
        }
    }

    /// Captures the step into a graph. The static buffers its uploads go to are allocated
    /// before the capture, from a dry planning pass over the same step: allocated during
    /// the capture, a static could take arena space that an earlier node of the same graph
    /// writes (an intermediate freed before the upload), and every launch would clobber the
    /// inputs it had just been given.
    fn capture(
        &self,
        b: usize,
        padded: &ModelInput,
        step: &mut impl FnMut(&ModelInput) -> Result<CudaTensor>,
    ) -> Result<CudaTensor> {
        self.dev.sync()?;
        self.graphs()?.mode = Mode::Plan {
            uploads: Vec::new(),
        };
        self.dev.set_dry(true);
        let dry = step(padded);
        self.dev.set_dry(false);
        let planned = std::mem::replace(&mut self.graphs()?.mode, Mode::Eager);
        drop(dry?);
        let Mode::Plan { uploads } = planned else {
            return Err(Error::Backend("graph planning state lost".into()));
        };
        // Uploads of one role with equal data share a buffer (every layer uploads the same
        // positions, slots and attention metadata).
        let mut statics: Vec<(Buf, Vec<u32>)> = Vec::new();
        let mut roles: Vec<&'static str> = Vec::new();
        let mut call_map = Vec::with_capacity(uploads.len());
        for (data, role) in uploads {
            let same = (0..statics.len()).find(|&j| roles[j] == role && statics[j].1 == data);
            let j = match same {
                Some(j) => j,
                None => {
                    statics.push((self.dev.alloc(data.len() * 4)?, data));
                    roles.push(role);
                    statics.len() - 1
                }
            };
            call_map.push(j);
        }
        self.graphs()?.mode = Mode::Capture {
            statics,
            call_map,
            cursor: 0,
        };
        self.dev.set_capturing(true);
        let begun = self
            .dev
            .stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err("begin capture"));
        let out = begun.and_then(|_| step(padded));
        // Always end the capture, whatever happened inside, so the stream is usable again.
        let graph = self
            .dev
            .stream
            .end_capture(
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            )
            .map_err(cuda_err("end capture"));
        self.dev.set_capturing(false);
        let mode = std::mem::replace(&mut self.graphs()?.mode, Mode::Eager);
        let (out, graph) = (out?, graph?);
        let graph = graph.ok_or_else(|| Error::Backend("empty graph captured".into()))?;
        let Mode::Capture {
            statics,
            call_map,
            cursor,
        } = mode
        else {
            return Err(Error::Backend("graph capture state lost".into()));
        };
        if cursor != call_map.len() {
            return Err(Error::Backend(format!(
                "graph capture made {cursor} uploads, the planning pass {}",
                call_map.len()
            )));
        }
        // The inputs of this first launch, then the graph itself.
        let mut kept = Vec::with_capacity(statics.len());
        for (buf, data) in statics {
            self.dev.htod(buf.ptr(), &data)?;
            kept.push((buf, data.len()));
        }
        graph.launch().map_err(cuda_err("graph launch"))?;
        let result = view(&out);
        self.graphs()?.graphs.insert(
            b,
            DecodeGraph {
                graph,
                statics: kept,
                call_map,
                out,
            },
        );
        tracing::debug!(batch = b, "captured a decode graph");
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AttentionMeta;

    #[test]
    fn ladder_and_padding() {
        assert_eq!(ladder(1), vec![1]);
        assert_eq!(ladder(6), vec![1, 2, 4, 6]);
        assert_eq!(ladder(30), vec![1, 2, 4, 8, 16, 24, 30]);
        assert_eq!(ladder(32), vec![1, 2, 4, 8, 16, 24, 32]);
        let cfg = GraphConfig {
            max_batch: 8,
            max_blocks: 4,
            block_size: 16,
        };
        let input = ModelInput {
            tokens: vec![7, 9, 11],
            positions: vec![3, 20, 40],
            slots: vec![3, 36, 88],
            attn: AttentionMeta {
                block_size: 16,
                seqs: (0..3)
                    .map(|i| AttnSeq {
                        query_start: i,
                        query_len: 1,
                        context_len: [4, 21, 41][i],
                        block_table: vec![i as u32; i + 1],
                    })
                    .collect(),
            },
            logit_rows: vec![0, 1, 2],
        };
        let mut g = Graphs::new();
        assert!(g.plan(&input).is_none(), "graphs off");
        g.cfg = Some(cfg);
        g.num_blocks = Some(10);
        let (b, _, scratch) = g.plan(&input).unwrap();
        assert_eq!((b, scratch), (4, 10));
        let p = pad(&input, b, cfg, scratch);
        assert_eq!(p.tokens, vec![7, 9, 11, 0]);
        assert_eq!(p.slots[3], 160);
        assert_eq!(p.logit_rows, vec![0, 1, 2, 3]);
        assert!(p.attn.seqs.iter().all(|s| s.block_table.len() == 4));
        assert_eq!(p.attn.seqs[3].block_table[0], 10);
        assert_eq!(p.attn.seqs[2].block_table, vec![2, 2, 2, 0]);
        // A prefill row, or a batch above the ladder, runs eagerly.
        let mut prefill = input.clone();
        prefill.attn.seqs[0].query_len = 2;
        assert!(g.plan(&prefill).is_none());
        g.cfg = Some(GraphConfig {
            max_batch: 2,
            ..cfg
        });
        assert!(g.plan(&input).is_none());
    }
}
