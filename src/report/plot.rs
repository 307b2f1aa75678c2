//! Plots with `plotters`, each written as PNG and SVG. Text uses DejaVu Sans embedded in the
//! binary (no system font is read), so plots render the same on a fresh machine.
//!
//! Every function takes plain numbers and a path *stem*; it writes `stem.png` and `stem.svg`
//! and returns both paths.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font ships with the crate; failing to parse it is a build defect.
            register_font(FONT, style, FONT_BYTES).unwrap_or_else(|_| panic!("embedded DejaVu Sans is corrupt"));
        }
    });
}

/// Plot colours, distinguishable in print and for common colour blindness (Okabe–Ito).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Colours of the lines of a line chart: the palette, then darker, still distinct ones, so that
/// a network with many exits keeps one colour per curve.
pub const LINE_COLORS: [RGBColor; 12] = [
    PALETTE[0],
    PALETTE[1],
    PALETTE[2],
    PALETTE[3],
    PALETTE[4],
    PALETTE[5],
    PALETTE[6],
    RGBColor(128, 128, 128),
    RGBColor(140, 81, 10),
    RGBColor(102, 141, 27),
    RGBColor(118, 42, 131),
    RGBColor(1, 102, 94),
];

/// One line of a line plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A single marked point (calibrated policy, full network).
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// Legend label.
    pub label: String,
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
}

/// One panel of stacked line plots.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// x axis label (with unit).
    pub x_label: String,
    /// y axis label (with unit).
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
}

/// One exit's scores split by correct and wrong answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreHistogram {
    /// Panel title (`exit 0 (after stage1.block2)`).
    pub title: String,
    /// Scores of the samples this exit classifies correctly.
    pub correct: Vec<f32>,
    /// Scores of the samples it gets wrong.
    pub wrong: Vec<f32>,
    /// The policy threshold at this exit (drawn as a vertical line), in score units.
    pub threshold: Option<f64>,
}

/// One bar of the exit distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitBar {
    /// Label under the bar.
    pub label: String,
    /// Share of samples leaving there, in %.
    pub share: f64,
    /// Accuracy of those samples, in %, printed above the bar.
    pub accuracy: Option<f64>,
}

type DrawResult<T> = std::result::Result<T, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Renders `draw` into `stem.png` (w×h) and `stem.svg`.
fn both(
    stem: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> DrawResult<()>,
    draw_svg: impl Fn(&DrawingArea<SVGBackend, Shift>) -> DrawResult<()>,
) -> Result<Vec<PathBuf>> {
    ensure_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let fail = |file: &Path, reason: String| Error::Parse {
        file: file.into(),
        reason: format!("cannot draw the plot: {reason}"),
    };
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw(&root).map_err(|r| fail(&png, r))?;
        root.present().map_err(|e| fail(&png, err(e)))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_svg(&root).map_err(|r| fail(&svg, r))?;
        root.present().map_err(|e| fail(&svg, err(e)))?;
    }
    Ok(vec![png, svg])
}

/// A caption font size (22 px at most) at which `title` fits `width` pixels: long titles (a
/// policy with many per-exit thresholds) shrink instead of running off both edges.
fn caption_size(title: &str, width: u32) -> f64 {
    let chars = title.chars().count().max(1) as f64;
    (f64::from(width) * 1.75 / chars).clamp(12.0, 22.0)
}

