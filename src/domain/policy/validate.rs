//! Semantic checks of a parsed policy: every problem, with the path of its field.

use super::locate::{indexed, keys, Seg};
use super::*;

// ---------------------------------------------------------------------------------------------
// Semantic validation
// ---------------------------------------------------------------------------------------------

pub(super) struct Issue {
    pub(super) path: Vec<Seg>,
    pub(super) message: String,
}

#[derive(Default)]
pub(super) struct Issues(Vec<Issue>);

impl Issues {
    fn add(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.0.push(Issue {
            path,
            message: message.into(),
        });
    }
}

pub(super) fn validate(p: &Policy) -> Vec<Issue> {
    let mut v = Issues::default();
    check_identity(p, &mut v);
    check_notices(&p.notices, &mut v);
    check_quiet_hours(&p.notices, &mut v);
    check_early(&p.early, &mut v);
    check_due(&p.due, &mut v);
    check_overdue(p, &mut v);
    check_payday(&p.payday, &mut v);
    check_limits(&p.limits, &mut v);
    check_ladder(p, &mut v);
    check_penalty(&p.penalty, &mut v);
    check_allocation(&p.allocation, &mut v);
    check_buckets(&p.delinquency.buckets, &mut v);
    check_codes(&p.codes, &mut v);
    v.0
}

/// Indices of items equal to an earlier item.
pub(super) fn repeats<T: PartialEq>(items: &[T]) -> Vec<usize> {
    (0..items.len())
        .filter(|&i| items[..i].contains(&items[i]))
        .collect()
}

pub(super) fn hm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

pub(super) fn check_identity(p: &Policy, v: &mut Issues) {
    if p.name.trim().is_empty() {
        v.add(keys(&["name"]), "must not be empty");
    } else if p.name.trim() != p.name {
        v.add(keys(&["name"]), "must not start or end with spaces");
    }
    if p.version == 0 {
        v.add(keys(&["version"]), "must be at least 1");
    }
}

pub(super) fn check_notices(n: &NoticePolicy, v: &mut Issues) {
    for i in repeats(&n.channels) {
        v.add(
            indexed(&["notices", "channels"], i),
            format!("`{}` is listed twice", n.channels[i]),
        );
    }
    for i in repeats(&n.before_due) {
        let d = n.before_due[i];
        v.add(
            indexed(&["notices", "before_due"], i),
            format!("T-{} at {} is listed twice", d.days, hm(d.at)),
        );
    }
    if n.daily_cap == 0 && !n.channels.is_empty() {
        v.add(
            keys(&["notices", "daily_cap"]),
            "must be at least 1 when channels are set",
        );
    }
}

pub(super) fn check_quiet_hours(n: &NoticePolicy, v: &mut Issues) {
    let path = |i| indexed(&["notices", "quiet_hours"], i);
    for (i, q) in n.quiet_hours.iter().enumerate() {
        if q.start == q.end {
            v.add(
                path(i),
                format!("start equals end ({}): the window is empty", hm(q.start)),
            );
            continue;
        }
        let earlier = n.quiet_hours[..i]
            .iter()
            .enumerate()
            .filter(|(_, o)| o.start != o.end);
        for (j, other) in earlier.filter(|(_, o)| q.overlaps(o)) {
            v.add(path(i), format!("{q} overlaps quiet_hours[{j}] ({other})"));
        }
    }
    let in_quiet = |t: NaiveTime| {
        n.quiet_hours
            .iter()
            .find(|q| q.start != q.end && q.contains(t))
    };
    for (i, d) in n.before_due.iter().enumerate() {
        if let Some(q) = in_quiet(d.at) {
            let mut path = indexed(&["notices", "before_due"], i);
            path.push(Seg::Key("at".into()));
            v.add(path, format!("{} falls in quiet hours {q}", hm(d.at)));
        }
    }
    if let Some(q) = in_quiet(n.overdue_at).filter(|_| n.overdue_every_days > 0) {
        v.add(
            keys(&["notices", "overdue_at"]),
            format!("{} falls in quiet hours {q}", hm(n.overdue_at)),
        );
    }
}

