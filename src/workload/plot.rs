//! A transfer run drawn as an SVG picture (the `plotters` crate, its SVG backend only):
//! committed transfers per second, with the retries of each second as red bars on their own
//! axis (and failed transfers, if any, as crosses on it), above the p50, p99 and worst (pMax)
//! latencies of each second — to look at a run rather than read it; a stall shows as a pMax
//! far above the p99. Rates and latencies (on a log scale) are drawn at the middle of their
//! interval; a retry bar spans it. The last interval of a run is drawn however short it is.
//!
//! SVG only: plotters' bitmap backend builds without C code (`bitmap_backend`,
//! `bitmap_encoder`), but it draws text only with a font — `ttf` (font-kit: FreeType and
//! fontconfig, C) or `ab_glyph` with a font file roachbank would have to ship — and without one
//! plotters panics ("The font implementation is unable to draw text").

use super::stats::grouped;
use super::transfers::TransferTick;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Width and height of the picture, in pixels.
const SIZE: (u32, u32) = (1000, 720);
/// Throughput's colour.
const THROUGHPUT: RGBColor = RGBColor(31, 119, 180);
/// The colour of retries.
const RETRIES: RGBColor = RGBColor(214, 39, 40);
/// The colour of failed transfers.
const FAILURES: RGBColor = RGBColor(120, 0, 0);
/// p50's colour.
const P50: RGBColor = RGBColor(44, 160, 44);
/// p99's colour.
const P99: RGBColor = RGBColor(148, 103, 189);
/// The worst latency's colour.
const P_MAX: RGBColor = RGBColor(255, 127, 14);
/// Each axis goes this far beyond the highest value it shows (on the log scale, in decades),
/// so that the legends in the upper right corners stay clear of the data.
const HEADROOM: f64 = 1.4;
/// The typeface of every text.
const FONT: &str = "sans-serif";

/// One interval of a run, as the plot shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotPoint {
    /// When the interval began, in seconds since the run started.
    pub start: f64,
    /// When it ended, in seconds since the run started.
    pub end: f64,
    /// Committed transfers per second of the interval.
    pub per_second: f64,
    /// Median latency of the interval's transfers, in milliseconds (none without any).
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, in milliseconds (none without any).
    pub p99_ms: Option<f64>,
    /// The worst latency of the interval, in milliseconds (none without any).
    pub max_ms: Option<f64>,
    /// Retries in the interval (of the transfers that committed in it).
    pub retries: u64,
    /// Transfers that failed or whose outcome stayed unknown in the interval.
    pub errors: u64,
    /// Whether the interval is drawn: not the tail of a timed run (transfers finishing after
    /// its time was up); its retries and errors count in the totals all the same.
    pub shown: bool,
}

impl PlotPoint {
    /// The interval's length in seconds (never zero, so that rates stay finite).
    fn length(&self) -> f64 {
        (self.end - self.start).max(1e-3)
    }

    /// Retries per second of the interval.
    pub fn retries_per_second(&self) -> f64 {
        self.retries as f64 / self.length()
    }

    /// Failed transfers (and those of unknown outcome) per second of the interval.
    pub fn errors_per_second(&self) -> f64 {
        self.errors as f64 / self.length()
    }

    /// The middle of the interval, where its rate and latencies are drawn.
    fn middle(&self) -> f64 {
        (self.start + self.end) / 2.0
    }
}

impl From<&TransferTick> for PlotPoint {
    fn from(tick: &TransferTick) -> Self {
        let millis = |quantile| {
            tick.latencies
                .quantile(quantile)
                .map(|latency| latency.as_secs_f64() * 1000.0)
        };
        PlotPoint {
            start: (tick.elapsed - tick.interval).as_secs_f64(),
            end: tick.elapsed.as_secs_f64(),
            per_second: tick.per_second(),
            p50_ms: millis(0.50),
            p99_ms: millis(0.99),
            max_ms: millis(1.0),
            retries: tick.retries,
            errors: tick.errors,
            shown: true,
        }
    }
}

/// A number on an axis: whole numbers with their digits grouped, others with one decimal.
fn axis_number(value: &f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        grouped(value.round() as u64)
    } else {
        format!("{value:.1}")
    }
}

/// A latency on the log-scale axis, in milliseconds: as many decimals as it needs (0.05, 0.2,
/// 3, 1,000).
fn latency_label(millis: &f64) -> String {
    if *millis >= 1.0 {
        axis_number(&millis.round())
    } else {
        let text = format!("{millis:.3}");
        text.trim_end_matches('0').to_string()
    }
}

