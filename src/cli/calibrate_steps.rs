//! The real runs' engine steps against the profile's price of each: how far the machine the
//! runs met stood from the one the profile measured, by kind of step, and whether a step that
//! ran beside the other worker's step paid for it. The steps are rebuilt from the requests'
//! timelines ([`crate::sim::seen`]); those of unknown work are left out.

use serde_json::{Value, json};

use super::calibrate_reference::Slowdown;

use crate::replay::metrics::RequestRecord;
use crate::sim::Profile;
use crate::sim::median::median;
use crate::sim::seen::{SeenStep, idle_before, lanes, seen_steps};
use crate::sim::serving::RESUMES_AFTER_NS;

/// Of each step, the share of its span during which another engine's step ran (the steps
/// of the other lanes: [`lanes`]).
pub(super) fn beside_others(steps: &[SeenStep]) -> Vec<f64> {
    let lane_of = lanes(steps);
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    for (i, &k) in lane_of.iter().enumerate() {
        if lanes.len() <= k {
            lanes.resize(k + 1, Vec::new());
        }
        lanes[k].push(i);
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let span = s.end.saturating_sub(s.start);
            if span == 0 {
                return 0.0;
            }
            let mut covered = 0u64;
            for (k, lane) in lanes.iter().enumerate() {
                if k == lane_of[i] {
                    continue;
                }
                // A lane's steps are in order and apart: its first that ends after this start.
                let from = lane.partition_point(|&j| steps[j].end <= s.start);
                for &j in lane[from..].iter().take_while(|&&j| steps[j].start < s.end) {
                    let o = &steps[j];
                    covered += o.end.min(s.end).saturating_sub(o.start.max(s.start));
                }
            }
            (covered as f64 / span as f64).min(1.0)
        })
        .collect()
}

/// Whether a step of so many prompts and decodes is of a kind.
type Is = fn(usize, usize) -> bool;

/// The kinds of step the table splits by; the first two split every step in two.
const KINDS: [(&str, Is); 7] = [
    ("decodes only", |p, _| p == 0),
    ("with prompts", |p, _| p > 0),
    ("1 prompt, no decodes", |p, d| p == 1 && d == 0),
    ("1 prompt + decodes", |p, d| p == 1 && d > 0),
    ("2-4 prompts", |p, _| (2..=4).contains(&p)),
    ("5-8 prompts", |p, _| (5..=8).contains(&p)),
    ("9+ prompts", |p, _| p >= 9),
];

/// A step ran alone when another step covered at most this share of it, beside one when at
/// least 1 − this.
const ALONE: f64 = 0.1;

/// Of one set of steps: how many, their median duration over price, and their whole
/// duration over their whole price (where the time went: a few slow steps count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Level {
    pub steps: usize,
    pub ratio: Option<f64>,
    pub time_ratio: Option<f64>,
}

