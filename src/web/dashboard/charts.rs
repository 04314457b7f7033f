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
    if max <= Decimal::ZERO || v <= Decimal::ZERO {
        return 0;
    }
    let px = (v / max * Decimal::from(BAR_MAX_W))
        .round()
        .to_u32()
        .unwrap_or(0);
    px.clamp(2, BAR_MAX_W)
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
