//! Applying channel results to loans: allocation, ledger entries, mandate status and notices,
//! accumulated in [`Writes`] and written in one transaction by [`flush`].

use super::EngineError;
use crate::domain::channel::{ChannelError, DebitOutcome, QueryOutcome};
use crate::domain::ledger::{self, Entry};
use crate::domain::loan::{LoanState, MandateState};
use crate::domain::notice::{self, NoticeFacts, NoticeKind, NoticeRow};
use crate::domain::policy::Policy;
use crate::domain::status::AttemptStatus;
use crate::domain::status::{InstallmentStatus, LoanStatus, MandateStatus};
use crate::domain::{allocate, local_date, to_minor, Allocation, FailureClass, Outstanding};
use crate::store::attempts::{self as store_attempts, AttemptUpdate};
use crate::store::{alloc_on, Rows, Val};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::AnyConnection;
use std::collections::{HashMap, HashSet};

pub use crate::domain::pursuit::AttemptRec;

/// A channel's answer, classified by the loan's policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Succeeded {
        amount: Decimal,
        channel_ref: String,
    },
    Failed {
        code: String,
        class: FailureClass,
    },
    Unknown {
        code: String,
    },
}

impl Verdict {
    pub fn outcome_name(&self) -> &'static str {
        match self {
            Verdict::Succeeded { .. } => "succeeded",
            Verdict::Failed {
                class: FailureClass::Hard,
                ..
            } => "failed_hard",
            Verdict::Failed { .. } => "failed_soft",
            Verdict::Unknown { .. } => "unknown",
        }
    }
}

/// Classify a submit result. Transport errors that may have debited are unknown.
pub fn verdict_of_submit(
    policy: &Policy,
    channel: &str,
    r: Result<DebitOutcome, ChannelError>,
) -> Verdict {
    match r {
        Ok(o) => verdict_of(policy, channel, o),
        Err(e) if e.may_have_debited() => Verdict::Unknown {
            code: "TRANSPORT".into(),
        },
        Err(e) => Verdict::Failed {
            code: format!("REJECTED: {e}"),
            class: FailureClass::Soft,
        },
    }
}

/// Classify a query result. `NotFound` is a failure only once the channel has had time to see
/// the order (after a few queries); before that it stays unknown.
pub fn verdict_of_query(
    policy: &Policy,
    channel: &str,
    r: Result<QueryOutcome, ChannelError>,
    queries: u32,
) -> Verdict {
    match r {
        Ok(QueryOutcome::Found(o)) => verdict_of(policy, channel, o),
        Ok(QueryOutcome::NotFound) if queries >= 2 => Verdict::Failed {
            code: crate::domain::NOT_FOUND.into(),
            class: FailureClass::Soft,
        },
        Ok(QueryOutcome::NotFound) => Verdict::Unknown {
            code: crate::domain::NOT_FOUND.into(),
        },
        Err(_) => Verdict::Unknown {
            code: "QUERY_FAILED".into(),
        },
    }
}

fn verdict_of(policy: &Policy, channel: &str, o: DebitOutcome) -> Verdict {
    match o {
        DebitOutcome::Succeeded {
            channel_ref,
            amount,
        } => Verdict::Succeeded {
            amount,
            channel_ref,
        },
        DebitOutcome::Unknown { code } => Verdict::Unknown { code },
        DebitOutcome::Failed { code, .. } => match policy.classify(channel, &code) {
            FailureClass::Unknown => Verdict::Unknown { code },
            class => Verdict::Failed { code, class },
        },
    }
}

/// Rows to write for a set of results, in one transaction.
#[derive(Debug, Default)]
pub struct Writes {
    attempts: Vec<AttemptUpdate>,
    entries: Vec<Entry>,
    pub notices: Vec<NoticeRow>,
    paid: Vec<(String, u32)>,
    pub collected: Decimal,
    /// What each loan's repayments collected, so a loan's writes can be dropped whole.
    repaid: Vec<(String, Decimal)>,
    write_offs: Vec<WriteOffRec>,
}

