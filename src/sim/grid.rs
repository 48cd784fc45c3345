//! Step times measured on a real executor (`tandem profile`), interpolated between the grid's
//! points and extrapolated beyond it along the fitted roofline.
//!
//! Three grids: a prefill of one sequence (new tokens × cached prefix), a decode step (batch ×
//! context length), and a prefill chunk beside decodes (chunk tokens × decode batch, at one
//! context). Interpolation is bilinear in log-log space, so it is exact at the points and
//! monotone between monotone neighbours; measured times are made monotone (a running maximum
//! along each axis) when the grid is built, since a bigger step never takes less time.
//!
//! A step is timed as the fitted roofline's time for its own work, times the grid's
//! measured-to-roofline ratio interpolated at the step's shape (held at the edge beyond the
//! grid): exact at the points, shaped like the roofline between them (a decode's time is
//! linear in batch × context, which no interpolation of a few points follows as closely), the
//! roofline's extrapolation outside, and right for steps no grid holds: several prompts in one
//! step pay attention each over its own length, not as one long prompt.
//!
//! The grids time one prompt a step, so a step of several reads the ratio of each prompt at
//! its own length, weighted by that prompt's roofline time alone (`Profile::step_time`), not
//! at one prompt of all their tokens: the ratio says how far the machine is from the roofline
//! on a prompt of that length (a long prompt's attention falls out of cache), and a step of
//! ten 300-token prompts runs ten such prompts, not a 3,000-token one. Read at the sum, a
//! calibration's real prefill steps of five or more prompts ran 15-30% faster, against their
//! simulated time, than its steps of one (BENCHMARKS.md, 2026-12-07). Read at their mean
//! length, prompts of one length are priced as above, but a trace's steps hold prompts of
//! many: most of a disaggregated prefill worker's steps of several prompts held one ten or
//! more times longer than another, and read at the mean those ran 1.20-1.28x their price
//! against 1.24x for steps of one prompt; read each at its own length, 1.07-1.19x
//! (BENCHMARKS.md, "Each prompt at its own length").

use serde::{Deserialize, Serialize};

use crate::engine::SeqWork;
use crate::error::{Error, Result};

/// Times on a 2-D grid: `seconds[i][j]` at (`x[i]`, `y[j]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid2 {
    /// What the first axis counts.
    pub x_name: String,
    /// First-axis points, increasing.
    pub x: Vec<f64>,
    /// What the second axis counts.
    pub y_name: String,
    /// Second-axis points, increasing.
    pub y: Vec<f64>,
    /// Seconds at each point.
    pub seconds: Vec<Vec<f64>>,
}

/// Where a value falls on an axis: the two neighbours and the weight of the upper one, or the
/// nearest end when it falls outside.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Inside(usize, f64),
    Below,
    Above,
}

fn place(axis: &[f64], v: f64) -> Place {
    if v < axis[0] {
        return Place::Below;
    }
    let last = axis.len() - 1;
    if v > axis[last] {
        return Place::Above;
    }
    if last == 0 {
        return Place::Inside(0, 0.0);
    }
    let i = axis.partition_point(|&a| a <= v).clamp(1, last) - 1;
    // Log space (with +1: an axis may start at 0, a cached prefix of none).
    let (a, b, x) = (
        (axis[i] + 1.0).ln(),
        (axis[i + 1] + 1.0).ln(),
        (v + 1.0).ln(),
    );
    Place::Inside(i, ((x - a) / (b - a)).clamp(0.0, 1.0))
}

