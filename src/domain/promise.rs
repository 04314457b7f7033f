//! A promise to pay: a borrower's word that an amount will be paid by a date. Automatic
//! attempts pause until then; afterwards the promise reads kept or broken.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

/// How far ahead a promise may run: longer is a payment plan, not a promise.
pub const MAX_PROMISE_DAYS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromiseState {
    /// Its date has not passed and it is not yet paid.
    Open,
    /// What was collected since it was made reaches the promised amount.
    Kept,
    /// Its date has passed without that.
    Broken,
}

/// The state of a promise of `amount` by `promised_on`, given what was collected since it
/// was made and the loan's local `today`. A promise paid after its date still reads kept.
pub fn promise_state(
    amount: Decimal,
    paid_since: Decimal,
    promised_on: NaiveDate,
    today: NaiveDate,
) -> PromiseState {
    if paid_since >= amount {
        PromiseState::Kept
    } else if today > promised_on {
        PromiseState::Broken
    } else {
        PromiseState::Open
    }
}

/// Why a promise cannot be recorded: its date is past or too far, or its amount is not
/// above zero. `today` is the loan's local date.
pub fn check_promise(
    amount: Decimal,
    on: NaiveDate,
    today: NaiveDate,
) -> Result<(), (&'static str, String)> {
    if amount <= Decimal::ZERO {
        return Err(("amount", format!("{amount} is not above 0")));
    }
    if on < today {
        return Err((
            "date",
            format!("{on} is before today ({today}) in the loan's zone"),
        ));
    }
    if (on - today).num_days() > MAX_PROMISE_DAYS as i64 {
        return Err((
            "date",
            format!(
                "{on} is more than {MAX_PROMISE_DAYS} days ahead; agree a payment plan instead"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn open_until_its_date_then_kept_or_broken() {
        let on = d("2027-01-20");
        assert_eq!(
            promise_state(dec!(500), dec!(0), on, d("2027-01-20")),
            PromiseState::Open
        );
        assert_eq!(
            promise_state(dec!(500), dec!(499.99), on, d("2027-01-21")),
            PromiseState::Broken
        );
        assert_eq!(
            promise_state(dec!(500), dec!(500), on, d("2027-01-18")),
            PromiseState::Kept
        );
        assert_eq!(
            promise_state(dec!(500), dec!(600), on, d("2027-02-01")),
            PromiseState::Kept
        );
    }

    #[test]
    fn a_promise_is_for_something_soon() {
        let today = d("2027-01-10");
        assert!(check_promise(dec!(10), today, today).is_ok());
        assert_eq!(
            check_promise(dec!(0), today, today).unwrap_err().0,
            "amount"
        );
        assert_eq!(
            check_promise(dec!(10), d("2027-01-09"), today)
                .unwrap_err()
                .0,
            "date"
        );
        assert_eq!(
            check_promise(dec!(10), d("2027-03-12"), today)
                .unwrap_err()
                .0,
            "date"
        );
        assert!(check_promise(dec!(10), d("2027-03-11"), today).is_ok());
    }
}