impl Writes {
    /// Take over what `other` staged (one loan's writes, staged apart so that a failure
    /// leaves nothing half-staged).
    pub fn merge(&mut self, other: Writes) {
        let base = self.entries.len();
        self.attempts.extend(other.attempts);
        self.entries.extend(other.entries);
        self.notices.extend(other.notices);
        self.paid.extend(other.paid);
        self.collected += other.collected;
        self.repaid.extend(other.repaid);
        self.write_offs
            .extend(other.write_offs.into_iter().map(|mut wo| {
                wo.entry_idx = wo.entry_idx.map(|i| i + base);
                wo
            }));
    }
}

impl Writes {
    /// Whether everything staged can be stored: entries balance and every amount fits the
    /// database's minor units. Checked per loan before a batch is flushed, so a loan whose
    /// figures cannot be stored fails alone.
    pub fn check(&self) -> Result<(), String> {
        for e in &self.entries {
            e.check_balanced().map_err(|e| e.to_string())?;
            for l in &e.lines {
                to_minor(l.debit).map_err(|e| e.to_string())?;
                to_minor(l.credit).map_err(|e| e.to_string())?;
            }
        }
        for wo in &self.write_offs {
            to_minor(wo.amount).map_err(|e| e.to_string())?;
        }
        to_minor(self.collected).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Stage an attempt as `unknown`, to be queried, without touching its loan (whose state
/// could not be trusted).
pub fn stage_unknown(
    att: &AttemptRec,
    code: &str,
    now: DateTime<Utc>,
    ctx: &ApplyCtx,
    w: &mut Writes,
) {
    let mut u = update(
        att,
        AttemptStatus::Unknown,
        Some(code.into()),
        Some("unknown".into()),
        None,
    );
    u.next_query_at = Some(next_query_at(now, att.queries, ctx.backoff).timestamp_millis());
    w.attempts.push(u);
}

/// A write-off staged with its entry (by position in `Writes::entries`; none when no
/// principal was left to write off).
#[derive(Debug)]
struct WriteOffRec {
    loan_id: String,
    kind: &'static str,
    reason: String,
    actor: String,
    amount: Decimal,
    entry_idx: Option<usize>,
    /// What is written off per installment.
    parts: Vec<Outstanding>,
}

/// Why a loan is written off; stored in `write_offs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOffKind {
    /// Past the policy's write-off point.
    Policy,
    /// By a person (`repayd write-off`).
    Admin,
    /// What is left after a payment is at or below the policy's residue threshold.
    Residue,
}

impl WriteOffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOffKind::Policy => "policy",
            WriteOffKind::Admin => "admin",
            WriteOffKind::Residue => "residue",
        }
    }
}

/// Stage writing off everything the loan still owes: each open installment's remaining
/// components go to `wo_*` and its status to `written_off`, the loan to `written_off`, its
/// pending actions are cancelled at flush. Only principal has ledger lines (cash basis).
/// Returns the total written off, or `None` when nothing is owed.
pub fn stage_write_off(
    loan: &mut LoanState,
    kind: WriteOffKind,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
    w: &mut Writes,
) -> Option<Decimal> {
    let mut parts = Vec::new();
    for i in loan.insts.iter_mut() {
        if i.status == InstallmentStatus::WrittenOff || i.owed() <= Decimal::ZERO {
            continue;
        }
        parts.push(i.outstanding());
        i.status = InstallmentStatus::WrittenOff;
        i.dirty = true;
    }
    let amount: Decimal = parts.iter().map(|p| p.total()).sum();
    if parts.is_empty() || amount <= Decimal::ZERO {
        return None;
    }
    loan.status = LoanStatus::WrittenOff;
    loan.dirty = true;
    let principal: Vec<(u32, Decimal)> = parts.iter().map(|p| (p.seq, p.principal)).collect();
    let lines = ledger::write_off_lines(&principal);
    let entry_idx = (!lines.is_empty()).then(|| {
        w.entries.push(Entry {
            id: 0,
            kind: "write_off",
            loan_id: Some(loan.id.clone()),
            currency: loan.currency.clone(),
            attempt_id: None,
            posted_at: now.timestamp_millis(),
            memo: format!("write-off ({}) of {}: {reason}", kind.as_str(), loan.id),
            lines,
        });
        w.entries.len() - 1
    });
    w.write_offs.push(WriteOffRec {
        loan_id: loan.id.clone(),
        kind: kind.as_str(),
        reason: reason.to_string(),
        actor: actor.to_string(),
        amount,
        entry_idx,
        parts,
    });
    tracing::info!(loan = %loan.id, kind = kind.as_str(), %amount, "loan written off");
    Some(amount)
}

