//! The sweeps of `tandem profile`: steps of known shape run on a real engine (the servers'
//! scheduler, KV cache and executor), timed, and gathered into the grids of a measured
//! profile ([`super::grid::Measured`]), with a roofline fitted to the same points.

use serde::{Deserialize, Serialize};

use super::grid::{Grid2, StepShape};
use super::profile::Profile;
use crate::config::EngineConfig;
use crate::engine::{EngineCore, Executor, Request, SamplingParams};
use crate::error::{Error, Result};

/// The points of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Prefill chunk sizes.
    pub prefill_tokens: Vec<usize>,
    /// Cached prefixes before a chunk (multiples of the block size).
    pub cached: Vec<usize>,
    /// Decode batch sizes.
    pub batches: Vec<usize>,
    /// Decode context lengths.
    pub contexts: Vec<usize>,
    /// Prefill chunks beside decodes (the step budget leaves room for the decodes' tokens).
    pub mixed_tokens: Vec<usize>,
    /// Decode batches beside a prefill chunk.
    pub mixed_batches: Vec<usize>,
    /// Context of those decodes.
    pub mixed_context: usize,
    /// Timed steps per point (the median counts).
    pub repeats: usize,
}

/// Powers of `base` from `lo` up to `hi`, and `hi` itself.
fn ladder(lo: usize, hi: usize, base: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut x = lo.max(1);
    while x < hi {
        v.push(x);
        x *= base;
    }
    v.push(hi.max(lo));
    v.dedup();
    v
}

impl Sweep {
    /// The points an engine's settings allow: chunks up to its step budget, contexts and
    /// prefixes up to max_model_len, batches up to max_num_seqs, all within its KV cache.
    /// `points` (2 and up) is about how many per axis.
    pub fn for_engine(cfg: &EngineConfig, points: usize) -> Self {
        let base =
            |span: f64| (span.powf(1.0 / (points.max(2) - 1) as f64).round() as usize).max(2);
        let bs = cfg.block_size;
        let max_chunk = cfg.max_num_batched_tokens.min(cfg.max_model_len - 1);
        let capacity = cfg.num_blocks * bs;
        // The decode grid is a rectangle every point of which fits in the cache: batches up to
        // 64 (or max_num_seqs), contexts up to what that many sequences can hold. Longer
        // contexts at smaller batches lie beyond it, on the roofline.
        let max_batch = cfg.max_num_seqs.min(64).min(capacity / (4 * bs)).max(1);
        let max_ctx = (cfg.max_model_len - 8)
            .min(capacity * 9 / 10 / max_batch - 8)
            .max(bs);
        // A chunk and its cached prefix fit in max_model_len together: chunks up to 3/4 of it,
        // prefixes up to what is left (longer ones lie beyond the grid, on the roofline).
        let max_prefill = max_chunk.min((cfg.max_model_len - 2) * 3 / 4).max(2);
        let max_cached =
            ((cfg.max_model_len - 2 - max_prefill) / bs * bs).min(capacity / 2 / bs * bs);
        let mut cached = vec![0];
        cached.extend(ladder(
            bs,
            max_cached.max(bs),
            base(max_cached as f64 / bs as f64),
        ));
        cached.retain(|&c| c <= max_cached);
        Sweep {
            prefill_tokens: ladder(2, max_prefill, base(max_prefill as f64 / 2.0)),
            cached,
            batches: ladder(1, max_batch, base(max_batch as f64)),
            contexts: ladder(bs, max_ctx, base(max_ctx as f64 / bs as f64)),
            mixed_tokens: {
                let most = max_chunk.saturating_sub(max_batch).max(2);
                ladder(2, most, base(most as f64 / 2.0))
            },
            // One sequence of max_num_seqs is the chunk's.
            mixed_batches: {
                let most = max_batch.min(cfg.max_num_seqs.saturating_sub(1)).max(1);
                ladder(1, most, base(most as f64))
            },
            mixed_context: (4 * bs).min(max_ctx),
            repeats: 3,
        }
    }

    /// Steps the sweep will time (for a progress bar).
    pub fn steps(&self) -> usize {
        self.repeats
            * (self.prefill_tokens.len() * self.cached.len()
                + self.batches.len() * self.contexts.len()
                + self.mixed_tokens.len() * self.mixed_batches.len())
    }
}

