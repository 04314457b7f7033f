//! The figures of one simulated policy, computed from the rows its run left in the database.
//! Pure, so every figure is tested on hand-made rows; every money figure is per currency.

use crate::domain::localtime::{in_quiet, QuietWindow};
use crate::domain::money::round_money;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// An installment at the end of the run (amounts in units, not minor units).
#[derive(Debug, Clone)]
pub struct InstallmentRow {
    pub loan_id: String,
    pub currency: String,
    pub due_date: NaiveDate,
    /// Principal, interest and fee: what fell due, without penalty.
    pub scheduled: Decimal,
    pub penalty: Decimal,
    /// What is still owed.
    pub owed: Decimal,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub id: i64,
    pub loan_id: String,
    pub seq: i64,
    pub currency: String,
    pub mandate_id: i64,
    pub kind: String,
    pub ladder_step: i64,
    pub amount: Decimal,
    pub succeeded: bool,
    pub hard: bool,
    pub local_date: NaiveDate,
}

/// A message sent to a borrower.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub borrower_id: String,
    pub currency: String,
    pub channel: String,
    pub sent_at: DateTime<Utc>,
    pub tz: Tz,
}

/// What the run was checked against.
#[derive(Debug, Clone)]
pub struct Frame {
    pub policy: String,
    pub start: NaiveDate,
    pub days: u32,
    pub quiet: Vec<QuietWindow>,
    pub daily_cap: u32,
    pub costs: crate::domain::simulation::model::Costs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    pub day: u32,
    pub date: NaiveDate,
    pub currency: String,
    pub recovered: Decimal,
    pub fell_due: Decimal,
    /// recovered / fell_due, 4 decimals (0 while nothing fell due).
    pub share: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateRow {
    pub key: String,
    pub attempts: u64,
    pub succeeded: u64,
    pub share: Decimal,
}

/// Money of one currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CurrencyMoney {
    pub currency: String,
    pub fell_due: Decimal,
    pub recovered: Decimal,
    pub recovered_share: Decimal,
    pub penalty_charged: Decimal,
    pub overdue_at_end: Decimal,
    pub attempts: u64,
    pub attempt_fees: Decimal,
    pub success_fees: Decimal,
    pub sms_sent: u64,
    pub sms_cost: Decimal,
    pub emails_sent: u64,
    pub email_cost: Decimal,
    pub total_cost: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketRow {
    pub bucket: String,
    pub currency: String,
    pub loans: u64,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Protection {
    /// Messages sent inside the policy's quiet hours, in the loan's zone. Must be 0.
    pub contacts_in_quiet_hours: u64,
    /// Borrowers who got more than the policy's daily cap on some local day.
    pub borrowers_over_daily_cap: u64,
    /// Attempts on a mandate after an earlier attempt on it failed hard.
    pub attempts_after_hard_failure: u64,
    pub contacts_per_borrower_max: u64,
    pub contacts_per_borrower_p95: u64,
}

/// Every figure of one policy's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub policy: String,
    pub loans: u64,
    pub days: u32,
    pub recovery: Vec<CurvePoint>,
    pub first_attempt: RateRow,
    pub by_kind: Vec<RateRow>,
    pub by_step: Vec<RateRow>,
    pub money: Vec<CurrencyMoney>,
    /// Money still overdue at the end, by days-past-due bucket.
    pub overdue: Vec<BucketRow>,
    /// Loans by days past due at the end (every loan, "current" included).
    pub dpd: Vec<(String, u64)>,
    pub handed_to_collections: u64,
    pub protection: Protection,
}

/// The fixed days-past-due buckets every policy is compared on.
pub const DPD_BUCKETS: [&str; 5] = ["current", "1-30", "31-60", "61-90", "90+"];

pub fn dpd_bucket(dpd: i64) -> &'static str {
    match dpd {
        i64::MIN..=0 => DPD_BUCKETS[0],
        1..=30 => DPD_BUCKETS[1],
        31..=60 => DPD_BUCKETS[2],
        61..=90 => DPD_BUCKETS[3],
        _ => DPD_BUCKETS[4],
    }
}

fn share(part: Decimal, whole: Decimal) -> Decimal {
    if whole.is_zero() {
        Decimal::ZERO
    } else {
        (part / whole).round_dp(4)
    }
}

