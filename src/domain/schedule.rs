//! Schedule maths: turn loan terms into installments (annuity, equal principal, bullet).
//!
//! The one invariant every caller relies on: the principals of the generated installments add
//! up to the loan principal exactly. Rounding residue always lands on the last installment.

use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::money::{round_down, round_money, MONEY_SCALE};
use super::types::Method;

/// Longest plan we generate (50 years of monthly installments); beyond that is a data error.
pub const MAX_MONTHS: u32 = 600;

/// Loan terms from which a schedule is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    pub principal: Decimal,
    /// Yearly rate as a fraction: 0.12 means 12% a year; the monthly rate is a twelfth of it.
    pub annual_rate: Decimal,
    pub months: u32,
    pub first_due: NaiveDate,
    pub method: Method,
}

/// One generated installment: what falls due on `due_date`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedInstallment {
    /// 1-based position in the plan.
    pub seq: u32,
    pub due_date: NaiveDate,
    pub principal: Decimal,
    pub interest: Decimal,
    pub fee: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error("a schedule needs at least one installment")]
    NoInstallments,
    #[error("{0} installments is more than the maximum of {MAX_MONTHS}")]
    TooManyInstallments(u32),
    #[error("principal {0} must be greater than zero")]
    NonPositivePrincipal(Decimal),
    #[error("principal {0} has more than {MONEY_SCALE} decimal places")]
    PrincipalTooPrecise(Decimal),
    #[error("annual rate {0} is negative")]
    NegativeRate(Decimal),
    #[error("due date of installment {0} is out of the calendar's range")]
    DateOutOfRange(u32),
    #[error("amounts overflow for these terms (rate or principal too large)")]
    Overflow,
}

/// Generate the installments for `terms`, oldest first.
pub fn generate_schedule(terms: &Terms) -> Result<Vec<PlannedInstallment>, ScheduleError> {
    validate(terms)?;
    let rate = terms.annual_rate / Decimal::from(12);
    let principals = match terms.method {
        Method::Annuity => annuity_principals(terms.principal, rate, terms.months)?,
        Method::EqualPrincipal => equal_principals(terms.principal, terms.months),
        Method::Bullet => bullet_principals(terms.principal, terms.months),
    };
    build(terms, rate, &principals)
}

fn validate(terms: &Terms) -> Result<(), ScheduleError> {
    if terms.months == 0 {
        return Err(ScheduleError::NoInstallments);
    }
    if terms.months > MAX_MONTHS {
        return Err(ScheduleError::TooManyInstallments(terms.months));
    }
    if terms.principal <= Decimal::ZERO {
        return Err(ScheduleError::NonPositivePrincipal(terms.principal));
    }
    if round_money(terms.principal) != terms.principal {
        return Err(ScheduleError::PrincipalTooPrecise(terms.principal));
    }
    if terms.annual_rate < Decimal::ZERO {
        return Err(ScheduleError::NegativeRate(terms.annual_rate));
    }
    Ok(())
}

/// Attach due dates and interest (on the balance before each installment) to the principals.
fn build(
    terms: &Terms,
    rate: Decimal,
    principals: &[Decimal],
) -> Result<Vec<PlannedInstallment>, ScheduleError> {
    let mut balance = terms.principal;
    let mut out = Vec::with_capacity(principals.len());
    for (i, &principal) in principals.iter().enumerate() {
        let seq = i as u32 + 1;
        out.push(PlannedInstallment {
            seq,
            due_date: due_date(terms.first_due, i as u32)
                .ok_or(ScheduleError::DateOutOfRange(seq))?,
            principal: cents(principal),
            interest: cents(interest_on(balance, rate)?),
            fee: cents(Decimal::ZERO),
        });
        balance -= principal;
    }
    Ok(out)
}

/// Each due date is counted from the first one (not from the previous), so a 31st does not
/// drift to the 28th after February: Jan 31 -> Feb 28/29 -> Mar 31.
fn due_date(first_due: NaiveDate, k: u32) -> Option<NaiveDate> {
    first_due.checked_add_months(Months::new(k))
}

fn interest_on(balance: Decimal, rate: Decimal) -> Result<Decimal, ScheduleError> {
    balance
        .checked_mul(rate)
        .map(round_money)
        .ok_or(ScheduleError::Overflow)
}

/// Fixed 2 decimal places, so amounts print and serialize as "12.00", not "12".
fn cents(d: Decimal) -> Decimal {
    let mut d = d;
    d.rescale(MONEY_SCALE);
    d
}