/// Distinct token ids for request `salt`: no two requests share a block unless asked to.
fn tokens(salt: u64, len: usize, vocab: usize) -> Vec<u32> {
    (0..len as u64)
        .map(|i| {
            let z = (salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9))
            .wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Runs steps on an engine and times them.
pub struct Sweeper<'a, E: Executor, T: FnMut(&mut EngineCore<E>) -> Result<f64>> {
    core: &'a mut EngineCore<E>,
    /// Runs one step and returns its seconds (the wall clock, or what a timing model says).
    time: T,
    next_id: u64,
    vocab: usize,
    /// Called after every timed step (a progress bar).
    pub on_step: Box<dyn FnMut() + 'a>,
}

impl<'a, E: Executor, T: FnMut(&mut EngineCore<E>) -> Result<f64>> Sweeper<'a, E, T> {
    /// A sweeper over `core`, timing steps with `time`.
    pub fn new(core: &'a mut EngineCore<E>, time: T) -> Self {
        let vocab = core.config().vocab_size.max(2);
        Sweeper {
            core,
            time,
            next_id: 1 << 40,
            vocab,
            on_step: Box::new(|| {}),
        }
    }

    fn add(&mut self, prompt: Vec<u32>, max_tokens: usize) -> Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        };
        self.core.add_request(Request { id, prompt, params })?;
        Ok(id)
    }

    /// Steps until nothing runs.
    fn drain(&mut self) -> Result<()> {
        let mut guard = 0;
        while self.core.has_work() {
            self.core.step().map_err(|f| f.error)?;
            guard += 1;
            if guard > 1_000_000 {
                return Err(Error::Backend("the engine does not finish".into()));
            }
        }
        Ok(())
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// One prefill of `n` new tokens after a cached prefix of `cached`, timed.
    fn prefill(&mut self, n: usize, cached: usize) -> Result<f64> {
        let prefix = tokens(self.next_id, cached, self.vocab);
        if cached > 0 {
            // Computes (and caches) the prefix.
            self.add(prefix.clone(), 1)?;
            self.drain()?;
        }
        let mut prompt = prefix;
        prompt.extend(tokens(self.next_id + 7, n, self.vocab));
        self.add(prompt, 1)?;
        let t = (self.time)(self.core)?;
        (self.on_step)();
        self.drain()?;
        Ok(t)
    }

    /// Starts `batch` sequences that reach about `context` tokens together, and have `steps`
    /// decodes left then. The step budget prefills them a few at a time, and those done first
    /// decode while the rest are prefilled: their prompts are shorter by the steps they wait
    /// (an estimate from the budget), and every sequence may run until the last is ready.
    fn running(&mut self, batch: usize, context: usize, steps: usize) -> Result<Vec<u64>> {
        let prompt = context.saturating_sub(1).max(1);
        let budget = self.core.config().max_num_batched_tokens.max(1);
        let fill = |k: usize| (k * prompt).div_ceil(budget);
        let all = fill(batch);
        let mut ids = Vec::new();
        for k in 1..=batch {
            let ahead = all - fill(k).min(all);
            let len = prompt.saturating_sub(ahead).max(1);
            let p = tokens(self.next_id + 3, len, self.vocab);
            ids.push(self.add(p, steps + 4 + all + batch)?);
        }
        // Until every sequence has its first token: then each step is a decode for all.
        while self.core.queued_prefill_tokens() > 0 || self.core.num_requests().1 > 0 {
            self.core.step().map_err(|f| f.error)?;
        }
        Ok(ids)
    }

    fn abort_all(&mut self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            self.core.abort(id);
        }
        self.drain()
    }

    /// A decode step of `batch` sequences at `context`, after one untimed: the first decode
    /// step after the set-up's prefills ran about 1 ms slower than the next ones in every
    /// profile of 2026-12-07 (the demo model's decode step of one, 0.9 ms warm), and a
    /// deployment's decode steps mostly follow decode steps.
    fn decode(&mut self, batch: usize, context: usize, repeats: usize) -> Result<f64> {
        let ids = self.running(batch, context, repeats + 1)?;
        self.core.step().map_err(|f| f.error)?;
        let mut times = Vec::new();
        for _ in 0..repeats {
            times.push((self.time)(self.core)?);
            (self.on_step)();
        }
        self.abort_all(&ids)?;
        Ok(Self::median(times))
    }

    /// A prefill chunk of `n` tokens beside `batch` decodes at `context`, timed.
    fn mixed(&mut self, n: usize, batch: usize, context: usize) -> Result<f64> {
        let ids = self.running(batch, context, 2)?;
        let p = tokens(self.next_id + 11, n, self.vocab);
        self.add(p, 1)?;
        let t = (self.time)(self.core)?;
        (self.on_step)();
        self.abort_all(&ids)?;
        Ok(t)
    }

    /// The median of `repeats` passes over a grid, each timing every point once: a slow
    /// spell of a shared machine then spreads over the grid's points instead of skewing all
    /// of one point's (or one row's) samples.
    fn passes(
        &mut self,
        rows: &[usize],
        cols: &[usize],
        repeats: usize,
        mut time: impl FnMut(&mut Self, usize, usize) -> Result<f64>,
    ) -> Result<Vec<Vec<f64>>> {
        let mut samples = vec![vec![Vec::with_capacity(repeats); cols.len()]; rows.len()];
        for _ in 0..repeats {
            for (i, &a) in rows.iter().enumerate() {
                for (j, &b) in cols.iter().enumerate() {
                    samples[i][j].push(time(self, a, b)?);
                }
            }
        }
        Ok(samples
            .into_iter()
            .map(|row| row.into_iter().map(Self::median).collect())
            .collect())
    }

    /// The reference steps ([`Reference`]), each the median of `repeats`: the same work
    /// whenever it runs, so that two readings say how fast the machine was at each.
    pub fn reference(&mut self, repeats: usize) -> Result<Reference> {
        let r = repeats.max(1);
        let cfg = self.core.config();
        // Within the engine's limits: a chunk its step budget takes whole, a batch its cache
        // holds.
        let tokens = Reference::PREFILL_TOKENS
            .min(cfg.max_num_batched_tokens)
            .min(cfg.max_model_len.saturating_sub(2))
            .max(2);
        let batch = Reference::DECODE_BATCH.min(cfg.max_num_seqs).max(1);
        let capacity = cfg.num_blocks * cfg.block_size;
        let context = Reference::DECODE_CONTEXT
            .min(cfg.max_model_len.saturating_sub(8 + r))
            .min((capacity * 9 / 10 / batch).saturating_sub(8 + r))
            .max(2);
        let prefill: Vec<f64> = (0..r)
            .map(|_| self.prefill(tokens, 0))
            .collect::<Result<_>>()?;
        let decode_s = self.decode(batch, context, r)?;
        Ok(Reference {
            prefill_tokens: tokens,
            decode_batch: batch,
            decode_context: context,
            prefill_s: Self::median(prefill),
            decode_s,
        })
    }

    /// Runs `sweep` and returns its three grids.
    pub fn run(&mut self, sweep: &Sweep) -> Result<(Grid2, Grid2, Grid2)> {
        let r = sweep.repeats.max(1);
        let f = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let prefill = self.passes(&sweep.prefill_tokens, &sweep.cached, r, |s, n, c| {
            s.prefill(n, c)
        })?;
        let mut decode = Vec::new();
        for &b in &sweep.batches {
            let mut row = Vec::new();
            for &l in &sweep.contexts {
                // At least three steps, whatever the repeats: back to back after one set-up
                // they cost little, and one step alone can be off by a factor (the second
                // decode step of 9 sequences at 144 tokens: 17-24 ms in three one-sample
                // passes, 7.9 ms as the median of three).
                row.push(self.decode(b, l, r.max(3))?);
            }
            decode.push(row);
        }
        // A decode point's steps follow one set-up (of its batch and context), so they stay
        // together; prefills and mixed steps set each sample up anew, and take passes.
        let context = sweep.mixed_context;
        let mixed = self.passes(&sweep.mixed_tokens, &sweep.mixed_batches, r, |s, n, b| {
            s.mixed(n, b, context)
        })?;
        self.core
            .check_invariants()
            .map_err(|e| Error::Backend(format!("the sweep left the engine inconsistent: {e}")))?;
        Ok((
            Grid2::new(
                ("new tokens", f(&sweep.prefill_tokens)),
                ("cached tokens", f(&sweep.cached)),
                prefill,
            )?,
            Grid2::new(
                ("batch", f(&sweep.batches)),
                ("context tokens", f(&sweep.contexts)),
                decode,
            )?,
            Grid2::new(
                ("new tokens", f(&sweep.mixed_tokens)),
                ("decode batch", f(&sweep.mixed_batches)),
                mixed,
            )?,
        ))
    }
}

