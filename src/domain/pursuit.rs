//! Pursuit: the attempts a loan's debt is pursued with, and the pure decisions about them:
//! which claimed actions become an attempt, on which mandate and ladder, against which
//! installment. The engine does the I/O around these (`engine::pursue`).

use crate::domain::ladder::{ladder_amounts, LadderInput};
use crate::domain::loan::LoanState;
use crate::domain::localtime::local_date;
use crate::domain::planner::AttemptKind;
use crate::domain::policy::Policy;
use crate::domain::status::{ActionStatus, LoanStatus};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

/// An attempt as recorded before the channel was called.
#[derive(Debug, Clone)]
pub struct AttemptRec {
    pub id: i64,
    pub loan_id: String,
    /// The installment the attempt is counted against (the oldest owed).
    pub seq: u32,
    pub mandate_id: i64,
    pub channel: String,
    pub order_no: String,
    pub kind: String,
    pub ladder_step: u32,
    pub amount: Decimal,
    pub local_date: NaiveDate,
    pub queries: u32,
}

/// A claimed agenda row.
#[derive(Debug, Clone)]
pub struct ClaimedAction {
    pub id: i64,
    pub loan_id: String,
    pub seq: u32,
    pub kind: String,
    pub slot: String,
}

/// How an action ended, written back to the agenda.
pub struct ActionEnd {
    pub id: i64,
    pub status: &'static str,
    pub note: String,
}

pub fn end(id: i64, status: &'static str, note: impl Into<String>) -> ActionEnd {
    ActionEnd {
        id,
        status,
        note: note.into(),
    }
}

/// One loan's pursuit within this slot.
#[derive(Debug)]
pub struct Pursuit {
    pub loan_id: String,
    pub kind: AttemptKind,
    /// The action the attempt is recorded against.
    pub action_id: i64,
    /// The installment an early attempt is for (others count what is due by today).
    pub early_seq: Option<u32>,
    pub mandate_idx: usize,
    /// The ladder of amounts on the current mandate, largest first.
    pub amounts: Vec<Decimal>,
    pub step: usize,
    pub done: bool,
}

/// Decide whether (and how) a loan is attempted for the claimed attempt actions.
pub fn start_pursuit(
    loan: &LoanState,
    policy: &Policy,
    actions: Vec<ClaimedAction>,
    now: DateTime<Utc>,
    ends: &mut Vec<ActionEnd>,
) -> Option<Pursuit> {
    let today = local_date(now, loan.tz);
    let mut live = Vec::new();
    for a in actions {
        let kind = AttemptKind::of_slot(&a.slot);
        let inst_due = loan.insts.iter().find(|i| i.seq == a.seq).map(|i| i.due);
        match inst_due {
            None => ends.push(end(
                a.id,
                ActionStatus::Skipped.as_str(),
                "installment paid",
            )),
            Some(due) if kind == AttemptKind::Early && due <= today => ends.push(end(
                a.id,
                ActionStatus::Skipped.as_str(),
                "stale: early attempt after due date",
            )),
            _ => live.push((kind, a)),
        }
    }
    let skip_all = |ends: &mut Vec<ActionEnd>, live: &[(AttemptKind, ClaimedAction)], why: &str| {
        ends.extend(
            live.iter()
                .map(|(_, a)| end(a.id, ActionStatus::Skipped.as_str(), why)),
        );
    };
    if live.is_empty() {
        return None;
    }
    if loan.status != LoanStatus::Active {
        skip_all(ends, &live, &format!("loan {}", loan.status));
        return None;
    }
    if loan.attempted_in_run {
        skip_all(ends, &live, "merged: loan already attempted in this run");
        return None;
    }
    if loan.open_attempt {
        skip_all(ends, &live, "an earlier attempt is unresolved");
        return None;
    }
    // The most significant kind names the attempt: due > overdue > payday > early.
    live.sort_by_key(|(k, _)| match k {
        AttemptKind::Due => 0,
        AttemptKind::Overdue => 1,
        AttemptKind::Payday => 2,
        AttemptKind::Early => 3,
    });
    let (kind, first) = (live[0].0, live[0].1.id);
    let early_seq = (kind == AttemptKind::Early).then_some(live[0].1.seq);
    let mut p = Pursuit {
        loan_id: loan.id.clone(),
        kind,
        action_id: first,
        early_seq,
        mandate_idx: 0,
        amounts: Vec::new(),
        step: 0,
        done: false,
    };
    let why = prepare(&mut p, loan, policy, today, true);
    let note = why.unwrap_or("attempted");
    let status = if why.is_some() {
        ActionStatus::Skipped
    } else {
        ActionStatus::Done
    }
    .as_str();
    ends.extend(live.iter().map(|(_, a)| end(a.id, status, note)));
    why.is_none().then_some(p)
}

