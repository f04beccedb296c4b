//! Plots of a report: traffic volume against time with one stacked band per application
//! (the qcap paper's "volume vs time" view), and bytes per remote host per application.
//! SVG or PNG, chosen by the file extension.
use std::{path::Path, sync::OnceLock};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

use super::{Report, ReportError};
use crate::units::human_bytes;

/// How many applications get their own band; the rest are summed into "other".
const MAX_BANDS: usize = 8;
/// Upper bound on the time bins drawn.
const MAX_DRAWN_BINS: usize = 300;
/// Remote hosts shown per application in the conversation panel.
const REMOTES_PER_APP: usize = 4;
const APPS_IN_CONVERSATIONS: usize = 6;

const FONT: &str = "sans-serif";
/// Where Debian and other distributions keep a sans font (fonts-dejavu-core first).
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Tableau-10: distinct, readable for most colour-blind viewers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];
const GREY: RGBColor = RGBColor(150, 150, 150);

fn plot_err(path: &Path, what: impl ToString) -> ReportError {
    ReportError::Plot {
        path: path.display().to_string(),
        what: what.to_string(),
    }
}

/// Text needs a font: plotters measures and (for PNG) rasterises glyphs itself.
fn ensure_font(path: &Path) -> Result<(), ReportError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            for p in FONT_PATHS {
                if let Ok(bytes) = std::fs::read(p) {
                    // Registered once per process and kept for its lifetime, as plotters
                    // wants a 'static font.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    for style in [FontStyle::Normal, FontStyle::Bold] {
                        register_font(FONT, style, bytes)
                            .map_err(|_| format!("{p} is not a usable TrueType font"))?;
                    }
                    return Ok(());
                }
            }
            Err(format!(
                "no TrueType font found (looked for {}); install fonts-dejavu-core",
                FONT_PATHS.join(", ")
            ))
        })
        .clone()
        .map_err(|e| plot_err(path, e))
}

/// Draws the report's plots into `path` (.svg or .png).
pub fn draw(report: &Report, path: &Path) -> Result<(), ReportError> {
    ensure_font(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = (1200u32, 1000u32);
    match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            render(report, &root).map_err(|e| plot_err(path, e))?;
            root.present().map_err(|e| plot_err(path, e))
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            render(report, &root).map_err(|e| plot_err(path, e))?;
            root.present().map_err(|e| plot_err(path, e))
        }
        _ => Err(plot_err(
            path,
            "unknown image type: name the file .svg or .png",
        )),
    }
}

/// One band of the volume plot.
struct Band {
    label: String,
    color: RGBColor,
    /// Bytes per drawn bin.
    bins: Vec<u64>,
}

/// A time unit for the x axis that keeps tick labels short.
fn time_unit(span_s: f64) -> (&'static str, f64) {
    if span_s < 2.0 {
        ("ms", 1e3)
    } else if span_s < 600.0 {
        ("s", 1.0)
    } else if span_s < 36_000.0 {
        ("min", 1.0 / 60.0)
    } else {
        ("h", 1.0 / 3600.0)
    }
}

/// A rate unit for the y axis (bytes per second, SI).
fn rate_unit(max_bps: f64) -> (&'static str, f64) {
    if max_bps >= 1e9 {
        ("GB/s", 1e-9)
    } else if max_bps >= 1e6 {
        ("MB/s", 1e-6)
    } else if max_bps >= 1e3 {
        ("kB/s", 1e-3)
    } else {
        ("B/s", 1.0)
    }
}

fn duration_label(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 1.0 {
        format!("{} ms", (s * 1e3).round())
    } else if s < 60.0 {
        format!("{s} s")
    } else {
        format!("{} min", s / 60.0)
    }
}

fn bands(report: &Report) -> (Vec<Band>, u64, usize) {
    let tl = &report.timeline;
    let stored = tl.bytes.iter().map(|s| s.end()).max().unwrap_or(0).max(1);
    // Merge stored bins by 1, 2, 5, 10, 20, 50... so the drawn width stays a round number.
    let mut factor = 1usize;
    let steps = [2usize, 5, 10];
    let mut decade = 1usize;
    let mut i = 0;
    while stored.div_ceil(factor) > MAX_DRAWN_BINS {
        factor = steps[i % 3] * decade;
        i += 1;
        if i % 3 == 0 {
            decade *= 10;
        }
    }
    let nbins = stored.div_ceil(factor);
    let merge = |s: &super::aggregate::Series| -> Vec<u64> {
        let mut out = vec![0u64; nbins];
        for (j, b) in s.bins.iter().enumerate() {
            if let Some(o) = out.get_mut((s.start + j) / factor) {
                *o += b;
            }
        }
        out
    };
    let mut out = Vec::new();
    let mut other = vec![0u64; nbins];
    let mut color_i = 0;
    for (rank, app) in report.applications.iter().enumerate() {
        let Some(v) = tl.bytes.get(app.line as usize) else {
            continue;
        };
        let bins = merge(v);
        if rank < MAX_BANDS {
            let color = if app.attributed {
                let c = PALETTE[color_i % PALETTE.len()];
                color_i += 1;
                c
            } else {
                GREY
            };
            let label = if app.attributed {
                app.name.clone()
            } else {
                format!("unattributed: {}", app.reason.as_deref().unwrap_or(""))
            };
            out.push(Band {
                label: format!("{label} ({})", human_bytes(app.bytes)),
                color,
                bins,
            });
        } else {
            for (o, b) in other.iter_mut().zip(bins) {
                *o += b;
            }
        }
    }
    if other.iter().any(|&b| b > 0) {
        let total: u64 = other.iter().sum();
        out.push(Band {
            label: format!("other applications ({})", human_bytes(total)),
            color: RGBColor(90, 90, 90),
            bins: other,
        });
    }
    (out, tl.bin_ns * factor as u64, nbins)
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn render<DB: DrawingBackend>(report: &Report, root: &DrawingArea<DB, Shift>) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(560);
    volume_panel(report, &top)?;
    conversation_panel(report, &bottom)?;
    Ok(())
}