/// When an unknown attempt is queried next: by default 1 minute, 5 minutes, 1 hour, then
/// daily (`EngineConfig::query_backoff_secs`).
pub fn next_query_at(now: DateTime<Utc>, queries: u32, backoff: &[i64]) -> DateTime<Utc> {
    let secs = backoff
        .get(queries as usize)
        .or(backoff.last())
        .copied()
        .unwrap_or(60);
    now + Duration::seconds(secs)
}

/// Settings that applying a verdict needs from the engine.
pub struct ApplyCtx<'a> {
    pub render: &'a crate::domain::notice::NoticeRender,
    pub backoff: &'a [i64],
}

impl<'a> ApplyCtx<'a> {
    pub fn of(cfg: &'a super::EngineConfig) -> Self {
        ApplyCtx {
            render: &cfg.render,
            backoff: &cfg.query_backoff_secs,
        }
    }
}

/// Record a verdict on the attempt and apply its consequences to the loan.
/// Returns what is still owed (due now) after it, for the pursuit to decide what is next.
pub fn apply_verdict(
    loan: &mut LoanState,
    policy: &Policy,
    att: &AttemptRec,
    v: &Verdict,
    now: DateTime<Utc>,
    ctx: &ApplyCtx,
    w: &mut Writes,
) {
    let _span = tracing::info_span!("attempt", order_no = %att.order_no, loan = %att.loan_id,
        amount = %att.amount, step = att.ladder_step)
    .entered();
    tracing::debug!(outcome = v.outcome_name(), "attempt result");
    match v {
        Verdict::Succeeded {
            amount,
            channel_ref,
        } => {
            w.attempts.push(update(
                att,
                AttemptStatus::Succeeded,
                None,
                None,
                Some(channel_ref.clone()),
            ));
            post_repayment(loan, policy, att, *amount, now, w);
        }
        Verdict::Failed { code, class } => {
            w.attempts.push(update(
                att,
                AttemptStatus::Failed,
                Some(code.clone()),
                Some(class.as_str().into()),
                None,
            ));
            if *class == FailureClass::Hard {
                invalidate_mandate(loan, policy, att, code, now, ctx.render, w);
            }
        }
        Verdict::Unknown { code } => {
            let mut u = update(
                att,
                AttemptStatus::Unknown,
                Some(code.clone()),
                Some("unknown".into()),
                None,
            );
            u.next_query_at = Some(next_query_at(now, att.queries, ctx.backoff).timestamp_millis());
            w.attempts.push(u);
            loan.open_attempt = true;
        }
    }
}

fn update(
    att: &AttemptRec,
    status: AttemptStatus,
    code: Option<String>,
    class: Option<String>,
    channel_ref: Option<String>,
) -> AttemptUpdate {
    AttemptUpdate {
        id: att.id,
        loan_id: att.loan_id.clone(),
        status,
        code,
        class,
        channel_ref,
        next_query_at: None,
        queries: att.queries,
    }
}