/// Per kind (then "all"): the steps of every kind, those alone, those beside another.
pub(super) type StepLevels = Vec<(&'static str, [Level; 3])>;

/// One known step: its prompts and decodes, duration and price (s), and the share of it
/// another engine's step covered.
#[derive(Debug, Clone, Copy)]
struct Priced {
    prompts: usize,
    decodes: usize,
    seconds: f64,
    price: f64,
    beside: f64,
    /// Its engine sat idle at least [`RESUMES_AFTER_NS`] before it (or had not stepped yet).
    resumed: bool,
}

/// The known steps of `runs` (each run's records: runs apart, as simulated ones all start at
/// zero), priced by `profile` once and read both ways: by kind ([`StepLevels`]) and as a line
/// ([`StepFit`]).
pub(super) fn read_steps(
    runs: &[Vec<RequestRecord>],
    profile: &Profile,
) -> (StepLevels, Option<StepFit>) {
    let priced: Vec<Priced> = runs.iter().flat_map(|r| priced(r, profile)).collect();
    (step_levels(&priced), step_fit(&priced))
}

/// Each step's duration over its price, by kind of step.
fn step_levels(priced: &[Priced]) -> StepLevels {
    let level = |pick: &dyn Fn(&Priced) -> bool| {
        let v: Vec<&Priced> = priced.iter().filter(|s| pick(s)).collect();
        let (seconds, price) = v
            .iter()
            .fold((0.0, 0.0), |(a, b), s| (a + s.seconds, b + s.price));
        Level {
            steps: v.len(),
            ratio: median(v.iter().map(|s| s.seconds / s.price).collect()),
            time_ratio: (price > 0.0).then(|| seconds / price),
        }
    };
    let row = |is: &dyn Fn(usize, usize) -> bool| {
        [
            level(&|s| is(s.prompts, s.decodes)),
            level(&|s| is(s.prompts, s.decodes) && s.beside <= ALONE),
            level(&|s| is(s.prompts, s.decodes) && s.beside >= 1.0 - ALONE),
        ]
    };
    let mut out: StepLevels = KINDS.iter().map(|&(name, is)| (name, row(&is))).collect();
    out.push(("all", row(&|_, _| true)));
    out
}

/// The known steps of one run, priced.
fn priced(records: &[RequestRecord], profile: &Profile) -> Vec<Priced> {
    let steps = seen_steps(records);
    let beside = beside_others(&steps);
    let idle = idle_before(&steps);
    steps
        .iter()
        .zip(beside.iter().zip(&idle))
        .filter(|(s, _)| s.known && !s.work.is_empty())
        .map(|(s, (&beside, idle))| {
            let prompts = s.prompts();
            Priced {
                prompts,
                decodes: s.work.len() - prompts,
                seconds: (s.end - s.start) as f64 / 1e9,
                price: profile.step_time(&s.work),
                beside,
                resumed: idle.is_none_or(|i| i >= RESUMES_AFTER_NS),
            }
        })
        .collect()
}

/// How much slower than the simulated ones a deployment's real steps ran, over the same
/// prices: the real steps with prompts' whole duration over their whole price, over the
/// simulated ones', and the decode-only steps' likewise (1 for a kind either side lacks).
/// Whole durations, not medians: the time the requests wait is the sum, slow steps
/// included. A profile scaled by it ([`Slowdown::apply`]) prices steps at the level the
/// real runs' steps ran at: what the simulator's figures would be, were that level known.
pub(super) fn steps_over_simulated(real: &StepLevels, simulated: &StepLevels) -> Slowdown {
    let ratio = |kind: &str| {
        let all = |l: &StepLevels| {
            l.iter()
                .find(|(name, _)| *name == kind)
                .and_then(|(_, [all, ..])| all.time_ratio)
        };
        match (all(real), all(simulated)) {
            (Some(r), Some(s)) if s > 0.0 => r / s,
            _ => 1.0,
        }
    };
    Slowdown {
        prefill: ratio("with prompts"),
        decode: ratio("decodes only"),
    }
}

/// The steps of a set of runs as a line: each step's duration as its price times the level of
/// its kind (with prompts, decodes only), plus a fixed cost where its engine resumed after
/// sitting idle. Least squares of each step's duration over its price (a step's error counts
/// relative to its price: a fixed cost shows on the short steps, which a plain sum of
/// squares would leave to the long ones' noise).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(super) struct StepFit {
    pub steps: usize,
    pub resumed: usize,
    /// The levels of steps with prompts and of decode-only steps (1 for a kind not seen).
    pub prompts: f64,
    pub decodes: f64,
    /// The fixed cost of a step after an idle engine, s (0 where the fit puts it below 0,
    /// or no step, or every step, resumed: the levels then hold all of it).
    pub resume_s: f64,
}