pub(super) fn check_early(e: &EarlyPolicy, v: &mut Issues) {
    if e.allowed && e.slots.is_empty() {
        v.add(
            keys(&["early", "slots"]),
            "early attempts are allowed but no slots are given",
        );
    }
    for (i, s) in e.slots.iter().enumerate().filter(|(_, s)| s.days == 0) {
        let mut path = indexed(&["early", "slots"], i);
        path.push(Seg::Key("days".into()));
        v.add(
            path,
            format!(
                "must be at least 1: early slots are days before the due date (at {})",
                hm(s.at)
            ),
        );
    }
    for i in repeats(&e.slots) {
        v.add(indexed(&["early", "slots"], i), "this slot is listed twice");
    }
}

pub(super) fn check_due(d: &DuePolicy, v: &mut Issues) {
    if d.at.is_empty() {
        v.add(
            keys(&["due", "at"]),
            "at least one due-date attempt time is required",
        );
    }
    for i in repeats(&d.at) {
        v.add(
            indexed(&["due", "at"], i),
            format!("{} is listed twice", hm(d.at[i])),
        );
    }
}

pub(super) fn check_overdue(p: &Policy, v: &mut Issues) {
    let (o, stop) = (&p.overdue, p.limits.stop_after_days_past_due);
    // Daily attempts that last until auto-debit stops need no "then" interval.
    if o.then_every_days == 0 && o.daily_for_days < stop {
        let message = format!(
            "must be at least 1: daily attempts end after {} days but auto-debit runs until \
             {stop} days past due (to stop earlier, lower limits.stop_after_days_past_due)",
            o.daily_for_days
        );
        v.add(keys(&["overdue", "then_every_days"]), message);
    }
}

pub(super) fn check_payday(p: &PaydayPolicy, v: &mut Issues) {
    if p.enabled && p.days_after.is_empty() {
        v.add(
            keys(&["payday", "days_after"]),
            "payday attempts are enabled but no days are given",
        );
    }
    for i in repeats(&p.days_after) {
        v.add(
            indexed(&["payday", "days_after"], i),
            format!("{} is listed twice", p.days_after[i]),
        );
    }
}

pub(super) fn check_limits(l: &Limits, v: &mut Issues) {
    if l.max_attempts_per_installment == 0 {
        v.add(
            keys(&["limits", "max_attempts_per_installment"]),
            "must be at least 1",
        );
    }
    if l.residue_threshold < Decimal::ZERO || l.residue_threshold.normalize().scale() > 2 {
        v.add(
            keys(&["limits", "residue_threshold"]),
            "must be an amount of at least 0 with at most 2 decimals",
        );
    }
    if l.write_off_after_days_past_due == Some(0) {
        v.add(
            keys(&["limits", "write_off_after_days_past_due"]),
            "must be at least 1 (omit it to never write off automatically)",
        );
    }
}

pub(super) fn check_ladder(p: &Policy, v: &mut Issues) {
    let l = &p.ladder;
    if l.steps.is_empty() {
        v.add(
            keys(&["ladder", "steps"]),
            "at least one step is required; [1] asks for the full amount only",
        );
    }
    for (i, &step) in l.steps.iter().enumerate() {
        let path = indexed(&["ladder", "steps"], i);
        if step <= Decimal::ZERO || step > Decimal::ONE {
            v.add(
                path,
                format!("{step} is not in (0, 1]: a step is a share of the amount due"),
            );
        } else if i > 0 && step >= l.steps[i - 1] {
            v.add(
                path,
                format!(
                    "{step} must be smaller than the step before it ({})",
                    l.steps[i - 1]
                ),
            );
        }
    }
    if let Err(e) = parse_money(&l.min_amount.to_string()) {
        v.add(keys(&["ladder", "min_amount"]), e.to_string());
    }
    let soft_somewhere = |code: &str| {
        p.codes
            .values()
            .any(|t| t.classify(code) == FailureClass::Soft)
    };
    for (i, code) in l
        .on_codes
        .iter()
        .enumerate()
        .filter(|(_, c)| !soft_somewhere(c))
    {
        let message = format!("`{code}` is not a soft failure in any code table; the ladder only follows soft failures");
        v.add(indexed(&["ladder", "on_codes"], i), message);
    }
}