/// Point the pursuit at the first usable mandate (from `mandate_idx`) with a non-empty
/// ladder. Returns why nothing can be attempted, if so.
pub fn prepare(
    p: &mut Pursuit,
    loan: &LoanState,
    policy: &Policy,
    today: NaiveDate,
    fresh: bool,
) -> Option<&'static str> {
    let owed = loan.owed_through(today, p.early_seq);
    if owed <= Decimal::ZERO {
        return Some("nothing owed");
    }
    let attributed = attributed_seq(loan, today, p.early_seq)?;
    let inst = loan.insts.iter().find(|i| i.seq == attributed)?;
    if inst.attempts >= policy.limits.max_attempts_per_installment {
        return Some("max attempts reached");
    }
    while p.mandate_idx < loan.mandates.len() {
        let m = &loan.mandates[p.mandate_idx];
        if m.usable() {
            let daily_remaining = m
                .daily_limit
                .map(|l| (l - loan.used_on(m.id, today)).max(Decimal::ZERO));
            let amounts = ladder_amounts(&LadderInput {
                owed,
                per_debit_limit: m.per_debit_limit,
                daily_remaining,
                steps: &policy.ladder.steps,
                min_amount: policy.ladder.min_amount,
            });
            if !amounts.is_empty() {
                let start = if policy.ladder.within_slot || !fresh {
                    0
                } else {
                    loan.ladder_pos as usize
                };
                p.step = start.min(amounts.len() - 1);
                p.amounts = amounts;
                return None;
            }
        }
        p.mandate_idx += 1;
    }
    Some("no usable mandate within its limits")
}

/// The installment an attempt counts against: the oldest one owed now.
pub fn attributed_seq(loan: &LoanState, today: NaiveDate, early_seq: Option<u32>) -> Option<u32> {
    loan.insts
        .iter()
        .find(|i| (i.due <= today || Some(i.seq) == early_seq) && i.owed() > Decimal::ZERO)
        .map(|i| i.seq)
}

