//! Percentile plots of latency histograms as standalone SVG (the classic
//! HdrHistogram view: x = percentile on a log scale of 1/(1-p), y = latency
//! on a log scale), written by `mx-bench --plot FILE`. No dependencies.

use hdrhistogram::Histogram;

const W: f64 = 800.0;
const H: f64 = 480.0;
const ML: f64 = 80.0;
const MR: f64 = 20.0;
const MT: f64 = 40.0;
const MB: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn x_of(p: f64, max_nines: f64) -> f64 {
    // p in [0,1): position by "nines" = log10(1/(1-p)).
    let nines = (1.0 / (1.0 - p).max(1e-12)).log10().min(max_nines);
    ML + nines / max_nines * (W - ML - MR)
}

fn y_of(ns: f64, lo: f64, hi: f64) -> f64 {
    let v = ns.max(lo).log10();
    let (a, b) = (lo.log10(), hi.log10());
    H - MB - (v - a) / (b - a).max(1e-9) * (H - MT - MB)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.0} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.0} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// SVG text for the given labelled histograms (values in nanoseconds).
pub fn percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let max_nines = 5.0; // up to 99.999%
    let lo = series
        .iter()
        .map(|(_, h)| h.min().max(1) as f64)
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let hi = series
        .iter()
        .map(|(_, h)| h.max() as f64)
        .fold(1.0, f64::max);
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil().max(lo.log10() + 1.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        W / 2.0
    );
    // Grid: decades of latency, nines of percentile.
    let mut d = lo;
    while d <= hi * 1.0001 {
        let y = y_of(d, lo, hi);
        s += &format!(
            "<line x1=\"{ML}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - MR,
            ML - 6.0,
            y + 4.0,
            fmt_ns(d)
        );
        d *= 10.0;
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = ML + i as f64 / max_nines * (W - ML - MR);
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{MT}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            H - MB,
            H - MB + 18.0
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency</text>\n",
        W / 2.0,
        H - 16.0,
        H / 2.0,
        H / 2.0
    );
    for (k, (label, h)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let mut pts = String::new();
        let steps = 400;
        for i in 0..=steps {
            let nines = i as f64 / steps as f64 * max_nines;
            let p = 1.0 - 10f64.powf(-nines);
            let v = h.value_at_quantile(p.min(1.0)) as f64;
            pts += &format!("{:.1},{:.1} ", x_of(p, max_nines), y_of(v, lo, hi));
        }
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{pts}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{label} (p50 {}, p99 {}, max {})</text>\n",
            ML + 10.0,
            MT + 16.0 + 16.0 * k as f64,
            fmt_ns(h.value_at_quantile(0.5) as f64),
            fmt_ns(h.value_at_quantile(0.99) as f64),
            fmt_ns(h.max() as f64)
        );
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_line_per_series_and_axes() {
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for i in 1..10_000u64 {
            a.record(100 + i % 50).unwrap();
            b.record(1_000 + i).unwrap();
        }
        let svg = percentile_svg("t", &[("a", &a), ("b", &b)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("99.99%"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