/// Axis bounds around `values` with `pad` × their span on each side, clipped to `floor`/`ceil`.
fn range(values: impl Iterator<Item = f64>, pad: f64, floor: Option<f64>, ceil: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-9 * hi.abs().max(1.0) {
        // One value (a one-epoch run, a single point): a span around it that tick labels can
        // tell apart, instead of a sliver where every tick shows the same number.
        let half = (hi.abs() * 0.1).max(0.5);
        (lo, hi) = (lo - half, hi + half);
    } else {
        let span = hi - lo;
        lo -= pad * span;
        hi += pad * span;
    }
    if let Some(f) = floor {
        lo = lo.max(f);
    }
    if let Some(c) = ceil {
        hi = hi.min(c);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    (lo, hi)
}

#[allow(clippy::too_many_arguments)]
fn line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    marks: &[Mark],
    x_floor: Option<f64>,
    legend: SeriesLabelPosition,
    legend_inside: bool,
) -> DrawResult<()> {
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(marks.iter().map(|m| m.x));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(marks.iter().map(|m| m.y));
    let (x0, x1) = range(xs, 0.05, x_floor, None);
    let (y0, y1) = range(ys, 0.08, None, None);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, caption_size(title, area.dim_in_pixel().0)))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = LINE_COLORS[i % LINE_COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
        if s.points.len() <= 60 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    let shapes = [PALETTE[6], PALETTE[3], PALETTE[2], PALETTE[4]];
    for (i, m) in marks.iter().enumerate() {
        let color = shapes[i % shapes.len()];
        if i % 2 == 0 {
            chart
                .draw_series(std::iter::once(TriangleMarker::new((m.x, m.y), 9, color.filled())))
                .map_err(err)?
                .label(m.label.clone())
                .legend(move |(x, y)| TriangleMarker::new((x + 11, y), 7, color.filled()));
        } else {
            chart
                .draw_series(std::iter::once(Cross::new((m.x, m.y), 8, color.stroke_width(3))))
                .map_err(err)?
                .label(m.label.clone())
                .legend(move |(x, y)| Cross::new((x + 11, y), 6, color.stroke_width(3)));
        }
    }
    if legend_inside && (!series.is_empty() || !marks.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(legend)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Accuracy against relative cost: curves (threshold sweeps, budget curves) and marked
/// points (the calibrated policy, the full network).
pub fn tradeoff(stem: &Path, title: &str, curves: &[Series], marks: &[Mark]) -> Result<Vec<PathBuf>> {
    fn go<DB: DrawingBackend>(
        a: &DrawingArea<DB, Shift>,
        title: &str,
        curves: &[Series],
        marks: &[Mark],
    ) -> DrawResult<()> {
        a.fill(&WHITE).map_err(err)?;
        line_chart(
            a,
            title,
            "relative cost (mean MACs per sample / plain network MACs)",
            "accuracy (%)",
            curves,
            marks,
            Some(0.0),
            SeriesLabelPosition::LowerRight,
            true,
        )
    }
    both(
        stem,
        (960, 640),
        |a| go(a, title, curves, marks),
        |a| go(a, title, curves, marks),
    )
}

/// Panels of line plots stacked vertically (training curves).
pub fn panels(stem: &Path, panels: &[Panel]) -> Result<Vec<PathBuf>> {
    let h = 360 * panels.len().max(1) as u32;
    fn go<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, panels: &[Panel]) -> DrawResult<()> {
        a.fill(&WHITE).map_err(err)?;
        let areas = a.split_evenly((panels.len().max(1), 1));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let legend_series: Vec<Series> = p.series.clone();
            // The legend goes in a strip under the chart, never over the data, wrapped into
            // as many rows as it needs.
            let width = area.dim_in_pixel().0 as i32;
            let item_w = |s: &Series| 30 + 8 * s.label.chars().count() as i32 + 30;
            let mut rows = 1;
            let mut x = 80;
            for s in &legend_series {
                if x + item_w(s) > width - 10 && x > 80 {
                    rows += 1;
                    x = 80;
                }
                x += item_w(s);
            }
            let strip_h = 12 + 22 * rows as u32;
            let (chart_area, strip) = area.split_vertically(area.dim_in_pixel().1.saturating_sub(strip_h));
            let pos = SeriesLabelPosition::UpperRight;
            line_chart(
                &chart_area,
                &p.title,
                &p.x_label,
                &p.y_label,
                &legend_series,
                &[],
                None,
                pos,
                false,
            )?;
            let (mut x, mut y) = (80i32, 14i32);
            for (i, s) in legend_series.iter().enumerate() {
                if x + item_w(s) > width - 10 && x > 80 {
                    x = 80;
                    y += 22;
                }
                let color = LINE_COLORS[i % LINE_COLORS.len()];
                strip
                    .draw(&PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)))
                    .map_err(err)?;
                strip
                    .draw(&Text::new(
                        s.label.clone(),
                        (x + 30, y - 8),
                        (FONT, 14).into_font().color(&BLACK),
                    ))
                    .map_err(err)?;
                x += item_w(s);
            }
        }
        Ok(())
    }
    both(stem, (960, h), |a| go(a, panels), |a| go(a, panels))
}