impl Grid2 {
    /// A grid of `seconds`, checked (points increasing, times finite and positive) and made
    /// monotone along both axes.
    pub fn new(
        (x_name, x): (&str, Vec<f64>),
        (y_name, y): (&str, Vec<f64>),
        mut seconds: Vec<Vec<f64>>,
    ) -> Result<Self> {
        for i in 0..seconds.len() {
            for j in 0..seconds[i].len() {
                let mut t = seconds[i][j];
                if i > 0 {
                    t = t.max(seconds[i - 1][j]);
                }
                if j > 0 {
                    t = t.max(seconds[i][j - 1]);
                }
                seconds[i][j] = t;
            }
        }
        let g = Grid2 {
            x_name: x_name.into(),
            x,
            y_name: y_name.into(),
            y,
            seconds,
        };
        g.validate()?;
        Ok(g)
    }

    /// Refuses an empty grid, axes that do not increase, and times that are not finite and
    /// positive, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidRequest(format!("profile grid: {what}")));
        for (name, axis) in [(&self.x_name, &self.x), (&self.y_name, &self.y)] {
            if axis.is_empty() {
                return bad(format!("the {name} axis is empty"));
            }
            if axis.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return bad(format!(
                    "the {name} axis has a value that is not a finite size"
                ));
            }
            if axis.windows(2).any(|w| w[1] <= w[0]) {
                return bad(format!("the {name} axis does not increase"));
            }
        }
        if self.seconds.len() != self.x.len()
            || self.seconds.iter().any(|r| r.len() != self.y.len())
        {
            return bad(format!(
                "seconds is not {} × {} ({} × {})",
                self.x.len(),
                self.y.len(),
                self.x_name,
                self.y_name
            ));
        }
        if self
            .seconds
            .iter()
            .flatten()
            .any(|t| !t.is_finite() || *t <= 0.0)
        {
            return bad("seconds has a time that is not finite and positive".into());
        }
        Ok(())
    }

    /// The time at (`x`, `y`), and whether the point is inside the grid. Outside, the value
    /// at the nearest point of the grid is returned: the caller scales it by the roofline.
    pub fn at(&self, x: f64, y: f64) -> (f64, (f64, f64), bool) {
        self.at_over(x, y, &|_, _| 1.0)
    }

    /// The time at (`x`, `y`) as `base(x, y)` times the ratio of the measured times to `base`,
    /// interpolated between the points around (`x`, `y`) (the nearest edge's outside the grid).
    pub fn at_over(
        &self,
        x: f64,
        y: f64,
        base: &dyn Fn(f64, f64) -> f64,
    ) -> (f64, (f64, f64), bool) {
        let (r, edge, inside) = self.ratio_at(x, y, base);
        (r * base(x, y), edge, inside)
    }

    /// The ratio of the measured times to `base`, interpolated at (`x`, `y`) as [`Self::at`]
    /// interpolates times, with the nearest point of the grid and whether it is inside.
    pub fn ratio_at(
        &self,
        x: f64,
        y: f64,
        base: &dyn Fn(f64, f64) -> f64,
    ) -> (f64, (f64, f64), bool) {
        let (px, py) = (place(&self.x, x), place(&self.y, y));
        let inside = matches!(px, Place::Inside(..)) && matches!(py, Place::Inside(..));
        let clamp = |p: Place, axis: &[f64], v: f64| match p {
            Place::Inside(..) => v,
            Place::Below => axis[0],
            Place::Above => axis[axis.len() - 1],
        };
        let (cx, cy) = (clamp(px, &self.x, x), clamp(py, &self.y, y));
        let (Place::Inside(i, fx), Place::Inside(j, fy)) = (place(&self.x, cx), place(&self.y, cy))
        else {
            unreachable!("clamped onto the axes");
        };
        let get = |a: usize, b: usize| {
            let a = a.min(self.x.len() - 1);
            let b = b.min(self.y.len() - 1);
            (self.seconds[a][b] / base(self.x[a], self.y[b])).ln()
        };
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let low = lerp(get(i, j), get(i, j + 1), fy);
        let high = lerp(get(i + 1, j), get(i + 1, j + 1), fy);
        (lerp(low, high, fx).exp(), (cx, cy), inside)
    }
}