/// Draws `chart`'s legend, the same in both panels: upper right, on a light background.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}

/// The 1–2–5 steps of each decade between `low` and `high`: the labels of a log-scale axis,
/// never crowded, and always some below the lowest line.
fn one_two_five(low: f64, high: f64) -> Vec<f64> {
    let mut decade = 10f64.powf(low.log10().floor());
    let mut steps = Vec::new();
    while decade <= high {
        steps.extend(
            [1.0, 2.0, 5.0]
                .map(|step| step * decade)
                .into_iter()
                .filter(|value| (low..=high).contains(value)),
        );
        decade *= 10.0;
    }
    steps
}

/// Fewest intervals drawn that make a plot: with one, every series is a single point and the
/// picture shows empty axes.
pub const FEWEST_PLOTTED: usize = 2;

/// Whether `points` make a plot: at least [`FEWEST_PLOTTED`] of them are drawn.
pub fn plottable(points: &[PlotPoint]) -> bool {
    points.iter().filter(|point| point.shown).count() >= FEWEST_PLOTTED
}

/// The plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

/// Draws `points` (a run's intervals, in order; those not [`shown`](PlotPoint::shown) count in
/// the totals only) under `title`, and returns the SVG document.
pub fn svg(points: &[PlotPoint], title: &str) -> Result<String, PlotError> {
    let mut document = String::new();
    {
        let root = SVGBackend::with_string(&mut document, SIZE).into_drawing_area();
        draw(&root, points, title).map_err(|err| PlotError(err.to_string()))?;
        root.present().map_err(|err| PlotError(err.to_string()))?;
    }
    Ok(document)
}