/// The line ([`StepFit`]) through the steps of a positive price; None without one.
fn step_fit(priced: &[Priced]) -> Option<StepFit> {
    let priced: Vec<&Priced> = priced.iter().filter(|s| s.price > 0.0).collect();
    if priced.is_empty() {
        return None;
    }
    // Each row: (prompts?, decodes only?, resumed / price) -> duration / price.
    let rows: Vec<([f64; 3], f64)> = priced
        .iter()
        .map(|s| {
            let p = f64::from(u8::from(s.prompts > 0));
            let r = if s.resumed { 1.0 / s.price } else { 0.0 };
            ([p, 1.0 - p, r], s.seconds / s.price)
        })
        .collect();
    let resumed = priced.iter().filter(|s| s.resumed).count();
    let mut cols = [true; 3];
    for (c, on) in cols.iter_mut().enumerate() {
        *on = rows.iter().any(|(x, _)| x[c] != 0.0);
    }
    // With every step resumed the fixed cost cannot be told from the levels.
    cols[2] &= resumed < priced.len();
    let mut b = least_squares(&rows, cols)?;
    if b[2] < 0.0 {
        cols[2] = false;
        b = least_squares(&rows, cols)?;
    }
    let or_one = |on: bool, x: f64| if on { x } else { 1.0 };
    Some(StepFit {
        steps: priced.len(),
        resumed,
        prompts: or_one(cols[0], b[0]),
        decodes: or_one(cols[1], b[1]),
        resume_s: if cols[2] { b[2] } else { 0.0 },
    })
}

/// The least-squares coefficients of `rows` (x, y) over the columns that are `on` (the others
/// 0); None where those columns are not independent.
fn least_squares(rows: &[([f64; 3], f64)], on: [bool; 3]) -> Option<[f64; 3]> {
    let cols: Vec<usize> = (0..3).filter(|&c| on[c]).collect();
    let n = cols.len();
    // The normal equations, augmented: [X'X | X'y].
    let mut m = vec![vec![0.0; n + 1]; n];
    for (x, y) in rows {
        for (i, &a) in cols.iter().enumerate() {
            for (j, &b) in cols.iter().enumerate() {
                m[i][j] += x[a] * x[b];
            }
            m[i][n] += x[a] * y;
        }
    }
    // Independence is judged against the columns' own scale (resumed / price runs to 1e3).
    let scale = (0..n).map(|i| m[i][i]).fold(0.0, f64::max);
    for i in 0..n {
        let pivot = (i..n).max_by(|&a, &b| m[a][i].abs().total_cmp(&m[b][i].abs()))?;
        m.swap(i, pivot);
        if m[i][i].abs() <= 1e-12 * scale {
            return None;
        }
        let row = m[i].clone();
        for (r, line) in m.iter_mut().enumerate() {
            if r != i {
                let f = line[i] / row[i];
                for (a, b) in line[i..].iter_mut().zip(&row[i..]) {
                    *a -= f * b;
                }
            }
        }
    }
    let mut out = [0.0; 3];
    for (i, &c) in cols.iter().enumerate() {
        out[c] = m[i][n] / m[i][i];
    }
    Some(out)
}

/// Both deployments' fits, real and simulated, as lines of text.
pub(super) fn fits_table(real: &[Option<StepFit>], simulated: &[Option<StepFit>]) -> String {
    let cell = |f: &Option<StepFit>| match f {
        Some(f) => format!(
            "{:>5} of {:<5} {:>+7.2} ms  prompts x{:.2} decodes x{:.2}",
            f.resumed,
            f.steps,
            f.resume_s * 1e3,
            f.prompts,
            f.decodes
        ),
        None => "-".into(),
    };
    let mut s = format!(
        "steps after an idle engine (>= {:.1} ms): how many, and their fixed cost fitted \
         beside each kind's level\n",
        RESUMES_AFTER_NS as f64 / 1e6
    );
    for (k, name) in ["agg-rr", "disagg-kv"].iter().enumerate() {
        s += &format!(
            "{name:<10} real {}\n{:<10} sim  {}\n",
            cell(&real[k]),
            "",
            cell(&simulated[k])
        );
    }
    s
}

