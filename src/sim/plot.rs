//! Plots as standalone SVG: CDFs with one curve per deployment, the x axis on a log scale
//! (latencies span milliseconds to minutes), and the planner's figures per deployment.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// An SVG of the empirical CDFs of `series` (name, values in `unit`), titled `title`.
pub fn cdf_svg(title: &str, unit: &str, series: &[(&str, Vec<f64>)]) -> String {
    let positive = || {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|x| *x > 0.0)
    };
    let lo = positive().fold(f64::INFINITY, f64::min);
    let hi = positive().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        )
    } else {
        (1.0, 10.0)
    };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + pw * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let y = |p: f64| TOP + ph * (1.0 - p);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        escape(title)
    );
    // Decades on x, quartiles on y.
    let mut d = lo;
    while d <= hi * 1.0001 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(d),
            TOP + ph,
            TOP + ph + 18.0,
            d
        );
        d *= 10.0;
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{q}</text>"##,
            y(q),
            LEFT + pw,
            LEFT - 6.0,
            y(q) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">fraction of requests</text>"#,
        LEFT + pw / 2.0,
        H - 14.0,
        escape(unit),
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (k, (name, values)) in series.iter().enumerate() {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        // At most ~1000 points: enough for a smooth curve, small files.
        let stride = (v.len() / 1000).max(1);
        let mut pts = String::new();
        for (i, val) in v.iter().enumerate() {
            if i % stride == 0 || i + 1 == v.len() {
                let _ = write!(pts, "{:.1},{:.1} ", x(*val), y((i + 1) as f64 / n));
            }
        }
        curve(&mut s, k, name, &pts);
    }
    s.push_str("</svg>\n");
    s
}

/// An SVG of `series` (name, one value per label) over the categories `labels`, one marked
/// line per series on a linear axis from 0: the planner's figures against the split.
pub fn lines_svg(
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<f64>)],
) -> String {
    let hi = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
    let bottom = BOTTOM + 90.0;
    let (pw, ph) = (W - LEFT - RIGHT, H + 90.0 - TOP - bottom);
    let n = labels.len().max(1) as f64;
    let x = |i: usize| LEFT + pw * (i as f64 + 0.5) / n;
    let y = |v: f64| TOP + ph * (1.0 - v.clamp(0.0, hi) / hi);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
"#,
        H + 90.0,
        W / 2.0,
        escape(title)
    );
    for q in 0..=4 {
        let v = hi * q as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.3}</text>"##,
            y(v),
            LEFT + pw,
            LEFT - 6.0,
            y(v) + 4.0,
            v
        );
    }
    for (i, l) in labels.iter().enumerate() {
        let (lx, ly) = (x(i), TOP + ph + 10.0);
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-60 {lx:.1} {ly:.1})">{}</text>"#,
            escape(l)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" transform="rotate(-90 16 {0})" text-anchor="middle">{1}</text>"#,
        TOP + ph / 2.0,
        escape(unit)
    );
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let mut pts = String::new();
        for (i, v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let _ = write!(pts, "{:.1},{:.1} ", x(i), y(*v));
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(i),
                y(*v)
            );
        }
        curve(&mut s, k, name, &pts);
    }
    s.push_str("</svg>\n");
    s
}

/// The `k`th series' line through `pts` ("x,y x,y ..."), and its legend entry.
fn curve(s: &mut String, k: usize, name: &str, pts: &str) {
    let color = COLORS[k % COLORS.len()];
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/><rect x="{}" y="{}" width="14" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
        LEFT + 12.0,
        TOP + 12.0 + 18.0 * k as f64,
        LEFT + 32.0,
        TOP + 17.0 + 18.0 * k as f64,
        escape(name)
    );
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_a_point_per_label_and_skip_missing_values() {
        let labels = vec!["agg 8".to_string(), "6P:2D".into(), "7P:1D".into()];
        let svg = lines_svg(
            "goodput",
            "req/s",
            &labels,
            &[
                ("kv", vec![1.0, 2.0, f64::NAN]),
                ("rr", vec![0.5, 1.5, 0.2]),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains(">6P:2D<"));
    }

    #[test]
    fn cdf_has_one_curve_per_series_ending_at_one() {
        let svg = cdf_svg(
            "TTFT <cdf>",
            "ms",
            &[("a", vec![5.0, 50.0, 500.0]), ("b", vec![20.0, 30.0])],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("TTFT &lt;cdf&gt;"));
        // Decades 1 .. 1000 on x; each curve's last point is at fraction 1 (y = TOP).
        assert!(svg.contains(">1000<") && svg.contains(">1<"));
        assert!(svg.contains(&format!(",{TOP:.1} \"")));
    }
}