type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, all: &[PlotPoint], title: &str) -> DrawResult {
    let total_retries: u64 = all.iter().map(|point| point.retries).sum();
    let total_errors: u64 = all.iter().map(|point| point.errors).sum();
    let points: Vec<PlotPoint> = all.iter().copied().filter(|point| point.shown).collect();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 22))?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);
    // Whole seconds; a tick falls a few milliseconds after its second, which adds none.
    let seconds = (points.iter().map(|point| point.end).fold(1.0, f64::max) - 0.05).ceil();

    // Throughput, with the retries of each second as bars on the right-hand axis.
    let top_rate = points
        .iter()
        .map(|point| point.per_second)
        .fold(1.0, f64::max)
        * HEADROOM;
    let top_retries = points
        .iter()
        .flat_map(|point| [point.retries_per_second(), point.errors_per_second()])
        .fold(1.0, f64::max)
        * HEADROOM;
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .caption(
            format!(
                "Throughput — {} retr{} in all{}",
                grouped(total_retries),
                if total_retries == 1 { "y" } else { "ies" },
                match total_errors {
                    0 => String::new(),
                    n => format!(", {} failed or unknown", grouped(n)),
                }
            ),
            (FONT, 17),
        )
        .x_label_area_size(40)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds, 0.0..top_rate)?
        .set_secondary_coord(0.0..seconds, 0.0..top_retries);
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .x_label_formatter(&axis_number)
        .y_desc("committed transfers/s")
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.03))
        .y_label_formatter(&axis_number)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc(if total_errors > 0 {
            "retries/s, failed/s"
        } else {
            "retries/s"
        })
        .y_label_formatter(&axis_number)
        .label_style((FONT, 13).into_font().color(&RETRIES))
        .axis_desc_style((FONT, 14).into_font().color(&RETRIES))
        .draw()?;
    chart
        .draw_secondary_series(
            points
                .iter()
                .filter(|point| point.retries > 0)
                .map(|point| {
                    Rectangle::new(
                        [(point.start, 0.0), (point.end, point.retries_per_second())],
                        RETRIES.mix(0.3).filled(),
                    )
                }),
        )?
        .label("retries/s (right axis)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], RETRIES.mix(0.3).filled()));
    chart
        .draw_series(LineSeries::new(
            points
                .iter()
                .map(|point| (point.middle(), point.per_second)),
            THROUGHPUT.stroke_width(2),
        ))?
        .label("committed transfers/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], THROUGHPUT.stroke_width(2)));
    if total_errors > 0 {
        chart
            .draw_secondary_series(points.iter().filter(|point| point.errors > 0).map(|point| {
                Cross::new(
                    (point.middle(), point.errors_per_second()),
                    6,
                    FAILURES.stroke_width(2),
                )
            }))?
            .label("failed or unknown/s (right axis)")
            .legend(|(x, y)| Cross::new((x + 9, y), 5, FAILURES.stroke_width(2)));
    }
    draw_legend(&mut chart)?;

    // Latency: p50, p99 and the worst of each second.
    // On a log scale: a p99 a hundred times the p50 (a stall, a retry storm) leaves the p50
    // readable.
    let latencies = || {
        points
            .iter()
            .flat_map(|point| [point.p50_ms, point.p99_ms, point.max_ms])
            .flatten()
    };
    let highest = latencies().fold(0.1, f64::max);
    // From the power of ten below the lowest value, so the axis has a labelled decade under
    // the p50 (a p50 of 3 ms on an axis starting at 2 ms had no label below 10).
    let bottom_latency = 10f64.powf((latencies().fold(highest, f64::min) / 1.5).log10().floor());
    // The same room above the data as on a linear axis, in decades.
    let top_latency = bottom_latency * (highest / bottom_latency).powf(HEADROOM);
    let mut chart = ChartBuilder::on(&lower)
        .margin(12)
        .caption("Latency of committed transfers", (FONT, 17))
        .margin_right(12 + 80) // lined up with the throughput's right-hand axis
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            0.0..seconds,
            (bottom_latency..top_latency)
                .log_scale()
                .with_key_points(one_two_five(bottom_latency, top_latency)),
        )?;
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .x_label_formatter(&axis_number)
        .y_desc("latency (ms, log scale)")
        .y_label_formatter(&latency_label)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.03))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    for (name, colour, value) in [
        (
            "pMax",
            P_MAX,
            (|point: &PlotPoint| point.max_ms) as fn(&PlotPoint) -> Option<f64>,
        ),
        ("p99", P99, |point: &PlotPoint| point.p99_ms),
        ("p50", P50, |point: &PlotPoint| point.p50_ms),
    ] {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter_map(|point| Some((point.middle(), value(point)?))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_drawn_with_its_series_and_axes() {
        let points: Vec<PlotPoint> = (0..5)
            .map(|second| PlotPoint {
                start: f64::from(second),
                end: f64::from(second + 1),
                per_second: 1000.0 + 100.0 * f64::from(second),
                p50_ms: Some(1.0),
                p99_ms: Some(4.0),
                max_ms: Some(if second == 3 { 250.0 } else { 6.0 }),
                retries: if second == 2 { 12 } else { 0 },
                errors: 0,
                shown: true,
            })
            .collect();
        let svg = svg(&points, "roachbank transfer").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "roachbank transfer",
            "committed transfers/s",
            "retries/s",
            "latency (ms, log scale)",
            "elapsed (s)",
            "p50",
            "p99",
            "pMax",
            "12 retries in all",
        ] {
            assert!(svg.contains(text), "no {text:?} in the plot");
        }
        // Each series is a line in its colour, and so is its legend's sample.
        for (series, colour) in [
            ("throughput", THROUGHPUT),
            ("p50", P50),
            ("p99", P99),
            ("pMax", P_MAX),
        ] {
            let stroke = format!(
                "stroke=\"#{:02X}{:02X}{:02X}\"",
                colour.0, colour.1, colour.2
            );
            let lines = elements(&svg, "polyline")
                .filter(|element| element.contains(&stroke))
                .count();
            assert_eq!(lines, 2, "{series}: the series and its legend");
        }
        let retry_bars = elements(&svg, "rect")
            .filter(|element| element.contains("fill=\"#D62728\""))
            .count();
        assert_eq!(retry_bars, 2, "one retry bar and its legend");
    }

    /// The attributes of each `<name …>` element of `svg`.
    fn elements<'a>(svg: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
        let opening = format!("<{name} ");
        svg.split(opening.as_str())
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|rest| rest.split('>').next().unwrap_or(rest))
    }

    #[test]
    fn a_run_of_fewer_than_two_drawn_intervals_is_not_plottable() {
        let point = |start: f64, shown| PlotPoint {
            start,
            end: start + 1.0,
            per_second: 10.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            max_ms: Some(3.0),
            retries: 0,
            errors: 0,
            shown,
        };
        assert!(!plottable(&[]));
        assert!(!plottable(&[point(0.0, true)]));
        assert!(!plottable(&[point(0.0, true), point(1.0, false)]));
        assert!(plottable(&[point(0.0, true), point(1.0, true)]));
    }

    #[test]
    fn a_run_without_transfers_still_draws() {
        assert!(svg(&[], "nothing").unwrap().contains("nothing"));
    }
}