/// With `within_slot = false`, the next slot starts one step lower.
pub fn remember_ladder(p: &Pursuit, loan: &mut LoanState) {
    loan.ladder_pos = p.step as u32 + 1;
    loan.dirty = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::loan::{InstState, MandateState};
    use crate::domain::policy::PolicySet;
    use crate::domain::status::{InstallmentStatus, MandateStatus};
    use crate::domain::Outstanding;
    use chrono::TimeZone;
    use std::collections::HashMap;

    fn standard() -> Policy {
        PolicySet::builtin().get("standard").unwrap().clone()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn inst(seq: u32, due: &str, principal: &str) -> InstState {
        InstState {
            seq,
            due: d(due),
            principal: dec(principal),
            interest: Decimal::ZERO,
            fee: Decimal::ZERO,
            penalty: Decimal::ZERO,
            paid: Outstanding {
                seq,
                penalty: Decimal::ZERO,
                fee: Decimal::ZERO,
                interest: Decimal::ZERO,
                principal: Decimal::ZERO,
            },
            status: InstallmentStatus::Pending,
            attempts: 0,
            paid_at: None,
            dirty: false,
        }
    }

    fn mandate(id: i64, per_debit: Option<&str>) -> MandateState {
        MandateState {
            id,
            channel: "bank".into(),
            agreement: format!("A{id}"),
            account_masked: "****1234".into(),
            per_debit_limit: per_debit.map(dec),
            daily_limit: None,
            status: MandateStatus::Active,
            status_code: None,
            dirty: false,
        }
    }

    /// L1: 400.00 due 2027-01-15 and 400.00 due 2027-02-15, one mandate without limits.
    fn loan() -> LoanState {
        LoanState {
            id: "L1".into(),
            borrower_id: "B1".into(),
            borrower_name: "Wang".into(),
            phone: String::new(),
            email: String::new(),
            payday: None,
            currency: "CNY".into(),
            tz: chrono_tz::Asia::Shanghai,
            policy: "standard".into(),
            allow_early: true,
            status: LoanStatus::Active,
            ladder_pos: 0,
            insts: vec![
                inst(1, "2027-01-15", "400.00"),
                inst(2, "2027-02-15", "400.00"),
            ],
            mandates: vec![mandate(1, None)],
            open_attempt: false,
            attempted_in_run: false,
            used: HashMap::new(),
            dirty: false,
            broken: None,
        }
    }

    fn action(id: i64, seq: u32, slot: &str) -> ClaimedAction {
        ClaimedAction {
            id,
            loan_id: "L1".into(),
            seq,
            kind: "attempt".into(),
            slot: slot.into(),
        }
    }

    /// 2027-01-15 10:00 in Shanghai.
    fn due_day() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 15, 2, 0, 0).unwrap()
    }

    fn start(
        loan: &LoanState,
        actions: Vec<ClaimedAction>,
        now: DateTime<Utc>,
    ) -> (Option<Pursuit>, Vec<ActionEnd>) {
        let mut ends = Vec::new();
        let p = start_pursuit(loan, &standard(), actions, now, &mut ends);
        (p, ends)
    }

    #[test]
    fn the_most_significant_kind_names_the_attempt_and_every_action_ends() {
        let actions = vec![
            action(1, 1, "early:T-1@20:00"),
            action(2, 1, "due:08:00"),
            action(3, 1, "od:D+1"),
        ];
        let later = due_day() + chrono::Duration::days(1);
        let (p, ends) = start(&loan(), actions, later);
        let p = p.expect("attempted");
        assert_eq!(p.kind, AttemptKind::Due);
        assert_eq!(p.action_id, 2);
        let notes: Vec<_> = ends
            .iter()
            .map(|e| (e.id, e.status, e.note.as_str()))
            .collect();
        assert!(notes.contains(&(1, "skipped", "stale: early attempt after due date")));
        assert!(notes.contains(&(2, "done", "attempted")));
        assert!(notes.contains(&(3, "done", "attempted")));
    }

    #[test]
    fn a_loan_that_cannot_be_attempted_skips_all_its_actions_with_the_reason() {
        let mut busy = loan();
        busy.open_attempt = true;
        let (p, ends) = start(&busy, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "an earlier attempt is unresolved");

        let mut paid = loan();
        paid.status = LoanStatus::Paid;
        let (p, ends) = start(&paid, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(
            (ends[0].status, ends[0].note.as_str()),
            ("skipped", "loan paid")
        );

        let (p, ends) = start(&loan(), vec![action(1, 9, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "installment paid");

        let mut attempted = loan();
        attempted.attempted_in_run = true;
        let (p, ends) = start(&attempted, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "merged: loan already attempted in this run");
    }

    #[test]
    fn prepare_picks_the_first_mandate_that_can_take_a_debit() {
        let mut l = loan();
        l.mandates = vec![mandate(1, Some("0.00")), mandate(2, Some("300.00"))];
        let (p, _) = start(&l, vec![action(1, 1, "due:08:00")], due_day());
        let p = p.expect("attempted on the second mandate");
        assert_eq!(p.mandate_idx, 1);
        assert_eq!(p.amounts[0], dec("300.00"), "capped by the per-debit limit");
        assert!(p.amounts.windows(2).all(|w| w[0] > w[1]), "{:?}", p.amounts);
        assert!(p.amounts.iter().all(|a| *a >= dec("50.00")));

        l.mandates = vec![mandate(1, Some("0.00"))];
        let (p, ends) = start(&l, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "no usable mandate within its limits");
    }

    #[test]
    fn prepare_stops_at_nothing_owed_and_at_the_attempt_limit() {
        let mut l = loan();
        l.insts[0].paid.principal = dec("400.00");
        let (p, ends) = start(&l, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "nothing owed");

        let mut l = loan();
        l.insts[0].attempts = standard().limits.max_attempts_per_installment;
        let (p, ends) = start(&l, vec![action(1, 1, "due:08:00")], due_day());
        assert!(p.is_none());
        assert_eq!(ends[0].note, "max attempts reached");
    }

    #[test]
    fn an_attempt_counts_against_the_oldest_installment_owed() {
        let mut l = loan();
        let today = d("2027-02-20");
        assert_eq!(attributed_seq(&l, today, None), Some(1));
        l.insts[0].paid.principal = dec("400.00");
        assert_eq!(attributed_seq(&l, today, None), Some(2));
        assert_eq!(
            attributed_seq(&l, d("2027-02-01"), None),
            None,
            "nothing due yet"
        );
        assert_eq!(
            attributed_seq(&l, d("2027-02-01"), Some(2)),
            Some(2),
            "early"
        );
    }

    #[test]
    fn a_next_slot_starts_one_step_lower_when_the_ladder_is_remembered() {
        let mut l = loan();
        let (p, _) = start(&l, vec![action(1, 1, "due:08:00")], due_day());
        let mut p = p.unwrap();
        p.step = 1;
        remember_ladder(&p, &mut l);
        assert_eq!(l.ladder_pos, 2);
        assert!(l.dirty);
    }
}
