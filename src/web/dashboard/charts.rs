//! Horizontal bar charts laid out server-side; `macros.html` draws them as inline SVG.
//! Values are only scaled to pixels here: amounts stay `Decimal` and are shown as text.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;

const LABEL_W: u32 = 100;
const BAR_MAX_W: u32 = 230;
const VALUE_W: u32 = 160;
const ROW_H: u32 = 28;
const BAR_H: u32 = 20;

#[derive(Debug, Clone, Serialize)]
pub struct BarChart {
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub label_w: u32,
    pub bar_max_w: u32,
    pub bar_h: u32,
    /// Draw a full-width track behind each bar (for rates out of 100%).
    pub track: bool,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub label: String,
    pub text: String,
    /// Where clicking the bar goes (the worklist, filtered), if anywhere.
    pub href: Option<String>,
    pub y: u32,
    pub w: u32,
    /// CSS class: `good`, `warn`, `bad` or `plain`.
    pub tone: &'static str,
}

/// One input row: label, the value to scale, the text shown, the tone.
pub struct Row {
    pub label: String,
    pub value: Decimal,
    pub text: String,
    pub tone: &'static str,
    pub href: Option<String>,
}

/// Bars scaled to the largest value (or to `full` when given, e.g. 1 for rates).
pub fn bar_chart(title: &str, rows: Vec<Row>, full: Option<Decimal>) -> BarChart {
    let max = full.unwrap_or_else(|| rows.iter().map(|r| r.value).max().unwrap_or_default());
    let bars = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| Bar {
            w: scale(r.value, max),
            y: i as u32 * ROW_H + 4,
            label: r.label,
            text: r.text,
            tone: r.tone,
            href: r.href,
        })
        .collect::<Vec<_>>();
    BarChart {
        title: title.into(),
        width: LABEL_W + BAR_MAX_W + VALUE_W,
        height: bars.len() as u32 * ROW_H + 8,
        label_w: LABEL_W,
        bar_max_w: BAR_MAX_W,
        bar_h: BAR_H,
        track: full.is_some(),
        bars,
    }
}

/// Pixel width of `v` out of `max`; a non-zero value is at least 2 px wide.
fn scale(v: Decimal, max: Decimal) -> u32 {
    scale_to(v, max, BAR_MAX_W)
}

/// Pixels of `v` out of `max` on a scale of `full_px`; a non-zero value shows (2 px).
fn scale_to(v: Decimal, max: Decimal, full_px: u32) -> u32 {
    if max <= Decimal::ZERO || v <= Decimal::ZERO {
        return 0;
    }
    let px = (v / max * Decimal::from(full_px))
        .round()
        .to_u32()
        .unwrap_or(0);
    px.clamp(2, full_px)
}
const COL_W: u32 = 14;
const COL_GAP: u32 = 4;
const PLOT_H: u32 = 110;
/// Every how many columns a day's label is written (and always the last).
const LABEL_EVERY: usize = 7;

/// Vertical columns in time order (one per day), laid out for `macros.html`.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnChart {
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub plot_h: u32,
    pub col_w: u32,
    pub columns: Vec<Column>,
    /// The largest column's text (what the full height means).
    pub peak: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub x: u32,
    pub y: u32,
    pub h: u32,
    pub label: Option<String>,
    pub text: String,
    pub tone: &'static str,
}

/// Columns scaled to the largest value (or to `full`, e.g. 1 for rates); a row's `label`
/// is written under every seventh column (but not just before the last) and the last.
pub fn column_chart(title: &str, rows: Vec<Row>, full: Option<Decimal>) -> ColumnChart {
    let peak_row = rows.iter().max_by_key(|r| r.value).map(|r| r.text.clone());
    let max = full.unwrap_or_else(|| rows.iter().map(|r| r.value).max().unwrap_or_default());
    let n = rows.len();
    let columns = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let h = scale_to(r.value, max, PLOT_H);
            Column {
                x: i as u32 * (COL_W + COL_GAP) + 2,
                y: PLOT_H - h,
                h,
                // Never so close to the last label that the two overlap.
                label: ((i % LABEL_EVERY == 0 && i + 3 < n) || i + 1 == n).then_some(r.label),
                text: r.text,
                tone: r.tone,
            }
        })
        .collect();
    ColumnChart {
        title: title.into(),
        width: n as u32 * (COL_W + COL_GAP) + 40,
        height: PLOT_H + 20,
        plot_h: PLOT_H,
        col_w: COL_W,
        columns,
        peak: if full.is_some() {
            "100%".into()
        } else {
            peak_row.unwrap_or_default()
        },
    }
}

/// A success rate as a chart row: `ok` of `n` attempts.
pub fn rate_row(label: String, ok: i64, n: i64) -> Row {
    let rate = if n > 0 {
        Decimal::from(ok) / Decimal::from(n)
    } else {
        Decimal::ZERO
    };
    let pct = (rate * Decimal::ONE_HUNDRED).round_dp(1);
    let tone = if pct >= Decimal::from(80) {
        "good"
    } else if pct >= Decimal::from(50) {
        "warn"
    } else {
        "bad"
    };
    Row {
        label,
        value: rate,
        text: format!("{pct}% ({ok}/{n})"),
        tone,
        href: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn columns_stand_on_one_baseline_scaled_to_the_largest() {
        let row = |l: &str, v| Row {
            label: l.into(),
            value: v,
            text: format!("CNY {v}"),
            tone: "good",
            href: None,
        };
        let rows: Vec<Row> = (0..10)
            .map(|i| row(&format!("d{i}"), Decimal::from(i)))
            .collect();
        let c = column_chart("collected", rows, None);
        assert_eq!(c.columns.len(), 10);
        assert_eq!(
            (c.columns[9].h, c.columns[9].y),
            (PLOT_H, 0),
            "the largest is full"
        );
        assert_eq!(c.columns[0].h, 0, "zero is no column");
        for col in &c.columns {
            assert_eq!(col.y + col.h, PLOT_H, "every column stands on the baseline");
        }
        assert_eq!(c.peak, "CNY 9");
        let labelled: Vec<usize> = (0..10).filter(|i| c.columns[*i].label.is_some()).collect();
        assert_eq!(
            labelled,
            [0, 9],
            "every seventh day, not next to the last, and the last"
        );
        assert!(c.columns[1].x > c.columns[0].x);
    }

    #[test]
    fn bars_scale_to_the_largest_or_to_full() {
        let row = |l: &str, v| Row {
            label: l.into(),
            value: v,
            text: String::new(),
            tone: "plain",
            href: None,
        };
        let c = bar_chart(
            "t",
            vec![
                row("a", dec!(50)),
                row("b", dec!(100)),
                row("c", dec!(0.01)),
            ],
            None,
        );
        let w: Vec<u32> = c.bars.iter().map(|b| b.w).collect();
        assert_eq!(w, vec![BAR_MAX_W / 2, BAR_MAX_W, 2]);
        assert_eq!(c.bars[1].y, ROW_H + 4);
        let r = bar_chart("r", vec![rate_row("x".into(), 1, 4)], Some(Decimal::ONE));
        assert_eq!(
            r.bars[0].w,
            (BAR_MAX_W + 2) / 4,
            "rounded to the nearest pixel"
        );
        assert_eq!(r.bars[0].text, "25.0% (1/4)");
        assert_eq!(r.bars[0].tone, "bad");
        assert!(bar_chart("e", vec![], None).bars.is_empty());
    }
}
