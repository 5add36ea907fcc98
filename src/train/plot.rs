//! Figure 1 of the study, drawn with plotters as PNG and SVG. The font (DejaVu Sans, in
//! `assets/`) is compiled in and registered with plotters' ab_glyph backend, so drawing needs
//! no system font.
//!
//! Layout: one column per parameter group (layer), four rows. Rows 1–2 are the fixed test
//! input, rows 3–4 the mean over the fixed set of test inputs. Rows 1 and 3 show, on a log
//! scale, the FIM I, the standard deviations sd(Î1), sd(Î2) of the N-label estimators and the
//! square roots of their Theorem 4.1 upper bounds (dashed). Rows 2 and 4 show ln(UB/Var).

use super::curves::{CurveRow, InputKind};
use crate::{Error, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const BLUE_1: RGBColor = RGBColor(31, 119, 180);
const RED_2: RGBColor = RGBColor(214, 39, 40);

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Output {
            path: "assets/DejaVuSans.ttf".into(),
            msg: "the embedded font could not be parsed".into(),
        })
    }
}

/// Pixel size of the figure for `groups` columns.
fn size(groups: usize) -> (u32, u32) {
    (60 + 380 * groups.max(1) as u32, 1240)
}

/// Draws Figure 1 from the rows of `curves.csv` into `png` and `svg`.
pub fn draw_figure(rows: &[CurveRow], title: &str, png: &Path, svg: &Path) -> Result<()> {
    register_font()?;
    let groups = rows.iter().map(|r| r.values.group).max().unwrap_or(0);
    if groups == 0 {
        return Err(Error::Input("no curve rows to draw".into()));
    }
    let dims = size(groups);
    let out_err = |path: &Path, msg: String| Error::Output {
        path: path.to_path_buf(),
        msg,
    };
    {
        let root = BitMapBackend::new(png, dims).into_drawing_area();
        draw(&root, rows, groups, title).map_err(|m| out_err(png, m))?;
        root.present().map_err(|e| out_err(png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(svg, dims).into_drawing_area();
        draw(&root, rows, groups, title).map_err(|m| out_err(svg, m))?;
        root.present().map_err(|e| out_err(svg, e.to_string()))?;
    }
    Ok(())
}

/// Series of one panel: (label, colour, dashed, points).
type Series = (&'static str, RGBColor, bool, Vec<(f64, f64)>);

fn points(rows: &[&CurveRow], f: impl Fn(&CurveRow) -> f64, positive: bool) -> Vec<(f64, f64)> {
    rows.iter()
        .map(|r| (r.epoch as f64, f(r)))
        .filter(|&(_, y)| y.is_finite() && (!positive || y > 0.0))
        .collect()
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[CurveRow],
    groups: usize,
    title: &str,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FAMILY, 22)).map_err(e)?;
    let (header, grid) = root.split_vertically(34);
    legend_strip(&header).map_err(e)?;
    let panels = grid.split_evenly((4, groups));
    let max_epoch = rows.iter().map(|r| r.epoch).max().unwrap_or(0).max(1) as f64;
    for (k, kind) in [InputKind::Fixed, InputKind::Mean].into_iter().enumerate() {
        for g in 1..=groups {
            let sel: Vec<&CurveRow> = rows
                .iter()
                .filter(|r| r.input == kind && r.values.group == g)
                .collect();
            let Some(first) = sel.first() else { continue };
            let what = match kind {
                InputKind::Fixed => "fixed test input".to_string(),
                InputKind::Mean => format!("mean over {} test inputs", first.inputs),
            };
            let caption = format!("layer {g} ({} params), {what}", first.values.params);
            let values: Vec<Series> = vec![
                (
                    "I (FIM)",
                    BLACK,
                    false,
                    points(&sel, |r| r.values.fisher, true),
                ),
                (
                    "sd Î1",
                    BLUE_1,
                    false,
                    points(&sel, |r| r.values.var1.sqrt(), true),
                ),
                (
                    "sd Î2",
                    RED_2,
                    false,
                    points(&sel, |r| r.values.var2.sqrt(), true),
                ),
                (
                    "√UB Î1",
                    BLUE_1,
                    true,
                    points(&sel, |r| r.values.ub_var1.sqrt(), true),
                ),
                (
                    "√UB Î2",
                    RED_2,
                    true,
                    points(&sel, |r| r.values.ub_var2.sqrt(), true),
                ),
            ];
            let ratios: Vec<Series> = vec![
                (
                    "ln(UB/Var) Î1",
                    BLUE_1,
                    false,
                    points(&sel, |r| r.values.logratio1(), false),
                ),
                (
                    "ln(UB/Var) Î2",
                    RED_2,
                    false,
                    points(&sel, |r| r.values.logratio2(), false),
                ),
            ];
            let top = &panels[(2 * k) * groups + g - 1];
            let bottom = &panels[(2 * k + 1) * groups + g - 1];
            log_panel(top, &caption, &values, max_epoch).map_err(e)?;
            let all_var2_zero = sel.iter().all(|r| r.values.var2 == 0.0);
            let note = if ratios.iter().all(|s| s.3.is_empty()) {
                Some("no bounds: ub_var1/ub_var2 missing from the report")
            } else if all_var2_zero {
                Some("Var[Î2] = 0 here (Remark 4.4): ratio undefined")
            } else {
                None
            };
            ratio_panel(bottom, &ratios, max_epoch, note).map_err(e)?;
        }
    }
    Ok(())
}

fn log_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    series: &[Series],
    max_epoch: f64,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let ys = series.iter().flat_map(|s| s.3.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 3.0, hi * 3.0)
    } else {
        (1e-12, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 14))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_epoch, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(max_epoch as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FAMILY, 11))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_series(&mut chart, series)
}