/// The share of samples leaving at each exit, with each exit's accuracy above its bar.
pub fn exit_distribution(stem: &Path, title: &str, bars: &[ExitBar]) -> Result<Vec<PathBuf>> {
    fn go<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, title: &str, bars: &[ExitBar]) -> DrawResult<()> {
        a.fill(&WHITE).map_err(err)?;
        let n = bars.len().max(1);
        let top = bars.iter().map(|b| b.share).fold(0.0, f64::max).max(1.0) * 1.15;
        let mut chart = ChartBuilder::on(a)
            .caption(title, (FONT, caption_size(title, a.dim_in_pixel().0)))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top.min(115.0))
            .map_err(err)?;
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let k = x.round();
                if (x - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
                    labels[k as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("exit (the final classifier last)")
            .y_desc("samples leaving here (%)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(err)?;
        let color = PALETTE[0];
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .map(|(k, b)| Rectangle::new([(k as f64 - 0.35, 0.0), (k as f64 + 0.35, b.share)], color.filled())),
            )
            .map_err(err)?
            .label("share of samples (bar height)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().enumerate().map(|(k, b)| {
                let text = match b.accuracy {
                    Some(acc) => format!("{:.1}% | acc {:.1}%", b.share, acc),
                    None => format!("{:.1}%", b.share),
                };
                Text::new(
                    text,
                    (k as f64, b.share + top * 0.02),
                    (FONT, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        )),
                )
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        Ok(())
    }
    both(stem, (960, 560), |a| go(a, title, bars), |a| go(a, title, bars))
}

