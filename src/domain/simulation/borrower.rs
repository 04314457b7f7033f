//! What the model makes of one borrower: their accounts' opening balances, salaries, broke
//! stretch and hard failure, and whether a contact makes them pay on their own. Pure: the
//! same seed and names always give the same answer.

use super::draw;
use super::model::Model;
use crate::domain::money::{round_down, round_money};
use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::Decimal;

/// A borrower as the model needs them.
#[derive(Debug, Clone)]
pub struct BorrowerFacts<'a> {
    pub borrower: &'a str,
    /// From the portfolio; drawn from the model's paydays when absent.
    pub payday: Option<u32>,
    /// The loan's first installment (what salaries and balances are multiples of).
    pub installment: Decimal,
    /// The loan's mandates' agreements, first (salary) mandate first.
    pub agreements: Vec<&'a str>,
}

/// One channel-side account over the simulated window.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountPlan {
    pub agreement: String,
    pub opening: Decimal,
    /// Salary credits by local date.
    pub income: Vec<(NaiveDate, Decimal)>,
    /// From this local date on, every debit fails with this code.
    pub hard_failure: Option<(NaiveDate, String)>,
}

/// The simulated window: `days` local days from `start`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub seed: u64,
    pub start: NaiveDate,
    pub days: u32,
}

/// A share of `max - min` added to `min`, in steps of 1/10,000 (no float touches money).
fn between(min: Decimal, max: Decimal, u: f64) -> Decimal {
    let steps = (u * 10_000.0).floor() as i64;
    min + (max - min) * Decimal::new(steps, 4)
}

/// The accounts of one borrower's loan.
pub fn plan_accounts(model: &Model, w: Window, b: &BorrowerFacts) -> Vec<AccountPlan> {
    let salary = salary_dates(model, w, b).into_iter().map(|d| {
        let k = format!("salary:{}", b.borrower);
        let multiple = between(
            model.salary.min_multiple,
            model.salary.max_multiple,
            draw(w.seed, &k),
        );
        (d, round_money(b.installment * multiple))
    });
    let salary: Vec<_> = salary.collect();
    b.agreements
        .iter()
        .enumerate()
        .map(|(i, agreement)| {
            let u = draw(w.seed, &format!("opening:{agreement}"));
            let multiple = between(model.opening.min_multiple, model.opening.max_multiple, u);
            AccountPlan {
                agreement: agreement.to_string(),
                opening: round_down(b.installment * multiple),
                income: if i == 0 { salary.clone() } else { vec![] },
                hard_failure: hard_failure(model, w, agreement),
            }
        })
        .collect()
}

/// Paydays inside the window, minus a broke stretch; none for a borrower without salary.
fn salary_dates(model: &Model, w: Window, b: &BorrowerFacts) -> Vec<NaiveDate> {
    if draw(w.seed, &format!("paid:{}", b.borrower)) >= model.salary.share {
        return vec![];
    }
    let days = &model.salary.paydays;
    let payday = b.payday.unwrap_or_else(|| {
        days[(draw(w.seed, &format!("payday:{}", b.borrower)) * days.len() as f64) as usize
            % days.len()]
    });
    let broke = broke_stretch(model, w, b.borrower);
    let end = w.start + Days::new(u64::from(w.days));
    let mut out = Vec::new();
    let mut month = w.start.with_day(1).expect("day 1 exists");
    while month < end {
        let date = month
            .with_day(payday.min(days_in_month(month)))
            .expect("clamped day");
        let in_broke = broke.is_some_and(|(from, to)| date >= from && date < to);
        if date >= w.start && date < end && !in_broke {
            out.push(date);
        }
        month = month
            .checked_add_months(chrono::Months::new(1))
            .expect("in range");
    }
    out
}

fn days_in_month(first: NaiveDate) -> u32 {
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .expect("in range");
    (next - first).num_days() as u32
}

/// The `[from, to)` dates a broke borrower has no income, if they are one.
pub fn broke_stretch(model: &Model, w: Window, borrower: &str) -> Option<(NaiveDate, NaiveDate)> {
    if draw(w.seed, &format!("broke:{borrower}")) >= model.broke.share {
        return None;
    }
    let span = f64::from(model.broke.latest_start_day + 1);
    let offset = (draw(w.seed, &format!("broke-start:{borrower}")) * span) as u64;
    let from = w.start + Days::new(offset);
    Some((from, from + Days::new(u64::from(model.broke.days))))
}