/// 等额本息: the same rounded payment each month; interest first, the rest is principal.
/// Principal never exceeds the remaining balance, and the last installment takes what is left.
fn annuity_principals(p: Decimal, rate: Decimal, n: u32) -> Result<Vec<Decimal>, ScheduleError> {
    let payment = annuity_payment(p, rate, n)?;
    let mut balance = p;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 1..n {
        let interest = interest_on(balance, rate)?;
        let principal = (payment - interest).max(Decimal::ZERO).min(balance);
        out.push(principal);
        balance -= principal;
    }
    out.push(balance);
    Ok(out)
}

/// payment = P·r / (1 − (1+r)^−n), or P/n without interest; rounded to cents.
fn annuity_payment(p: Decimal, rate: Decimal, n: u32) -> Result<Decimal, ScheduleError> {
    if rate.is_zero() {
        return Ok(round_money(p / Decimal::from(n)));
    }
    // (1+r)^-n stays in (0, 1], so this cannot overflow whatever the rate and term.
    let discount = pow(Decimal::ONE / (Decimal::ONE + rate), n);
    let denominator = Decimal::ONE - discount;
    let payment = p
        .checked_mul(rate)
        .and_then(|x| x.checked_div(denominator))
        .ok_or(ScheduleError::Overflow)?;
    Ok(round_money(payment))
}

/// x^n by squaring; only used for 0 < x <= 1, where it cannot overflow.
fn pow(x: Decimal, n: u32) -> Decimal {
    let (mut base, mut exp, mut acc) = (x, n, Decimal::ONE);
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= base;
        }
        base *= base;
        exp >>= 1;
    }
    acc
}

/// 等额本金: equal principal rounded down; the last installment takes the residue.
fn equal_principals(p: Decimal, n: u32) -> Vec<Decimal> {
    let share = round_down(p / Decimal::from(n));
    let mut out = vec![share; n as usize - 1];
    out.push(p - share * Decimal::from(n - 1));
    out
}

