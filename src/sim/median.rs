//! One profile from several measured in passes some minutes apart: every measured figure is
//! the median of the passes', and the roofline is fitted again to the median grids.
//!
//! On a shared machine a slow (or fast) spell lasts minutes: one profile catches one spell,
//! and on the 2-core machine of BENCHMARKS.md two profiles of the same hour priced a
//! 1,250-token prefill 28% apart. `tandem calibrate` measures its profile in passes spread
//! over its real runs, so that the profile samples the machine over the same hour as the runs
//! it is compared with.

use serde_json::{Map, Value};

use super::grid::{Grid2, Measured};
use super::measure::{fit_roofline, grid_points};
use super::profile::Profile;
use super::serving::ServingCosts;
use crate::error::{Error, Result};

/// The median of `v` (the mean of the two middle values of an even count); None when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn refused(what: String) -> Error {
    Error::InvalidRequest(format!("profile passes: {what}"))
}

/// What a profile says of the model and the settings, as opposed to what it measured or
/// fitted: passes of one profile agree on it.
fn settings(p: &Profile) -> Profile {
    Profile {
        name: String::new(),
        hbm_bandwidth: 0.0,
        hbm_efficiency: 0.0,
        matmul_flops: 0.0,
        matmul_efficiency: 0.0,
        attention_efficiency: 0.0,
        step_overhead_s: 0.0,
        link_bandwidth: 0.0,
        link_efficiency: 0.0,
        transfer_latency_s: 0.0,
        measured: None,
        serving: ServingCosts::default(),
        serving_disagg: None,
        host_link_bandwidth: 0.0,
        host_link_efficiency: 0.0,
        ..p.clone()
    }
}

/// Point by point, the median of `grids` (which must share their axes) as a grid, made
/// monotone again.
fn median_grid(what: &str, grids: &[&Grid2]) -> Result<Grid2> {
    let first = grids[0];
    if let Some(g) = grids
        .iter()
        .find(|g| g.x != first.x || g.y != first.y || g.x_name != first.x_name)
    {
        return Err(refused(format!(
            "their {what} grids differ ({} {:?} × {} {:?} against {} {:?} × {} {:?}): \
             measure every pass with the same flags",
            first.x_name, first.x, first.y_name, first.y, g.x_name, g.x, g.y_name, g.y
        )));
    }
    let seconds = (0..first.x.len())
        .map(|i| {
            (0..first.y.len())
                .map(|j| median(grids.iter().map(|g| g.seconds[i][j]).collect()).unwrap_or(0.0))
                .collect()
        })
        .collect();
    Grid2::new(
        (&first.x_name, first.x.clone()),
        (&first.y_name, first.y.clone()),
        seconds,
    )
}

/// Field by field, the median of the passes' serving costs.
fn median_serving(all: &[&ServingCosts]) -> Result<ServingCosts> {
    let values = all
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refused(e.to_string()))?;
    let mut out = Map::new();
    if let Some(Value::Object(first)) = values.first() {
        for key in first.keys() {
            let v: Vec<f64> = values.iter().filter_map(|v| v[key].as_f64()).collect();
            let m = median(v).ok_or_else(|| refused(format!("serving.{key} is not a number")))?;
            out.insert(key.clone(), Value::from(m));
        }
    }
    serde_json::from_value(Value::Object(out)).map_err(|e| refused(e.to_string()))
}