/// Allocate a collected amount (installments due now first, then later ones, then
/// overpayment) and stage its ledger entry.
fn post_repayment(
    loan: &mut LoanState,
    policy: &Policy,
    att: &AttemptRec,
    amount: Decimal,
    now: DateTime<Utc>,
    w: &mut Writes,
) {
    let today = local_date(now, loan.tz);
    let (mut due, mut later) = (Vec::new(), Vec::new());
    for i in loan
        .insts
        .iter()
        .filter(|i| i.status != InstallmentStatus::WrittenOff)
    {
        if i.due <= today || i.seq == att.seq {
            due.push(i.outstanding());
        } else {
            later.push(i.outstanding());
        }
    }
    let order = &policy.allocation.order;
    let walk = policy.allocation.installments;
    let (mut allocs, rest) = allocate(amount, &due, order, walk);
    let (later_allocs, over) = allocate(rest, &later, order, walk);
    allocs.extend(later_allocs);
    apply_allocations(loan, &allocs, now, w);
    // Only a real change is written back (the row is otherwise left as it is).
    if loan.ladder_pos != 0 {
        loan.ladder_pos = 0;
        loan.dirty = true;
    }
    if loan.fully_paid() && loan.status != LoanStatus::Paid {
        loan.status = LoanStatus::Paid;
        loan.dirty = true;
    }
    w.collected += amount;
    w.repaid.push((loan.id.clone(), amount));
    w.entries.push(Entry {
        id: 0,
        kind: "repayment",
        loan_id: Some(loan.id.clone()),
        currency: loan.currency.clone(),
        attempt_id: Some(att.id),
        posted_at: now.timestamp_millis(),
        memo: format!("repayment {} via {}", att.order_no, att.channel),
        lines: ledger::repayment_lines(&att.channel, amount, &allocs, over),
    });
    write_off_residue(loan, policy, att, now, w);
}

/// A payment that leaves the loan owing no more than the policy's residue threshold writes
/// the rest off, so a few cents are not pursued for months.
fn write_off_residue(
    loan: &mut LoanState,
    policy: &Policy,
    att: &AttemptRec,
    now: DateTime<Utc>,
    w: &mut Writes,
) {
    let threshold = policy.limits.residue_threshold;
    let left: Decimal = loan
        .insts
        .iter()
        .filter(|i| i.status != InstallmentStatus::WrittenOff)
        .map(|i| i.owed())
        .sum();
    if threshold > Decimal::ZERO && left > Decimal::ZERO && left <= threshold {
        let reason = format!("residue {left} after {}", att.order_no);
        stage_write_off(loan, WriteOffKind::Residue, &reason, "system", now, w);
    }
}

fn apply_allocations(
    loan: &mut LoanState,
    allocs: &[Allocation],
    now: DateTime<Utc>,
    w: &mut Writes,
) {
    use crate::domain::Component::*;
    let loan_id = loan.id.clone();
    for a in allocs {
        let Some(inst) = loan.inst_mut(a.seq) else {
            continue;
        };
        match a.component {
            Penalty => inst.paid.penalty += a.amount,
            Fee => inst.paid.fee += a.amount,
            Interest => inst.paid.interest += a.amount,
            Principal => inst.paid.principal += a.amount,
        }
        inst.dirty = true;
        if inst.owed() <= Decimal::ZERO && inst.status != InstallmentStatus::Paid {
            inst.status = InstallmentStatus::Paid;
            inst.paid_at = Some(now.timestamp_millis());
            w.paid.push((loan_id.clone(), inst.seq));
        }
    }
}

