//! `--plot FILE.svg`: a benchmark's figures as line charts, each drawn
//! beside the limit it is measured against, so a reader sees the ratio the
//! report states rather than a bare number.
//!
//! One SVG holds one or more panels stacked top to bottom (a benchmark that
//! measures two things, say throughput and memory, draws both). Axes can be
//! logarithmic: rate steps double, and latencies span milliseconds to
//! seconds. The log is taken here and the labels undo it, so every chart
//! uses the same linear coordinates underneath.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

/// One panel: named series over a shared x axis, with reference lines.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Horizontal reference lines: the limit or target the series are
    /// measured against (drawn dashed, named in the legend).
    pub limits: Vec<Limit>,
    pub log_x: bool,
    pub log_y: bool,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct Limit {
    pub name: String,
    pub y: f64,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            ..Chart::default()
        }
    }

    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Chart {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    pub fn limit(mut self, name: impl Into<String>, y: f64) -> Chart {
        self.limits.push(Limit {
            name: name.into(),
            y,
        });
        self
    }

    pub fn log_x(mut self) -> Chart {
        self.log_x = true;
        self
    }

    pub fn log_y(mut self) -> Chart {
        self.log_y = true;
        self
    }
}

const PANEL: (u32, u32) = (900, 420);

/// Colours that stay apart in print and for common colour blindness
/// (Okabe–Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Draws `charts` one under another into an SVG at `path`, creating its
/// directory.
pub fn write_svg(path: &Path, charts: &[Chart]) -> anyhow::Result<()> {
    anyhow::ensure!(!charts.is_empty(), "no chart to draw in {}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the plot", dir.display()))?;
    }
    let height = PANEL.1 * u32::try_from(charts.len()).unwrap_or(1);
    let root = SVGBackend::new(path, (PANEL.0, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| drawing(path, &e))?;
    for (area, chart) in root.split_evenly((charts.len(), 1)).iter().zip(charts) {
        draw(area, chart)
            .map_err(|e| anyhow!("drawing '{}' in {}: {e}", chart.title, path.display()))?;
    }
    root.present().map_err(|e| drawing(path, &e))
}

fn drawing(path: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!("writing the plot to {}: {e}", path.display())
}

/// A value as plotted on an axis (its log when the axis is logarithmic;
/// non-positive values have no log and are left out).
fn scale(v: f64, log: bool) -> Option<f64> {
    match (log, v) {
        (false, v) if v.is_finite() => Some(v),
        (true, v) if v.is_finite() && v > 0.0 => Some(v.log10()),
        _ => None,
    }
}

/// The plotted range of some values, padded so no point sits on the frame.
fn range(values: impl Iterator<Item = f64>, log: bool) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if log {
        // Whole-ish decades read best; a tenth of a decade of air.
        return (lo - 0.1)..(hi + 0.1).max(lo + 0.5);
    }
    let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
    let lo = if lo >= 0.0 && lo - span * 0.05 < 0.0 {
        0.0
    } else {
        lo - span * 0.05
    };
    lo..hi + span * 0.08
}

fn label(v: f64, log: bool) -> String {
    // Ticks on a log axis fall at even steps of the log, not at round
    // values: two significant figures read as well and hide the noise.
    let v = if log { two_figures(10f64.powf(v)) } else { v };
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn two_figures(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(area: &Area<'_>, chart: &Chart) -> Result<(), Box<dyn std::error::Error>> {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| scale(p.0, chart.log_x)));
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| scale(p.1, chart.log_y)))
        .chain(chart.limits.iter().filter_map(|l| scale(l.y, chart.log_y)));
    let x_range = range(xs, chart.log_x);
    let y_range = range(ys, chart.log_y);
    let (x0, x1) = (x_range.start, x_range.end);

    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)?;
    let (log_x, log_y) = (chart.log_x, chart.log_y);
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&|v| label(*v, log_x))
        .y_label_formatter(&|v| label(*v, log_y))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|&(x, y)| Some((scale(x, log_x)?, scale(y, log_y)?)))
            .collect();
        ctx.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(series.name.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        if points.len() <= 40 {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    for (i, limit) in chart.limits.iter().enumerate() {
        let Some(y) = scale(limit.y, log_y) else {
            continue;
        };
        let grey = if i == 0 {
            RGBColor(40, 40, 40)
        } else {
            RGBColor(130, 130, 130)
        };
        ctx.draw_series(DashedLineSeries::new(
            [(x0, y), (x1, y)],
            6,
            4,
            grey.stroke_width(1),
        ))?
        .label(limit.name.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], grey.stroke_width(1)));
    }
    if !chart.series.is_empty() || !chart.limits.is_empty() {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_svg(name: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!("gatehouse-plot-{}-{name}", std::process::id()))
            .join("out.svg")
    }

    #[test]
    fn a_chart_is_written_with_its_series_and_limit_named() {
        let path = temp_svg("named");
        let chart = Chart::new("p99 by offered rate", "events/s", "p99 (ms)")
            .series(
                "gatehouse",
                vec![(250.0, 3.0), (500.0, 4.5), (1000.0, 80.0)],
            )
            .series("pgbench", vec![(250.0, 2.0), (500.0, 2.5), (1000.0, 9.0)])
            .limit("target 10 ms", 10.0)
            .log_x()
            .log_y();
        let throughput = Chart::new("throughput", "guilds", "events/s")
            .series("gateway", vec![(1000.0, 20_000.0), (10_000.0, 19_000.0)]);
        write_svg(&path, &[chart.clone(), throughput]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "gatehouse",
            "pgbench",
            "target 10 ms",
            "p99 by offered rate",
            "throughput",
        ] {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        assert!(svg.contains("<polyline"), "no line drawn");

        // The log axes are labelled in the data's units, not in logs
        // (which would all be below 4 here).
        write_svg(&path, &[chart]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let largest = svg
            .split(['>', '<'])
            .filter_map(|text| text.trim().parse::<f64>().ok())
            .fold(0.0, f64::max);
        assert!(largest >= 250.0, "largest axis label {largest}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn values_a_log_axis_cannot_show_are_left_out_not_fatal() {
        let path = temp_svg("log");
        let chart = Chart::new("latency", "s", "ms")
            .series(
                "p99",
                vec![(0.0, 0.0), (1.0, -3.0), (2.0, 5.0), (f64::NAN, 1.0)],
            )
            .log_y();
        write_svg(&path, &[chart]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("p99"));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn nothing_to_draw_is_an_error_naming_the_file() {
        let err = write_svg(Path::new("/tmp/none.svg"), &[]).unwrap_err();
        assert!(err.to_string().contains("/tmp/none.svg"), "{err}");
    }

    #[test]
    fn labels_undo_the_log() {
        assert_eq!(label(3.0, true), "1000");
        assert_eq!(label(5.0, true), "100k");
        assert_eq!(label(0.5, false), "0.50");
        assert_eq!(label(79.4_f64.log10(), true), "79");
        assert_eq!(label(125.9_f64.log10(), true), "130");
        assert_eq!(label(0.0317_f64.log10(), true), "0.03");
    }
}
