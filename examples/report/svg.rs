//! Hand-written SVG charts: grouped bars and percentile curves, both on a log scale.

use std::fmt::Write;

/// One named series of a chart; `None` values are left out.
pub struct Series {
    pub name: String,
    pub colour: String,
    pub values: Vec<Option<f64>>,
    /// Optional whiskers (min and max), as many as `values`.
    pub range: Vec<Option<(f64, f64)>>,
    pub dashed: bool,
}

const FONT: &str = "font-family=\"Helvetica,Arial,sans-serif\"";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A log axis from the decade at or below the smallest value to the decade at or above the
/// largest.
struct LogAxis {
    low: f64,
    high: f64,
}

impl LogAxis {
    fn fit<'a>(values: impl Iterator<Item = &'a f64>) -> LogAxis {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            if v.is_finite() && v > 0.0 {
                low = low.min(v);
                high = high.max(v);
            }
        }
        if !low.is_finite() {
            return LogAxis {
                low: 1.0,
                high: 10.0,
            };
        }
        let low = 10f64.powf(low.log10().floor());
        let mut high = 10f64.powf(high.log10().ceil());
        if high <= low {
            high = low * 10.0;
        }
        LogAxis { low, high }
    }

    /// 0 at the bottom, 1 at the top.
    fn fraction(&self, v: f64) -> f64 {
        ((v.max(self.low)).log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
    }

    fn decades(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut v = self.low;
        while v <= self.high * 1.0001 {
            ticks.push(v);
            v *= 10.0;
        }
        ticks
    }
}

fn all_values(series: &[Series]) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .flatten()
                .copied()
                .chain(s.range.iter().flatten().flat_map(|&(a, b)| [a, b]))
        })
        .collect()
}

struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }

    fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }

    fn y(&self, axis: &LogAxis, v: f64) -> f64 {
        self.top + self.plot_height() * (1.0 - axis.fraction(v))
    }
}

fn header(svg: &mut String, frame: &Frame, title: &str) {
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        w = frame.width,
        h = frame.height
    );
    let _ = writeln!(
        svg,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" {FONT} font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
        frame.width / 2.0,
        escape(title)
    );
}

fn y_axis(
    svg: &mut String,
    frame: &Frame,
    axis: &LogAxis,
    label: &str,
    format: &dyn Fn(f64) -> String,
) {
    for tick in axis.decades() {
        let y = frame.y(axis, tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{tx}\" y=\"{ty:.1}\" {FONT} font-size=\"11\" text-anchor=\"end\">{}</text>",
            escape(&format(tick)),
            l = frame.left,
            r = frame.width - frame.right,
            tx = frame.left - 6.0,
            ty = y + 4.0,
        );
        // Minor ticks at 2x and 5x.
        for minor in [2.0, 5.0] {
            let v = tick * minor;
            if v < axis.high {
                let y = frame.y(axis, v);
                let _ = writeln!(
                    svg,
                    "<line x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#f2f2f2\"/>",
                    l = frame.left,
                    r = frame.width - frame.right,
                );
            }
        }
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\" stroke=\"#333\"/>\n<line x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/>",
        l = frame.left,
        r = frame.width - frame.right,
        t = frame.top,
        b = frame.height - frame.bottom,
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16,{}) rotate(-90)\" {FONT} font-size=\"12\" text-anchor=\"middle\">{}</text>",
        frame.top + frame.plot_height() / 2.0,
        escape(label)
    );
}

fn legend(svg: &mut String, frame: &Frame, series: &[Series]) {
    let mut x = frame.left;
    let mut y = frame.height - frame.bottom + 56.0;
    for s in series {
        let width = 30.0 + 7.0 * s.name.chars().count() as f64;
        if x + width > frame.width - frame.right && x > frame.left {
            x = frame.left;
            y += 18.0;
        }
        let dash = if s.dashed {
            " stroke-dasharray=\"5,3\""
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{x}\" x2=\"{x2}\" y1=\"{y1}\" y2=\"{y1}\" stroke=\"{c}\" stroke-width=\"4\"{dash}/>\n<text x=\"{tx}\" y=\"{y}\" {FONT} font-size=\"12\">{}</text>",
            escape(&s.name),
            x2 = x + 18.0,
            y1 = y - 4.0,
            c = s.colour,
            tx = x + 22.0,
        );
        x += width;
    }
}