fn ratio_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    max_epoch: f64,
    note: Option<&str>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let ys = series.iter().flat_map(|s| s.3.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((0.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let pad = ((hi - lo) * 0.1).max(0.5);
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_epoch, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_labels(max_epoch as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc("epoch")
        .y_desc("ln(UB/Var)")
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_series(&mut chart, series)?;
    if let Some(note) = note {
        // Low in the panel, where the log-ratios (≥ 0) rarely are.
        let (_, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            note.to_string(),
            (70, h as i32 - 70),
            (FAMILY, 12).into_font().color(&BLACK.mix(0.7)),
        ))?;
    }
    Ok(())
}

fn draw_series<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Series],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (_, colour, dashed, pts) in series {
        if pts.is_empty() {
            continue;
        }
        let style = ShapeStyle::from(colour).stroke_width(2);
        if *dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 7, 5, style))?;
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?;
        }
        chart.draw_series(
            pts.iter()
                .map(|&p| Circle::new(p, 2, ShapeStyle::from(colour).filled())),
        )?;
    }
    Ok(())
}

/// One line of legend under the title: every series of the panels with its line style.
fn legend_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let items: [(&str, RGBColor, bool); 7] = [
        ("I (FIM)", BLACK, false),
        ("sd Î1 = √Var[Î1]", BLUE_1, false),
        ("sd Î2 = √Var[Î2]", RED_2, false),
        ("√UB (Thm 4.1) of Var[Î1]", BLUE_1, true),
        ("√UB of Var[Î2]", RED_2, true),
        ("ln(UB/Var) Î1 (rows 2, 4)", BLUE_1, false),
        ("ln(UB/Var) Î2", RED_2, false),
    ];
    let font = (FAMILY, 13).into_font().color(&BLACK);
    let mut x = 60;
    let y = 12;
    for (label, colour, dashed) in items {
        let style = ShapeStyle::from(colour).stroke_width(2);
        if dashed {
            area.draw(&PathElement::new(vec![(x, y), (x + 9, y)], style))?;
            area.draw(&PathElement::new(vec![(x + 15, y), (x + 24, y)], style))?;
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 24, y)], style))?;
        }
        area.draw(&Text::new(label.to_string(), (x + 30, y - 7), font.clone()))?;
        let (w, _) = area.estimate_text_size(label, &font)?;
        x += 30 + w as i32 + 28;
    }
    Ok(())
}