/// How long the reference steps took: a prefill of about [`Reference::PREFILL_TOKENS`] new
/// tokens and a decode step of about [`Reference::DECODE_BATCH`] sequences at
/// [`Reference::DECODE_CONTEXT`] tokens (less where the engine's limits are lower): shapes
/// the demo model's calibrations run, timed in a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub prefill_tokens: usize,
    pub decode_batch: usize,
    pub decode_context: usize,
    pub prefill_s: f64,
    pub decode_s: f64,
}

impl Reference {
    pub const PREFILL_TOKENS: usize = 250;
    pub const DECODE_BATCH: usize = 8;
    pub const DECODE_CONTEXT: usize = 256;
}

/// Every point of the three grids as the step it timed: what [`fit_roofline`] fits.
pub fn grid_points(
    (prefill, decode, mixed): (&Grid2, &Grid2, &Grid2),
    mixed_context: f64,
) -> Vec<(StepShape, f64)> {
    let mut v = Vec::new();
    let mut add = |g: &Grid2, shape: &dyn Fn(f64, f64) -> StepShape| {
        for (i, &x) in g.x.iter().enumerate() {
            for (j, &y) in g.y.iter().enumerate() {
                v.push((shape(x, y), g.seconds[i][j]));
            }
        }
    };
    add(prefill, &|n, c| StepShape {
        prefill_tokens: n,
        prefill_seqs: 1.0,
        prefill_cached: c,
        ..StepShape::default()
    });
    add(decode, &|b, l| StepShape {
        decodes: b,
        decode_context: l,
        ..StepShape::default()
    });
    add(mixed, &|n, b| StepShape {
        prefill_tokens: n,
        prefill_seqs: 1.0,
        decodes: b,
        decode_context: mixed_context,
        ..StepShape::default()
    });
    v
}

