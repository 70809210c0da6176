//! `curve.png`: training loss per update (raw and smoothed) above validation accuracy per
//! epoch; `reliability.png`: the kept model's reliability diagram on validation before and
//! after temperature scaling. Drawn with plotters' bitmap backend.
//!
//! plotters renders text through system fonts (`ttf`, via font-kit/fontconfig) or panics
//! without them ("The font implementation is unable to draw text"); the training machines may
//! have neither. So plotters draws only lines and points here, and the few labels (titles,
//! axis ranges) are drawn pixel by pixel from the 5×7 bitmap glyphs below: the PNG needs no
//! font on any machine.

use std::ops::Range;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{EvalSummary, StepRecord};
use super::Error;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 640;
/// Updates averaged by the smoothed loss line.
const SMOOTHING: usize = 20;
const LIGHT: RGBColor = RGBColor(170, 190, 230);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// Draws `curve.png` at `path` from the step records and evaluations of a run.
pub fn draw_curve(path: &Path, steps: &[StepRecord], evals: &[EvalSummary]) -> Result<(), Error> {
    let plot_err = |source: PlotError| Error::Plot {
        path: path.to_path_buf(),
        source,
    };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.into()))?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    let last_step = steps.last().map_or(1, |s| s.step).max(1) as f64;
    let end = format!("step {last_step}");
    let x_axis = || (0.0..last_step, ["0", end.as_str()]);

    let loss: Vec<(f64, f64)> = steps.iter().map(|s| (s.step as f64, s.loss)).collect();
    let smoothed: Vec<(f64, f64)> = (0..loss.len())
        .map(|i| {
            let window = &loss[i.saturating_sub(SMOOTHING - 1)..=i];
            (
                loss[i].0,
                window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64,
            )
        })
        .collect();
    let max_loss = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.05;
    panel(&top, "training loss", x_axis(), 0.0..max_loss, |chart| {
        chart.draw_series(LineSeries::new(loss.iter().copied(), &LIGHT))?;
        chart.draw_series(LineSeries::new(smoothed.iter().copied(), &BLUE))?;
        Ok(())
    })
    .map_err(plot_err)?;

    let accuracy: Vec<(f64, f64)> = evals
        .iter()
        .map(|e| (e.step as f64, 100.0 * e.accuracy))
        .collect();
    let low = accuracy.iter().map(|p| p.1).fold(100.0, f64::min);
    let floor = if low >= 50.0 { 50.0 } else { 0.0 };
    panel(
        &bottom,
        "validation accuracy %",
        x_axis(),
        floor..100.0,
        |chart| {
            chart.draw_series(LineSeries::new(accuracy.iter().copied(), &RED))?;
            chart.draw_series(accuracy.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
            if accuracy.is_empty() {
                let (xs, ys) = chart.plotting_area().get_pixel_range();
                let (x, y) = bottom.get_base_pixel();
                let (cx, cy) = ((xs.start + xs.end) / 2 - x, (ys.start + ys.end) / 2 - y);
                let text = "no validation set";
                draw_text(&bottom, text, cx - text_width(text) / 2, cy, &BLACK)?;
            }
            Ok(())
        },
    )
    .map_err(plot_err)?;
    root.present().map_err(|e| plot_err(e.into()))
}

/// Draws `reliability.png` at `path`: accuracy against mean top-label confidence in each of
/// `bins` equal-width confidence bins (the bins of the ECE), for the validation predictions
/// at `T = 1` (grey) and at the fitted `temperature` (red), with the diagonal a calibrated model
/// follows. `before` and `after` are `(top-label probability, correct)` pairs.
pub fn draw_reliability(
    path: &Path,
    before: &[(f64, bool)],
    after: &[(f64, bool)],
    temperature: f64,
    bins: usize,
) -> Result<(), Error> {
    let plot_err = |source: PlotError| Error::Plot {
        path: path.to_path_buf(),
        source,
    };
    let (before, after) = (bin_points(before, bins), bin_points(after, bins));
    let low = before
        .iter()
        .chain(&after)
        .flat_map(|&(confidence, accuracy)| [confidence, accuracy])
        .fold(0.5, f64::min);
    let floor = (low * 10.0).floor() / 10.0;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.into()))?;
    let title = format!("accuracy per confidence bin - grey t=1 - red t={temperature:.2}");
    let start = format_value(floor);
    panel(
        &root,
        &title,
        (floor..1.0, [start.as_str(), "1.00"]),
        floor..1.0,
        |chart| {
            chart.draw_series(LineSeries::new([(floor, floor), (1.0, 1.0)], &BLACK))?;
            for (points, color) in [(&before, RGBColor(150, 150, 150)), (&after, RED)] {
                chart.draw_series(LineSeries::new(points.iter().copied(), &color))?;
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            Ok(())
        },
    )
    .map_err(plot_err)?;
    root.present().map_err(|e| plot_err(e.into()))
}