/// Per-exit histograms of the exit score, correct and wrong answers overlaid (as Figure 4 of
/// the differentiable-branching slides), one panel per exit side by side.
pub fn score_histograms(stem: &Path, title: &str, score_label: &str, exits: &[ScoreHistogram]) -> Result<Vec<PathBuf>> {
    const BINS: usize = 20;
    fn go<DB: DrawingBackend>(
        a: &DrawingArea<DB, Shift>,
        title: &str,
        score_label: &str,
        exits: &[ScoreHistogram],
    ) -> DrawResult<()> {
        a.fill(&WHITE).map_err(err)?;
        let a = a.titled(title, (FONT, 22)).map_err(err)?;
        let cols = exits.len().max(1);
        let areas = a.split_evenly((1, cols));
        let hist = |v: &[f32]| {
            let mut h = [0usize; BINS];
            for &x in v {
                let b = ((x.clamp(0.0, 1.0) as f64) * BINS as f64) as usize;
                h[b.min(BINS - 1)] += 1;
            }
            h
        };
        for (e, area) in exits.iter().zip(areas.iter()) {
            let (hc, hw) = (hist(&e.correct), hist(&e.wrong));
            let top = hc.iter().chain(hw.iter()).copied().max().unwrap_or(1).max(1) as f64 * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(&e.title, (FONT, 17))
                .margin(8)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..1f64, 0f64..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(score_label)
                .y_desc("samples (count)")
                .x_labels(6)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            let w = 1.0 / BINS as f64;
            for (counts, color, label) in [
                (&hc, PALETTE[2], format!("correct ({})", e.correct.len())),
                (&hw, PALETTE[1], format!("wrong ({})", e.wrong.len())),
            ] {
                chart
                    .draw_series(counts.iter().enumerate().map(|(b, &c)| {
                        Rectangle::new(
                            [(b as f64 * w, 0.0), ((b + 1) as f64 * w, c as f64)],
                            color.mix(0.55).filled(),
                        )
                    }))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.mix(0.55).filled()));
            }
            if let Some(t) = e.threshold.filter(|t| (0.0..=1.0).contains(t)) {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(t, 0.0), (t, top)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(err)?
                    .label(format!("threshold {t:.3}"))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
    let w = (420 * exits.len().max(1) as u32).max(640);
    both(
        stem,
        (w, 480),
        |a| go(a, title, score_label, exits),
        |a| go(a, title, score_label, exits),
    )
}

/// One design of the class-specific search, as a point of the gain–loss plot.
#[derive(Clone, Debug, PartialEq)]
pub struct GainLossPoint {
    /// Loss for the other classes, `t' / t` (×).
    pub loss: f64,
    /// Gain for the target class, `t / t''` (×).
    pub gain: f64,
    /// Connection type KP=On (dense branch) rather than Off.
    pub kp_on: bool,
    /// Keeps B's accuracy (eq. 5–7) and saves time.
    pub viable: bool,
    /// On the Pareto front of the viable designs.
    pub pareto: bool,
    /// The pick.
    pub chosen: bool,
}

/// One target class's panel.
#[derive(Clone, Debug, PartialEq)]
pub struct GainLossPanel {
    /// Panel title.
    pub title: String,
    /// Every candidate design.
    pub points: Vec<GainLossPoint>,
}

/// Gain for the target class against loss for the others, one panel per target class, every
/// candidate design as a point (KP=On and KP=Off apart, non-viable ones hollow), the Pareto
/// front of the viable ones as a line and the pick as a large triangle.
pub fn gain_loss_panels(stem: &Path, title: &str, panels: &[GainLossPanel]) -> Result<Vec<PathBuf>> {
    let cols = panels.len().clamp(1, 5);
    let rows = panels.len().div_ceil(cols).max(1);
    let (pw, ph, header) = (400u32, 380u32, 96u32);
    let size = (pw * cols as u32, header + ph * rows as u32);
    let on = PALETTE[0];
    let off = PALETTE[1];
    let grey = RGBColor(150, 150, 150);
    fn go<DB: DrawingBackend>(
        a: &DrawingArea<DB, Shift>,
        title: &str,
        panels: &[GainLossPanel],
        cols: usize,
        rows: usize,
        header: u32,
        colors: (RGBColor, RGBColor, RGBColor),
    ) -> DrawResult<()> {
        let (on, off, grey) = colors;
        a.fill(&WHITE).map_err(err)?;
        let (top, body) = a.split_vertically(header);
        top.draw(&Text::new(
            title.to_string(),
            (16, 10),
            (FONT, 24).into_font().style(FontStyle::Bold).color(&BLACK),
        ))
        .map_err(err)?;
        // Legend strip.
        let y = 62;
        let mut x = 20;
        let item = |x: i32, label: &str| Text::new(label.to_string(), (x, y - 9), (FONT, 16).into_font().color(&BLACK));
        top.draw(&Circle::new((x, y), 6, on.filled())).map_err(err)?;
        top.draw(&item(x + 12, "KP=On, viable")).map_err(err)?;
        x += 150;
        top.draw(&Circle::new((x, y), 6, off.filled())).map_err(err)?;
        top.draw(&item(x + 12, "KP=Off, viable")).map_err(err)?;
        x += 155;
        top.draw(&Circle::new((x, y), 6, grey.stroke_width(2))).map_err(err)?;
        top.draw(&item(x + 12, "not viable (eq. 5–7 fail or no time gain)"))
            .map_err(err)?;
        x += 365;
        top.draw(&PathElement::new(vec![(x - 8, y), (x + 18, y)], BLACK.stroke_width(2)))
            .map_err(err)?;
        top.draw(&item(x + 24, "Pareto front (viable)")).map_err(err)?;
        x += 205;
        top.draw(&TriangleMarker::new((x, y), 9, BLACK.filled())).map_err(err)?;
        top.draw(&item(x + 14, "pick (max gain/loss; Table 3 may add a 2nd exit)"))
            .map_err(err)?;
        let areas = body.split_evenly((rows, cols));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let (x0, x1) = range(p.points.iter().map(|q| q.loss).chain([1.0]), 0.08, None, None);
            let (y0, y1) = range(p.points.iter().map(|q| q.gain).chain([1.0]), 0.08, Some(0.0), None);
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, (FONT, 18))
                .margin(10)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("loss for V−k, t'/t (×)")
                .y_desc("gain for k, t/t'' (×)")
                .x_labels(5)
                .y_labels(6)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            // B itself: gain 1, loss 1.
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x0, 1.0), (x1, 1.0)],
                    RGBColor(200, 200, 200).stroke_width(1),
                )))
                .map_err(err)?;
            chart
                .draw_series(
                    p.points
                        .iter()
                        .filter(|q| !q.viable)
                        .map(|q| Circle::new((q.loss, q.gain), 4, grey.stroke_width(1))),
                )
                .map_err(err)?;
            chart
                .draw_series(p.points.iter().filter(|q| q.viable).map(|q| {
                    let c = if q.kp_on { on } else { off };
                    Circle::new((q.loss, q.gain), 5, c.filled())
                }))
                .map_err(err)?;
            let mut front: Vec<(f64, f64)> = p.points.iter().filter(|q| q.pareto).map(|q| (q.loss, q.gain)).collect();
            front.sort_by(|a, b| a.0.partial_cmp(&b.0).expect("finite"));
            chart
                .draw_series(std::iter::once(PathElement::new(front, BLACK.stroke_width(2))))
                .map_err(err)?;
            chart
                .draw_series(
                    p.points
                        .iter()
                        .filter(|q| q.chosen)
                        .map(|q| TriangleMarker::new((q.loss, q.gain), 10, BLACK.filled())),
                )
                .map_err(err)?;
        }
        Ok(())
    }
    let colors = (on, off, grey);
    both(
        stem,
        size,
        |a| go(a, title, panels, cols, rows, header, colors),
        |a| go(a, title, panels, cols, rows, header, colors),
    )
}