/// The first 30-day period whose draw falls under the monthly rate breaks the mandate on a
/// drawn day of that period.
fn hard_failure(model: &Model, w: Window, agreement: &str) -> Option<(NaiveDate, String)> {
    let codes = &model.hard_failures.codes;
    (0..w.days.div_ceil(30)).find_map(|k| {
        let key = format!("hard:{agreement}:{k}");
        (draw(w.seed, &key) < model.hard_failures.monthly_rate).then(|| {
            let day = (draw(w.seed, &format!("{key}:day")) * 30.0) as u64;
            let code = (draw(w.seed, &format!("{key}:code")) * codes.len() as f64) as usize;
            let date = w.start + Days::new(u64::from(k) * 30 + day);
            (date, codes[code.min(codes.len() - 1)].clone())
        })
    })
}

/// Whether the borrower's `nth` contact (1-based) in the last 7 days, on `date`, makes them
/// pay on their own: the chance falls by `decay` with each extra contact.
pub fn pays_on_own(model: &Model, seed: u64, borrower: &str, date: NaiveDate, nth: u32) -> bool {
    let c = &model.self_cure;
    if !c.enabled || nth == 0 {
        return false;
    }
    let chance = c.first_contact * c.decay.powi(nth as i32 - 1);
    draw(seed, &format!("cure:{borrower}:{date}:{nth}")) < chance
}

/// Today's spending out of `balance`: the model's daily share, rounded down to cents.
pub fn daily_spending(model: &Model, balance: Decimal) -> Decimal {
    round_down(balance.max(Decimal::ZERO) * model.spending.daily_share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn facts(borrower: &str) -> BorrowerFacts<'_> {
        BorrowerFacts {
            borrower,
            payday: Some(31),
            installment: dec!(1000.00),
            agreements: vec!["A-1", "A-2"],
        }
    }

    fn window() -> Window {
        let start = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        Window {
            seed: 7,
            start,
            days: 90,
        }
    }

    #[test]
    fn salaries_fall_on_the_payday_clamped_to_the_month_and_only_on_the_first_account() {
        let mut model = Model::default_model();
        model.salary.share = 1.0;
        model.broke.share = 0.0;
        let plans = plan_accounts(&model, window(), &facts("B1"));
        let dates: Vec<String> = plans[0].income.iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(dates, ["2027-01-31", "2027-02-28", "2027-03-31"]);
        assert!(plans[1].income.is_empty());
        let amount = plans[0].income[0].1;
        assert!(
            amount >= dec!(1200.00) && amount <= dec!(4000.00),
            "{amount}"
        );
        assert_eq!(
            plans,
            plan_accounts(&model, window(), &facts("B1")),
            "deterministic"
        );
    }

    #[test]
    fn a_broke_stretch_removes_its_salaries_and_rates_of_one_always_fire() {
        let mut model = Model::default_model();
        model.salary.share = 1.0;
        model.broke.share = 1.0;
        model.broke.latest_start_day = 0;
        model.broke.days = 90;
        model.hard_failures.monthly_rate = 1.0;
        let plans = plan_accounts(&model, window(), &facts("B2"));
        assert!(plans[0].income.is_empty());
        let (date, code) = plans[0].hard_failure.clone().unwrap();
        assert!(date < NaiveDate::from_ymd_opt(2027, 1, 31).unwrap());
        assert!(model.hard_failures.codes.contains(&code));
    }

    #[test]
    fn paying_on_ones_own_gets_rarer_with_each_contact_in_the_week() {
        let model = Model::default_model();
        let d = NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        let rate = |nth| {
            (0..4000)
                .filter(|i| pays_on_own(&model, 1, &format!("B{i}"), d, nth))
                .count() as f64
                / 4000.0
        };
        let (first, third) = (rate(1), rate(3));
        assert!((first - 0.20).abs() < 0.03, "{first}");
        assert!((third - 0.05).abs() < 0.02, "{third}");
        assert_eq!(daily_spending(&model, dec!(1000.00)), dec!(30.00));
        assert_eq!(daily_spending(&model, dec!(-5)), dec!(0));
    }
}
