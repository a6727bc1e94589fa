//! Where the bytes went, as an inline SVG bar chart: one group per image (or container, pack,
//! workload), a bar for the source and one for what is left. Drawn on the server: the page
//! needs no script.

use std::fmt::Write;

use super::html::{esc, mb};

/// The source's bars (and legend swatch). Used nowhere else on a page: the browser test finds
/// the chart by these pixels.
pub const SOURCE_COLOUR: &str = "#e4572e";
/// What is left: the hardened image, or the minimum a prediction keeps.
pub const HARDENED_COLOUR: &str = "#17a398";

/// One group of bars.
pub struct Bar {
    pub label: String,
    pub source: Option<u64>,
    pub hardened: Option<u64>,
}

/// What each include pack kept (its name and uncompressed bytes), under its own heading; empty
/// when no pack was asked for.
pub fn packs<'a>(packs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let groups: Vec<Bar> = packs
        .into_iter()
        .map(|(name, bytes)| Bar {
            label: format!("pack {name}"),
            source: None,
            hardened: Some(bytes),
        })
        .collect();
    let chart = bars(&groups, ("", "kept by the pack (uncompressed)"));
    if chart.is_empty() {
        return chart;
    }
    format!("<h3>What each pack kept</h3>{chart}")
}

const WIDTH: u32 = 1000;
const LABEL_W: u32 = 260;
const VALUE_W: u32 = 110;
const BAR_H: u32 = 16;
const GAP: u32 = 12;
const TOP: u32 = 30;

/// The chart, or an empty string when no group has a number. `legend` names the two series,
/// e.g. `("source", "hardened")`.
pub fn bars(bars: &[Bar], legend: (&str, &str)) -> String {
    let values = |b: &Bar| [b.source, b.hardened];
    let max = bars
        .iter()
        .flat_map(values)
        .flatten()
        .max()
        .unwrap_or_default();
    if bars.iter().all(|b| values(b).iter().all(Option::is_none)) {
        return String::new();
    }
    let span = WIDTH - LABEL_W - VALUE_W;
    let group_h = 2 * BAR_H + 4 + GAP;
    let height = TOP + group_h * bars.len() as u32 + 4;
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="system-ui,sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect class="swatch" x="{LABEL_W}" y="6" width="14" height="14" fill="{SOURCE_COLOUR}"/><text x="{}" y="18">{}</text><rect class="swatch" x="{}" y="6" width="14" height="14" fill="{HARDENED_COLOUR}"/><text x="{}" y="18">{}</text>"#,
        LABEL_W + 20,
        esc(legend.0),
        LABEL_W + 180,
        LABEL_W + 200,
        esc(legend.1),
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + group_h * i as u32;
        let label: String = if bar.label.chars().count() > 40 {
            bar.label.chars().take(39).collect::<String>() + "…"
        } else {
            bar.label.clone()
        };
        let _ = write!(
            svg,
            r#"<text class="label" x="{}" y="{}" text-anchor="end"><title>{}</title>{}</text>"#,
            LABEL_W - 8,
            y + BAR_H + 4,
            esc(&bar.label),
            esc(&label)
        );
        for (row, (value, colour, series)) in [
            (bar.source, SOURCE_COLOUR, "source"),
            (bar.hardened, HARDENED_COLOUR, "hardened"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(value) = value else { continue };
            let by = y + row as u32 * (BAR_H + 4);
            // A non-zero value gets at least a pixel: a tiny image must still show.
            let w = if max == 0 || value == 0 {
                0
            } else {
                ((value as f64 / max as f64) * span as f64).round().max(1.0) as u32
            };
            let _ = write!(
                svg,
                r#"<rect class="bar {series}" data-bytes="{value}" x="{LABEL_W}" y="{by}" width="{w}" height="{BAR_H}" fill="{colour}"><title>{} {series}: {value} bytes</title></rect><text class="value" x="{}" y="{}">{}</text>"#,
                esc(&bar.label),
                LABEL_W + w + 6,
                by + BAR_H - 3,
                mb(value),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_carry_exact_bytes() {
        let svg = bars(
            &[
                Bar {
                    label: "image".into(),
                    source: Some(1000),
                    hardened: Some(250),
                },
                Bar {
                    label: "<pack>".into(),
                    source: None,
                    hardened: Some(1),
                },
            ],
            ("source", "hardened"),
        );
        let span = WIDTH - LABEL_W - VALUE_W;
        assert!(svg.contains(&format!(
            r#"data-bytes="1000" x="{LABEL_W}" y="30" width="{span}""#
        )));
        assert!(svg.contains(&format!(r#"width="{}""#, (span as f64 / 4.0).round())));
        assert!(svg.contains(r#"data-bytes="1" "#) && svg.contains(r#"width="1" "#));
        assert!(svg.contains("&lt;pack&gt;") && !svg.contains("<pack>"));
        assert_eq!(bars(&[], ("a", "b")), "");
    }
}