fn rate_row(key: String, attempts: u64, succeeded: u64) -> RateRow {
    RateRow {
        key,
        attempts,
        succeeded,
        share: share(Decimal::from(succeeded), Decimal::from(attempts)),
    }
}

/// Compute every figure.
pub fn compute(
    f: &Frame,
    loans: u64,
    collections: u64,
    insts: &[InstallmentRow],
    attempts: &[AttemptRow],
    notices: &[NoticeRow],
) -> Figures {
    let (overdue, dpd) = overdue_at_end(f, insts);
    Figures {
        policy: f.policy.clone(),
        loans,
        days: f.days,
        recovery: recovery_curve(f, insts, attempts),
        first_attempt: first_attempt(attempts),
        by_kind: rates_by(attempts, |a| a.kind.clone()),
        by_step: rates_by(attempts, |a| format!("step {}", a.ladder_step)),
        money: money(f, insts, attempts, notices, &overdue),
        overdue,
        dpd,
        handed_to_collections: collections,
        protection: protection(f, attempts, notices),
    }
}

/// Cumulative recovered and fallen-due amounts per currency, one point per day.
pub fn recovery_curve(
    f: &Frame,
    insts: &[InstallmentRow],
    attempts: &[AttemptRow],
) -> Vec<CurvePoint> {
    let day_of = |d: NaiveDate| (d - f.start).num_days().clamp(0, i64::from(f.days)) as usize;
    let mut per: BTreeMap<&str, (Vec<Decimal>, Vec<Decimal>)> = BTreeMap::new();
    let slots = f.days as usize + 1;
    let blank = || (vec![Decimal::ZERO; slots], vec![Decimal::ZERO; slots]);
    for a in attempts.iter().filter(|a| a.succeeded) {
        per.entry(&a.currency).or_insert_with(blank).0[day_of(a.local_date)] += a.amount;
    }
    for i in insts
        .iter()
        .filter(|i| i.due_date <= f.start + chrono::Days::new(f.days.into()))
    {
        per.entry(&i.currency).or_insert_with(blank).1[day_of(i.due_date)] += i.scheduled;
    }
    let mut out = Vec::new();
    for (currency, (rec, due)) in per {
        let (mut r, mut d) = (Decimal::ZERO, Decimal::ZERO);
        for day in 0..slots {
            r += rec[day];
            d += due[day];
            out.push(CurvePoint {
                day: day as u32,
                date: f.start + chrono::Days::new(day as u64),
                currency: currency.to_string(),
                recovered: r,
                fell_due: d,
                share: share(r, d),
            });
        }
    }
    out
}

/// Of the installments attempted, the share whose first attempt succeeded.
fn first_attempt(attempts: &[AttemptRow]) -> RateRow {
    let mut first: HashMap<(&str, i64), &AttemptRow> = HashMap::new();
    for a in attempts {
        let e = first.entry((&a.loan_id, a.seq)).or_insert(a);
        if a.id < e.id {
            *e = a;
        }
    }
    let ok = first.values().filter(|a| a.succeeded).count() as u64;
    rate_row("first attempt".into(), first.len() as u64, ok)
}

fn rates_by(attempts: &[AttemptRow], key: impl Fn(&AttemptRow) -> String) -> Vec<RateRow> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for a in attempts {
        let c = counts.entry(key(a)).or_default();
        c.0 += 1;
        c.1 += u64::from(a.succeeded);
    }
    counts
        .into_iter()
        .map(|(k, (n, ok))| rate_row(k, n, ok))
        .collect()
}

/// Overdue money by bucket and currency, and every loan's bucket, at the window's end.
fn overdue_at_end(f: &Frame, insts: &[InstallmentRow]) -> (Vec<BucketRow>, Vec<(String, u64)>) {
    let end = f.start + chrono::Days::new(f.days.into());
    let mut loans: BTreeMap<&str, (&str, Option<NaiveDate>, Decimal)> = BTreeMap::new();
    for i in insts {
        let e = loans
            .entry(&i.loan_id)
            .or_insert((&i.currency, None, Decimal::ZERO));
        if i.owed > Decimal::ZERO && i.due_date < end {
            e.1 = Some(e.1.map_or(i.due_date, |d: NaiveDate| d.min(i.due_date)));
            e.2 += i.owed;
        }
    }
    let mut buckets: BTreeMap<(usize, &str), (u64, Decimal)> = BTreeMap::new();
    let mut dpd = vec![0u64; DPD_BUCKETS.len()];
    for (currency, oldest, owed) in loans.values() {
        let days = oldest.map_or(0, |d| (end - d).num_days());
        let b = DPD_BUCKETS
            .iter()
            .position(|n| *n == dpd_bucket(days))
            .expect("listed");
        dpd[b] += 1;
        if b > 0 {
            let e = buckets.entry((b, currency)).or_default();
            e.0 += 1;
            e.1 += *owed;
        }
    }
    let rows = buckets
        .into_iter()
        .map(|((b, c), (n, amount))| BucketRow {
            bucket: DPD_BUCKETS[b].into(),
            currency: c.into(),
            loans: n,
            amount,
        })
        .collect();
    let dpd = DPD_BUCKETS
        .iter()
        .zip(dpd)
        .map(|(b, n)| (b.to_string(), n))
        .collect();
    (rows, dpd)
}

