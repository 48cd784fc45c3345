//! Turns one row of logits into a token: penalties, temperature, min-p, top-k, top-p, and a
//! seeded draw; plus logprobs of the model's raw distribution.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::params::SamplingParams;

/// A sampled token with the logprobs the request asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: u32,
    /// Its logprob under the raw model distribution, when logprobs were requested.
    pub logprob: Option<f32>,
    /// The most likely tokens and their logprobs, most likely first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// What the sampler needs to know about one sequence.
#[derive(Debug, Clone, Copy)]
pub struct SampleContext<'a> {
    /// The request's parameters.
    pub params: &'a SamplingParams,
    /// Its prompt.
    pub prompt: &'a [u32],
    /// What it has generated so far.
    pub output: &'a [u32],
    /// The model's EOS ids (which `min_tokens` holds back unless `ignore_eos`).
    pub eos: &'a [u32],
    /// The request's seed; the draw for each output position is seeded by (seed, position),
    /// so a request is reproducible however it is batched or preempted.
    pub seed: u64,
}

/// Index of the largest value (the first one on ties, as torch.argmax).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = xs
        .iter()
        .map(|x| ((x - max) as f64).exp())
        .sum::<f64>()
        .ln() as f32
        + max;
    xs.iter().map(|x| x - lse).collect()
}

/// Samples the next token from `logits` (modified in place by penalties and filters).
pub fn sample(logits: &mut [f32], ctx: &SampleContext<'_>) -> Sampled {
    let p = ctx.params;
    let (logprob_row, top_logprobs) = match p.logprobs {
        None => (None, Vec::new()),
        Some(n) => {
            let lp = log_softmax(logits);
            let mut idx: Vec<usize> = (0..lp.len()).collect();
            let n = n.min(lp.len());
            if n > 0 {
                idx.select_nth_unstable_by(n - 1, |&a, &b| lp[b].total_cmp(&lp[a]));
            }
            idx.truncate(n);
            idx.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
            let top = idx.iter().map(|&i| (i as u32, lp[i])).collect();
            (Some(lp), top)
        }
    };
    apply_penalties(logits, ctx);
    hold_back_stops(logits, ctx);
    let token = if p.is_greedy() {
        argmax(logits)
    } else {
        draw(logits, p, ctx.seed, ctx.output.len() as u64)
    };
    Sampled {
        token: token as u32,
        logprob: logprob_row.map(|lp| lp[token]),
        top_logprobs,
    }
}

