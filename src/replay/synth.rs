//! Trace synthesis: a new trace with a source trace's prefix structure and arrival process,
//! with longer shared prefixes or prompts, as NVIDIA Dynamo's prefix data generator
//! (`datagen synthesize`) derives its benchmark traces.
//!
//! The source's hash-id paths form a prefix tree. A block seen by more than one request is
//! *shared*; the rest of a request is its unique prompt. Runs of shared blocks that every
//! request passing through them takes together (equal visit counts) are one radix node,
//! whose length `--prefix-len-multiplier` scales. A synthesized request walks the radix tree
//! from the root, at each node going on to a child, stopping, or leaving for a unique prompt,
//! each as often as the source did there; the unique prompt's length is drawn from the
//! source's (times `--prompt-len-multiplier`), its last block's fill too. Arrivals repeat the
//! source's: how many requests share a timestamp, and the gaps between timestamps.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rustc_hash::FxHashMap;

use super::trace::TraceRequest;
use crate::error::{Error, Result};

/// How to derive the new trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Requests to produce.
    pub requests: usize,
    /// Tokens per hash id, in the source and the result.
    pub block: usize,
    /// Scales the shared prefixes' lengths (above 1, rounded up to a whole factor).
    pub prefix_len_multiplier: f64,
    /// Scales the unique prompts' lengths (rounded, at least one block).
    pub prompt_len_multiplier: f64,
    /// Scales output lengths.
    pub osl_multiplier: f64,
    /// Drop (and draw again) requests longer than this.
    pub max_isl: Option<usize>,
    /// Divides the gaps between arrivals.
    pub speedup: f64,
    /// Seed of every draw.
    pub seed: u64,
}

/// One radix node: a run of shared blocks, and where requests go after it.
#[derive(Debug, Default)]
struct Radix {
    /// Hash ids of the run in the synthesized trace (consecutive).
    ids: std::ops::Range<u64>,
    /// Child radix nodes with how many source requests went there.
    children: Vec<(usize, u64)>,
    /// Source requests that went on to a unique prompt after the run.
    to_unique: u64,
    /// Source requests that ended with the run.
    ends: u64,
}

/// The source trace reduced to what synthesis draws from.
#[derive(Debug)]
pub struct Synthesizer {
    radix: Vec<Radix>,
    unique_lens: Vec<usize>,
    last_fill: Vec<usize>,
    outputs: Vec<usize>,
    group_sizes: Vec<usize>,
    gaps: Vec<u64>,
    next_id: u64,
    opts: SynthOptions,
}

/// A node of the source's prefix tree.
struct Node {
    visits: u64,
    ends: u64,
    children: Vec<usize>,
}