pub(super) fn check_penalty(p: &PenaltyPolicy, v: &mut Issues) {
    let r = p.daily_rate;
    if r < Decimal::ZERO || r >= Decimal::ONE {
        let message =
            format!("{r} is not in [0, 1): it is a daily fraction, e.g. 0.0005 = 0.05% a day");
        v.add(keys(&["penalty", "daily_rate"]), message);
    }
}

pub(super) fn check_allocation(a: &AllocationPolicy, v: &mut Issues) {
    for i in repeats(&a.order) {
        v.add(
            indexed(&["allocation", "order"], i),
            format!("`{}` is listed twice", a.order[i]),
        );
    }
    for c in Component::ALL.iter().filter(|c| !a.order.contains(c)) {
        let message =
            format!("`{c}` is missing: list penalty, fee, interest and principal once each");
        v.add(keys(&["allocation", "order"]), message);
    }
}

pub(super) fn check_buckets(buckets: &[BucketDef], v: &mut Issues) {
    let field = |i, name: &str| {
        let mut path = indexed(&["delinquency", "buckets"], i);
        path.push(Seg::Key(name.into()));
        path
    };
    let names: Vec<&str> = buckets.iter().map(|b| b.name.as_str()).collect();
    for (i, b) in buckets.iter().enumerate() {
        if b.name.trim().is_empty() {
            v.add(field(i, "name"), "must not be empty");
        } else if repeats(&names).contains(&i) {
            v.add(field(i, "name"), format!("`{}` is used twice", b.name));
        }
        if b.to.is_some_and(|to| to < b.from) {
            v.add(
                field(i, "to"),
                format!("ends before it starts ({})", b.from),
            );
        }
        if i > 0 {
            check_bucket_order(&buckets[i - 1], b, field(i, "from"), v);
        }
    }
}

pub(super) fn check_bucket_order(prev: &BucketDef, b: &BucketDef, path: Vec<Seg>, v: &mut Issues) {
    let Some(prev_to) = prev.to else {
        let message = format!(
            "follows open-ended bucket `{}`: only the last bucket may omit `to`",
            prev.name
        );
        return v.add(path, message);
    };
    let range = format!("`{}` ({}–{prev_to})", prev.name, prev.from);
    if b.from <= prev.from {
        v.add(
            path,
            format!(
                "buckets must ascend: {} does not come after {range}",
                b.from
            ),
        );
    } else if b.from <= prev_to {
        v.add(path, format!("{} overlaps {range}", b.from));
    } else if b.from > prev_to + 1 {
        v.add(
            path,
            format!("days {}–{} fall in no bucket", prev_to + 1, b.from - 1),
        );
    }
}

pub(super) fn check_codes(codes: &BTreeMap<String, CodeTable>, v: &mut Issues) {
    for (channel, table) in codes {
        let mut seen: Vec<(&str, FailureClass)> = Vec::new();
        for (class, list) in table.lists() {
            for (i, code) in list.iter().enumerate() {
                let path = indexed(&["codes", channel, class.as_str()], i);
                if code.trim().is_empty() {
                    v.add(path, "a code must not be empty");
                } else if let Some((_, first)) = seen.iter().find(|(c, _)| c == code) {
                    v.add(path, format!("`{code}` is already listed as {first}"));
                }
                seen.push((code, class));
            }
        }
    }
}
