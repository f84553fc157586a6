//! Charts as inline SVG, drawn on the server: nothing to load, and nothing lost without
//! JavaScript. Each is an image with a title and a description for assistive technology, and
//! every page shows the same figures in a table beside it.

use maud::{Markup, html};

const WIDTH: i64 = 640;
const LABEL_WIDTH: i64 = 170;
const ROW_HEIGHT: i64 = 26;
/// Bar fill: 6.9:1 against the white background (WCAG non-text contrast needs 3:1).
const BAR: &str = "#1f5fa8";
const TEXT: &str = "#1b1b1b";

/// `value / max` of `length`, rounded down; 0 when `max` is 0.
fn scale(value: i64, max: i64, length: i64) -> i64 {
    if max <= 0 {
        0
    } else {
        value.clamp(0, max) * length / max
    }
}

fn summary(items: &[(String, i64)]) -> String {
    items
        .iter()
        .map(|(label, value)| format!("{label}: {value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Horizontal bars, one per item, labelled, with the value after each bar.
pub(super) fn bar_chart(id: &str, title: &str, items: &[(String, i64)]) -> Markup {
    let max = items.iter().map(|(_, value)| *value).max().unwrap_or(0);
    let length = WIDTH - LABEL_WIDTH - 60;
    let height = ROW_HEIGHT * i64::try_from(items.len()).unwrap_or(0) + 8;
    html! {
        figure.chart {
            svg #(id) role="img" aria-labelledby={ (id) "-title " (id) "-desc" }
                viewBox={ "0 0 " (WIDTH) " " (height) } width="100%" {
                title #{ (id) "-title" } { (title) }
                desc #{ (id) "-desc" } { (summary(items)) }
                @for (row, (label, value)) in items.iter().enumerate() {
                    @let y = i64::try_from(row).unwrap_or(0) * ROW_HEIGHT + 4;
                    @let bar = scale(*value, max, length);
                    text x=(LABEL_WIDTH - 8) y=(y + 17) text-anchor="end" font-size="14" fill=(TEXT) { (label) }
                    rect x=(LABEL_WIDTH) y=(y + 3) width=(bar.max(1)) height=(ROW_HEIGHT - 8) fill=(BAR) {}
                    text x=(LABEL_WIDTH + bar + 6) y=(y + 17) font-size="14" fill=(TEXT) { (value) }
                }
            }
        }
    }
}

/// Vertical columns, one per item (months), labelled underneath, with the value on top.
pub(super) fn column_chart(id: &str, title: &str, items: &[(String, i64)]) -> Markup {
    let max = items.iter().map(|(_, value)| *value).max().unwrap_or(0);
    let count = i64::try_from(items.len()).unwrap_or(1).max(1);
    let slot = (WIDTH / count).clamp(24, 90);
    let width = slot * count;
    let plot = 160;
    html! {
        figure.chart {
            svg #(id) role="img" aria-labelledby={ (id) "-title " (id) "-desc" }
                viewBox={ "0 0 " (width) " " (plot + 48) } width="100%" {
                title #{ (id) "-title" } { (title) }
                desc #{ (id) "-desc" } { (summary(items)) }
                @for (index, (label, value)) in items.iter().enumerate() {
                    @let x = i64::try_from(index).unwrap_or(0) * slot;
                    @let bar = scale(*value, max, plot - 20);
                    rect x=(x + slot / 6) y=(plot - bar) width=(slot * 2 / 3) height=(bar.max(1)) fill=(BAR) {}
                    text x=(x + slot / 2) y=(plot - bar - 4) text-anchor="middle" font-size="13" fill=(TEXT) { (value) }
                    text x=(x + slot / 2) y=(plot + 18) text-anchor="middle" font-size="12" fill=(TEXT) { (label) }
                }
            }
        }
    }
}

/// One bar of `value` out of `target`.
pub(super) fn progress(id: &str, title: &str, value: i64, target: i64) -> Markup {
    let length = WIDTH - 20;
    let bar = scale(value, target, length);
    html! {
        figure.chart {
            svg #(id) role="img" aria-labelledby={ (id) "-title " (id) "-desc" }
                viewBox={ "0 0 " (WIDTH) " 56" } width="100%" {
                title #{ (id) "-title" } { (title) }
                desc #{ (id) "-desc" } { (value) " of " (target) }
                rect x="10" y="8" width=(length) height="22" fill="#ffffff" stroke="#595959" {}
                rect x="10" y="8" width=(bar) height="22" fill=(BAR) {}
                text x="10" y="50" font-size="14" fill=(TEXT) { (value) " of " (target) " randomized" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_never_divide_by_zero() {
        assert_eq!(scale(5, 10, 100), 50);
        assert_eq!(scale(12, 10, 100), 100);
        assert_eq!(scale(3, 0, 100), 0);
        assert_eq!(scale(-1, 10, 100), 0);
    }

    #[test]
    fn labels_are_escaped() {
        let chart = bar_chart("c", "<t>", &[("<script>".to_owned(), 1)]).into_string();
        assert!(!chart.contains("<script>"), "{chart}");
        assert!(chart.contains("&lt;script&gt;"), "{chart}");
        assert!(chart.contains("role=\"img\""));
    }
}