impl Synthesizer {
    /// Reads the structure of `source` (of `opts.block` tokens per hash id).
    pub fn new(source: &[TraceRequest], opts: SynthOptions) -> Result<Self> {
        let bad = |m: &str| Err(Error::InvalidRequest(m.to_string()));
        if source.is_empty() {
            return bad("the source trace is empty");
        }
        if opts.requests == 0 || opts.block == 0 {
            return bad("the request count and block size must be positive");
        }
        for (k, v) in [
            ("--prefix-len-multiplier", opts.prefix_len_multiplier),
            ("--prompt-len-multiplier", opts.prompt_len_multiplier),
            ("--osl-multiplier", opts.osl_multiplier),
            ("--speedup", opts.speedup),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidRequest(format!("{k} must be positive")));
            }
        }
        // The prefix tree: node 0 is the root; a child is keyed by (parent, hash id), so equal
        // ids under different prefixes stay apart.
        let mut nodes = vec![Node {
            visits: source.len() as u64,
            ends: 0,
            children: Vec::new(),
        }];
        let mut edge: FxHashMap<(usize, u64), usize> = FxHashMap::default();
        let mut paths = Vec::with_capacity(source.len());
        for r in source {
            let mut at = 0;
            let mut path = Vec::with_capacity(r.hash_ids.len());
            for &h in &r.hash_ids {
                let next = match edge.get(&(at, h)) {
                    Some(&n) => n,
                    None => {
                        nodes.push(Node {
                            visits: 0,
                            ends: 0,
                            children: Vec::new(),
                        });
                        let n = nodes.len() - 1;
                        nodes[at].children.push(n);
                        edge.insert((at, h), n);
                        n
                    }
                };
                nodes[next].visits += 1;
                path.push(next);
                at = next;
            }
            nodes[at].ends += 1;
            paths.push(path);
        }
        // A request's unique prompt: its blocks no other request reached.
        let mut unique_lens: Vec<usize> = paths
            .iter()
            .map(|p| p.iter().filter(|&&n| nodes[n].visits == 1).count())
            .filter(|&n| n > 0)
            .map(|n| ((n as f64 * opts.prompt_len_multiplier).round() as usize).max(1))
            .collect();
        if unique_lens.is_empty() {
            // Every block is shared: walks never leave for a unique prompt, save from a root
            // without children.
            unique_lens.push(1);
        }
        let scale = |len: usize| -> usize {
            let m = opts.prefix_len_multiplier;
            if m > 1.0 {
                len * m.ceil() as usize
            } else {
                ((len as f64 * m).round() as usize).max(1)
            }
        };
        // Radix nodes, built top-down: a run continues while its one child has its visits.
        let mut radix = vec![Radix::default()];
        let mut next_id = 0u64;
        let mut stack = vec![(0usize, 0usize)]; // (tree node ending a run, its radix node)
        while let Some((end, r)) = stack.pop() {
            radix[r].ends = nodes[end].ends;
            for &c in &nodes[end].children {
                if nodes[c].visits == 1 {
                    radix[r].to_unique += 1;
                    continue;
                }
                let mut last = c;
                let mut len = 1;
                while let [only] = nodes[last].children[..]
                    && nodes[only].visits == nodes[last].visits
                {
                    last = only;
                    len += 1;
                }
                let n = scale(len);
                radix.push(Radix {
                    ids: next_id..next_id + n as u64,
                    ..Radix::default()
                });
                next_id += n as u64;
                let child = radix.len() - 1;
                radix[r].children.push((child, nodes[c].visits));
                stack.push((last, child));
            }
        }
        let last_fill = source
            .iter()
            .map(|r| {
                let full = r.hash_ids.len().saturating_sub(1) * opts.block;
                r.input_length.saturating_sub(full).clamp(1, opts.block)
            })
            .collect();
        let mut group_sizes = Vec::new();
        let mut gaps = Vec::new();
        let mut i = 0;
        while i < source.len() {
            let t = source[i].timestamp;
            let j = i + source[i..].iter().take_while(|r| r.timestamp == t).count();
            group_sizes.push(j - i);
            if let Some(next) = source.get(j) {
                gaps.push(next.timestamp.saturating_sub(t));
            }
            i = j;
        }
        if gaps.is_empty() {
            gaps.push(0);
        }
        Ok(Synthesizer {
            radix,
            unique_lens,
            last_fill,
            outputs: source.iter().map(|r| r.output_length).collect(),
            group_sizes,
            gaps,
            next_id,
            opts,
        })
    }

    /// Radix nodes of the shared-prefix tree (the root included).
    pub fn radix_nodes(&self) -> usize {
        self.radix.len()
    }

    fn draw<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
        from[rng.random_range(0..from.len())]
    }

    /// One request's hash ids and input length.
    fn request(&mut self, rng: &mut StdRng) -> (Vec<u64>, usize) {
        let block = self.opts.block;
        let (mut ids, mut at) = (Vec::new(), 0);
        let unique = loop {
            let r = &self.radix[at];
            let total = r.children.iter().map(|c| c.1).sum::<u64>() + r.to_unique + r.ends;
            let mut u = rng.random_range(0..total.max(1));
            let next = r.children.iter().find_map(|&(c, w)| {
                if u < w {
                    Some(c)
                } else {
                    u -= w;
                    None
                }
            });
            match next {
                Some(c) => {
                    ids.extend(self.radix[c].ids.clone());
                    at = c;
                }
                // What is left of u falls on the unique prompts, then on the ends.
                None => break u < r.to_unique || ids.is_empty(),
            }
        };
        if !unique {
            let len = ids.len() * block;
            return (ids, len);
        }
        let n = Self::draw(rng, &self.unique_lens);
        ids.extend(self.next_id..self.next_id + n as u64);
        self.next_id += n as u64;
        let fill = Self::draw(rng, &self.last_fill);
        let len = (ids.len() - 1) * block + fill;
        (ids, len)
    }

    /// Synthesizes the trace.
    pub fn run(mut self) -> Vec<TraceRequest> {
        let mut rng = StdRng::seed_from_u64(self.opts.seed);
        let mut out = Vec::with_capacity(self.opts.requests);
        let mut t = 0f64;
        // A trace with no request under the cap would loop for ever: give up after many
        // draws in a row that all miss it.
        let mut misses = 0usize;
        while out.len() < self.opts.requests && misses < 100_000 {
            let group = Self::draw(&mut rng, &self.group_sizes);
            for _ in 0..group {
                let (hash_ids, input_length) = self.request(&mut rng);
                let output = Self::draw(&mut rng, &self.outputs) as f64 * self.opts.osl_multiplier;
                if self.opts.max_isl.is_some_and(|m| input_length > m) {
                    misses += 1;
                    continue;
                }
                misses = 0;
                out.push(TraceRequest {
                    timestamp: t.round() as u64,
                    input_length,
                    output_length: (output as usize).max(1),
                    hash_ids,
                });
                if out.len() == self.opts.requests {
                    break;
                }
            }
            t += Self::draw(&mut rng, &self.gaps) as f64 / self.opts.speedup;
        }
        out
    }
}