/// A step's work as the grids see it: prefill chunks (sequences with more than one new
/// token) and decodes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepShape {
    /// New tokens of the prefill chunks.
    pub prefill_tokens: f64,
    /// How many chunks they come from (a grid point's step has one; 0 counts as one).
    pub prefill_seqs: f64,
    /// Their cached prefix, weighted by new tokens.
    pub prefill_cached: f64,
    /// Decoding sequences.
    pub decodes: f64,
    /// Their mean context length.
    pub decode_context: f64,
}

impl StepShape {
    /// The shape of `work`.
    pub fn of(work: &[SeqWork]) -> Self {
        let mut s = StepShape::default();
        let (mut cached_weighted, mut ctx) = (0.0, 0.0);
        for w in work {
            if w.new_tokens > 1 {
                let n = w.new_tokens as f64;
                s.prefill_tokens += n;
                s.prefill_seqs += 1.0;
                cached_weighted += n * (w.context_len - w.new_tokens) as f64;
            } else {
                s.decodes += 1.0;
                ctx += w.context_len as f64;
            }
        }
        if s.prefill_tokens > 0.0 {
            s.prefill_cached = cached_weighted / s.prefill_tokens;
        }
        if s.decodes > 0.0 {
            s.decode_context = ctx / s.decodes;
        }
        s
    }
}

/// What `tandem profile` measured: the three step grids and the KV transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// Where and how it was measured (device, model, threads, date).
    pub measured_on: String,
    /// One prefill chunk alone: new tokens × cached prefix.
    pub prefill: Grid2,
    /// Decode steps: batch × context length.
    pub decode: Grid2,
    /// A prefill chunk (at no cached prefix) beside decodes (at `mixed_context`): chunk
    /// tokens × decode batch.
    pub mixed: Grid2,
    /// The decodes' context length in `mixed`.
    pub mixed_context: f64,
    /// KV transfer through the transfer service: a fixed cost, s.
    pub transfer_latency_s: f64,
    /// ... and its throughput, bytes/s.
    pub transfer_bytes_per_s: f64,
}

impl Measured {
    /// Checks every grid and figure.
    pub fn validate(&self) -> Result<()> {
        self.prefill.validate()?;
        self.decode.validate()?;
        self.mixed.validate()?;
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        for (name, v) in [
            ("mixed_context", self.mixed_context),
            ("transfer_latency_s", self.transfer_latency_s),
        ] {
            if !ok(v) {
                return Err(Error::InvalidRequest(format!(
                    "profile: {name} is not a finite, non-negative number"
                )));
            }
        }
        if !(self.transfer_bytes_per_s.is_finite() && self.transfer_bytes_per_s > 0.0) {
            return Err(Error::InvalidRequest(
                "profile: transfer_bytes_per_s is not a finite, positive number".into(),
            ));
        }
        Ok(())
    }

    /// How much slower than the roofline a step of `s`'s shape is: the measured-to-roofline
    /// ratio of the grid the step belongs to, interpolated at its shape, its prefill at its
    /// mean prompt (held at the grid's edge beyond it). `roofline(shape)` is the roofline's
    /// time of a grid point's step.
    pub fn ratio(&self, s: &StepShape, roofline: impl Fn(&StepShape) -> f64) -> f64 {
        let shape = |n: f64, c: f64, b: f64, l: f64| StepShape {
            prefill_tokens: n,
            prefill_seqs: 1.0,
            prefill_cached: c,
            decodes: b,
            decode_context: l,
        };
        let prompt = s.prefill_tokens / s.prefill_seqs.max(1.0);
        let (r, _, _) = match (s.prefill_tokens > 0.0, s.decodes > 0.0) {
            (false, false) => return 1.0,
            (true, false) => self.prefill.ratio_at(prompt, s.prefill_cached, &|n, c| {
                roofline(&shape(n, c, 0.0, 0.0))
            }),
            (false, true) => self.decode.ratio_at(s.decodes, s.decode_context, &|b, l| {
                roofline(&shape(0.0, 0.0, b, l))
            }),
            // Measured with no cached prefix and the decodes at `mixed_context`.
            (true, true) => self.mixed.ratio_at(prompt, s.decodes, &|n, b| {
                roofline(&shape(n, 0.0, b, self.mixed_context))
            }),
        };
        r
    }