/// The table of both deployments' levels: real steps (all, alone, beside), then the
/// simulated ones (what the simulator charges beyond the price: the serving path's CPU).
pub(super) fn levels_table(real: &[StepLevels], simulated: &[StepLevels]) -> String {
    let cell = |l: &Level| match l.ratio {
        Some(r) => format!("{r:.2} ({})", l.steps),
        None => "-".into(),
    };
    let mut s = format!(
        "steps against the profile's price (median duration/price, steps; alone: another \
         worker's step covered <= {:.0}% of it, beside: >= {:.0}%)\n{:<20} {:>12} {:>12} {:>12} \
         {:>12} | {:>12} {:>12} {:>12} {:>12}\n",
        ALONE * 100.0,
        (1.0 - ALONE) * 100.0,
        "step",
        "agg real",
        "alone",
        "beside",
        "agg sim",
        "dis real",
        "alone",
        "beside",
        "dis sim"
    );
    for (i, (name, a)) in real[0].iter().enumerate() {
        let (d, sa, sd) = (&real[1][i].1, &simulated[0][i].1, &simulated[1][i].1);
        s += &format!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} | {:>12} {:>12} {:>12} {:>12}\n",
            name,
            cell(&a[0]),
            cell(&a[1]),
            cell(&a[2]),
            cell(&sa[0]),
            cell(&d[0]),
            cell(&d[1]),
            cell(&d[2]),
            cell(&sd[0]),
        );
    }
    s
}

