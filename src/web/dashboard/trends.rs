//! The dashboard's 30-day trends: collected per day (one chart per currency, never a sum
//! across currencies) and the success rate per day, laid out from `store::dashboard`'s
//! daily rows. Pure: days without attempts are shown as empty columns, not skipped.

use super::charts::{column_chart, rate_row, ColumnChart, Row};
use crate::store::dashboard::TrendDay;
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

/// How many days the trends cover, ending on the dashboard's day.
pub const TREND_DAYS: u32 = 30;

/// The days of the trend, oldest first, ending on `end`.
fn trend_days(end: NaiveDate) -> Vec<NaiveDate> {
    (0..TREND_DAYS)
        .rev()
        .map(|back| end - Days::new(u64::from(back)))
        .collect()
}

/// One "collected per day" chart per currency, then the success rate per day.
pub fn trend_charts(rows: &[TrendDay], end: NaiveDate) -> Vec<ColumnChart> {
    let days = trend_days(end);
    let currencies: BTreeSet<&str> = rows.iter().map(|r| r.currency.as_str()).collect();
    let mut charts = Vec::new();
    for currency in currencies {
        let by_day: BTreeMap<NaiveDate, Decimal> = rows
            .iter()
            .filter(|r| r.currency == currency)
            .map(|r| (r.day, r.collected))
            .collect();
        let cols = days
            .iter()
            .map(|d| {
                let v = by_day.get(d).copied().unwrap_or_default();
                Row {
                    label: d.format("%m-%d").to_string(),
                    value: v,
                    text: format!("{d}: {currency} {v}"),
                    tone: "good",
                    href: None,
                }
            })
            .collect();
        charts.push(column_chart(
            &format!("Collected per day ({currency})"),
            cols,
            None,
        ));
    }
    let mut counts: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
    for r in rows {
        let e = counts.entry(r.day).or_default();
        e.0 += r.ok;
        e.1 += r.n;
    }
    let cols = days
        .iter()
        .map(|d| {
            let (ok, n) = counts.get(d).copied().unwrap_or_default();
            let mut row = rate_row(d.format("%m-%d").to_string(), ok, n);
            row.text = format!("{d}: {}", row.text);
            row
        })
        .collect();
    charts.push(column_chart(
        "Success rate per day",
        cols,
        Some(Decimal::ONE),
    ));
    charts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn day(d: &str, currency: &str, collected: Decimal, ok: i64, n: i64) -> TrendDay {
        TrendDay {
            day: NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap(),
            currency: currency.into(),
            collected,
            ok,
            n,
        }
    }

    #[test]
    fn thirty_days_per_currency_and_one_rate_chart() {
        let end = NaiveDate::from_ymd_opt(2027, 1, 30).unwrap();
        let rows = [
            day("2027-01-30", "CNY", dec!(500.00), 1, 2),
            day("2027-01-30", "GBP", dec!(20.00), 1, 1),
            day("2027-01-01", "CNY", dec!(100.00), 1, 1),
            // Older than the window: not shown.
            day("2026-12-31", "CNY", dec!(9999.00), 1, 1),
        ];
        let charts = trend_charts(&rows, end);
        let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Collected per day (CNY)",
                "Collected per day (GBP)",
                "Success rate per day"
            ]
        );
        for c in &charts {
            assert_eq!(c.columns.len(), TREND_DAYS as usize, "{}", c.title);
        }
        let cny = &charts[0];
        assert_eq!(cny.columns[29].text, "2027-01-30: CNY 500.00");
        assert_eq!(cny.columns[0].text, "2027-01-01: CNY 100.00");
        assert_eq!(
            cny.peak, "2027-01-30: CNY 500.00",
            "no CNY + GBP sum anywhere"
        );
        let rate = &charts[2];
        assert!(
            rate.columns[29].text.contains("66.7% (2/3)"),
            "{}",
            rate.columns[29].text
        );
        assert!(
            rate.columns[15].text.contains("(0/0)"),
            "an empty day is shown empty"
        );
    }
}