/// `(mean confidence, accuracy)` of each non-empty bin, in bin order.
fn bin_points(predictions: &[(f64, bool)], bins: usize) -> Vec<(f64, f64)> {
    let bins = bins.max(1);
    let mut sums = vec![(0.0, 0usize, 0usize); bins];
    for &(confidence, correct) in predictions {
        let bin = ((confidence * bins as f64) as usize).min(bins - 1);
        sums[bin].0 += confidence;
        sums[bin].1 += usize::from(correct);
        sums[bin].2 += 1;
    }
    sums.into_iter()
        .filter(|&(_, _, count)| count > 0)
        .map(|(confidence, correct, count)| {
            (confidence / count as f64, correct as f64 / count as f64)
        })
        .collect()
}

/// A drawing error of plotters (its error types differ per call).
type PlotError = Box<dyn std::error::Error + Send + Sync>;

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: frame, grid, ranges written at the axes, a title, and the series `draw` adds.
fn panel<'b>(
    area: &DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    (x, x_labels): (Range<f64>, [&str; 2]),
    y: Range<f64>,
    draw: impl FnOnce(&mut Chart<'_, 'b>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(34)
        .margin_bottom(30)
        .margin_left(80)
        .margin_right(24)
        .build_cartesian_2d(x.clone(), y.clone())?;
    for i in 0..=4 {
        let level = y.start + (y.end - y.start) * f64::from(i) / 4.0;
        chart.draw_series(LineSeries::new([(x.start, level), (x.end, level)], &GRID))?;
    }
    draw(&mut chart)?;
    let frame = [
        (x.start, y.start),
        (x.end, y.start),
        (x.end, y.end),
        (x.start, y.end),
        (x.start, y.start),
    ];
    chart.draw_series(LineSeries::new(frame, &BLACK))?;

    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (origin_x, origin_y) = area.get_base_pixel();
    let (left, right) = (xs.start - origin_x, xs.end - origin_x);
    let (top, bottom) = (ys.start - origin_y, ys.end - origin_y);
    let label = |text: &str, x: i32, y: i32| draw_text(area, text, x, y, &BLACK);
    label(title, left, top - 24)?;
    for i in 0..=4 {
        let value = y.start + (y.end - y.start) * f64::from(i) / 4.0;
        let text = format_value(value);
        let width = text_width(&text);
        let row = bottom - (bottom - top) * i / 4 - GLYPH_H;
        label(&text, left - width - 8, row)?;
    }
    label(x_labels[0], left, bottom + 8)?;
    label(x_labels[1], right - text_width(x_labels[1]), bottom + 8)?;
    Ok(())
}

fn format_value(value: f64) -> String {
    if value.abs() >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Glyph scale: each font pixel is a `SCALE`×`SCALE` square.
const SCALE: i32 = 2;
const GLYPH_H: i32 = 7 * SCALE;
const ADVANCE: i32 = 6 * SCALE;

fn text_width(text: &str) -> i32 {
    text.chars().count() as i32 * ADVANCE
}

/// Draws `text` with its top-left corner at `(x, y)` of `area`, from the 5×7 glyphs.
fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    x: i32,
    y: i32,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        let left = x + i as i32 * ADVANCE;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let (px, py) = (left + col * SCALE, y + r as i32 * SCALE);
                    area.draw(&Rectangle::new(
                        [(px, py), (px + SCALE - 1, py + SCALE - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
    }
    Ok(())
}

/// The 5×7 bitmap of `c` (bit 4 = leftmost column); blank for characters not drawn here.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        'a' => [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'y' => [0, 0, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_without_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.png");
        let steps: Vec<StepRecord> = (1..=50)
            .map(|step| StepRecord {
                kind: "step".into(),
                step,
                epoch: step as f64 / 25.0,
                loss: 0.7 / (1.0 + step as f64 / 10.0),
                lr: 1e-4,
                grad_norm: 1.0,
                samples_per_s: 10.0,
            })
            .collect();
        let evals: Vec<EvalSummary> = [25, 50]
            .iter()
            .enumerate()
            .map(|(i, &step)| EvalSummary {
                epoch: i + 1,
                step,
                loss: 0.4,
                accuracy: 0.8 + 0.05 * i as f64,
                true_positive: 1,
                false_positive: 0,
                true_negative: 1,
                false_negative: 0,
            })
            .collect();
        draw_curve(&path, &steps, &evals).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(text_width("step 50") > 0 && glyph('%') != [0; 7]);
    }

    #[test]
    fn reliability_bins_average_confidence_and_accuracy() {
        let predictions = [(0.55, true), (0.59, false), (0.95, true), (0.99, true)];
        let points = bin_points(&predictions, 10);
        assert_eq!(points.len(), 2);
        assert!((points[0].0 - 0.57).abs() < 1e-12 && points[0].1 == 0.5);
        assert!((points[1].0 - 0.97).abs() < 1e-12 && points[1].1 == 1.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reliability.png");
        draw_reliability(&path, &predictions, &predictions, 1.5, 15).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        for c in "accuracy per confidence bin - grey t=1.00".chars() {
            assert!(c == ' ' || glyph(c) != [0; 7], "no glyph for {c:?}");
        }
    }
}