pub(super) fn levels_json(real: &[StepLevels], simulated: &[StepLevels]) -> Value {
    let side = |l: &StepLevels| {
        let mut o = serde_json::Map::new();
        for (name, [all, alone, beside]) in l {
            let c = |l: &Level| {
                json!({
                    "steps": l.steps,
                    "median_duration_over_price": l.ratio,
                    "duration_over_price": l.time_ratio,
                })
            };
            o.insert(
                (*name).into(),
                json!({"all": c(all), "alone": c(alone), "beside": c(beside)}),
            );
        }
        Value::Object(o)
    };
    json!({
        "agg-rr": {"real": side(&real[0]), "simulated": side(&simulated[0])},
        "disagg-kv": {"real": side(&real[1]), "simulated": side(&simulated[1])},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::seen::tests::{record, step, w};

    #[test]
    fn beside_is_the_share_another_step_covers() {
        let s = |start, end| SeenStep {
            start,
            end,
            work: vec![w(1, 1)],
            known: true,
            prefill_worker: false,
        };
        // Worker one: [0, 10), [10, 20); worker two: [5, 25).
        let steps = vec![s(0, 10), s(5, 25), s(10, 20)];
        let b = beside_others(&steps);
        assert_eq!(b, vec![0.5, 15.0 / 20.0, 1.0]);
    }

    #[test]
    fn a_profile_prices_its_own_steps_at_one() {
        let p = Profile::default_qwen3_32b_tp2_h200();
        let ns = |s: f64| (s * 1e9).round() as u64;
        let prefill = ns(p.step_time(&[w(500, 500)]));
        let decode = ns(p.step_time(&[w(1, 501)]));
        let r = record(
            500,
            0,
            None,
            vec![
                step(0, prefill, true),
                step(prefill, prefill + decode, true),
            ],
        );
        let (levels, _) = read_steps(&[vec![r]], &p);
        let all = &levels.last().expect("an all row").1[0];
        assert_eq!(all.steps, 2);
        assert!((all.ratio.expect("priced") - 1.0).abs() < 1e-6);
        assert!((all.time_ratio.expect("priced") - 1.0).abs() < 1e-6);
        let (name, by_kind) = &levels[2];
        assert_eq!(*name, "1 prompt, no decodes");
        assert_eq!(by_kind[1].steps, 1, "alone");
        assert_eq!(by_kind[2].steps, 0, "beside");
        assert_eq!(levels[1].0, "with prompts");
        assert_eq!(levels[1].1[0].steps, 1);
    }

    #[test]
    fn one_slow_step_moves_the_time_but_not_the_median() {
        let p = Profile::default_qwen3_32b_tp2_h200();
        let ns = |s: f64| (s * 1e9).round() as u64;
        let prefill = ns(p.step_time(&[w(500, 500)]));
        // Three decode steps of one sequence, at 1, 1 and 4 times their price.
        let mut steps = vec![step(0, prefill, true)];
        let mut t = prefill;
        for (i, k) in [1.0, 1.0, 4.0].into_iter().enumerate() {
            let d = ns(k * p.step_time(&[w(1, 501 + i)]));
            steps.push(step(t, t + d, true));
            t += d;
        }
        let (levels, _) = read_steps(&[vec![record(500, 0, None, steps)]], &p);
        let decodes = &levels[0];
        assert_eq!(decodes.0, "decodes only");
        assert!((decodes.1[0].ratio.unwrap() - 1.0).abs() < 1e-6);
        assert!((decodes.1[0].time_ratio.unwrap() - 2.0).abs() < 1e-3);
    }

    #[test]
    fn the_fit_recovers_the_levels_and_the_cost_of_resuming() {
        let p = Profile::default_qwen3_32b_tp2_h200();
        let ns = |s: f64| (s * 1e9).round() as u64;
        let (prompts, decodes, resume) = (1.2, 1.1, 2e-3);
        // Requests of several lengths, each a prefill then 6 decodes, one after another on
        // one engine: idle 1 to 2 ms before each prefill (or never stepped), and `pause`
        // before each fourth step; the resumed steps pay `resume` where `paid`.
        let run = |pause: u64, paid: [bool; 2]| {
            let mut records = Vec::new();
            let mut t = 0;
            for (i, len) in [40, 200, 700, 1500, 90, 350].into_iter().enumerate() {
                let mut steps = Vec::new();
                for k in 0..7 {
                    let (work, level) = if k == 0 {
                        (w(len, len), prompts)
                    } else {
                        (w(1, len + k), decodes)
                    };
                    if k == 0 && i > 0 {
                        t += ns(1e-3 + 1e-4 * i as f64);
                    }
                    if k == 3 {
                        t += pause;
                    }
                    let extra = if (k == 0 && paid[0]) || (k == 3 && paid[1]) {
                        resume
                    } else {
                        0.0
                    };
                    let d = ns(level * p.step_time(&[work]) + extra);
                    steps.push(step(t, t + d, true));
                    t += d;
                }
                records.push(record(len, 0, None, steps));
            }
            read_steps(&[records], &p).1.expect("steps")
        };
        let f = run(ns(1.5e-3), [true; 2]);
        assert_eq!((f.steps, f.resumed), (42, 12));
        assert!((f.prompts - prompts).abs() < 1e-3, "{f:?}");
        assert!((f.decodes - decodes).abs() < 1e-3, "{f:?}");
        assert!((f.resume_s - resume).abs() < 1e-5, "{f:?}");
        // Just under the threshold apart, a step is not resumed.
        let f = run(RESUMES_AFTER_NS - 1, [true, false]);
        assert_eq!(f.resumed, 6, "{f:?}");
        assert!((f.resume_s - resume).abs() < 1e-5, "{f:?}");
        // Where no step pays, the fit finds none.
        let f = run(ns(1.5e-3), [false; 2]);
        assert!(f.resume_s.abs() < 1e-6, "{f:?}");
        assert!((f.decodes - decodes).abs() < 1e-3, "{f:?}");
    }

    #[test]
    fn the_step_level_is_the_real_steps_time_over_the_simulated() {
        let levels = |prompts: Option<f64>, decodes: f64| -> StepLevels {
            let l = |time_ratio| Level {
                steps: 10,
                ratio: Some(1.0),
                time_ratio,
            };
            vec![
                ("decodes only", [l(Some(decodes)), l(None), l(None)]),
                ("with prompts", [l(prompts), l(None), l(None)]),
                ("all", [l(Some(1.0)), l(None), l(None)]),
            ]
        };
        let s = steps_over_simulated(&levels(Some(1.32), 1.44), &levels(Some(1.1), 1.2));
        assert!(
            (s.prefill - 1.2).abs() < 1e-12 && (s.decode - 1.2).abs() < 1e-12,
            "{s:?}"
        );
        // A kind one side did not run is left as priced.
        let s = steps_over_simulated(&levels(None, 1.44), &levels(Some(1.1), 1.2));
        assert_eq!(s.prefill, 1.0);
    }
}