fn volume_panel<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (bands, bin_ns, nbins) = bands(report);
    let bin_s = bin_ns.max(1) as f64 / 1e9;
    let span_s = (nbins as f64 * bin_s).max(bin_s);
    let (tu, tscale) = time_unit(span_s);
    // Stack from the biggest band up; the top of the stack sets the y range.
    let mut cum = vec![vec![0f64; nbins]; bands.len() + 1];
    for (i, b) in bands.iter().enumerate() {
        let (below, above) = cum.split_at_mut(i + 1);
        for ((top, base), v) in above[0].iter_mut().zip(&below[i]).zip(&b.bins) {
            *top = base + *v as f64 / bin_s;
        }
    }
    let max_bps = cum
        .last()
        .map(|v| v.iter().copied().fold(0.0, f64::max))
        .unwrap_or(0.0)
        .max(1.0);
    let (ru, rscale) = rate_unit(max_bps);
    let title = format!(
        "Traffic volume per application — {} ({} packets, {})",
        Path::new(&report.file)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        report.totals.packets,
        human_bytes(report.totals.bytes)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..span_s * tscale, 0f64..max_bps * rscale * 1.08)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "time since {} ({tu}); bins of {}",
            crate::units::utc_time(report.timeline.origin_ns),
            duration_label(bin_ns)
        ))
        .y_desc(format!("throughput ({ru}, stacked)"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(2)
        .draw()?;
    for (i, band) in bands.iter().enumerate().rev() {
        // A step outline: each bin is flat over its width, like the counts it stands for.
        let mut upper = Vec::with_capacity(nbins * 2);
        let mut lower = Vec::with_capacity(nbins * 2);
        for (j, (hi, lo)) in cum[i + 1].iter().zip(&cum[i]).enumerate() {
            let (x0, x1) = (j as f64 * bin_s * tscale, (j + 1) as f64 * bin_s * tscale);
            upper.push((x0, hi * rscale));
            upper.push((x1, hi * rscale));
            lower.push((x0, lo * rscale));
            lower.push((x1, lo * rscale));
        }
        lower.reverse();
        upper.extend(lower);
        let color = band.color;
        chart
            .draw_series(std::iter::once(Polygon::new(
                upper,
                color.mix(0.85).filled(),
            )))?
            .label(band.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}

fn conversation_panel<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    // One row per (application, remote host), grouped by application, biggest first.
    let mut rows: Vec<(String, String, u64, RGBColor)> = Vec::new();
    let mut color_i = 0;
    for app in report.applications.iter().take(APPS_IN_CONVERSATIONS) {
        let color = if app.attributed {
            let c = PALETTE[color_i % PALETTE.len()];
            color_i += 1;
            c
        } else {
            GREY
        };
        let name = if app.attributed {
            app.name.clone()
        } else {
            "unattributed".into()
        };
        for r in app.remotes.iter().take(REMOTES_PER_APP) {
            let ports: Vec<String> = r.ports.iter().take(3).map(u16::to_string).collect();
            let remote = if ports.is_empty() {
                r.addr.to_string()
            } else {
                format!("{}:{}", r.addr, ports.join(","))
            };
            rows.push((name.clone(), remote, r.bytes, color));
        }
    }
    let max = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1) as f64;
    let (unit, scale) = if max >= 1e9 {
        ("GB", 1e-9)
    } else if max >= 1e6 {
        ("MB", 1e-6)
    } else if max >= 1e3 {
        ("kB", 1e-3)
    } else {
        ("bytes", 1.0)
    };
    let n = rows.len().max(1);
    let labels: Vec<String> = rows
        .iter()
        .map(|(app, remote, _, _)| {
            let mut l = format!("{app} → {remote}");
            if l.chars().count() > 48 {
                l = l.chars().take(47).collect::<String>() + "…";
            }
            l
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Conversations: bytes per remote host, per application",
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(360)
        // Rows top-down in the order of `rows`: row i sits in segment n-1-i.
        .build_cartesian_2d(0f64..max * scale * 1.1, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(n - 1 - *i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(format!("bytes in + out ({unit})"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(238, 238, 238))
        .max_light_lines(2)
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, _, bytes, color))| {
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(n - 1 - i)),
                (*bytes as f64 * scale, SegmentValue::Exact(n - i)),
            ],
            color.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, _, bytes, _))| {
        Text::new(
            format!(" {}", human_bytes(*bytes)),
            (*bytes as f64 * scale, SegmentValue::CenterOf(n - 1 - i)),
            (FONT, 13).into_font().color(&BLACK),
        )
    }))?;
    Ok(())
}