fn invalidate_mandate(
    loan: &mut LoanState,
    policy: &Policy,
    att: &AttemptRec,
    code: &str,
    now: DateTime<Utc>,
    render: &crate::domain::notice::NoticeRender,
    w: &mut Writes,
) {
    let Some(m) = loan.mandates.iter_mut().find(|m| m.id == att.mandate_id) else {
        return;
    };
    if m.status != MandateStatus::Active {
        return;
    }
    m.status = MandateStatus::Invalid;
    m.status_code = Some(code.to_string());
    m.dirty = true;
    let account = m.account_masked.clone();
    let facts = NoticeFacts {
        seq: Some(att.seq),
        amount: loan.owed_through(local_date(now, loan.tz), Some(att.seq)),
        remaining: Decimal::ZERO,
        due: loan.insts.first().map(|i| i.due),
        account_masked: account,
    };
    let key = att.mandate_id.to_string();
    w.notices.extend(notice::notice_rows(
        NoticeKind::Rebind,
        &key,
        loan,
        policy,
        &facts,
        render,
        now,
    ));
}

/// What a flush wrote: the amount collected and the notices queued, without the writes of
/// loans whose answers came late.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Flushed {
    /// Collected by the flushed repayments, per currency (never one mixed total).
    pub collected: std::collections::BTreeMap<String, Decimal>,
    pub notices: usize,
}

/// Write staged results: attempts, journal, installments, mandates, loans, notices, and
/// cancel the pending actions of whatever got paid.
///
/// An attempt settled meanwhile (by a callback's query, a statement or another instance)
/// is no longer open; the answer staged for it is late, and so is everything its loan's
/// state was computed from. That loan's writes are dropped and the loan is taken out of
/// `loans`, so no ledger line, installment update or notice goes in twice.
pub async fn flush(
    conn: &mut AnyConnection,
    loans: &mut HashMap<String, LoanState>,
    mut w: Writes,
    now: DateTime<Utc>,
) -> Result<Flushed, EngineError> {
    let ids: Vec<i64> = w.attempts.iter().map(|u| u.id).collect();
    let open = store_attempts::lock_open(conn, &ids).await?;
    let late = w.late_loans(&open);
    if !late.is_empty() {
        tracing::warn!(loans = ?late, "late answers for settled attempts: their loans' writes are dropped");
        w.drop_loans(&late, &open, now);
        loans.retain(|id, _| !late.contains(id));
    }
    store_attempts::write_attempts(conn, &w.attempts, now.timestamp_millis()).await?;
    if !w.entries.is_empty() {
        // Entries numbered by the caller keep their ids.
        if w.entries.iter().any(|e| e.id == 0) {
            let first = alloc_on(conn, "entry", w.entries.len() as i64).await?;
            for (i, e) in w.entries.iter_mut().enumerate() {
                e.id = first + i as i64;
            }
        }
        crate::store::ledger::post_entries(conn, &w.entries).await?;
    }
    write_loans(conn, loans).await?;
    write_write_offs(conn, &w.write_offs, &w.entries, now).await?;
    crate::store::notices::queue_notices(conn, &w.notices, now).await?;
    cancel_paid(conn, &w.paid, loans).await?;
    Ok(Flushed {
        collected: collected_by_currency(&w.entries),
        notices: w.notices.len(),
    })
}

/// What the repayment entries took into clearing (their debits), per currency.
fn collected_by_currency(entries: &[Entry]) -> std::collections::BTreeMap<String, Decimal> {
    let mut out = std::collections::BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == "repayment") {
        let amount: Decimal = e.lines.iter().map(|l| l.debit).sum();
        *out.entry(e.currency.clone()).or_default() += amount;
    }
    out
}