/// A trace's prefix figures, as Dynamo's prefix analyzer reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixStats {
    /// Mean, min and max input length.
    pub isl: (f64, usize, usize),
    /// Mean output length.
    pub osl: f64,
    /// Leading blocks seen before, over all blocks (an infinite cache, in trace order).
    pub hit_rate: f64,
    /// Mean over requests of the tokens in blocks that appear in another request too, over
    /// the input length.
    pub shared_prefix_ratio: f64,
}

/// Computes [`PrefixStats`] of a trace of `block` tokens per hash id.
pub fn prefix_stats(reqs: &[TraceRequest], block: usize) -> PrefixStats {
    let n = reqs.len().max(1) as f64;
    let mut count: FxHashMap<u64, u32> = FxHashMap::default();
    for r in reqs {
        for &h in &r.hash_ids {
            *count.entry(h).or_default() += 1;
        }
    }
    let mut seen = rustc_hash::FxHashSet::default();
    let (mut hit, mut blocks, mut shared) = (0usize, 0usize, 0.0);
    for r in reqs {
        hit += r.hash_ids.iter().take_while(|h| seen.contains(*h)).count();
        blocks += r.hash_ids.len();
        seen.extend(r.hash_ids.iter().copied());
        let repeated = r.hash_ids.iter().filter(|h| count[*h] > 1).count();
        let context = if repeated == r.hash_ids.len() {
            r.input_length
        } else {
            repeated * block
        };
        shared += context as f64 / r.input_length as f64;
    }
    PrefixStats {
        isl: (
            reqs.iter().map(|r| r.input_length).sum::<usize>() as f64 / n,
            reqs.iter().map(|r| r.input_length).min().unwrap_or(0),
            reqs.iter().map(|r| r.input_length).max().unwrap_or(0),
        ),
        osl: reqs.iter().map(|r| r.output_length).sum::<usize>() as f64 / n,
        hit_rate: hit as f64 / blocks.max(1) as f64,
        shared_prefix_ratio: shared / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: u64, ids: &[u64], block: usize) -> TraceRequest {
        TraceRequest {
            timestamp: t,
            input_length: ids.len() * block - 1,
            output_length: 10,
            hash_ids: ids.to_vec(),
        }
    }

    fn opts(requests: usize) -> SynthOptions {
        SynthOptions {
            requests,
            block: 4,
            prefix_len_multiplier: 1.0,
            prompt_len_multiplier: 1.0,
            osl_multiplier: 1.0,
            max_isl: None,
            speedup: 1.0,
            seed: 3,
        }
    }

    #[test]
    fn the_radix_tree_keeps_shared_runs_and_drops_unique_prompts() {
        // Dynamo's README example: [0 1 2 (3)], [0 1], [0 1 2], [0 (4) (5)].
        let src = [
            req(0, &[0, 1, 2, 3], 4),
            req(0, &[0, 1], 4),
            req(5, &[0, 1, 2], 4),
            req(9, &[0, 4, 5], 4),
        ];
        let s = Synthesizer::new(&src, opts(1)).unwrap();
        // Root, [0] (4 visits), [1] (3), [2] (2): 0→1 differ in visits, so three runs.
        assert_eq!(s.radix_nodes(), 4);
        assert_eq!(s.unique_lens, vec![1, 2]);
        // With the prefix doubled, every shared run is twice as long: a request that takes
        // the whole core path has 6 shared blocks.
        let s = Synthesizer::new(
            &src,
            SynthOptions {
                prefix_len_multiplier: 2.0,
                ..opts(2000)
            },
        )
        .unwrap();
        let out = s.run();
        assert_eq!(out.len(), 2000);
        let lens: std::collections::BTreeSet<usize> =
            out.iter().map(|r| r.hash_ids.len()).collect();
        // Paths: [0]+unique (3–4), [0 1] end (4), [0 1 2] end (6), [0 1 2]+unique 1–2 (7–8).
        assert!(lens.is_subset(&[3, 4, 6, 7, 8].into()), "{lens:?}");
        assert!(lens.contains(&6) && lens.contains(&8), "{lens:?}");
        for r in &out {
            assert_eq!(r.hash_ids.len(), r.input_length.div_ceil(4), "{r:?}");
        }
        // Arrivals: groups of 2 or 1, gaps of 5 or 4 ms.
        let ts: Vec<u64> = out.iter().map(|r| r.timestamp).collect();
        assert!(ts.windows(2).all(|w| w[1] >= w[0]));
        assert!(ts.windows(2).all(|w| [0, 4, 5].contains(&(w[1] - w[0]))));
    }

    #[test]
    fn the_cap_redraws_and_the_seed_repeats() {
        // Unique prompts of 1 block (11 tokens in all) or 3 (19 tokens).
        let src: Vec<TraceRequest> = (0..50)
            .map(|i| match i % 2 {
                0 => req(i * 10, &[0, 1, 100 + i], 4),
                _ => req(i * 10, &[0, 1, 100 + i, 200 + i, 300 + i], 4),
            })
            .collect();
        let capped = SynthOptions {
            max_isl: Some(16),
            ..opts(300)
        };
        let a = Synthesizer::new(&src, capped.clone()).unwrap().run();
        assert_eq!(a.len(), 300);
        assert!(a.iter().all(|r| r.input_length <= 16));
        assert_eq!(a, Synthesizer::new(&src, capped).unwrap().run());
        // A cap nothing fits under ends the run instead of hanging it.
        let none = Synthesizer::new(
            &src,
            SynthOptions {
                max_isl: Some(2),
                ..opts(5)
            },
        )
        .unwrap()
        .run();
        assert!(none.is_empty());
        assert!(Synthesizer::new(&[], opts(1)).is_err());
        let e = Synthesizer::new(
            &src,
            SynthOptions {
                prefix_len_multiplier: 0.0,
                ..opts(1)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--prefix-len-multiplier"), "{e}");
    }

    #[test]
    fn prefix_stats_by_hand() {
        let src = [req(0, &[0, 1, 2], 4), req(1, &[0, 1, 3], 4)];
        let s = prefix_stats(&src, 4);
        // Hits: 0 then 2 of 6 blocks; shared: 8 of 11 tokens each.
        assert!((s.hit_rate - 2.0 / 6.0).abs() < 1e-12);
        assert!((s.shared_prefix_ratio - 8.0 / 11.0).abs() < 1e-12);
        assert_eq!(s.isl, (11.0, 11, 11));
    }
}
