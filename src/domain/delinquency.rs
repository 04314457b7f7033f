//! Delinquency: days past due, buckets (M1, M2, …) and daily penalty (罚息) accrual.
//! All dates are local dates in the loan's time zone (see `localtime`).

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::round_money;

/// Days since the oldest unpaid due date; 0 when nothing is unpaid or it is not yet past due.
pub fn days_past_due(oldest_unpaid_due: Option<NaiveDate>, today: NaiveDate) -> u32 {
    oldest_unpaid_due
        .map(|due| (today - due).num_days())
        .map_or(0, |d| u32::try_from(d.max(0)).unwrap_or(u32::MAX))
}

/// A named range of days past due, both ends inclusive; `to: None` is open-ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub from: u32,
    pub to: Option<u32>,
}

impl Bucket {
    pub fn contains(&self, dpd: u32) -> bool {
        dpd >= self.from && self.to.is_none_or(|to| dpd <= to)
    }
}

/// Name of the first bucket containing `dpd`, so overlapping configurations resolve by order.
pub fn bucket_for(dpd: u32, buckets: &[Bucket]) -> Option<&str> {
    buckets
        .iter()
        .find(|b| b.contains(dpd))
        .map(|b| b.name.as_str())
}

/// One day's penalty on `base`, rounded to cents. Rounding per day (not over the period)
/// makes every day's accrual a stored amount that later accruals simply add to.
pub fn daily_penalty(base: Decimal, daily_rate: Decimal) -> Decimal {
    round_money(base * daily_rate)
}

/// Penalty for each day in (from_exclusive, to_inclusive]; zero if that range is empty.
pub fn penalty_between(
    base: Decimal,
    daily_rate: Decimal,
    from_exclusive: NaiveDate,
    to_inclusive: NaiveDate,
) -> Decimal {
    let days = (to_inclusive - from_exclusive).num_days();
    if days <= 0 {
        return Decimal::ZERO;
    }
    daily_penalty(base, daily_rate) * Decimal::from(days)
}

/// An installment's penalty after adding `added`: never more than `cap` (its principal and
/// interest), so penalties can add at most the book again and every sum stays bounded (see
/// `domain::money`). A penalty already above the cap is left as it is, never reduced.
pub fn capped_penalty(current: Decimal, added: Decimal, cap: Decimal) -> Decimal {
    (current + added).min(cap.max(current))
}

/// The last penalty-free day: due date plus grace. Penalty accrues for each local day after
/// it, so this is the `from_exclusive` to pass to [`penalty_between`].
pub fn penalty_start(due: NaiveDate, grace_days: u32) -> NaiveDate {
    due.checked_add_days(Days::new(grace_days.into()))
        .unwrap_or(NaiveDate::MAX)
}

/// Penalty accrued on `base` up to and including `today` for an installment due on `due`.
pub fn penalty_accrued(
    base: Decimal,
    daily_rate: Decimal,
    due: NaiveDate,
    grace_days: u32,
    today: NaiveDate,
) -> Decimal {
    penalty_between(base, daily_rate, penalty_start(due, grace_days), today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn penalties_stop_at_their_base() {
        assert_eq!(capped_penalty(dec!(10), dec!(5), dec!(100)), dec!(15));
        assert_eq!(capped_penalty(dec!(90), dec!(50), dec!(100)), dec!(100));
        assert_eq!(capped_penalty(dec!(120), dec!(5), dec!(100)), dec!(120));
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn buckets() -> Vec<Bucket> {
        let b = |name: &str, from, to| Bucket {
            name: name.into(),
            from,
            to,
        };
        vec![
            b("M1", 1, Some(30)),
            b("M2", 31, Some(60)),
            b("M3+", 61, None),
        ]
    }

    #[test]
    fn dpd() {
        let due = date(2026, 1, 31);
        assert_eq!(days_past_due(None, due), 0);
        assert_eq!(days_past_due(Some(due), date(2026, 1, 30)), 0);
        assert_eq!(days_past_due(Some(due), due), 0);
        assert_eq!(days_past_due(Some(due), date(2026, 2, 1)), 1);
        assert_eq!(days_past_due(Some(due), date(2026, 3, 2)), 30);
    }

    #[test]
    fn buckets_by_range() {
        let b = buckets();
        assert_eq!(bucket_for(0, &b), None);
        assert_eq!(bucket_for(1, &b), Some("M1"));
        assert_eq!(bucket_for(30, &b), Some("M1"));
        assert_eq!(bucket_for(31, &b), Some("M2"));
        assert_eq!(bucket_for(60, &b), Some("M2"));
        assert_eq!(bucket_for(61, &b), Some("M3+"));
        assert_eq!(bucket_for(10_000, &b), Some("M3+"));
        assert_eq!(bucket_for(5, &[]), None);
    }

    #[test]
    fn penalties() {
        assert_eq!(daily_penalty(dec!(1000), dec!(0.0005)), dec!(0.50));
        assert_eq!(daily_penalty(dec!(333.33), dec!(0.0005)), dec!(0.17));
        let due = date(2026, 1, 31);
        assert_eq!(penalty_start(due, 3), date(2026, 2, 3));
        assert_eq!(
            penalty_between(dec!(1000), dec!(0.0005), due, date(2026, 2, 10)),
            dec!(5.00)
        );
        assert_eq!(
            penalty_between(dec!(1000), dec!(0.0005), due, due),
            Decimal::ZERO
        );
        assert_eq!(
            penalty_between(dec!(1000), dec!(0.0005), due, date(2026, 1, 1)),
            Decimal::ZERO
        );
        assert_eq!(
            penalty_accrued(dec!(1000), dec!(0.0005), due, 3, date(2026, 2, 3)),
            Decimal::ZERO
        );
        assert_eq!(
            penalty_accrued(dec!(1000), dec!(0.0005), due, 3, date(2026, 2, 4)),
            dec!(0.50)
        );
    }

    proptest! {
        #[test]
        fn penalty_is_additive_over_days(
            base_c in 0i64..100_000_000,
            rate in 0i64..100,
            a in 0u64..400, b in 0u64..400, c in 0u64..400,
        ) {
            let (base, rate) = (Decimal::new(base_c, 2), Decimal::new(rate, 4));
            let mut d = [a, b, c];
            d.sort();
            let start = date(2026, 1, 1);
            let [x, y, z] = d.map(|n| start + Days::new(n));
            let whole = penalty_between(base, rate, x, z);
            prop_assert_eq!(whole, penalty_between(base, rate, x, y) + penalty_between(base, rate, y, z));
            prop_assert_eq!(whole, daily_penalty(base, rate) * Decimal::from(c.max(a).max(b) - a.min(b).min(c)));
        }

        #[test]
        fn dpd_matches_bucket_ranges(days in 0u32..1000) {
            let due = date(2026, 1, 1);
            let dpd = days_past_due(Some(due), due + Days::new(days.into()));
            prop_assert_eq!(dpd, days);
            let b = buckets();
            prop_assert_eq!(bucket_for(dpd, &b).is_some(), dpd >= 1);
        }
    }
}
