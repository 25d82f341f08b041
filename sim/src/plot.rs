//! SVG pictures: a run over time, and a sweep's cost against p95 wait. Drawn into a string: writing
//! the file is the caller's business (the simulator does no I/O).

use plotters::prelude::*;

use crate::report::{Report, human_secs};
use crate::stats::SeriesPoint;
use crate::sweep::SweepReport;

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {message}")]
pub struct PlotError {
    pub message: String,
}

/// A line of the time-series chart: its label, colour and value.
type Line = (&'static str, RGBColor, fn(&SeriesPoint) -> f64);

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 640;

fn err(message: String) -> PlotError {
    PlotError { message }
}

/// Queued jobs and machines by state over time (left axis), with the p95 wait (right axis), as SVG.
pub fn time_series(
    title: &str,
    points: &[SeriesPoint],
    report: &Report,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_time_series(&mut svg, title, points, report)?;
    Ok(svg)
}

fn draw_time_series(
    svg: &mut String,
    title: &str,
    points: &[SeriesPoint],
    report: &Report,
) -> Result<(), PlotError> {
    let hours = |p: &SeriesPoint| p.t / 3600.0;
    let x_max = points
        .last()
        .map_or(1.0, |p| hours(p) + 1e-9)
        .max(report.simulated_seconds / 3600.0)
        .max(1e-3);
    let y_max = points
        .iter()
        .map(|p| (p.creating + p.idle + p.busy + p.removing).max(p.queued))
        .fold(1.0, f64::max)
        * 1.1;
    let w_max = points.iter().filter_map(|p| p.wait_p95).fold(1.0, f64::max) * 1.1;

    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(e.to_string()))?
        .set_secondary_coord(0.0..x_max, 0.0..w_max);
    chart
        .configure_mesh()
        .x_desc("hours since start")
        .y_desc("machines / queued jobs (mean per interval)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_secondary_axes()
        .y_desc("p95 wait (s)")
        .draw()
        .map_err(|e| err(e.to_string()))?;

    let series: [Line; 5] = [
        ("busy", RGBColor(31, 119, 180), |p| p.busy),
        ("idle", RGBColor(44, 160, 44), |p| p.idle),
        ("creating", RGBColor(255, 127, 14), |p| p.creating),
        ("removing", RGBColor(148, 103, 189), |p| p.removing),
        ("queued jobs", RGBColor(214, 39, 40), |p| p.queued),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (hours(p), value(p))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let waits = points
        .iter()
        .filter_map(|p| p.wait_p95.map(|w| (hours(p), w)));
    chart
        .draw_secondary_series(PointSeries::of_element(
            waits,
            2,
            BLACK.filled(),
            &|c, s, st| Circle::new(c, s, st),
        ))
        .map_err(|e| err(e.to_string()))?
        .label("p95 wait (right axis)")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLACK.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// The smallest wait a log axis shows: shorter p95 waits (no wait at all, mostly) sit on it.
const WAIT_FLOOR_S: f64 = 1.0;

/// Cost (or machine-hours) against p95 wait for every point, the Pareto front as a line, the SLO as
/// a dashed line and the recommendation circled. Waits span seconds to hours: the axis is
/// logarithmic. As SVG.
pub fn sweep(title: &str, sweep: &SweepReport) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_sweep(&mut svg, title, sweep)?;
    Ok(svg)
}

fn draw_sweep(svg: &mut String, title: &str, sweep: &SweepReport) -> Result<(), PlotError> {
    let xy = |i: usize| {
        let s = &sweep.points[i].summary;
        (
            s.cost_or_hours().mean,
            s.wait_seconds.p95.mean.max(WAIT_FLOOR_S),
        )
    };
    let n = sweep.points.len();
    let xs = (0..n).map(|i| xy(i).0);
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let pad = ((x_hi - x_lo) * 0.05).max(x_hi * 0.01).max(1e-3);
    let (x_min, x_max) = ((x_lo - pad).max(0.0), x_hi + pad);
    let slo = sweep.options.slo_p95_wait_seconds;
    let y_max = (0..n)
        .map(|i| sweep.points[i].summary.wait_seconds.p95.high)
        .chain(slo)
        .fold(10.0, f64::max)
        * 2.0;
    let x_desc = if sweep.options.cost_per_machine_hour.is_some() {
        "cost (machine-hours × price), mean over replications"
    } else {
        "machine-hours, mean over replications"
    };

    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, (WAIT_FLOOR_S * 0.8..y_max).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("p95 job wait (log scale), mean and 95% interval")
        .y_label_formatter(&|s| human_secs(*s))
        .draw()
        .map_err(|e| err(e.to_string()))?;

    let grey = RGBColor(120, 120, 120);
    // Each point's 95 % interval of the p95 wait, as a vertical bar.
    let bar = |i: usize| {
        let (x, _) = xy(i);
        let p95 = sweep.points[i].summary.wait_seconds.p95;
        PathElement::new(
            vec![
                (x, p95.low.max(WAIT_FLOOR_S)),
                (x, p95.high.max(WAIT_FLOOR_S)),
            ],
            grey.stroke_width(1),
        )
    };
    chart
        .draw_series((0..n).map(bar))
        .map_err(|e| err(e.to_string()))?
        .label("95% interval of the p95 wait")
        .legend(move |(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], grey));
    chart
        .draw_series((0..n).map(|i| Circle::new(xy(i), 4, grey.filled())))
        .map_err(|e| err(e.to_string()))?
        .label("configuration")
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, grey.filled()));
    let front = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            sweep.pareto.iter().map(|&i| xy(i)),
            front.stroke_width(2),
        ))
        .map_err(|e| err(e.to_string()))?
        .label("Pareto front")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], front.stroke_width(2)));
    chart
        .draw_series(
            sweep
                .pareto
                .iter()
                .map(|&i| Circle::new(xy(i), 5, front.filled())),
        )
        .map_err(|e| err(e.to_string()))?;
    if let Some(slo) = slo {
        let red = RGBColor(214, 39, 40);
        let dashes = (0..40).map(|k| {
            let (a, b) = (
                x_max * f64::from(k) / 40.0,
                x_max * (f64::from(k) + 0.5) / 40.0,
            );
            PathElement::new(vec![(a, slo), (b, slo)], red.stroke_width(1))
        });
        chart
            .draw_series(dashes)
            .map_err(|e| err(e.to_string()))?
            .label("SLO (p95 wait)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(1)));
    }
    if let Some(r) = &sweep.recommended {
        let green = RGBColor(44, 160, 44);
        let (x, y) = xy(r.index);
        let label = format!(
            "{} #{}: {}",
            if r.meets_slo {
                "recommended"
            } else {
                "closest"
            },
            r.id,
            r.params.describe()
        );
        chart
            .draw_series([Circle::new((x, y), 10, green.stroke_width(3))])
            .map_err(|e| err(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, green.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}