    /// The grids as a machine `prefill` and `decode` times as slow would have measured them:
    /// the prefill and mixed grids' seconds times `prefill`, the decode grid's times
    /// `decode` (the transfer as measured). Steps in and beyond the grids then take that
    /// much longer ([`Measured::ratio`] reads the grids' ratio to the roofline).
    pub fn scaled(&self, prefill: f64, decode: f64) -> Measured {
        let times = |g: &Grid2, k: f64| {
            let mut g = g.clone();
            for row in &mut g.seconds {
                for v in row {
                    *v *= k;
                }
            }
            g
        };
        Measured {
            prefill: times(&self.prefill, prefill),
            decode: times(&self.decode, decode),
            mixed: times(&self.mixed, prefill),
            ..self.clone()
        }
    }

    /// Seconds to move `bytes` of KV.
    pub fn transfer_time(&self, bytes: f64) -> f64 {
        self.transfer_latency_s + bytes / self.transfer_bytes_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid2 {
        Grid2::new(
            ("tokens", vec![1.0, 16.0, 256.0]),
            ("cached", vec![0.0, 128.0]),
            vec![vec![0.001, 0.002], vec![0.004, 0.005], vec![0.05, 0.06]],
        )
        .unwrap()
    }

    #[test]
    fn interpolation_is_exact_at_the_points_and_monotone_between() {
        let g = grid();
        for (i, &x) in g.x.iter().enumerate() {
            for (j, &y) in g.y.iter().enumerate() {
                let (t, _, inside) = g.at(x, y);
                assert!(inside);
                assert!((t - g.seconds[i][j]).abs() < 1e-12, "({x}, {y}): {t}");
            }
        }
        let mut last = 0.0;
        for k in 0..=255 {
            let (t, _, _) = g.at(1.0 + k as f64, 64.0);
            assert!(t >= last - 1e-15, "not monotone at {k}");
            last = t;
        }
        // Outside, the nearest edge value (the caller scales it).
        let (t, edge, inside) = g.at(1024.0, 500.0);
        assert!(!inside && edge == (256.0, 128.0) && (t - 0.06).abs() < 1e-12);
    }

    #[test]
    fn a_step_of_several_prompts_reads_the_ratio_of_its_mean_prompt() {
        // A machine that falls further behind its roofline the longer a prompt is (its
        // attention out of cache): measured = roofline x (1 + n / 500).
        let roofline = |s: &StepShape| {
            let k = s.prefill_seqs.max(1.0);
            let n = s.prefill_tokens / k;
            1e-3 + s.prefill_tokens * 1e-4 + k * n * n * 1e-7 + s.decodes * 1e-4
        };
        let one = |n: f64| StepShape {
            prefill_tokens: n,
            prefill_seqs: 1.0,
            ..StepShape::default()
        };
        let xs = vec![2.0, 20.0, 200.0, 2000.0];
        let prefill = Grid2::new(
            ("new tokens", xs.clone()),
            ("cached tokens", vec![0.0]),
            xs.iter()
                .map(|&n| vec![roofline(&one(n)) * (1.0 + n / 500.0)])
                .collect(),
        )
        .unwrap();
        let flat = Grid2::new(
            ("a", vec![1.0, 2.0]),
            ("b", vec![1.0, 2.0]),
            vec![vec![1e-3, 1e-3], vec![1e-3, 1e-3]],
        )
        .unwrap();
        let m = Measured {
            measured_on: "toy".into(),
            prefill,
            decode: flat.clone(),
            mixed: flat,
            mixed_context: 64.0,
            transfer_latency_s: 1e-3,
            transfer_bytes_per_s: 1e9,
        };
        let ratio = |s: StepShape| m.ratio(&s, roofline);
        assert!((ratio(one(2000.0)) - 5.0).abs() < 1e-9);
        // Ten prompts of 200: ten 200-token prompts' ratio, not a 2,000-token one's.
        let ten = StepShape {
            prefill_seqs: 10.0,
            ..one(2000.0)
        };
        assert!((ratio(ten) - 1.4).abs() < 1e-9, "{}", ratio(ten));
        // A shape without a count is one prompt, as a grid point's.
        let unset = StepShape {
            prefill_seqs: 0.0,
            ..one(200.0)
        };
        assert!((ratio(unset) - 1.4).abs() < 1e-9);
        // StepShape::of counts the prompts (sequences of more than one new token).
        let work = [(200, 200), (200, 264), (1, 90)].map(|(n, c)| SeqWork {
            new_tokens: n,
            context_len: c,
        });
        let s = StepShape::of(&work);
        assert_eq!(
            (s.prefill_tokens, s.prefill_seqs, s.decodes),
            (400.0, 2.0, 1.0)
        );
        assert_eq!(s.prefill_cached, 32.0);
    }

    #[test]
    fn scaled_grids_scale_each_kind_of_step_by_its_factor() {
        let g = |v: f64| {
            Grid2::new(
                ("a", vec![1.0, 100.0]),
                ("b", vec![0.0, 100.0]),
                vec![vec![v, 2.0 * v], vec![3.0 * v, 4.0 * v]],
            )
            .unwrap()
        };
        let m = Measured {
            measured_on: "toy".into(),
            prefill: g(1e-3),
            decode: g(2e-3),
            mixed: g(3e-3),
            mixed_context: 64.0,
            transfer_latency_s: 1e-3,
            transfer_bytes_per_s: 1e9,
        };
        let roofline = |s: &StepShape| 1e-3 + 1e-5 * (s.prefill_tokens + s.decodes);
        let shape = |n: f64, b: f64| StepShape {
            prefill_tokens: n,
            prefill_seqs: if n > 0.0 { 1.0 } else { 0.0 },
            decodes: b,
            decode_context: 50.0,
            ..StepShape::default()
        };
        let slow = m.scaled(1.25, 1.5);
        for (s, k) in [
            (shape(40.0, 0.0), 1.25),
            (shape(0.0, 30.0), 1.5),
            (shape(40.0, 30.0), 1.25),
            // Beyond the grids too.
            (shape(500.0, 0.0), 1.25),
        ] {
            let (a, b) = (m.ratio(&s, roofline), slow.ratio(&s, roofline));
            assert!((b / a - k).abs() < 1e-9, "{s:?}: {a} -> {b}");
        }
        assert_eq!(slow.transfer_latency_s, m.transfer_latency_s);
    }

    #[test]
    fn noisy_times_are_made_monotone_and_bad_grids_refused() {
        let g = Grid2::new(
            ("batch", vec![1.0, 2.0]),
            ("context", vec![10.0, 20.0]),
            vec![vec![0.002, 0.001], vec![0.0015, 0.003]],
        )
        .unwrap();
        assert_eq!(g.seconds, vec![vec![0.002, 0.002], vec![0.002, 0.003]]);
        for (x, y, s, says) in [
            (vec![], vec![1.0], vec![], "empty"),
            (
                vec![2.0, 1.0],
                vec![1.0],
                vec![vec![1.0], vec![1.0]],
                "increase",
            ),
            (vec![1.0], vec![1.0], vec![vec![f64::NAN]], "finite"),
            (vec![1.0], vec![1.0, 2.0], vec![vec![1.0]], "seconds is not"),
        ] {
            let e = Grid2::new(("a", x), ("b", y), s).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