/// Fits the roofline of `base` (its byte and FLOP counts) to measured steps: the bandwidth,
/// the matmul rate (both at efficiency 1), attention's share of that rate and the fixed cost
/// that make its step times closest to the measured ones, in relative terms (least squares of
/// the log ratio).
pub fn fit_roofline(base: &Profile, points: &[(StepShape, f64)]) -> Profile {
    let mut first = base.clone();
    first.hbm_efficiency = 1.0;
    first.matmul_efficiency = 1.0;
    let with = |v: &[f64; 4]| {
        let mut p = first.clone();
        p.hbm_bandwidth = v[0].exp();
        p.matmul_flops = v[1].exp();
        p.step_overhead_s = v[2].exp();
        p.attention_efficiency = v[3].exp();
        p
    };
    let err = |v: &[f64; 4]| -> f64 {
        let p = with(v);
        points
            .iter()
            .map(|(s, t)| (p.shape_time(s) / t).ln().powi(2))
            .sum()
    };
    // The bandwidth and the fixed cost trade off on decode steps and the max() has a kink,
    // so a search from one start can stop in the wrong valley: start from the data sheet's
    // figures scaled, and from several fixed costs and attention rates, and keep the best.
    let mut best = ([0.0; 4], f64::INFINITY);
    for bw in [0.25f64, 1.0, 4.0] {
        for rate in [0.25f64, 1.0, 4.0] {
            for overhead in [1e-6f64, 1e-4, 1e-2] {
                for attention in [1.0f64, 0.1] {
                    let start = [
                        (first.hbm_bandwidth * bw).ln(),
                        (first.matmul_flops * rate).ln(),
                        overhead.ln(),
                        attention.ln(),
                    ];
                    let (v, e) = nelder_mead(start, &err);
                    if e < best.1 {
                        best = (v, e);
                    }
                }
            }
        }
    }
    with(&best.0)
}