#[cfg(test)]
mod tests {
    use super::{caption_size, range};

    #[test]
    fn long_titles_get_a_smaller_caption() {
        assert_eq!(caption_size("accuracy vs cost", 960), 22.0);
        let long = "run: where samples leave, policy maxprob:0.968,0.979,0.950,0.744,0.679,0.840,0.912,0.931";
        let size = caption_size(long, 960);
        assert!((12.0..22.0).contains(&size), "{size}");
        // About 0.57 em per character of the sans-serif font: the title fits the width.
        assert!(long.chars().count() as f64 * size * 0.57 <= 960.0);
    }

    #[test]
    fn a_single_value_gets_a_readable_span() {
        // One epoch: the x axis must not collapse onto 1.0 (every tick labelled "1.0").
        let (lo, hi) = range([1.0].into_iter(), 0.05, None, None);
        assert!(lo <= 0.5 && hi >= 1.5, "{lo}..{hi}");
        let (lo, hi) = range([0.779, 0.779].into_iter(), 0.05, Some(0.0), None);
        assert!(lo >= 0.0 && hi - lo >= 0.5, "{lo}..{hi}");
        // Several values: padded by their span.
        let (lo, hi) = range([1.0, 3.0].into_iter(), 0.1, None, None);
        assert!((lo - 0.8).abs() < 1e-12 && (hi - 3.2).abs() < 1e-12, "{lo}..{hi}");
    }
}