/// Until `min_tokens` tokens are out, the tokens that would end the request cannot be drawn.
fn hold_back_stops(logits: &mut [f32], ctx: &SampleContext<'_>) {
    let p = ctx.params;
    if ctx.output.len() >= p.min_tokens {
        return;
    }
    let eos: &[u32] = if p.ignore_eos { &[] } else { ctx.eos };
    for &t in p.stop_token_ids.iter().chain(eos) {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

fn apply_penalties(logits: &mut [f32], ctx: &SampleContext<'_>) {
    let p = ctx.params;
    if p.repetition_penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &t in ctx.prompt.iter().chain(ctx.output) {
            if let Some(s) = seen.get_mut(t as usize)
                && !*s
            {
                *s = true;
                let l = &mut logits[t as usize];
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &t in ctx.output {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
}

/// Temperature, then min-p, top-k and top-p over the probabilities, then one seeded draw.
fn draw(logits: &[f32], p: &SamplingParams, seed: u64, position: u64) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut cand: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, (((l - max) / p.temperature) as f64).exp()))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    if p.min_p > 0.0 {
        // The largest weight is exp(0) = 1, so min_p * max_prob is min_p in weight units.
        cand.retain(|&(_, w)| w >= p.min_p as f64);
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        cand.truncate(p.top_k);
    }
    if p.top_p < 1.0 {
        let total: f64 = cand.iter().map(|c| c.1).sum();
        let mut acc = 0.0;
        let mut keep = cand.len();
        for (i, c) in cand.iter().enumerate() {
            acc += c.1 / total;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep);
    }
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let mut rng = StdRng::seed_from_u64(seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut u = rng.random::<f64>() * total;
    for &(i, w) in &cand {
        if u < w {
            return i;
        }
        u -= w;
    }
    cand.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        p: &'a SamplingParams,
        prompt: &'a [u32],
        out: &'a [u32],
        seed: u64,
    ) -> SampleContext<'a> {
        SampleContext {
            params: p,
            prompt,
            output: out,
            eos: &[],
            seed,
        }
    }

    /// vLLM's min_tokens: EOS and stop ids cannot be drawn until min_tokens are out, then can;
    /// ignore_eos leaves EOS to the model, and logprobs still describe the raw distribution.
    #[test]
    fn min_tokens_holds_back_eos_and_stop_ids() {
        let p = SamplingParams {
            min_tokens: 2,
            stop_token_ids: vec![1],
            logprobs: Some(1),
            ..SamplingParams::greedy(4)
        };
        let logits = [0.0, 5.0, 1.0, 9.0];
        let eos = [3u32];
        let with = |p: &SamplingParams, out: &[u32]| {
            let c = SampleContext {
                eos: &eos,
                ..ctx(p, &[], out, 0)
            };
            sample(&mut logits.clone(), &c)
        };
        let early = with(&p, &[2]);
        assert_eq!(early.token, 2, "EOS (3) and the stop id (1) are held back");
        assert_eq!(
            early.top_logprobs[0].0, 3,
            "logprobs are the model's, unmasked"
        );
        assert_eq!(with(&p, &[2, 2]).token, 3, "after min_tokens EOS may come");
        let ignore = SamplingParams {
            ignore_eos: true,
            ..p.clone()
        };
        assert_eq!(
            with(&ignore, &[2]).token,
            3,
            "ignore_eos: EOS is an ordinary token"
        );
        let bad = SamplingParams { min_tokens: 5, ..p };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("min_tokens")
        );
    }

    #[test]
    fn greedy_and_logprobs() {
        let p = SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy(1)
        };
        let mut l = vec![1.0, 3.0, 2.0, 3.0];
        let s = sample(&mut l, &ctx(&p, &[], &[], 0));
        assert_eq!(s.token, 1, "first max wins ties");
        let lse = (1f32.exp() + 2.0 * 3f32.exp() + 2f32.exp()).ln();
        assert!((s.logprob.unwrap() - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(
            s.top_logprobs.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn filters_restrict_the_draw() {
        let logits = vec![0.0, 5.0, 4.9, -1.0, 4.8];
        for seed in 0..50 {
            let k = SamplingParams {
                temperature: 1.0,
                top_k: 2,
                ..Default::default()
            };
            let t = sample(&mut logits.clone(), &ctx(&k, &[], &[], seed)).token;
            assert!(t == 1 || t == 2);
            let pp = SamplingParams {
                temperature: 1.0,
                top_p: 0.3,
                ..Default::default()
            };
            assert_eq!(
                sample(&mut logits.clone(), &ctx(&pp, &[], &[], seed)).token,
                1
            );
            let mp = SamplingParams {
                temperature: 1.0,
                min_p: 0.5,
                ..Default::default()
            };
            assert!(
                [1, 2, 4].contains(&sample(&mut logits.clone(), &ctx(&mp, &[], &[], seed)).token)
            );
        }
    }

    #[test]
    fn seeded_draws_are_reproducible_and_vary() {
        let p = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.1).collect();
        let a: Vec<u32> = (0..20)
            .map(|s| sample(&mut logits.clone(), &ctx(&p, &[], &[], s)).token)
            .collect();
        let b: Vec<u32> = (0..20)
            .map(|s| sample(&mut logits.clone(), &ctx(&p, &[], &[], s)).token)
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 5);
    }

    #[test]
    fn penalties_follow_their_definitions() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy(1)
        };
        let mut l = vec![4.0, -4.0, 1.0, 1.0];
        apply_penalties(&mut l, &ctx(&p, &[0, 1], &[2, 2], 0));
        assert_eq!(l, vec![2.0, -8.0, 0.5 - 0.5 - 0.5, 1.0]);
        // Repetition penalty on the prompt turns greedy away from token 0.
        let mut l = vec![4.0, 3.0];
        assert_eq!(sample(&mut l, &ctx(&p, &[0], &[], 0)).token, 1);
    }
}
