//! Plots as standalone SVG, drawn with plotters: CDFs with one curve per deployment, the x
//! axis on a log scale (latencies span milliseconds to minutes), and the planner's figures
//! per deployment. plotters picks round ticks on both axes and draws the legends.

use plotters::coord::Shift;
use plotters::prelude::*;

const SIZE: (u32, u32) = (720, 440);
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];
const FONT: &str = "sans-serif";

/// A plot that could not be drawn (plotters' error, as text: it is generic over the backend).
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot {title:?}: {message}")]
pub struct PlotError {
    title: String,
    message: String,
}

/// What drawing on the SVG backend can fail with.
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Draws into an SVG string with `draw`, turning plotters' errors into a [`PlotError`].
fn svg(
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<String, PlotError> {
    let fail = |e: DrawingAreaErrorKind<std::io::Error>| PlotError {
        title: title.to_string(),
        message: e.to_string(),
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        draw(&root).map_err(fail)?;
        root.present().map_err(fail)?;
    }
    Ok(out)
}

/// An SVG of the empirical CDFs of `series` (name, values in `unit`), titled `title`.
pub fn cdf_svg(title: &str, unit: &str, series: &[(&str, Vec<f64>)]) -> Result<String, PlotError> {
    let positive = || {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|x| *x > 0.0 && x.is_finite())
    };
    let lo = positive().fold(f64::INFINITY, f64::min);
    let hi = positive().fold(0.0, f64::max);
    // Whole decades, so the log axis starts and ends on a labelled tick.
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        let lo_exp = lo.log10().floor();
        (
            10f64.powf(lo_exp),
            10f64.powf(hi.log10().ceil().max(lo_exp + 1.0)),
        )
    } else {
        (1.0, 10.0)
    };
    svg(title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .margin_right(32)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc(format!("{unit} (log scale)"))
            .x_label_formatter(&|v| format!("{v}"))
            .y_desc("fraction of requests")
            .light_line_style(WHITE)
            .draw()?;
        for (k, (name, values)) in series.iter().enumerate() {
            let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len().max(1) as f64;
            // At most ~1000 points: enough for a smooth curve, small files.
            let stride = (v.len() / 1000).max(1);
            let points = v
                .iter()
                .enumerate()
                .filter(|(i, _)| i % stride == 0 || i + 1 == v.len())
                .map(|(i, x)| (x.max(lo), (i + 1) as f64 / n));
            line(&mut chart, k, name, points)?;
        }
        legend(&mut chart)
    })
}

/// An SVG of `series` (name, one value per label; NaN for none) over the categories `labels`,
/// one marked line per series on a linear axis from 0: the planner's figures against the split.
pub fn lines_svg(
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<String, PlotError> {
    let hi = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // Headroom above the highest point for the legend (up to 4 series, top left).
    let hi = if hi > 0.0 { hi * 1.3 } else { 1.0 };
    let n = labels.len().max(1);
    svg(title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            // A discrete range includes its end: n labels are 0..=n-1.
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_desc(unit)
            .x_labels(n)
            .y_label_formatter(&|v| format!("{v}"))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        for (k, (name, values)) in series.iter().enumerate() {
            let points: Vec<(SegmentValue<usize>, f64)> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| (SegmentValue::CenterOf(i), v.clamp(0.0, hi)))
                .collect();
            line(&mut chart, k, name, points.clone())?;
            let color = COLORS[k % COLORS.len()];
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        legend(&mut chart)
    })
}

/// The `k`th series' line through `points`, and its legend entry.
fn line<CT>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, CT>,
    k: usize,
    name: &str,
    points: impl IntoIterator<Item = CT::From>,
) -> DrawResult
where
    CT: CoordTranslate,
    CT::From: Clone + 'static,
{
    let color = COLORS[k % COLORS.len()];
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
    Ok(())
}

/// The legend, top left (the plots leave room there).
fn legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of the plot (each text element's content, trimmed).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split_once("</text>"))
            .map(|(text, _)| text.trim().to_string())
            .collect()
    }

    /// The numbers written as tick labels (texts that parse as numbers).
    fn ticks(svg: &str) -> Vec<f64> {
        texts(svg).iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// Whether `ticks` are evenly spaced by a round step (1, 2, 2.5 or 5 times a power of
    /// ten) and lie on multiples of it.
    fn round_ticks(ticks: &[f64]) -> bool {
        let step = ticks[1] - ticks[0];
        let mantissa = step / 10f64.powf(step.log10().floor());
        let nice = [1.0, 2.0, 2.5, 5.0]
            .iter()
            .any(|m| (mantissa - m).abs() < 1e-9);
        let on_grid = ticks
            .iter()
            .all(|t| ((t / step) - (t / step).round()).abs() < 1e-6);
        let even = ticks
            .windows(2)
            .all(|w| ((w[1] - w[0]) - step).abs() < 1e-9 * step.max(1.0));
        nice && on_grid && even
    }

    #[test]
    fn lines_have_a_point_per_value_round_ticks_and_skip_missing_values() {
        let labels = vec!["agg 8".to_string(), "6P:2D".into(), "7P:1D".into()];
        // The values that gave ticks at 0.805, 1.609, 2.414, 3.218 before.
        let svg = lines_svg(
            "goodput",
            "req/s",
            &labels,
            &[
                ("kv", vec![1.0, 2.926, f64::NAN]),
                ("rr", vec![0.5, 1.5, 0.2]),
            ],
        )
        .unwrap();
        assert_eq!(svg.matches("<circle").count(), 5);
        let t = texts(&svg);
        for l in ["agg 8", "6P:2D", "7P:1D", "kv", "rr", "req/s", "goodput"] {
            assert!(t.iter().any(|x| x == l), "{l}: {t:?}");
        }
        let t = ticks(&svg);
        assert!(t.len() >= 4, "{t:?}");
        assert!(round_ticks(&t), "{t:?}");
        assert!(t.iter().cloned().fold(0.0, f64::max) <= 2.926 * 1.3);
    }

    #[test]
    fn cdf_has_a_curve_per_series_on_decades_up_to_one() {
        let svg = cdf_svg(
            "TTFT <cdf>",
            "ms",
            &[("a", vec![5.0, 50.0, 500.0]), ("b", vec![20.0, 30.0])],
        )
        .unwrap();
        let t = texts(&svg);
        for l in [
            "TTFT &lt;cdf&gt;",
            "a",
            "b",
            "ms (log scale)",
            "fraction of requests",
        ] {
            assert!(t.iter().any(|x| x == l), "{l}: {t:?}");
        }
        let t = ticks(&svg);
        // The y ticks (fractions) are round; the x ticks are decades.
        let fractions: Vec<f64> = t
            .iter()
            .copied()
            .filter(|v| *v < 1.0)
            .chain([1.0])
            .collect();
        assert!(round_ticks(&fractions), "{t:?}");
        // Decades 1 .. 1000 on x, the fraction 0 .. 1 on y.
        for want in [1.0, 10.0, 100.0, 1000.0] {
            assert!(t.contains(&want), "{want}: {t:?}");
        }
        assert!(t.iter().all(|v| *v <= 1000.0));
    }

    #[test]
    fn empty_series_still_draw() {
        let svg = cdf_svg("none", "ms", &[("a", vec![])]).unwrap();
        assert!(svg.starts_with("<svg"));
        let svg = lines_svg("none", "ms", &[], &[]).unwrap();
        assert!(svg.starts_with("<svg"));
    }
}