impl Writes {
    /// How many ledger entries are staged (to be numbered before the flush).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Number the staged entries from `first` on.
    pub fn number_entries(&mut self, first: i64) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.id = first + i as i64;
        }
    }

    /// Loans with a staged result for an attempt that is no longer open.
    fn late_loans(&self, open: &HashSet<i64>) -> HashSet<String> {
        self.attempts
            .iter()
            .filter(|u| !open.contains(&u.id))
            .map(|u| u.loan_id.clone())
            .collect()
    }

    /// Drop everything staged for `late` loans. Their other, still open attempts are not
    /// lost: they become `unknown`, due for a query now, and are settled from a fresh state.
    fn drop_loans(&mut self, late: &HashSet<String>, open: &HashSet<i64>, now: DateTime<Utc>) {
        let is_late = |id: &str| late.contains(id);
        self.attempts.retain(|u| open.contains(&u.id));
        for u in self.attempts.iter_mut().filter(|u| is_late(&u.loan_id)) {
            u.status = AttemptStatus::Unknown;
            u.code = Some("LATE_SIBLING".into());
            u.class = Some(FailureClass::Unknown.as_str().into());
            u.channel_ref = None;
            u.next_query_at = Some(now.timestamp_millis());
        }
        // Write-offs point into `entries` by position: renumber the kept ones.
        let mut kept = Vec::with_capacity(self.entries.len());
        let mut new_idx = vec![None; self.entries.len()];
        for (i, e) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            if !e.loan_id.as_deref().is_some_and(is_late) {
                new_idx[i] = Some(kept.len());
                kept.push(e);
            }
        }
        self.entries = kept;
        self.write_offs.retain(|wo| !is_late(&wo.loan_id));
        for wo in &mut self.write_offs {
            wo.entry_idx = wo.entry_idx.and_then(|i| new_idx[i]);
        }
        self.notices.retain(|n| !is_late(&n.loan_id));
        self.paid.retain(|(l, _)| !is_late(l));
        self.repaid.retain(|(l, _)| !is_late(l));
        self.collected = self.repaid.iter().map(|(_, a)| *a).sum();
    }
}

/// The `write_offs` rows and the installments' `wo_*` columns of staged write-offs.
async fn write_write_offs(
    conn: &mut AnyConnection,
    wos: &[WriteOffRec],
    entries: &[Entry],
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    if wos.is_empty() {
        return Ok(());
    }
    let first = alloc_on(conn, "write_off", wos.len() as i64).await?;
    let mut rows = Rows::new(8);
    let mut insts = Rows::new(6);
    for (i, wo) in wos.iter().enumerate() {
        rows.push(vec![
            Val::Int(first + i as i64),
            wo.loan_id.clone().into(),
            Val::Int(to_minor(wo.amount)?),
            wo.kind.into(),
            wo.reason.clone().into(),
            wo.actor.clone().into(),
            wo.entry_idx.map(|i| entries[i].id).into(),
            Val::Int(now.timestamp_millis()),
        ]);
        for p in &wo.parts {
            insts.push(vec![
                wo.loan_id.clone().into(),
                p.seq.into(),
                Val::Int(to_minor(p.principal)?),
                Val::Int(to_minor(p.interest)?),
                Val::Int(to_minor(p.fee)?),
                Val::Int(to_minor(p.penalty)?),
            ]);
        }
    }
    rows.insert(
        conn,
        "INSERT INTO write_offs (id, loan_id, amount, kind, reason, actor, entry_id, created_at)",
        "",
    )
    .await?;
    insts
        .with_values(
            conn,
            "loan_id, seq, wp, wi, wf, wn",
            "UPDATE installments SET wo_principal = installments.wo_principal + v.wp, \
             wo_interest = installments.wo_interest + v.wi, wo_fee = installments.wo_fee + v.wf, \
             wo_penalty = installments.wo_penalty + v.wn, status = 'written_off' \
             FROM v WHERE installments.loan_id = v.loan_id AND installments.seq = v.seq",
        )
        .await?;
    let mut loans = Rows::new(1);
    for wo in wos {
        loans.push(vec![wo.loan_id.clone().into()]);
    }
    loans
        .with_values(
            conn,
            "loan_id",
            "UPDATE actions SET status = 'cancelled', note = 'loan written off' FROM v \
             WHERE actions.loan_id = v.loan_id AND actions.status || '' = 'pending'",
        )
        .await?;
    Ok(())
}

