//! A hand-written SVG bar chart of the report: p50 and p99 latency per ABI and priority class.

use std::fmt::Write as _;

use crate::report::Report;

const BAR_W: u64 = 18;
const GROUP_GAP: u64 = 22;
const LEFT: u64 = 70;
const TOP: u64 = 40;
const PLOT_H: u64 = 240;
const BOTTOM: u64 = 70;
const P50_COLOUR: &str = "#4c78a8";
const P99_COLOUR: &str = "#f58518";

/// The chart: one group per (ABI, priority class), each with a p50 and a p99 bar (class
/// `bar`, so a reader can count the series), a linear tick axis and a legend.
pub fn render_svg(report: &Report) -> String {
    let groups: Vec<(String, u64, u64)> = report
        .runs
        .iter()
        .flat_map(|run| {
            run.stats.classes.iter().map(move |c| {
                (
                    format!("{} p{}", run.stats.abi, c.priority),
                    c.latency.p50,
                    c.latency.p99,
                )
            })
        })
        .collect();
    let top_value = groups.iter().map(|g| g.2.max(g.1)).max().unwrap_or(0);
    let scale_max = nice_ceiling(top_value.max(1));
    let group_w = 2 * BAR_W + GROUP_GAP;
    let width = LEFT + groups.len() as u64 * group_w + 30;
    let width = width.max(600);
    let height = TOP + PLOT_H + BOTTOM;
    let y_of = |v: u64| TOP + PLOT_H - v.min(scale_max) * PLOT_H / scale_max;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"13\">Event latency (virtual ticks), p50 and \
         p99 per ABI and FIFO priority class</text>"
    );
    // Axis and ticks.
    for i in 0..=4u64 {
        let v = scale_max * i / 4;
        let y = y_of(v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>",
            width - 20
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v}</text>",
            LEFT - 6,
            y + 4
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>",
        TOP + PLOT_H
    );
    // Bars.
    for (i, (label, p50, p99)) in groups.iter().enumerate() {
        let x0 = LEFT + 12 + i as u64 * group_w;
        for (k, (value, colour, name)) in [(*p50, P50_COLOUR, "p50"), (*p99, P99_COLOUR, "p99")]
            .into_iter()
            .enumerate()
        {
            let x = x0 + k as u64 * BAR_W;
            let y = y_of(value);
            let h = TOP + PLOT_H - y;
            let _ = writeln!(
                s,
                "<rect class=\"bar\" data-series=\"{label} {name}\" x=\"{x}\" y=\"{y}\" \
                 width=\"{}\" height=\"{h}\" fill=\"{colour}\"/>",
                BAR_W - 2
            );
        }
        let cx = x0 + BAR_W;
        let ly = TOP + PLOT_H + 14;
        let _ = writeln!(
            s,
            "<text x=\"{cx}\" y=\"{ly}\" text-anchor=\"end\" \
             transform=\"rotate(-35 {cx} {ly})\">{label}</text>"
        );
    }
    // Legend.
    let lx = width.saturating_sub(110);
    for (k, (colour, name)) in [(P50_COLOUR, "p50"), (P99_COLOUR, "p99")]
        .into_iter()
        .enumerate()
    {
        let y = TOP + k as u64 * 16;
        let _ = writeln!(
            s,
            "<rect class=\"legend\" x=\"{lx}\" y=\"{y}\" width=\"10\" height=\"10\" \
             fill=\"{colour}\"/>"
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">{name}</text>", lx + 14, y + 9);
    }
    s.push_str("</svg>");
    s
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1, 2, 5] {
            let c = base.saturating_mul(m);
            if c >= v {
                return c;
            }
        }
        if base > u64::MAX / 10 {
            return u64::MAX;
        }
        base *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::nice_ceiling;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(2000), 2000);
        assert_eq!(nice_ceiling(5001), 10000);
    }
}