/// Nelder–Mead minimisation of `f` over `N` coordinates (logs here), from `start` with
/// steps of 1 (a factor of e).
fn nelder_mead<const N: usize>(start: [f64; N], f: &dyn Fn(&[f64; N]) -> f64) -> ([f64; N], f64) {
    let mut simplex: Vec<([f64; N], f64)> = (0..=N)
        .map(|k| {
            let mut v = start;
            if k > 0 {
                v[k - 1] += 1.0;
            }
            (v, f(&v))
        })
        .collect();
    // The point at `t` along the line from `c` to `to`.
    let at = |c: &[f64; N], to: &[f64; N], t: f64| -> [f64; N] {
        std::array::from_fn(|i| c[i] + t * (to[i] - c[i]))
    };
    for _ in 0..200 * N {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[N].1 - simplex[0].1).abs() <= 1e-14 * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let c: [f64; N] =
            std::array::from_fn(|i| simplex[..N].iter().map(|(v, _)| v[i]).sum::<f64>() / N as f64);
        let worst = simplex[N].0;
        let r = at(&c, &worst, -1.0);
        let fr = f(&r);
        if fr < simplex[0].1 {
            let e = at(&c, &worst, -2.0);
            let fe = f(&e);
            simplex[N] = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < simplex[N - 1].1 {
            simplex[N] = (r, fr);
        } else {
            let k = at(&c, &worst, 0.5);
            let fk = f(&k);
            if fk < simplex[N].1 {
                simplex[N] = (k, fk);
            } else {
                let best = simplex[0].0;
                for s in &mut simplex[1..] {
                    s.0 = at(&best, &s.0, 0.5);
                    s.1 = f(&s.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_stay_within_the_engine() {
        let mut cfg = EngineConfig::for_model(&crate::model::demo::config().unwrap(), 256);
        cfg.block_size = 16;
        cfg.max_model_len = 1024;
        cfg.max_num_batched_tokens = 512;
        cfg.max_num_seqs = 32;
        let s = Sweep::for_engine(&cfg, 4);
        assert_eq!(*s.prefill_tokens.last().unwrap(), 512);
        assert!(s.cached.iter().all(|c| c % 16 == 0 && c + 512 < 1024));
        assert!(*s.batches.last().unwrap() <= 32);
        assert!(s.contexts.iter().all(|&c| c < 1024));
        assert!(s.batches.windows(2).all(|w| w[1] > w[0]));
        assert!(s.steps() > 0);
    }

    #[test]
    fn the_reference_times_its_shapes_within_the_engine() {
        use crate::engine::SeqWork;
        use crate::sim::executor::SimExecutor;
        let truth = Profile::default_qwen3_32b_tp2_h200();
        let time = |cfg: &EngineConfig| {
            let mut core =
                EngineCore::new(cfg.clone(), SimExecutor::default(), Vec::new()).unwrap();
            Sweeper::new(&mut core, |c| {
                c.step().map_err(|f| f.error)?;
                Ok(c.executor_mut()
                    .take_step_work()
                    .map_or(0.0, |w| truth.step_time(&w)))
            })
            .reference(3)
            .unwrap()
        };
        let mut cfg = EngineConfig::for_model(&crate::model::demo::config().unwrap(), 4096);
        cfg.block_size = 16;
        cfg.max_model_len = 2048;
        let r = time(&cfg);
        assert_eq!(
            (r.prefill_tokens, r.decode_batch, r.decode_context),
            (
                Reference::PREFILL_TOKENS,
                Reference::DECODE_BATCH,
                Reference::DECODE_CONTEXT
            )
        );
        let prefill = truth.step_time(&[SeqWork {
            new_tokens: r.prefill_tokens,
            context_len: r.prefill_tokens,
        }]);
        assert!((r.prefill_s / prefill - 1.0).abs() < 1e-9, "{r:?}");
        // The decodes' contexts grow by a token a step; the median step is within 2 tokens.
        let decode = |ctx| {
            truth.step_time(&vec![
                SeqWork {
                    new_tokens: 1,
                    context_len: ctx,
                };
                r.decode_batch
            ])
        };
        let (lo, hi) = (decode(r.decode_context - 2), decode(r.decode_context + 3));
        assert!(r.decode_s >= lo && r.decode_s <= hi, "{r:?}: {lo} {hi}");
        // An engine of a smaller step budget, batch and context takes smaller shapes.
        cfg.max_num_batched_tokens = 100;
        cfg.max_num_seqs = 4;
        cfg.max_model_len = 128;
        let r = time(&cfg);
        assert_eq!((r.prefill_tokens, r.decode_batch), (100, 4));
        assert!(r.decode_context <= 120, "{r:?}");
    }

    /// A toy executor whose step times a known profile gives: what the sweep measures, plus
    /// the fitted roofline, must give back that profile's times within 2%.
    #[test]
    fn a_known_cost_function_is_recovered() {
        use crate::engine::SeqWork;
        use crate::sim::executor::SimExecutor;
        use crate::sim::grid::Measured;
        let mut truth = Profile::default_qwen3_32b_tp2_h200();
        // Attention below the dense layers' rate, as on a CPU: the fit must find it.
        truth.attention_efficiency = 0.4;
        let mut cfg = EngineConfig::for_model(&crate::model::demo::config().unwrap(), 4096);
        cfg.block_size = 16;
        cfg.max_model_len = 4096;
        cfg.max_num_batched_tokens = 2048;
        cfg.max_num_seqs = 64;
        let mut core = EngineCore::new(cfg.clone(), SimExecutor::default(), Vec::new()).unwrap();
        let sweep = Sweep {
            repeats: 1,
            ..Sweep::for_engine(&cfg, 6)
        };
        let (prefill, decode, mixed) = Sweeper::new(&mut core, |c| {
            c.step().map_err(|f| f.error)?;
            Ok(c.executor_mut()
                .take_step_work()
                .map_or(0.0, |w| truth.step_time(&w)))
        })
        .run(&sweep)
        .unwrap();
        let all = grid_points((&prefill, &decode, &mixed), sweep.mixed_context as f64);
        let mut base = truth.clone();
        base.hbm_bandwidth /= 3.0;
        base.matmul_flops *= 2.0;
        base.step_overhead_s = 1e-4;
        let mut got = fit_roofline(&base, &all);
        got.measured = Some(Measured {
            measured_on: "toy".into(),
            prefill,
            decode,
            mixed,
            mixed_context: sweep.mixed_context as f64,
            transfer_latency_s: truth.transfer_latency_s,
            transfer_bytes_per_s: truth.link_bandwidth * truth.link_efficiency,
        });
        got.validate().unwrap();
        let check = |work: &[SeqWork], what: &str| {
            let (a, b) = (got.step_time(work), truth.step_time(work));
            assert!(
                (a / b - 1.0).abs() < 0.02,
                "{what}: {a} vs {b} at {:?}; fitted {} {} {} truth {} {} {}; decode grid {:?}",
                StepShape::of(work),
                got.hbm_bandwidth,
                got.matmul_flops,
                got.step_overhead_s,
                truth.hbm_bandwidth * truth.hbm_efficiency,
                truth.matmul_flops * truth.matmul_efficiency,
                truth.step_overhead_s,
                got.measured
                    .as_ref()
                    .map(|m| (&m.decode.x, &m.decode.y, &m.decode.seconds))
            );
        };
        let mut rng = 12345u64;
        let mut next = |m: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % m as u64) as usize
        };
        for _ in 0..300 {
            let n = 2 + next(2000);
            let c = next(2000);
            check(
                &[SeqWork {
                    new_tokens: n,
                    context_len: n + c,
                }],
                "prefill",
            );
            let (b, l) = (1 + next(64), 16 + next(800));
            check(
                &vec![
                    SeqWork {
                        new_tokens: 1,
                        context_len: l
                    };
                    b
                ],
                "decode",
            );
            let mut w = vec![
                SeqWork {
                    new_tokens: 1,
                    context_len: l
                };
                b
            ];
            w.push(SeqWork {
                new_tokens: n,
                context_len: n,
            });
            check(&w, "mixed");
        }
        // Beyond the grids: the fitted roofline's shape.
        check(
            &[SeqWork {
                new_tokens: 30_000,
                context_len: 90_000,
            }],
            "a long prefill",
        );
        check(
            &[SeqWork {
                new_tokens: 1,
                context_len: 60_000,
            }; 8],
            "long decodes",
        );
        assert!((got.transfer_time(10_000) / truth.transfer_time(10_000) - 1.0).abs() < 1e-9);
    }
}