/// Write back dirty installments, mandates and loans, then clear their dirty flags.
pub async fn write_loans(
    conn: &mut AnyConnection,
    loans: &mut HashMap<String, LoanState>,
) -> Result<(), EngineError> {
    let mut insts = Rows::new(9);
    let mut mandates = Rows::new(3);
    let mut loan_rows = Rows::new(3);
    for l in loans.values_mut() {
        for i in l.insts.iter_mut().filter(|i| i.dirty) {
            insts.push(vec![
                l.id.clone().into(),
                i.seq.into(),
                to_minor(i.paid.principal)?.into(),
                to_minor(i.paid.interest)?.into(),
                to_minor(i.paid.fee)?.into(),
                to_minor(i.paid.penalty)?.into(),
                i.status.as_str().into(),
                i.attempts.into(),
                i.paid_at.into(),
            ]);
            i.dirty = false;
        }
        for m in l.mandates.iter_mut().filter(|m| m.dirty) {
            mandates.push(mandate_row(m));
            m.dirty = false;
        }
        if l.dirty {
            loan_rows.push(vec![
                l.id.clone().into(),
                l.status.as_str().into(),
                l.ladder_pos.into(),
            ]);
            l.dirty = false;
        }
    }
    if !insts.is_empty() {
        insts
            .with_values(
                conn,
                "loan_id, seq, pp, pi, pf, pn, status, attempts, paid_at",
                "UPDATE installments SET paid_principal = v.pp, paid_interest = v.pi, paid_fee = v.pf, \
                 paid_penalty = v.pn, status = v.status, attempts = v.attempts, paid_at = v.paid_at \
                 FROM v WHERE installments.loan_id = v.loan_id AND installments.seq = v.seq",
            )
            .await?;
    }
    if !mandates.is_empty() {
        mandates
            .with_values(
                conn,
                "id, status, code",
                "UPDATE mandates SET status = v.status, status_code = v.code FROM v WHERE mandates.id = v.id",
            )
            .await?;
    }
    if !loan_rows.is_empty() {
        loan_rows
            .with_values(
                conn,
                "id, status, ladder_pos",
                "UPDATE loans SET status = v.status, ladder_pos = v.ladder_pos FROM v WHERE loans.id = v.id",
            )
            .await?;
    }
    Ok(())
}

fn mandate_row(m: &MandateState) -> Vec<Val> {
    vec![
        Val::Int(m.id),
        m.status.as_str().into(),
        m.status_code.clone().into(),
    ]
}

/// A paid installment stops all its pending actions; a paid loan stops everything.
///
/// `status || ''` keeps SQLite from driving these joins from the status index (scanning every
/// pending action and probing `v` for each); the key lookup from `v` is what we want.
async fn cancel_paid(
    conn: &mut AnyConnection,
    paid: &[(String, u32)],
    loans: &HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    if paid.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(2);
    for (loan, seq) in paid {
        rows.push(vec![loan.clone().into(), (*seq).into()]);
    }
    rows.with_values(
        conn,
        "loan_id, seq",
        "UPDATE actions SET status = 'cancelled', note = 'installment paid' FROM v \
         WHERE actions.loan_id = v.loan_id AND actions.seq = v.seq AND actions.status || '' = 'pending'",
    )
    .await?;
    let mut done = Rows::new(1);
    for l in loans.values().filter(|l| l.status == LoanStatus::Paid) {
        done.push(vec![l.id.clone().into()]);
    }
    if !done.is_empty() {
        done.with_values(
            conn,
            "loan_id",
            "UPDATE actions SET status = 'cancelled', note = 'loan paid' FROM v \
             WHERE actions.loan_id = v.loan_id AND actions.status || '' = 'pending'",
        )
        .await?;
    }
    Ok(())
}