fn money(
    f: &Frame,
    insts: &[InstallmentRow],
    attempts: &[AttemptRow],
    notices: &[NoticeRow],
    overdue: &[BucketRow],
) -> Vec<CurrencyMoney> {
    let end = f.start + chrono::Days::new(f.days.into());
    let mut m: BTreeMap<String, CurrencyMoney> = BTreeMap::new();
    fn entry<'m>(m: &'m mut BTreeMap<String, CurrencyMoney>, c: &str) -> &'m mut CurrencyMoney {
        m.entry(c.to_string()).or_insert_with(|| CurrencyMoney {
            currency: c.into(),
            ..Default::default()
        })
    }
    for i in insts {
        let e = entry(&mut m, &i.currency);
        e.penalty_charged += i.penalty;
        if i.due_date <= end {
            e.fell_due += i.scheduled;
        }
    }
    for a in attempts {
        let e = entry(&mut m, &a.currency);
        e.attempts += 1;
        if a.succeeded {
            e.recovered += a.amount;
            e.success_fees += a.amount * f.costs.success_fee_rate;
        }
    }
    for n in notices {
        let e = entry(&mut m, &n.currency);
        match n.channel.as_str() {
            "sms" => e.sms_sent += 1,
            _ => e.emails_sent += 1,
        }
    }
    for b in overdue {
        entry(&mut m, &b.currency).overdue_at_end += b.amount;
    }
    m.into_values().map(|e| priced(e, &f.costs)).collect()
}

/// Prices counted actions; rounding happens once per total.
fn priced(mut e: CurrencyMoney, c: &crate::domain::simulation::model::Costs) -> CurrencyMoney {
    e.recovered_share = share(e.recovered, e.fell_due);
    e.attempt_fees = round_money(c.attempt_fee * Decimal::from(e.attempts));
    e.success_fees = round_money(e.success_fees);
    e.sms_cost = round_money(c.sms * Decimal::from(e.sms_sent));
    e.email_cost = round_money(c.email * Decimal::from(e.emails_sent));
    e.total_cost = e.attempt_fees + e.success_fees + e.sms_cost + e.email_cost;
    e
}

fn protection(f: &Frame, attempts: &[AttemptRow], notices: &[NoticeRow]) -> Protection {
    let quiet = notices
        .iter()
        .filter(|n| f.quiet.iter().any(|w| in_quiet(n.sent_at, n.tz, w)))
        .count() as u64;
    let mut per_day: HashMap<(&str, NaiveDate), u32> = HashMap::new();
    let mut per_borrower: HashMap<&str, u64> = HashMap::new();
    for n in notices {
        *per_day
            .entry((&n.borrower_id, n.sent_at.with_timezone(&n.tz).date_naive()))
            .or_default() += 1;
        *per_borrower.entry(&n.borrower_id).or_default() += 1;
    }
    let over: HashSet<&str> = per_day
        .iter()
        .filter(|(_, n)| **n > f.daily_cap)
        .map(|((b, _), _)| *b)
        .collect();
    let mut counts: Vec<u64> = per_borrower.into_values().collect();
    counts.sort_unstable();
    Protection {
        contacts_in_quiet_hours: quiet,
        borrowers_over_daily_cap: over.len() as u64,
        attempts_after_hard_failure: after_hard_failure(attempts),
        contacts_per_borrower_max: counts.last().copied().unwrap_or(0),
        contacts_per_borrower_p95: percentile(&counts, 95),
    }
}

