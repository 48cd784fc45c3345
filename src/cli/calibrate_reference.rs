//! How fast the machine was when `tandem calibrate` measured its profile and when it ran the
//! real deployments: the reference steps (`tandem profile --reference`), timed before and
//! after each profile pass and each real run on the profile's core.
//!
//! The 2-core machines of BENCHMARKS.md switch between a fast and a slow spell (the
//! reference prefill 40 or 52 ms) every few seconds to minutes. A profile's grid point is one
//! sample in one spell; a real run lasts minutes and meets both. The ratio of the runs'
//! references to the passes' says how much slower (or faster) the runs' machine was than the
//! profile's, and the simulator reruns with the profile scaled by it.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::ModelArgs;
use crate::sim::Profile;
use crate::sim::measure::Reference;
use crate::sim::median::median;

/// The references of one calibration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct References {
    /// Before and after each profile pass.
    pub passes: Vec<Reference>,
    /// Before and after each real run, both deployments'.
    pub runs: Vec<Reference>,
}

/// How many times slower than the profile's machine the runs' was, by kind of step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Slowdown {
    pub prefill: f64,
    pub decode: f64,
}

impl References {
    pub const FILE: &str = "references.json";

    /// The runs' median reference over the passes', per kind of step; None without both, or
    /// when they timed different shapes.
    pub fn slowdown(&self) -> Option<Slowdown> {
        let shapes = |r: &Reference| (r.prefill_tokens, r.decode_batch, r.decode_context);
        let first = shapes(self.passes.first()?);
        if self
            .passes
            .iter()
            .chain(&self.runs)
            .any(|r| shapes(r) != first)
        {
            return None;
        }
        let m = |v: &[Reference], f: fn(&Reference) -> f64| median(v.iter().map(f).collect());
        Some(Slowdown {
            prefill: m(&self.runs, |r| r.prefill_s)? / m(&self.passes, |r| r.prefill_s)?,
            decode: m(&self.runs, |r| r.decode_s)? / m(&self.passes, |r| r.decode_s)?,
        })
    }

    /// What an earlier calibration recorded in `dir`, if it did.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        ))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(Self::FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// One line: the references' medians and the slowdown.
    pub fn summary(&self) -> String {
        let ms = |v: &[Reference], f: fn(&Reference) -> f64| {
            median(v.iter().map(f).collect()).map_or("-".into(), |x| format!("{:.2}", x * 1e3))
        };
        let level = self
            .slowdown()
            .map_or("no slowdown (a side has no references)".into(), |l| {
                format!(
                    "the runs' machine {:.3}x the profile's for prefills, {:.3}x for decodes",
                    l.prefill, l.decode
                )
            });
        format!(
            "reference steps (median ms, prefill / decode): {} passes' {} / {}, {} runs' {} / {}; \
             {level}\n",
            self.passes.len(),
            ms(&self.passes, |r| r.prefill_s),
            ms(&self.passes, |r| r.decode_s),
            self.runs.len(),
            ms(&self.runs, |r| r.prefill_s),
            ms(&self.runs, |r| r.decode_s),
        )
    }
}

impl Slowdown {
    /// `profile` as a machine this much slower would have measured it; its name says so,
    /// with `what` the slowdown is.
    pub fn apply(&self, profile: &Profile, what: &str) -> Profile {
        let mut p = profile.clone();
        if let Some(m) = &profile.measured {
            p.measured = Some(m.scaled(self.prefill, self.decode));
        }
        p.name = format!(
            "{} at {what} (prefills x{:.3}, decodes x{:.3})",
            profile.name, self.prefill, self.decode
        );
        p
    }
}

/// Times the reference steps (`repeats` each) with the model's flags on `core`.
pub(super) fn reference(
    model: &ModelArgs,
    core: usize,
    repeats: usize,
    path: &Path,
) -> anyhow::Result<Reference> {
    let mut argv = vec!["profile".to_string(), "--reference".into()];
    argv.extend(model.to_cli_args_but_cpus());
    argv.extend(["--cpus".into(), core.to_string()]);
    argv.extend(["--repeats".into(), repeats.to_string()]);
    argv.extend(["--out".into(), path.display().to_string()]);
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(&argv)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting tandem profile --reference")?;
    if !out.status.success() {
        bail!("tandem profile --reference failed: {}", out.status);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(prefill_s: f64, decode_s: f64) -> Reference {
        Reference {
            prefill_tokens: 250,
            decode_batch: 8,
            decode_context: 256,
            prefill_s,
            decode_s,
        }
    }

    #[test]
    fn the_level_is_the_runs_median_over_the_passes() {
        let refs = References {
            passes: vec![r(0.040, 0.005), r(0.050, 0.006), r(0.060, 0.004)],
            runs: vec![
                r(0.055, 0.006),
                r(0.060, 0.0075),
                r(0.070, 0.009),
                r(0.045, 0.003),
            ],
        };
        let l = refs.slowdown().expect("both sides");
        // Passes: 50 ms and 5 ms; runs: 57.5 ms and 6.75 ms.
        assert!((l.prefill - 1.15).abs() < 1e-12, "{l:?}");
        assert!((l.decode - 1.35).abs() < 1e-12, "{l:?}");
        assert!(refs.summary().contains("1.150x"));
        // One side missing, or shapes that differ: no level.
        let none = References {
            runs: Vec::new(),
            ..refs.clone()
        };
        assert_eq!(none.slowdown(), None);
        let mut other = refs.clone();
        other.runs[0].prefill_tokens = 100;
        assert_eq!(other.slowdown(), None);
    }

    #[test]
    fn a_level_scales_the_profile_it_applies_to() {
        use crate::engine::SeqWork;
        let p = crate::sim::median::tests::pass(1.0);
        let slow = Slowdown {
            prefill: 1.2,
            decode: 1.5,
        }
        .apply(&p, "the runs' speed");
        assert!(
            slow.name
                .ends_with("at the runs' speed (prefills x1.200, decodes x1.500)")
        );
        // Within the test profile's grids.
        let prefill = [SeqWork {
            new_tokens: 100,
            context_len: 100,
        }];
        let decode = [SeqWork {
            new_tokens: 1,
            context_len: 300,
        }; 4];
        assert!((slow.step_time(&prefill) / p.step_time(&prefill) - 1.2).abs() < 1e-9);
        assert!((slow.step_time(&decode) / p.step_time(&decode) - 1.5).abs() < 1e-9);
        assert!(slow.name.contains("at the runs' speed"));
    }
}