/// The profile whose every measured figure is the median of `passes`' (grids point by point,
/// the transfer, the host tier's copies, the serving path field by field), with the roofline
/// fitted to the median grids. Refuses passes of different models or settings, and passes
/// that measured nothing.
pub fn median_profile(passes: &[Profile]) -> Result<Profile> {
    let Some(first) = passes.first() else {
        return Err(refused("none given".into()));
    };
    let measured: Vec<&Measured> = passes
        .iter()
        .map(|p| {
            p.measured
                .as_ref()
                .ok_or_else(|| refused(format!("{} measured no steps", p.name)))
        })
        .collect::<Result<_>>()?;
    let base = settings(first);
    if let Some(p) = passes.iter().find(|p| settings(p) != base) {
        return Err(refused(format!(
            "{} and {} are of different models or settings",
            first.name, p.name
        )));
    }
    let grid = |pick: fn(&Measured) -> &Grid2, what: &str| {
        median_grid(what, &measured.iter().map(|m| pick(m)).collect::<Vec<_>>())
    };
    let mixed_context = measured[0].mixed_context;
    if measured.iter().any(|m| m.mixed_context != mixed_context) {
        return Err(refused("their mixed steps' contexts differ".into()));
    }
    let of = |f: fn(&Profile) -> f64| median(passes.iter().map(f).collect()).unwrap_or(0.0);
    let of_measured =
        |f: fn(&Measured) -> f64| median(measured.iter().map(|m| f(m)).collect()).unwrap_or(0.0);
    let name = format!("{}, median of {} passes", first.name, passes.len());
    let m = Measured {
        measured_on: name.clone(),
        prefill: grid(|m| &m.prefill, "prefill")?,
        decode: grid(|m| &m.decode, "decode")?,
        mixed: grid(|m| &m.mixed, "mixed")?,
        mixed_context,
        transfer_latency_s: of_measured(|m| m.transfer_latency_s),
        transfer_bytes_per_s: of_measured(|m| m.transfer_bytes_per_s),
    };
    let points = grid_points((&m.prefill, &m.decode, &m.mixed), mixed_context);
    let mut out = fit_roofline(first, &points);
    out.name = name;
    out.transfer_latency_s = of(|p| p.transfer_latency_s);
    out.link_bandwidth = of(|p| p.link_bandwidth * p.link_efficiency);
    out.link_efficiency = 1.0;
    out.host_link_bandwidth = of(|p| p.host_link_bandwidth * p.host_link_efficiency);
    out.host_link_efficiency = 1.0;
    out.serving = median_serving(&passes.iter().map(|p| &p.serving).collect::<Vec<_>>())?;
    let disagg: Vec<&ServingCosts> = passes
        .iter()
        .filter_map(|p| p.serving_disagg.as_ref())
        .collect();
    out.serving_disagg = match disagg.len() {
        0 => None,
        n if n == passes.len() => Some(median_serving(&disagg)?),
        _ => {
            return Err(refused(
                "some measured the disaggregated serving path and some did not".into(),
            ));
        }
    };
    out.measured = Some(m);
    out.validate()?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn grid(scale: f64) -> Grid2 {
        Grid2::new(
            ("new tokens", vec![2.0, 20.0, 200.0]),
            ("cached tokens", vec![0.0, 64.0]),
            vec![
                vec![1e-3 * scale, 2e-3 * scale],
                vec![5e-3 * scale, 6e-3 * scale],
                vec![4e-2 * scale, 5e-2 * scale],
            ],
        )
        .unwrap()
    }

    /// A measured pass whose times are `scale` times the first's.
    pub(crate) fn pass(scale: f64) -> Profile {
        let mut p = Profile::default_qwen3_32b_tp2_h200();
        p.name = format!("pass at {scale}");
        p.transfer_latency_s = 1e-3 * scale;
        p.measured = Some(Measured {
            measured_on: p.name.clone(),
            prefill: grid(scale),
            decode: Grid2::new(
                ("batch", vec![1.0, 8.0]),
                ("context tokens", vec![16.0, 512.0]),
                vec![
                    vec![1e-3 * scale, 2e-3 * scale],
                    vec![3e-3 * scale, 8e-3 * scale],
                ],
            )
            .unwrap(),
            mixed: grid(scale),
            mixed_context: 64.0,
            transfer_latency_s: 1e-3 * scale,
            transfer_bytes_per_s: 1e9 / scale,
        });
        p.serving.relay_s = 1e-4 * scale;
        p.serving.engine_early_share = 0.1 * scale;
        p.serving_disagg = Some(ServingCosts {
            decode_call_s: 2e-3 * scale,
            ..p.serving
        });
        p
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn every_measured_figure_is_the_median_of_the_passes() {
        // A slow spell under the second pass, a fast one under the third.
        let m = median_profile(&[pass(1.0), pass(3.0), pass(0.9)]).unwrap();
        let got = m.measured.as_ref().unwrap();
        assert_eq!(got.prefill, grid(1.0));
        assert_eq!(got.mixed, grid(1.0));
        assert_eq!(got.decode.seconds[1][1], 8e-3);
        assert_eq!(got.transfer_latency_s, 1e-3);
        assert_eq!(got.transfer_bytes_per_s, 1e9);
        assert_eq!(m.transfer_latency_s, 1e-3);
        assert_eq!(m.serving.relay_s, 1e-4);
        assert_eq!(m.serving.engine_early_share, 0.1);
        let disagg = m.serving_disagg.as_ref().unwrap();
        assert_eq!((disagg.decode_call_s, disagg.relay_s), (2e-3, 1e-4));
        assert!(m.name.ends_with("median of 3 passes"), "{}", m.name);
        // The roofline is fitted to the median grids: it prices their points closely.
        let one = median_profile(&[pass(1.0)]).unwrap();
        assert_eq!(m.hbm_bandwidth, one.hbm_bandwidth);
        assert_eq!(m.matmul_flops, one.matmul_flops);
        // Two passes: the mean of the two, point by point.
        let two = median_profile(&[pass(1.0), pass(3.0)]).unwrap();
        let (got, want) = (two.measured.unwrap().prefill, grid(2.0));
        for (a, b) in got
            .seconds
            .iter()
            .flatten()
            .zip(want.seconds.iter().flatten())
        {
            assert!((a / b - 1.0).abs() < 1e-12, "{a} {b}");
        }
    }

    #[test]
    fn passes_that_do_not_match_are_refused_by_name() {
        let err = |passes: &[Profile]| median_profile(passes).unwrap_err().to_string();
        assert!(err(&[]).contains("none given"));
        let mut other = pass(1.0);
        other.kv_capacity_tokens += 16;
        assert!(err(&[pass(1.0), other]).contains("different models or settings"));
        let mut one_path = pass(1.0);
        one_path.serving_disagg = None;
        assert!(err(&[pass(1.0), one_path]).contains("disaggregated serving path"));
        let mut coarse = pass(1.0);
        let m = coarse.measured.as_mut().unwrap();
        m.prefill = Grid2::new(
            ("new tokens", vec![2.0, 200.0]),
            ("cached tokens", vec![0.0, 64.0]),
            vec![vec![1e-3, 2e-3], vec![4e-2, 5e-2]],
        )
        .unwrap();
        assert!(err(&[pass(1.0), coarse]).contains("prefill grids differ"));
        let mut arithmetic = pass(1.0);
        arithmetic.measured = None;
        assert!(err(&[pass(1.0), arithmetic]).contains("measured no steps"));
    }
}
