//! CDF plots as standalone SVG: one curve per deployment, the x axis on a log scale (latencies
//! span milliseconds to minutes).

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
        let color = COLORS[k % COLORS.len()];
        let n = v.len().max(1) as f64;
        // At most ~1000 points: enough for a smooth curve, small files.
        let stride = (v.len() / 1000).max(1);
        let mut pts = String::new();
        for (i, val) in v.iter().enumerate() {
            if i % stride == 0 || i + 1 == v.len() {
                let _ = write!(pts, "{:.1},{:.1} ", x(*val), y((i + 1) as f64 / n));
            }
        }
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
    s.push_str("</svg>\n");
    s
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
