//! The loan page's read of its attempts and schedule: attempts grouped into the slots that
//! made them (one row per slot, its ladder steps inside), and the loan's standing at the top
//! (next due date, total overdue). Pure: the page handler loads, this arranges.

use crate::store::reports::{AttemptView, InstallmentView};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;

/// The attempts one slot made for one installment: its first step and the steps down.
#[derive(Debug, Clone, Serialize)]
pub struct SlotGroup {
    pub seq: u32,
    pub kind: String,
    /// When the slot's first step was made, in the loan's zone.
    pub local: String,
    pub currency: String,
    /// What the slot collected (its succeeded steps).
    pub collected: Decimal,
    /// The last step's outcome.
    pub outcome: String,
    /// Oldest step first.
    pub steps: Vec<AttemptView>,
}

/// Attempts of one slot are made in one run, for one installment and kind, stepping down
/// the ladder (steps 1, 2, 3, ...); a step that does not go further down starts a new slot.
/// Returns the newest slot first; `attempts` may come in any order.
pub fn group_by_slot(attempts: &[AttemptView], tz: Tz) -> Vec<SlotGroup> {
    let mut sorted: Vec<&AttemptView> = attempts.iter().collect();
    sorted.sort_by_key(|a| (a.at, a.id));
    let mut groups: Vec<SlotGroup> = Vec::new();
    for a in sorted {
        let continues = groups.last().is_some_and(|g| {
            let last = g.steps.last().expect("a group has a step");
            last.seq == a.seq
                && last.kind == a.kind
                && a.ladder_step > last.ladder_step
                && same_local_day(last.at, a.at, tz)
        });
        if !continues {
            groups.push(SlotGroup {
                seq: a.seq,
                kind: a.kind.clone(),
                local: a
                    .at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string(),
                currency: a.currency.clone(),
                collected: crate::domain::money::from_minor(0),
                outcome: String::new(),
                steps: Vec::new(),
            });
        }
        let g = groups.last_mut().expect("just pushed");
        if a.status == "succeeded" {
            g.collected += a.amount;
        }
        g.outcome = a.status.clone();
        g.steps.push(a.clone());
    }
    groups.reverse();
    groups
}

fn same_local_day(a: DateTime<Utc>, b: DateTime<Utc>, tz: Tz) -> bool {
    a.with_timezone(&tz).date_naive() == b.with_timezone(&tz).date_naive()
}

/// Where a loan stands on its local `today`: the earliest unpaid installment due today or
/// later, and what is owed on installments due before today.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub next_due: Option<NaiveDate>,
    pub next_due_amount: Option<Decimal>,
    pub overdue: Decimal,
    pub overdue_installments: usize,
}

pub fn standing(installments: &[InstallmentView], today: NaiveDate) -> Standing {
    let unpaid = installments
        .iter()
        .filter(|i| i.outstanding > Decimal::ZERO)
        .filter_map(|i| Some((NaiveDate::parse_from_str(&i.due_date, "%Y-%m-%d").ok()?, i)));
    let mut s = Standing {
        next_due: None,
        next_due_amount: None,
        // Zero in cents, so that it reads "0.00" like every other amount.
        overdue: crate::domain::money::from_minor(0),
        overdue_installments: 0,
    };
    for (due, i) in unpaid {
        if due < today {
            s.overdue += i.outstanding;
            s.overdue_installments += 1;
        } else if s.next_due.is_none_or(|d| due < d) {
            s.next_due = Some(due);
            s.next_due_amount = Some(i.outstanding);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn attempt(
        id: i64,
        at: &str,
        seq: u32,
        step: u32,
        amount: Decimal,
        status: &str,
    ) -> AttemptView {
        let at = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        AttemptView {
            id,
            loan_id: "L1".into(),
            seq,
            channel: "bank".into(),
            account: "****1234".into(),
            order_no: format!("O{id}"),
            kind: "due".into(),
            ladder_step: step,
            amount,
            currency: "CNY".into(),
            status: status.into(),
            code: None,
            at,
            updated_at: at,
            requested_by: None,
        }
    }

    #[test]
    fn a_slot_is_its_first_step_and_the_steps_down_after_it() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let a = [
            attempt(1, "2027-01-15T00:00:00Z", 1, 1, dec!(400), "failed"),
            attempt(2, "2027-01-15T00:00:01Z", 1, 2, dec!(300), "failed"),
            attempt(3, "2027-01-15T00:00:02Z", 1, 3, dec!(200), "succeeded"),
            // The evening slot of the same day starts again at step 1.
            attempt(4, "2027-01-15T12:00:00Z", 1, 1, dec!(200), "succeeded"),
            // The next installment's slot, same instant, is its own.
            attempt(5, "2027-01-15T12:00:00Z", 2, 1, dec!(100), "failed"),
        ];
        let g = group_by_slot(&a, tz);
        assert_eq!(g.len(), 3, "{g:?}");
        let first = &g[2];
        assert_eq!(first.steps.len(), 3);
        assert_eq!(first.local, "2027-01-15 08:00 CST");
        assert_eq!(
            (first.collected, first.outcome.as_str()),
            (dec!(200), "succeeded")
        );
        assert_eq!((g[1].seq, g[1].collected), (1, dec!(200)));
        assert_eq!(
            (g[0].seq, g[0].collected, g[0].outcome.as_str()),
            (2, dec!(0), "failed")
        );
    }

    fn inst(seq: u32, due: &str, outstanding: Decimal) -> InstallmentView {
        InstallmentView {
            seq,
            due_date: due.into(),
            due: [Decimal::ZERO; 4],
            paid: [Decimal::ZERO; 4],
            written_off: [Decimal::ZERO; 4],
            outstanding,
            status: "pending".into(),
            attempts: 0,
        }
    }

    #[test]
    fn standing_is_the_next_due_date_and_what_is_owed_before_today() {
        let today = NaiveDate::from_ymd_opt(2027, 2, 15).unwrap();
        let s = standing(
            &[
                inst(1, "2027-01-15", dec!(0)),
                inst(2, "2027-02-14", dec!(120.50)),
                inst(3, "2027-02-15", dec!(300)),
                inst(4, "2027-03-15", dec!(300)),
            ],
            today,
        );
        assert_eq!(s.overdue, dec!(120.50));
        let none = standing(&[inst(1, "2027-03-15", dec!(300))], today);
        assert_eq!(
            none.overdue.to_string(),
            "0.00",
            "zero reads like an amount"
        );
        assert_eq!(s.overdue_installments, 1);
        assert_eq!(s.next_due, Some(today), "due today is next, not overdue");
        assert_eq!(s.next_due_amount, Some(dec!(300)));
    }
}
