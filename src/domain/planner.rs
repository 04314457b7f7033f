//! Policy evaluation (pure): turns an installment, its loan's zone and a policy into timed
//! actions. Local times are converted to UTC here, per date, so DST never shifts a slot.
//!
//! Slots are named so that planning twice yields the same keys: `pre:T-3`, `early:T-1@20:00`,
//! `due:08:00`, `od:D+4`, `payday:2026-12-20`, `remind:D+3`.

use crate::domain::local_to_utc;
use crate::domain::policy::Policy;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Notice,
    Attempt,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Notice => "notice",
            ActionKind::Attempt => "attempt",
        }
    }
}

/// Why an attempt is made; shown to collections and used for catch-up rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptKind {
    Early,
    Due,
    Overdue,
    Payday,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Early => "early",
            AttemptKind::Due => "due",
            AttemptKind::Overdue => "overdue",
            AttemptKind::Payday => "payday",
        }
    }

    /// The attempt kind encoded in a slot name.
    pub fn of_slot(slot: &str) -> AttemptKind {
        match slot.split(':').next() {
            Some("early") => AttemptKind::Early,
            Some("due") => AttemptKind::Due,
            Some("payday") => AttemptKind::Payday,
            _ => AttemptKind::Overdue,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    pub seq: u32,
    pub kind: ActionKind,
    pub slot: String,
    pub due_at: DateTime<Utc>,
}

fn hhmm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

fn at(
    seq: u32,
    kind: ActionKind,
    slot: String,
    date: NaiveDate,
    t: NaiveTime,
    tz: Tz,
) -> PlannedAction {
    PlannedAction {
        seq,
        kind,
        slot,
        due_at: local_to_utc(date, t, tz),
    }
}

/// Actions up to and including the due date: advance notices, early and due-date attempts.
pub fn plan_installment(
    policy: &Policy,
    tz: Tz,
    seq: u32,
    due: NaiveDate,
    allow_early: bool,
) -> Vec<PlannedAction> {
    let mut out = Vec::new();
    for n in &policy.notices.before_due {
        let d = due - Days::new(n.days as u64);
        out.push(at(
            seq,
            ActionKind::Notice,
            format!("pre:T-{}", n.days),
            d,
            n.at,
            tz,
        ));
    }
    if policy.early.allowed && allow_early {
        for e in &policy.early.slots {
            let d = due - Days::new(e.days as u64);
            let slot = format!("early:T-{}@{}", e.days, hhmm(e.at));
            out.push(at(seq, ActionKind::Attempt, slot, d, e.at, tz));
        }
    }
    for t in &policy.due.at {
        out.push(at(
            seq,
            ActionKind::Attempt,
            format!("due:{}", hhmm(*t)),
            due,
            *t,
            tz,
        ));
    }
    out
}

/// The later advance notice that makes pre-due notice `slot` stale at `now`: one planned for
/// the same installment, due by `now` as well, and closer to the due date. After downtime
/// both are due at once; only the latest is worth sending (the texts say the same).
pub fn superseding_pre_due(
    policy: &Policy,
    tz: Tz,
    due: NaiveDate,
    slot: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let mine = policy
        .notices
        .before_due
        .iter()
        .find(|n| format!("pre:T-{}", n.days) == slot)?;
    let mine_at = local_to_utc(due - Days::new(mine.days as u64), mine.at, tz);
    policy
        .notices
        .before_due
        .iter()
        .map(|n| (n, local_to_utc(due - Days::new(n.days as u64), n.at, tz)))
        .filter(|(_, t)| *t > mine_at && *t <= now)
        .max_by_key(|(_, t)| *t)
        .map(|(n, _)| format!("pre:T-{}", n.days))
}

/// Days after the due date on which the overdue cadence attempts, up to the stop point.
pub fn overdue_days(policy: &Policy) -> Vec<u32> {
    let o = &policy.overdue;
    let stop = policy.limits.stop_after_days_past_due;
    let mut days: Vec<u32> = (1..=o.daily_for_days.min(stop)).collect();
    if o.then_every_days > 0 {
        let mut d = o.daily_for_days + o.then_every_days;
        while d <= stop {
            days.push(d);
            d += o.then_every_days;
        }
    }
    days
}

/// Actions after the due date, planned once the installment is overdue: the overdue cadence,
/// payday-aware attempts and overdue reminders.
pub fn plan_overdue(
    policy: &Policy,
    tz: Tz,
    seq: u32,
    due: NaiveDate,
    payday: Option<u32>,
) -> Vec<PlannedAction> {
    let mut out = Vec::new();
    for d in overdue_days(policy) {
        let date = due + Days::new(d as u64);
        out.push(at(
            seq,
            ActionKind::Attempt,
            format!("od:D+{d}"),
            date,
            policy.overdue.at,
            tz,
        ));
    }
    if let Some(day) = payday.filter(|_| policy.payday.enabled) {
        for date in payday_dates(policy, due, day) {
            let slot = format!("payday:{date}");
            out.push(at(
                seq,
                ActionKind::Attempt,
                slot,
                date,
                policy.payday.at,
                tz,
            ));
        }
    }
    let every = policy.notices.overdue_every_days;
    if every > 0 {
        let mut d = every;
        while d <= policy.limits.stop_after_days_past_due {
            let date = due + Days::new(d as u64);
            let slot = format!("remind:D+{d}");
            out.push(at(
                seq,
                ActionKind::Notice,
                slot,
                date,
                policy.notices.overdue_at,
                tz,
            ));
            d += every;
        }
    }
    out
}

/// Payday dates (plus the policy's offsets) strictly after `due`, within the stop window.
fn payday_dates(policy: &Policy, due: NaiveDate, day: u32) -> Vec<NaiveDate> {
    let last = due + Days::new(policy.limits.stop_after_days_past_due as u64);
    let mut out = Vec::new();
    let mut month = NaiveDate::from_ymd_opt(due.year(), due.month(), 1).expect("valid");
    while month <= last {
        let pay = clamp_day(month, day);
        for off in &policy.payday.days_after {
            let d = pay + Days::new(*off as u64);
            if d > due && d <= last && !out.contains(&d) {
                out.push(d);
            }
        }
        month = month
            .checked_add_months(chrono::Months::new(1))
            .expect("valid");
    }
    out
}

fn clamp_day(first_of_month: NaiveDate, day: u32) -> NaiveDate {
    let mut d = day;
    loop {
        if let Some(x) = first_of_month.with_day(d) {
            return x;
        }
        d -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::PolicySet;

    fn standard() -> Policy {
        PolicySet::builtin()
            .get("standard")
            .expect("shipped")
            .clone()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn plans_notices_early_and_due_slots_with_stable_keys() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let a = plan_installment(&standard(), tz, 1, d("2027-01-15"), true);
        let slots: Vec<&str> = a.iter().map(|x| x.slot.as_str()).collect();
        assert_eq!(
            slots,
            [
                "pre:T-3",
                "pre:T-1",
                "early:T-1@20:00",
                "due:08:00",
                "due:12:00",
                "due:20:00"
            ]
        );
        assert_eq!(
            a,
            plan_installment(&standard(), tz, 1, d("2027-01-15"), true),
            "deterministic"
        );
        let due8 = a.iter().find(|x| x.slot == "due:08:00").unwrap();
        assert_eq!(due8.due_at.to_rfc3339(), "2027-01-15T00:00:00+00:00");
        let no_early = plan_installment(&standard(), tz, 1, d("2027-01-15"), false);
        assert!(
            no_early.iter().all(|x| !x.slot.starts_with("early")),
            "contract forbids early debits"
        );
    }

    #[test]
    fn a_later_pre_due_notice_supersedes_an_earlier_one_due_with_it() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let due = d("2027-01-15");
        let plan = plan_installment(&standard(), tz, 1, due, true);
        let t1 = plan.iter().find(|x| x.slot == "pre:T-1").unwrap().due_at;
        let t3 = plan.iter().find(|x| x.slot == "pre:T-3").unwrap().due_at;
        // On time: T-3 runs alone and nothing supersedes it.
        assert_eq!(
            superseding_pre_due(&standard(), tz, due, "pre:T-3", t3),
            None
        );
        // After downtime both are due: T-3 is stale, T-1 goes out.
        assert_eq!(
            superseding_pre_due(&standard(), tz, due, "pre:T-3", t1),
            Some("pre:T-1".into())
        );
        assert_eq!(
            superseding_pre_due(&standard(), tz, due, "pre:T-1", t1),
            None
        );
    }

    #[test]
    fn overdue_cadence_daily_then_weekly_until_stop() {
        let days = overdue_days(&standard());
        assert_eq!(&days[..5], &[1, 2, 3, 10, 17]);
        assert!(days
            .iter()
            .all(|d| *d <= standard().limits.stop_after_days_past_due));
    }

    #[test]
    fn payday_attempts_fall_after_the_due_date() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let a = plan_overdue(&standard(), tz, 1, d("2027-01-15"), Some(20));
        let paydays: Vec<&str> = a
            .iter()
            .filter(|x| x.slot.starts_with("payday"))
            .map(|x| x.slot.as_str())
            .take(3)
            .collect();
        assert_eq!(
            paydays,
            [
                "payday:2027-01-20",
                "payday:2027-01-21",
                "payday:2027-02-20"
            ]
        );
        // Payday 31 clamps to the month's last day.
        let a = plan_overdue(&standard(), tz, 1, d("2027-01-31"), Some(31));
        assert!(a.iter().any(|x| x.slot == "payday:2027-02-28"));
    }

    #[test]
    fn slots_keep_local_time_across_dst() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let before = plan_installment(&standard(), ny, 1, d("2026-03-07"), false);
        let after = plan_installment(&standard(), ny, 2, d("2026-03-08"), false);
        let at = |v: &[PlannedAction]| {
            v.iter()
                .find(|x| x.slot == "due:08:00")
                .unwrap()
                .due_at
                .to_rfc3339()
        };
        assert_eq!(at(&before), "2026-03-07T13:00:00+00:00");
        assert_eq!(at(&after), "2026-03-08T12:00:00+00:00");
    }
}