/// Nearest-rank percentile of sorted counts (0 when empty).
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn after_hard_failure(attempts: &[AttemptRow]) -> u64 {
    let mut by_id: Vec<&AttemptRow> = attempts.iter().collect();
    by_id.sort_by_key(|a| a.id);
    let mut broken: HashSet<i64> = HashSet::new();
    let mut after = 0;
    for a in by_id {
        if broken.contains(&a.mandate_id) {
            after += 1;
        }
        if a.hard {
            broken.insert(a.mandate_id);
        }
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::simulation::model::Model;
    use chrono::{NaiveTime, TimeZone};
    use rust_decimal_macros::dec;

    fn frame() -> Frame {
        Frame {
            policy: "p".into(),
            start: NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(),
            days: 10,
            quiet: vec![QuietWindow {
                start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            }],
            daily_cap: 1,
            costs: Model::default_model().costs,
        }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2027, 1, d).unwrap()
    }

    fn inst(
        loan: &str,
        currency: &str,
        due: u32,
        scheduled: Decimal,
        owed: Decimal,
    ) -> InstallmentRow {
        InstallmentRow {
            loan_id: loan.into(),
            currency: currency.into(),
            due_date: day(due),
            scheduled,
            penalty: dec!(1.00),
            owed,
        }
    }

    fn attempt(id: i64, loan: &str, currency: &str, ok: bool, hard: bool, d: u32) -> AttemptRow {
        AttemptRow {
            id,
            loan_id: loan.into(),
            seq: 1,
            currency: currency.into(),
            mandate_id: 1,
            kind: "due".into(),
            ladder_step: 0,
            amount: dec!(50.00),
            succeeded: ok,
            hard,
            local_date: day(d),
        }
    }

    #[test]
    fn money_is_per_currency_and_the_curve_is_cumulative() {
        let insts = [
            inst("A", "CNY", 3, dec!(100), dec!(50)),
            inst("B", "USD", 5, dec!(80), dec!(0)),
        ];
        let atts = [
            attempt(1, "A", "CNY", false, false, 3),
            attempt(2, "A", "CNY", true, false, 4),
            attempt(3, "B", "USD", true, false, 5),
        ];
        let f = compute(&frame(), 2, 0, &insts, &atts, &[]);
        let cny = &f.money[0];
        assert_eq!(
            (cny.currency.as_str(), cny.fell_due, cny.recovered),
            ("CNY", dec!(100), dec!(50.00))
        );
        assert_eq!(cny.recovered_share, dec!(0.5));
        assert_eq!(cny.attempt_fees, dec!(0.20));
        assert_eq!(cny.success_fees, dec!(0.30));
        assert_eq!(f.money[1].currency, "USD");
        let cny_day4 = f
            .recovery
            .iter()
            .find(|p| p.currency == "CNY" && p.day == 3)
            .unwrap();
        assert_eq!(
            (cny_day4.recovered, cny_day4.fell_due),
            (dec!(50.00), dec!(100))
        );
        let last = f.recovery.iter().rfind(|p| p.currency == "CNY").unwrap();
        assert_eq!(last.day, 10);
        assert_eq!(f.first_attempt.share, dec!(0.5));
        assert_eq!(f.overdue[0].bucket, "1-30");
        assert_eq!(f.dpd[0], ("current".to_string(), 1));
    }

    #[test]
    fn protection_counts_quiet_hours_caps_and_attempts_after_a_hard_failure() {
        let at = |h| {
            chrono_tz::Asia::Shanghai
                .with_ymd_and_hms(2027, 1, 2, h, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        let n = |h| NoticeRow {
            borrower_id: "B".into(),
            currency: "CNY".into(),
            channel: "sms".into(),
            sent_at: at(h),
            tz: chrono_tz::Asia::Shanghai,
        };
        let atts = [
            attempt(2, "A", "CNY", false, false, 3),
            attempt(1, "A", "CNY", false, true, 2),
        ];
        let p = protection(&frame(), &atts, &[n(8), n(23), n(10)]);
        assert_eq!(p.contacts_in_quiet_hours, 1);
        assert_eq!(p.borrowers_over_daily_cap, 1);
        assert_eq!(p.attempts_after_hard_failure, 1);
        assert_eq!(
            (p.contacts_per_borrower_max, p.contacts_per_borrower_p95),
            (3, 3)
        );
        assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
        assert_eq!(percentile(&[], 95), 0);
    }
}
