//! The real runs' engine steps against the profile's price of each: how far the machine the
//! runs met stood from the one the profile measured, by kind of step, and whether a step that
//! ran beside the other worker's step paid for it. The steps are rebuilt from the requests'
//! timelines ([`crate::sim::seen`]); those of unknown work are left out.

use serde_json::{Value, json};

use super::calibrate_reference::Slowdown;

use crate::replay::metrics::RequestRecord;
use crate::sim::Profile;
use crate::sim::median::median;
use crate::sim::seen::{SeenStep, seen_steps};

/// Of each step, the share of its span during which another engine's step ran. Steps go to
/// lanes first, each step to the lane free at its start that was busy last (an engine's
/// steps follow one another, so a lane is one engine, or several taking turns).
pub(super) fn beside_others(steps: &[SeenStep]) -> Vec<f64> {
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut lane_of = vec![0; steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let free = lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.last().is_some_and(|&j| steps[j].end <= s.start))
            .max_by_key(|(_, l)| l.last().map(|&j| steps[j].end))
            .map(|(k, _)| k);
        let k = free.unwrap_or_else(|| {
            lanes.push(Vec::new());
            lanes.len() - 1
        });
        lanes[k].push(i);
        lane_of[i] = k;
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
}

/// Each step's duration over its price by `profile`, by kind of step, over `runs` (each
/// run's records: runs apart, as simulated ones all start at zero).
pub(super) fn step_levels(runs: &[Vec<RequestRecord>], profile: &Profile) -> StepLevels {
    let priced: Vec<Priced> = runs.iter().flat_map(|r| priced(r, profile)).collect();
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
    steps
        .iter()
        .zip(&beside)
        .filter(|(s, _)| s.known && !s.work.is_empty())
        .map(|(s, &beside)| {
            let prompts = s.prompts();
            Priced {
                prompts,
                decodes: s.work.len() - prompts,
                seconds: (s.end - s.start) as f64 / 1e9,
                price: profile.step_time(&s.work),
                beside,
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
        let levels = step_levels(&[vec![r]], &p);
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
        let levels = step_levels(&[vec![record(500, 0, None, steps)]], &p);
        let decodes = &levels[0];
        assert_eq!(decodes.0, "decodes only");
        assert!((decodes.1[0].ratio.unwrap() - 1.0).abs() < 1e-6);
        assert!((decodes.1[0].time_ratio.unwrap() - 2.0).abs() < 1e-3);
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