/// Grouped bars (one group per label, one bar per series), log scale, with min-max whiskers.
pub fn bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    format: &dyn Fn(f64) -> String,
) -> String {
    let frame = Frame {
        width: (140.0 + groups.len() as f64 * (series.len() as f64 * 13.0 + 18.0)).max(700.0),
        height: 470.0,
        left: 80.0,
        right: 20.0,
        top: 40.0,
        bottom: 110.0,
    };
    let axis = LogAxis::fit(all_values(series).iter());
    let mut svg = String::new();
    header(&mut svg, &frame, title);
    y_axis(&mut svg, &frame, &axis, y_label, format);
    let group_width = frame.plot_width() / groups.len().max(1) as f64;
    let bar_width = (group_width - 14.0) / series.len().max(1) as f64;
    let base = frame.height - frame.bottom;
    for (g, label) in groups.iter().enumerate() {
        let x0 = frame.left + g as f64 * group_width + 7.0;
        for (i, s) in series.iter().enumerate() {
            let x = x0 + i as f64 * bar_width;
            if let Some(Some(v)) = s.values.get(g) {
                let y = frame.y(&axis, *v);
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{c}\"><title>{} {}: {}</title></rect>",
                    escape(&s.name),
                    escape(label),
                    escape(&format(*v)),
                    w = (bar_width - 1.0).max(1.0),
                    h = (base - y).max(0.0),
                    c = s.colour,
                );
            }
            if let Some(Some((low, high))) = s.range.get(g) {
                let cx = x + bar_width / 2.0 - 0.5;
                let _ = writeln!(
                    svg,
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#222\" stroke-width=\"1\"/>",
                    frame.y(&axis, *low),
                    frame.y(&axis, *high),
                );
            }
        }
        // Labels: "1P1C b1 / u64" on two lines, slanted.
        let cx = x0 + (group_width - 14.0) / 2.0;
        for (line, part) in label.split(" / ").enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{}</text>",
                base + 16.0 + 13.0 * line as f64,
                escape(part)
            );
        }
    }
    legend(&mut svg, &frame, series);
    svg.push_str("</svg>\n");
    svg
}

/// Lines over categorical x positions (percentiles, pending counts), log y.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_labels: &[String],
    series: &[Series],
    format: &dyn Fn(f64) -> String,
) -> String {
    let frame = Frame {
        width: 760.0,
        height: 490.0,
        left: 80.0,
        right: 30.0,
        top: 40.0,
        bottom: 120.0,
    };
    let axis = LogAxis::fit(all_values(series).iter());
    let mut svg = String::new();
    header(&mut svg, &frame, title);
    y_axis(&mut svg, &frame, &axis, y_label, format);
    let step = frame.plot_width() / x_labels.len().max(1) as f64;
    let x_of = |i: usize| frame.left + step * (i as f64 + 0.5);
    let base = frame.height - frame.bottom;
    for (i, label) in x_labels.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x_of(i),
            base + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" text-anchor=\"middle\">{}</text>",
        frame.left + frame.plot_width() / 2.0,
        base + 36.0,
        escape(x_label)
    );
    for s in series {
        let points: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (x_of(i), frame.y(&axis, v))))
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"6,4\""
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}><title>{}</title></polyline>",
            path.join(" "),
            s.colour,
            escape(&s.name)
        );
        for (i, (x, y)) in points.iter().enumerate() {
            let value = s
                .values
                .iter()
                .flatten()
                .nth(i)
                .copied()
                .unwrap_or(f64::NAN);
            let _ = writeln!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"><title>{}: {}</title></circle>",
                s.colour,
                escape(&s.name),
                escape(&format(value))
            );
        }
        for (i, range) in s.range.iter().enumerate() {
            if let Some((low, high)) = range {
                let x = x_of(i);
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"1\" opacity=\"0.6\"/>",
                    frame.y(&axis, *low),
                    frame.y(&axis, *high),
                    s.colour
                );
            }
        }
    }
    legend(&mut svg, &frame, series);
    svg.push_str("</svg>\n");
    svg
}