/// One sample of an exit gallery: its pixels (`C×H×W`, any range: each image is stretched to
/// its own minimum and maximum), its label, the answer and its score.
#[derive(Clone, Debug, PartialEq)]
pub struct GallerySample {
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Pixels, channel after channel.
    pub pixels: Vec<f32>,
    /// True class.
    pub label: usize,
    /// The class the exit answered.
    pub pred: usize,
    /// The exit's score for the answer (the policy's score; max probability at the final exit).
    pub score: f32,
}

/// The samples one exit answered.
#[derive(Clone, Debug, PartialEq)]
pub struct GalleryRow {
    /// Row title (`exit 0`, `final`).
    pub title: String,
    /// Its samples, left to right.
    pub samples: Vec<GallerySample>,
}

/// The samples answered at each exit, a row per exit with `label → answer score` under each
/// image (red when wrong), as EENets' Figs. 8–10. PNG only (pixels as SVG rectangles would be
/// large and no sharper).
pub fn exit_gallery(stem: &Path, title: &str, rows: &[GalleryRow]) -> Result<Vec<PathBuf>> {
    ensure_font();
    let side = rows
        .iter()
        .flat_map(|r| &r.samples)
        .map(|s| s.shape[1].max(s.shape[2]))
        .max()
        .unwrap_or(1);
    let scale = (96 / side.max(1)).max(1);
    let cell = (side * scale) as i32;
    let (left, top, caption, gap) = (110i32, 44i32, 20i32, 10i32);
    let cols = rows.iter().map(|r| r.samples.len()).max().unwrap_or(0).max(1) as i32;
    let width = (left + cols * (cell + gap) + gap) as u32;
    let height = (top + rows.len().max(1) as i32 * (cell + caption + gap) + gap) as u32;
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let png = stem.with_extension("png");
    let fail = |reason: String| Error::Parse {
        file: png.clone(),
        reason: format!("cannot draw the gallery: {reason}"),
    };
    {
        let root = BitMapBackend::new(&png, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(err(e)))?;
        root.draw_text(title, &(FONT, 18).into_font().color(&BLACK), (gap, 12))
            .map_err(|e| fail(err(e)))?;
        for (r, row) in rows.iter().enumerate() {
            let y0 = top + r as i32 * (cell + caption + gap);
            root.draw_text(
                &row.title,
                &(FONT, 15).into_font().color(&BLACK),
                (gap, y0 + cell / 2 - 8),
            )
            .map_err(|e| fail(err(e)))?;
            for (i, s) in row.samples.iter().enumerate() {
                let x0 = left + i as i32 * (cell + gap);
                let [c, h, w] = s.shape;
                let (lo, hi) = s
                    .pixels
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let span = if hi > lo { hi - lo } else { 1.0 };
                let level = |ch: usize, y: usize, x: usize| {
                    let v = s.pixels.get(ch.min(c - 1) * h * w + y * w + x).copied().unwrap_or(lo);
                    (255.0 * (v - lo) / span).clamp(0.0, 255.0) as u8
                };
                for y in 0..h {
                    for x in 0..w {
                        let color = if c >= 3 {
                            RGBColor(level(0, y, x), level(1, y, x), level(2, y, x))
                        } else {
                            let g = level(0, y, x);
                            RGBColor(g, g, g)
                        };
                        let (px, py) = (x0 + (x * scale) as i32, y0 + (y * scale) as i32);
                        root.draw(&Rectangle::new(
                            [(px, py), (px + scale as i32, py + scale as i32)],
                            color.filled(),
                        ))
                        .map_err(|e| fail(err(e)))?;
                    }
                }
                let ok = s.label == s.pred;
                let text = format!("{}→{} {:.2}", s.label, s.pred, s.score);
                let color = if ok { BLACK } else { PALETTE[1] };
                root.draw_text(&text, &(FONT, 13).into_font().color(&color), (x0, y0 + cell + 3))
                    .map_err(|e| fail(err(e)))?;
            }
        }
        root.present().map_err(|e| fail(err(e)))?;
    }
    Ok(vec![png])
}