/// Bullet: no principal until the last installment.
fn bullet_principals(p: Decimal, n: u32) -> Vec<Decimal> {
    let mut out = vec![Decimal::ZERO; n as usize - 1];
    out.push(p);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn terms(principal: Decimal, annual_rate: Decimal, months: u32, method: Method) -> Terms {
        Terms {
            principal,
            annual_rate,
            months,
            first_due: date(2026, 1, 31),
            method,
        }
    }

    fn total_principal(s: &[PlannedInstallment]) -> Decimal {
        s.iter().map(|i| i.principal).sum()
    }

    #[test]
    fn due_dates_clamp_to_month_end_without_drift() {
        let s = generate_schedule(&terms(dec!(1200), dec!(0.12), 4, Method::Annuity)).unwrap();
        let dates: Vec<_> = s.iter().map(|i| i.due_date).collect();
        assert_eq!(
            dates,
            [
                date(2026, 1, 31),
                date(2026, 2, 28),
                date(2026, 3, 31),
                date(2026, 4, 30)
            ]
        );
        let leap = Terms {
            first_due: date(2028, 1, 31),
            ..terms(dec!(100), dec!(0), 2, Method::Bullet)
        };
        assert_eq!(
            generate_schedule(&leap).unwrap()[1].due_date,
            date(2028, 2, 29)
        );
    }

    #[test]
    fn annuity_known_values() {
        // 10,000 at 12%/yr over 12 months: textbook payment 888.49.
        let s = generate_schedule(&terms(dec!(10000), dec!(0.12), 12, Method::Annuity)).unwrap();
        assert_eq!(s[0].interest, dec!(100.00));
        assert_eq!(s[0].principal, dec!(788.49));
        for i in &s[..11] {
            assert_eq!(i.principal + i.interest, dec!(888.49));
        }
        assert_eq!(total_principal(&s), dec!(10000));
        assert_eq!(s[0].fee, Decimal::ZERO);
        assert_eq!(s[0].principal.to_string(), "788.49");
    }

    #[test]
    fn annuity_without_interest_splits_evenly() {
        let s = generate_schedule(&terms(dec!(100), dec!(0), 3, Method::Annuity)).unwrap();
        let p: Vec<_> = s.iter().map(|i| i.principal).collect();
        assert_eq!(p, [dec!(33.33), dec!(33.33), dec!(33.34)]);
        assert!(s.iter().all(|i| i.interest.is_zero()));
    }

    #[test]
    fn annuity_rounding_up_never_overpays_principal() {
        // 0.13/8 = 0.01625 rounds up to 0.02; seven of those would exceed 0.13.
        let s = generate_schedule(&terms(dec!(0.13), dec!(0), 8, Method::Annuity)).unwrap();
        assert!(s.iter().all(|i| i.principal >= Decimal::ZERO));
        assert_eq!(total_principal(&s), dec!(0.13));
    }

    #[test]
    fn equal_principal_known_values() {
        let s =
            generate_schedule(&terms(dec!(1000), dec!(0.12), 3, Method::EqualPrincipal)).unwrap();
        let p: Vec<_> = s.iter().map(|i| i.principal).collect();
        let r: Vec<_> = s.iter().map(|i| i.interest).collect();
        assert_eq!(p, [dec!(333.33), dec!(333.33), dec!(333.34)]);
        assert_eq!(r, [dec!(10.00), dec!(6.67), dec!(3.33)]);
    }

    #[test]
    fn bullet_known_values() {
        let s = generate_schedule(&terms(dec!(5000), dec!(0.06), 3, Method::Bullet)).unwrap();
        assert!(s.iter().all(|i| i.interest == dec!(25.00)));
        assert_eq!(s[0].principal, Decimal::ZERO);
        assert_eq!(s[2].principal, dec!(5000));
    }

    #[test]
    fn bad_terms_are_rejected() {
        let ok = terms(dec!(100), dec!(0.1), 12, Method::Annuity);
        let check = |t: Terms| generate_schedule(&t).unwrap_err();
        assert_eq!(
            check(Terms {
                months: 0,
                ..ok.clone()
            }),
            ScheduleError::NoInstallments
        );
        assert_eq!(
            check(Terms {
                months: 601,
                ..ok.clone()
            }),
            ScheduleError::TooManyInstallments(601)
        );
        assert!(matches!(
            check(Terms {
                principal: dec!(0),
                ..ok.clone()
            }),
            ScheduleError::NonPositivePrincipal(_)
        ));
        assert!(matches!(
            check(Terms {
                principal: dec!(-1),
                ..ok.clone()
            }),
            ScheduleError::NonPositivePrincipal(_)
        ));
        assert!(matches!(
            check(Terms {
                principal: dec!(1.005),
                ..ok.clone()
            }),
            ScheduleError::PrincipalTooPrecise(_)
        ));
        assert!(matches!(
            check(Terms {
                annual_rate: dec!(-0.01),
                ..ok.clone()
            }),
            ScheduleError::NegativeRate(_)
        ));
        assert!(generate_schedule(&Terms { months: 600, ..ok }).is_ok());
    }

    #[test]
    fn huge_rate_does_not_panic() {
        let t = terms(dec!(10000000), dec!(1000), 600, Method::Annuity);
        let s = generate_schedule(&t).unwrap();
        assert_eq!(total_principal(&s), dec!(10000000));
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::Annuity),
            Just(Method::EqualPrincipal),
            Just(Method::Bullet)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn principals_sum_exactly(
            cents in 1i64..=1_000_000_000,
            rate_bp in 0i64..=3600,
            months in 1u32..=360,
            method in method(),
        ) {
            let t = terms(Decimal::new(cents, 2), Decimal::new(rate_bp, 4), months, method);
            let s = generate_schedule(&t).unwrap();
            prop_assert_eq!(s.len(), months as usize);
            prop_assert_eq!(total_principal(&s), t.principal);
            for (k, i) in s.iter().enumerate() {
                prop_assert_eq!(i.seq, k as u32 + 1);
                prop_assert!(i.principal >= Decimal::ZERO && i.interest >= Decimal::ZERO);
                prop_assert_eq!(round_money(i.principal), i.principal);
                prop_assert_eq!(round_money(i.interest), i.interest);
            }
        }

        #[test]
        fn due_dates_increase(months in 1u32..=120, day in 1u32..=31) {
            let first_due = NaiveDate::from_ymd_opt(2026, 1, day).unwrap();
            let t = Terms { first_due, ..terms(dec!(1000), dec!(0.1), months, Method::Bullet) };
            let s = generate_schedule(&t).unwrap();
            prop_assert!(s.windows(2).all(|w| w[0].due_date < w[1].due_date));
        }
    }
}
