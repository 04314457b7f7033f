//! Claiming due actions and pursuing each loan's debt through attempts.
//!
//! A batch goes in rounds. Each round records its attempts as `submitted` (with their order
//! numbers) and commits *before* any channel is called; then calls the channels; then writes
//! every result with its ledger entry and notices in one transaction. A soft failure on the
//! ladder's codes steps down within the slot (next round); a hard failure moves to the next
//! mandate; success, unknown or an exhausted ladder ends the loan's pursuit for this slot.

use super::apply::{self, AttemptRec, Verdict, Writes};
use super::guard::{self, catch};
use super::phase::{self, Phase};
use super::{instance, Engine, EngineError, RunSummary};
use crate::domain::channel::DebitRequest;
use crate::domain::loan::LoanState;
use crate::domain::notice::{self, NoticeFacts, NoticeKind, NoticeRow};
use crate::domain::planner::superseding_pre_due;
use crate::domain::policy::Policy;
pub use crate::domain::pursuit::ClaimedAction;
use crate::domain::pursuit::{
    attributed_seq, end, prepare, remember_ladder, start_pursuit, ActionEnd, Pursuit,
};
use crate::domain::status::LoanStatus;
use crate::domain::{local_date, to_minor};
use crate::store::audit::AuditRow;
use crate::store::loans::load_loans_for_run;
use crate::store::{in_list, Backend, Rows, Val};
use chrono::{DateTime, Days, Utc};
use futures::{FutureExt, StreamExt};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

/// Give back the claims and loan holds of instances that died: their heartbeat is stale, or
/// they ran on this host and their process is gone. A slow but healthy instance keeps its
/// work, however long it takes: only heartbeats decide, never elapsed time alone.
pub(super) async fn rescue_dead_claims(engine: &Engine) -> Result<(u64, u64), EngineError> {
    instance::reap_dead_local(&engine.db, &engine.cfg.owner).await?;
    let wall = Utc::now().timestamp_millis();
    let actions = format!(
        "UPDATE actions SET status = 'pending', lease_owner = NULL, lease_until = NULL \
         WHERE status = 'claimed' AND lease_owner <> $1 AND NOT EXISTS ({})",
        alive_owner("actions.lease_owner", "$2")
    );
    let holds = format!(
        "UPDATE loans SET busy_owner = NULL, busy_until = NULL \
         WHERE busy_owner IS NOT NULL AND busy_owner <> $1 AND NOT EXISTS ({})",
        alive_owner("loans.busy_owner", "$2")
    );
    let mut freed = [0; 2];
    for (i, sql) in [actions, holds].iter().enumerate() {
        freed[i] = sqlx::query(sql)
            .bind(engine.cfg.owner.as_str())
            .bind(wall - engine.cfg.lease_ms)
            .execute(&engine.db.pool)
            .await?
            .rows_affected();
    }
    let (own_actions, own_holds) = free_own_leftovers(engine, wall).await?;
    Ok((freed[0] + own_actions, freed[1] + own_holds))
}

/// What a run of this instance that failed half-way left behind, freed before the next run
/// starts: its claimed actions past their lease (a claimed action whose attempt was recorded
/// has already ended, so these have none) and its loan holds past their lease (a hold being
/// worked on is renewed; a manual attempt's is fresh). Only past the lease, so that nothing a
/// run of the same instance still works on is ever taken from it.
async fn free_own_leftovers(engine: &Engine, wall: i64) -> Result<(u64, u64), EngineError> {
    let me = engine.cfg.owner.as_str();
    let actions = sqlx::query(
        "UPDATE actions SET status = 'pending', lease_owner = NULL, lease_until = NULL \
         WHERE status = 'claimed' AND lease_owner = $1 AND lease_until < $2",
    )
    .bind(me)
    .bind(wall)
    .execute(&engine.db.pool)
    .await?
    .rows_affected();
    let holds = sqlx::query(
        "UPDATE loans SET busy_owner = NULL, busy_until = NULL \
         WHERE busy_owner = $1 AND busy_until < $2",
    )
    .bind(me)
    .bind(wall)
    .execute(&engine.db.pool)
    .await?
    .rows_affected();
    Ok((actions, holds))
}

/// The code of an attempt whose channel adapter panicked: whether it debited is unknown.
pub const CHANNEL_PANIC: &str = "CHANNEL_PANIC";

/// Batches start small and grow, so that a process that lives only a moment (killed soon
/// after it starts) still commits and sends its first attempts.
pub(super) const FIRST_BATCH: usize = 32;

/// Claim a batch with a lease. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several daemons
/// share the agenda without taking the same row.
pub async fn claim_due_actions(
    engine: &Engine,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<ClaimedAction>, EngineError> {
    let wall = Utc::now().timestamp_millis();
    let lock = match engine.db.backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // Pending rows in due order straight off the (status, due_at) index: no sort, so a claim
    // costs the same on a million-row agenda as on a small one. Paused and parked loans'
    // actions stay pending, and so do those of loans held right now, by another instance or
    // by a batch of this one still in the pipeline; afterwards they are claimed late and
    // merge into one catch-up attempt. The loan is checked by a scalar subquery, one primary
    // key probe per candidate row: as an anti-join PostgreSQL would scan every loan (or,
    // trusting statistics taken while few loans were held, compare each row with each
    // held loan), a cost that grows with the portfolio.
    let sql = format!(
        "UPDATE actions SET status = 'claimed', lease_owner = $1, lease_until = $2 \
         WHERE id IN (SELECT id FROM actions WHERE status = 'pending' AND due_at <= $3 \
         AND (SELECT p.busy_owner IS NULL AND p.parked_at IS NULL AND COALESCE(p.paused_until, 0) <= $3 \
         FROM loans p WHERE p.id = actions.loan_id) \
         ORDER BY due_at LIMIT $4 {lock}) \
         RETURNING id, loan_id, seq, kind, slot"
    );
    let rows = sqlx::query(&sql)
        .bind(engine.cfg.owner.as_str())
        .bind(wall + engine.cfg.lease_ms)
        .bind(now.timestamp_millis())
        .bind(limit as i64)
        .fetch_all(&engine.db.pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ClaimedAction {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            seq: r.get::<i64, _>("seq") as u32,
            kind: r.get("kind"),
            slot: r.get("slot"),
        })
        .collect())
}

pub use crate::store::alive_owner;

/// An attempt about to be recorded and submitted.
pub(super) struct NextAttempt {
    pub(super) pursuit: usize,
    pub(super) action_id: i64,
    pub(super) rec: AttemptRec,
    pub(super) agreement: String,
    pub(super) currency: String,
    /// Who asked for a manual attempt (none for planned ones).
    pub(super) requested_by: Option<String>,
}

/// A claimed batch whose loans this instance now holds.
pub(super) struct HeldBatch {
    pub(super) claimed: u64,
    pub(super) ours: Vec<ClaimedAction>,
    pub(super) mine: HashSet<String>,
    /// Actions of loans another instance held: back on the agenda, never ended.
    pub(super) deferred: u64,
}

/// Hold the loans of a claimed batch. Loans another instance holds keep their actions
/// pending. Done by the pipeline's one claimer, before the next claim, so two batches of
/// this instance never share a loan.
pub(super) async fn hold_batch(
    engine: &Engine,
    claimed: Vec<ClaimedAction>,
) -> Result<HeldBatch, EngineError> {
    let n = claimed.len() as u64;
    let mut ids: Vec<String> = claimed.iter().map(|a| a.loan_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut conn = engine.db.pool.acquire().await?;
    let mine = claim_loans(&mut conn, engine, &ids).await?;
    drop(conn);
    let (ours, theirs): (Vec<_>, Vec<_>) =
        claimed.into_iter().partition(|a| mine.contains(&a.loan_id));
    let others: Vec<String> = ids.into_iter().filter(|l| !mine.contains(l)).collect();
    if !theirs.is_empty() {
        guard::requeue_claims(engine, &others).await?;
    }
    Ok(HeldBatch {
        claimed: n,
        ours,
        mine,
        deferred: theirs.len() as u64,
    })
}

/// Pursue one held batch and release its loans. A panic anywhere in the batch is caught:
/// its loans are retried one by one, and a loan that panics alone is parked for a person.
pub(super) async fn process_batch(
    engine: &Engine,
    held: HeldBatch,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let HeldBatch { ours, mine, .. } = held;
    let batch = AssertUnwindSafe(pursue_batch(engine, ours, now, summary))
        .catch_unwind()
        .await;
    let failure = match batch {
        Ok(Err(e)) if e.is_loan_data() => Some(e.to_string()),
        Ok(Ok(())) => {
            let t = Instant::now();
            release_loans(engine, &mine).await?;
            phase::add(Phase::Release, t);
            return Ok(());
        }
        Ok(Err(e)) => {
            // The run stops (the database, say); nothing of the batch may stay claimed by
            // this live instance, where no one would rescue it.
            let held: Vec<String> = mine.iter().cloned().collect();
            let _ = guard::settle_in_flight(engine, &held, now).await;
            let _ = guard::requeue_claims(engine, &held).await;
            let _ = release_loans(engine, &mine).await;
            return Err(e);
        }
        Err(p) => Some(format!("panic: {}", guard::panic_text(p.as_ref()))),
    };
    let why = failure.unwrap_or_default();
    tracing::error!(loans = mine.len(), error = %why, "a batch failed on a loan's data; retrying its loans one by one");
    let result = retry_one_by_one(engine, &mine, now, summary).await;
    release_loans(engine, &mine).await?;
    result
}

/// After a batch panicked: settle what was in flight (queried, never resent), then pursue
/// each held loan's remaining claims alone; a loan that panics alone is parked.
async fn retry_one_by_one(
    engine: &Engine,
    mine: &HashSet<String>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let loans: Vec<String> = mine.iter().cloned().collect();
    guard::settle_in_flight(engine, &loans, now).await?;
    for (loan_id, actions) in still_claimed(engine, &loans).await? {
        // Its actions are still claimed, so the failed batch recorded no attempt for it.
        let alone = AssertUnwindSafe(pursue_batch(engine, actions, now, summary))
            .catch_unwind()
            .await;
        let reason = match alone {
            Ok(Ok(())) => continue,
            Ok(Err(e)) if e.is_loan_data() => e.to_string(),
            Ok(Err(e)) => return Err(e),
            Err(p) => format!("panic while pursuing: {}", guard::panic_text(p.as_ref())),
        };
        park(engine, &loan_id, &reason, now, summary).await?;
    }
    Ok(())
}

/// Park a loan whose pursuit failed: its in-flight attempts are settled by query and its
/// claimed actions go back to pending, where they wait for a person to unpark the loan.
async fn park(
    engine: &Engine,
    loan_id: &str,
    reason: &str,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let one = [loan_id.to_string()];
    guard::park_loan(&mut *engine.db.pool.acquire().await?, loan_id, reason, now).await?;
    guard::settle_in_flight(engine, &one, now).await?;
    guard::requeue_claims(engine, &one).await?;
    summary.loans_parked += 1;
    Ok(())
}

/// This instance's claimed actions of `loans`, by loan.
async fn still_claimed(
    engine: &Engine,
    loans: &[String],
) -> Result<BTreeMap<String, Vec<ClaimedAction>>, EngineError> {
    let mut out: BTreeMap<String, Vec<ClaimedAction>> = BTreeMap::new();
    let mut conn = engine.db.pool.acquire().await?;
    for chunk in loans.chunks(5000) {
        let n = chunk.len();
        let sql = format!(
            "SELECT id, loan_id, seq, kind, slot FROM actions WHERE status = 'claimed' \
             AND lease_owner = ${} AND loan_id IN ({}) ORDER BY id",
            n + 1,
            in_list(&conn, 1, n)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        for r in q
            .bind(engine.cfg.owner.as_str())
            .fetch_all(&mut *conn)
            .await?
        {
            let a = ClaimedAction {
                id: r.get("id"),
                loan_id: r.get("loan_id"),
                seq: r.get::<i64, _>("seq") as u32,
                kind: r.get("kind"),
                slot: r.get("slot"),
            };
            out.entry(a.loan_id.clone()).or_default().push(a);
        }
    }
    Ok(out)
}

/// Decide and pursue the claimed actions of loans this instance holds. A loan whose own
/// decisions panic is parked and left out; the others go on.
async fn pursue_batch(
    engine: &Engine,
    claimed: Vec<ClaimedAction>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut ids: Vec<String> = claimed.iter().map(|a| a.loan_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let t = Instant::now();
    let mut conn = engine.db.pool.acquire().await?;
    let since = now.date_naive() - Days::new(2);
    let mut loans =
        load_loans_for_run(&mut conn, &ids, since, Some(now.timestamp_millis())).await?;
    drop(conn);
    phase::add(Phase::Load, t);
    let t = Instant::now();
    let mut by_loan: BTreeMap<String, Vec<ClaimedAction>> = BTreeMap::new();
    for a in claimed {
        by_loan.entry(a.loan_id.clone()).or_default().push(a);
    }
    let mut d = Decisions::default();
    let mut poisoned = Vec::new();
    for (loan_id, actions) in by_loan {
        let Some(loan) = loans.get(&loan_id) else {
            d.ends.extend(
                actions
                    .iter()
                    .map(|a| end(a.id, "skipped", "loan not found")),
            );
            continue;
        };
        match decide_loan(engine, loan, actions, now) {
            Ok(one) => d.merge(one),
            Err(why) => poisoned.push((loan_id, why)),
        }
    }
    phase::add(Phase::Decide, t);
    for (loan_id, why) in &poisoned {
        loans.remove(loan_id);
        park(engine, loan_id, why, now, summary).await?;
    }
    summary.actions_skipped += d.ends.iter().filter(|e| e.status == "skipped").count() as u64;
    summary.notices_queued += d.notices.len() as u64;
    pursue_rounds(
        engine, &mut loans, d.pursuits, d.ends, d.notices, now, summary,
    )
    .await
}

/// What the pure decisions of a batch came to: action outcomes, notices to queue and the
/// pursuits to run.
#[derive(Default)]
struct Decisions {
    ends: Vec<ActionEnd>,
    notices: Vec<NoticeRow>,
    pursuits: Vec<Pursuit>,
}

impl Decisions {
    fn merge(&mut self, other: Decisions) {
        self.ends.extend(other.ends);
        self.notices.extend(other.notices);
        self.pursuits.extend(other.pursuits);
    }
}

/// One loan's decisions for its claimed actions, pure. An unknown policy or a panic is the
/// loan's own failure, returned as the reason to park it.
fn decide_loan(
    engine: &Engine,
    loan: &LoanState,
    actions: Vec<ClaimedAction>,
    now: DateTime<Utc>,
) -> Result<Decisions, String> {
    if let Some(why) = &loan.broken {
        return Err(why.clone());
    }
    let policy = engine.policy(&loan.policy).map_err(|e| e.to_string())?;
    catch(|| {
        let mut d = Decisions::default();
        let (notice_actions, attempt_actions): (Vec<_>, Vec<_>) =
            actions.into_iter().partition(|a| a.kind == "notice");
        for a in notice_actions {
            d.ends
                .push(action_notice(engine, loan, policy, &a, now, &mut d.notices));
        }
        if !attempt_actions.is_empty() {
            let p = start_pursuit(loan, policy, attempt_actions, now, &mut d.ends);
            d.pursuits.extend(p);
        }
        d
    })
    .map_err(|p| format!("panic while deciding: {p}"))
}

/// Take the loans of a batch for this instance. Another instance pursuing one of them at the
/// same time would compute what is owed from the same state and could debit it twice, so a
/// loan is pursued by one instance at a time. A hold whose lease ran out is taken over only
/// when its owner's heartbeat is stale.
pub(super) async fn claim_loans(
    conn: &mut AnyConnection,
    engine: &Engine,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let wall = Utc::now().timestamp_millis();
    let mut mine = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(5000) {
        let n = chunk.len();
        let sql = format!(
            "UPDATE loans SET busy_owner = ${owner}, busy_until = ${until} WHERE id IN ({list}) \
             AND (busy_owner IS NULL OR busy_owner = ${owner} OR (busy_until < ${wall} AND NOT EXISTS ({alive}))) \
             RETURNING id",
            list = in_list(conn, 1, n),
            owner = n + 1,
            until = n + 2,
            wall = n + 3,
            alive = alive_owner("loans.busy_owner", &format!("${}", n + 4)),
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        let q = q
            .bind(engine.cfg.owner.as_str())
            .bind(wall + engine.cfg.lease_ms)
            .bind(wall)
            .bind(wall - engine.cfg.lease_ms);
        for r in q.fetch_all(&mut *conn).await? {
            mine.insert(r.get::<String, _>("id"));
        }
    }
    Ok(mine)
}

pub(super) async fn release_loans(
    engine: &Engine,
    mine: &HashSet<String>,
) -> Result<(), sqlx::Error> {
    let mut rows = Rows::new(1);
    for id in mine {
        rows.push(vec![id.clone().into()]);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let mut conn = engine.db.pool.acquire().await?;
    rows.with_values(
        &mut conn,
        "id",
        "UPDATE loans SET busy_owner = NULL, busy_until = NULL FROM v WHERE loans.id = v.id",
    )
    .await?;
    Ok(())
}

/// Turn a notice action into outbox rows (or skip it when it no longer makes sense).
fn action_notice(
    engine: &Engine,
    loan: &LoanState,
    policy: &Policy,
    a: &ClaimedAction,
    now: DateTime<Utc>,
    out: &mut Vec<NoticeRow>,
) -> ActionEnd {
    let today = local_date(now, loan.tz);
    let Some(inst) = loan.insts.iter().find(|i| i.seq == a.seq) else {
        return end(a.id, "skipped", "installment paid");
    };
    let pre_due = a.slot.starts_with("pre:");
    if pre_due && inst.due < today {
        return end(a.id, "skipped", "stale: due date passed");
    }
    if pre_due {
        if let Some(later) = superseding_pre_due(policy, loan.tz, inst.due, &a.slot, now) {
            return end(a.id, "skipped", format!("stale: superseded by {later}"));
        }
    }
    if loan.status != LoanStatus::Active {
        return end(a.id, "skipped", format!("loan {}", loan.status));
    }
    let kind = if pre_due {
        NoticeKind::PreDue
    } else {
        NoticeKind::Overdue
    };
    let account = loan
        .mandates
        .iter()
        .find(|m| m.usable())
        .map(|m| m.account_masked.clone())
        .unwrap_or_default();
    let facts = NoticeFacts {
        seq: Some(inst.seq),
        amount: if pre_due {
            inst.owed()
        } else {
            loan.owed_through(today, None)
        },
        remaining: Decimal::ZERO,
        due: Some(inst.due),
        account_masked: account,
    };
    let key = format!("{}:{}:{}", loan.id, a.seq, a.slot);
    out.extend(notice::notice_rows(
        kind,
        &key,
        loan,
        policy,
        &facts,
        &engine.cfg.render,
        now,
    ));
    end(a.id, "done", "notice queued")
}

async fn pursue_rounds(
    engine: &Engine,
    loans: &mut HashMap<String, LoanState>,
    mut pursuits: Vec<Pursuit>,
    ends: Vec<ActionEnd>,
    notices: Vec<NoticeRow>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut first = Some((ends, notices));
    loop {
        let next = next_attempts(loans, &pursuits, now);
        let (ends, notices) = first.take().unwrap_or_default();
        if next.is_empty() {
            if !ends.is_empty() || !notices.is_empty() {
                let mut tx = engine.db.begin().await?;
                write_action_ends(&mut tx, &ends, now).await?;
                crate::store::notices::queue_notices(&mut tx, &notices, now).await?;
                tx.commit().await?;
            }
            return Ok(());
        }
        let t = Instant::now();
        let next = record_submitted(engine, loans, next, &ends, &notices, None, now).await?;
        phase::add(Phase::Record, t);
        apply_round(engine, loans, &mut pursuits, &next, now, summary).await?;
    }
}

/// Call the channels for recorded attempts, then write every verdict with its ledger entry,
/// installment updates and notices in one transaction.
pub(super) async fn apply_round(
    engine: &Engine,
    loans: &mut HashMap<String, LoanState>,
    pursuits: &mut [Pursuit],
    next: &[NextAttempt],
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let t = Instant::now();
    let verdicts = submit_all(engine, loans, next, now).await;
    phase::add(Phase::Submit, t);
    let t = Instant::now();
    let ctx = apply::ApplyCtx::of(&engine.cfg);
    let mut w = Writes::default();
    let mut poisoned = Vec::new();
    for (n, (v, panicked)) in next.iter().zip(verdicts) {
        summary.count_attempt(&n.rec.kind, v.outcome_name());
        let Some(loan) = loans.get_mut(&n.rec.loan_id) else {
            continue;
        };
        super::export_answer(&n.rec.kind, "submit", &v, &loan.currency, &n.rec.channel);
        match stage_verdict(engine, loan, &mut pursuits[n.pursuit], &n.rec, &v, now) {
            Ok(one) => {
                w.merge(one);
                if let Some(text) = panicked {
                    let why = format!("the channel panicked on attempt {}: {text}", n.rec.id);
                    poisoned.push((n.rec.loan_id.clone(), why));
                }
            }
            Err(why) => {
                // Nothing of this loan is written but the attempt, left to be queried.
                pursuits[n.pursuit].done = true;
                loans.remove(&n.rec.loan_id);
                apply::stage_unknown(&n.rec, "UNAPPLIED", now, &ctx, &mut w);
                poisoned.push((n.rec.loan_id.clone(), why));
            }
        }
    }
    if w.entry_count() > 0 {
        // Numbered before the transaction, like attempts: no batch waits on the counter.
        let first = engine.db.alloc("entry", w.entry_count() as i64).await?;
        w.number_entries(first);
    }
    let mut tx = engine.db.begin().await?;
    let flushed = apply::flush(&mut tx, loans, w, now).await?;
    tx.commit().await?;
    phase::add(Phase::Flush, t);
    summary.add_collected(flushed.collected);
    summary.notices_queued += flushed.notices as u64;
    // A loan whose answer came late was left out of the flush: its pursuit ends here.
    for p in pursuits
        .iter_mut()
        .filter(|p| !loans.contains_key(&p.loan_id))
    {
        p.done = true;
    }
    for (loan_id, why) in poisoned {
        park(engine, &loan_id, &why, now, summary).await?;
    }
    Ok(())
}

/// Apply one answer to its loan and decide the pursuit's next step, into writes of its own:
/// a panic (or an unknown policy) leaves nothing of the loan staged.
fn stage_verdict(
    engine: &Engine,
    loan: &mut LoanState,
    p: &mut Pursuit,
    rec: &AttemptRec,
    v: &Verdict,
    now: DateTime<Utc>,
) -> Result<Writes, String> {
    let policy = engine.policy(&loan.policy).map_err(|e| e.to_string())?;
    let ctx = apply::ApplyCtx::of(&engine.cfg);
    let staged = catch(|| {
        let mut w = Writes::default();
        apply::apply_verdict(loan, policy, rec, v, now, &ctx, &mut w);
        advance(p, loan, policy, rec, v, now, &engine.cfg.render, &mut w);
        w
    })
    .map_err(|e| format!("panic while applying attempt {}: {e}", rec.id))?;
    // What cannot be stored is found here, for this loan alone, not by the batch's flush.
    staged
        .check()
        .and_then(|()| loan.check_storable())
        .map_err(|e| format!("attempt {}: {e}", rec.id))?;
    Ok(staged)
}

/// The attempt each live pursuit makes next.
fn next_attempts(
    loans: &HashMap<String, LoanState>,
    pursuits: &[Pursuit],
    now: DateTime<Utc>,
) -> Vec<NextAttempt> {
    let mut out = Vec::new();
    for (i, p) in pursuits.iter().enumerate().filter(|(_, p)| !p.done) {
        let loan = &loans[&p.loan_id];
        let m = &loan.mandates[p.mandate_idx];
        let today = local_date(now, loan.tz);
        let Some(seq) = attributed_seq(loan, today, p.early_seq) else {
            continue;
        };
        out.push(NextAttempt {
            pursuit: i,
            action_id: p.action_id,
            rec: AttemptRec {
                id: 0,
                loan_id: loan.id.clone(),
                seq,
                mandate_id: m.id,
                channel: m.channel.clone(),
                order_no: String::new(),
                kind: p.kind.as_str().into(),
                ladder_step: p.step as u32,
                amount: p.amounts[p.step],
                local_date: today,
                queries: 0,
            },
            agreement: m.agreement.clone(),
            currency: loan.currency.clone(),
            requested_by: None,
        });
    }
    out
}

/// Give each attempt its id and order number. Drawn from the counters in short transactions
/// of their own, so that batches in flight never wait on each other's counter row; a batch
/// that fails later leaves a gap, and numbers are never reused.
async fn number_attempts(engine: &Engine, next: &mut [NextAttempt]) -> Result<(), EngineError> {
    let first_id = engine.db.alloc("attempt", next.len() as i64).await?;
    let mut per_channel: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, n) in next.iter_mut().enumerate() {
        n.rec.id = first_id + i as i64;
        per_channel
            .entry(n.rec.channel.clone())
            .or_default()
            .push(i);
    }
    for (channel, idxs) in &per_channel {
        let cfg = engine
            .channel_configs
            .get(channel)
            .ok_or_else(|| EngineError::UnknownChannel(channel.clone()))?;
        let start = engine
            .db
            .alloc(&format!("order:{channel}"), idxs.len() as i64)
            .await?;
        for (k, i) in idxs.iter().enumerate() {
            next[*i].rec.order_no =
                cfg.order_no
                    .format((start + k as i64) as u64)
                    .map_err(|e| EngineError::OrderNo {
                        channel: channel.clone(),
                        message: e.to_string(),
                    })?;
        }
    }
    Ok(())
}

/// Number the attempts and commit them as `submitted`, together with the action outcomes
/// and queued notices, before any channel is called.
pub(super) async fn record_submitted(
    engine: &Engine,
    loans: &mut HashMap<String, LoanState>,
    mut next: Vec<NextAttempt>,
    ends: &[ActionEnd],
    notices: &[NoticeRow],
    audit: Option<&AuditRow>,
    now: DateTime<Utc>,
) -> Result<Vec<NextAttempt>, EngineError> {
    number_attempts(engine, &mut next).await?;
    let mut tx = engine.db.begin().await?;
    reassert_holds(&mut tx, engine, &next).await?;
    insert_attempts(&mut tx, &next, now, engine).await?;
    for n in &next {
        let loan = loans.get_mut(&n.rec.loan_id).expect("loaded");
        if let Some(inst) = loan.inst_mut(n.rec.seq) {
            inst.attempts += 1;
            inst.dirty = true;
        }
        *loan
            .used
            .entry((n.rec.mandate_id, n.rec.local_date))
            .or_default() += n.rec.amount;
    }
    apply::write_loans(&mut tx, loans).await?;
    write_action_ends(&mut tx, ends, now).await?;
    crate::store::notices::queue_notices(&mut tx, notices, now).await?;
    if let (Some(row), Some(n)) = (audit, next.first()) {
        let mut row = row.clone();
        row.detail["attempt_id"] = n.rec.id.into();
        row.detail["order_no"] = n.rec.order_no.clone().into();
        crate::store::audit::insert_audit(&mut tx, &row, now.timestamp_millis()).await?;
    }
    tx.commit().await?;
    Ok(next)
}

/// The attempts' loans are still held by this instance: checked (and the holds renewed) in
/// the transaction that records the attempts, so an instance taken for dead (its heartbeat
/// stalled) cannot record an attempt for a loan another instance took over. On PostgreSQL
/// the update also locks the rows until the commit.
async fn reassert_holds(
    conn: &mut AnyConnection,
    engine: &Engine,
    next: &[NextAttempt],
) -> Result<(), EngineError> {
    let mut ids: Vec<&str> = next.iter().map(|n| n.rec.loan_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let until = Utc::now().timestamp_millis() + engine.cfg.lease_ms;
    let mut held = 0;
    for chunk in ids.chunks(5000) {
        let n = chunk.len();
        let sql = format!(
            "UPDATE loans SET busy_until = ${} WHERE busy_owner = ${} AND id IN ({})",
            n + 1,
            n + 2,
            in_list(conn, 1, n)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(*id);
        }
        let q = q.bind(until).bind(engine.cfg.owner.as_str());
        held += q.execute(&mut *conn).await?.rows_affected();
    }
    if held != ids.len() as u64 {
        return Err(EngineError::Conflict(format!(
            "{} of {} loans were taken over by another instance; nothing was recorded",
            ids.len() as u64 - held,
            ids.len()
        )));
    }
    Ok(())
}

async fn insert_attempts(
    conn: &mut AnyConnection,
    next: &[NextAttempt],
    now: DateTime<Utc>,
    engine: &Engine,
) -> Result<(), EngineError> {
    let wall = Utc::now().timestamp_millis();
    let lease_ms = engine.cfg.lease_ms;
    let mut rows = Rows::new(19);
    for n in next {
        let r = &n.rec;
        rows.push(vec![
            Val::Int(r.id),
            Val::OptInt((n.action_id != 0).then_some(n.action_id)),
            r.loan_id.clone().into(),
            r.seq.into(),
            Val::Int(r.mandate_id),
            r.channel.clone().into(),
            r.order_no.clone().into(),
            r.kind.clone().into(),
            r.ladder_step.into(),
            to_minor(r.amount)?.into(),
            "submitted".into(),
            r.local_date.to_string().into(),
            Val::Int(now.timestamp_millis()),
            Val::Int(now.timestamp_millis()),
            Val::Int(wall + lease_ms),
            engine.cfg.owner.as_str().into(),
            engine.cfg.owner.as_str().into(),
            Val::Int(0),
            n.requested_by.clone().into(),
        ]);
    }
    rows.insert(
        conn,
        "INSERT INTO attempts (id, action_id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, \
         amount, status, local_date, created_at, updated_at, lease_until, lease_owner, submitted_by, queries, requested_by)",
        "",
    )
    .await?;
    Ok(())
}

async fn write_action_ends(
    conn: &mut AnyConnection,
    ends: &[ActionEnd],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if ends.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(3);
    for e in ends {
        rows.push(vec![Val::Int(e.id), e.status.into(), e.note.clone().into()]);
    }
    let sql = format!(
        "UPDATE actions SET status = v.status, note = v.note, done_at = {}, lease_owner = NULL, \
         lease_until = NULL FROM v WHERE actions.id = v.id",
        now.timestamp_millis()
    );
    rows.with_values(conn, "id, status, note", &sql).await?;
    Ok(())
}

/// Call the channels, `concurrency` at a time, keeping results in attempt order.
async fn submit_all(
    engine: &Engine,
    loans: &HashMap<String, LoanState>,
    next: &[NextAttempt],
    now: DateTime<Utc>,
) -> Vec<(Verdict, Option<String>)> {
    // Collected first: a lazy iterator of borrowing futures would make the whole future's
    // Send-ness higher-ranked, which handlers (that must be Send) cannot prove.
    let calls: Vec<_> = next
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ch = engine.channels.get(&n.rec.channel).cloned();
            let req = DebitRequest {
                order_no: n.rec.order_no.clone(),
                agreement: n.agreement.clone(),
                amount: n.rec.amount,
                currency: n.currency.clone(),
                at: now,
            };
            let policy = engine.policies.get(&loans[&n.rec.loan_id].policy);
            let channel = n.rec.channel.clone();
            async move {
                let (Some(ch), Some(policy)) = (ch, policy) else {
                    let code = "NO_CHANNEL".into();
                    return (i, (Verdict::Unknown { code }, None));
                };
                let started = std::time::Instant::now();
                // Each call is a task of its own, so it goes on (and its answer is read, and
                // the channel's next waiting call sent) while the engine's task works on
                // another batch of the pipeline.
                let result = tokio::spawn(async move { ch.submit(&req).await }).await;
                metrics::histogram!("repayd_channel_latency_seconds", "channel" => channel.clone())
                    .record(started.elapsed().as_secs_f64());
                let verdict = match result {
                    Ok(r) => (apply::verdict_of_submit(policy, &channel, r), None),
                    // A panicking adapter may or may not have sent the debit: unknown, queried.
                    Err(e) => {
                        let why = match e.try_into_panic() {
                            Ok(p) => guard::panic_text(p.as_ref()),
                            Err(_) => "the call's task was cancelled".to_string(),
                        };
                        (
                            Verdict::Unknown {
                                code: CHANNEL_PANIC.into(),
                            },
                            Some(why),
                        )
                    }
                };
                (i, verdict)
            }
        })
        .collect();
    // Unordered, so one slow answer never holds up the calls behind it.
    let mut answers: Vec<(usize, (Verdict, Option<String>))> = futures::stream::iter(calls)
        .buffer_unordered(engine.cfg.concurrency.max(1))
        .collect()
        .await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, v)| v).collect()
}

/// Decide what the pursuit does after a verdict, staging result notices when it ends.
#[allow(clippy::too_many_arguments)]
fn advance(
    p: &mut Pursuit,
    loan: &mut LoanState,
    policy: &Policy,
    rec: &AttemptRec,
    v: &Verdict,
    now: DateTime<Utc>,
    render: &crate::domain::notice::NoticeRender,
    w: &mut Writes,
) {
    let today = local_date(now, loan.tz);
    match v {
        Verdict::Succeeded { amount, .. } => {
            p.done = true;
            let remaining = loan.owed_through(today, p.early_seq);
            let kind = if remaining > Decimal::ZERO {
                NoticeKind::Partial
            } else {
                NoticeKind::Paid
            };
            result_notice(
                kind,
                &rec.id.to_string(),
                loan,
                policy,
                rec,
                *amount,
                remaining,
                now,
                render,
                w,
            );
        }
        Verdict::Unknown { .. } => p.done = true,
        Verdict::Failed { code, class } => {
            let laddered = policy.ladder.on_codes.iter().any(|c| c == code);
            if *class == crate::domain::FailureClass::Hard {
                p.mandate_idx += 1;
                if prepare(p, loan, policy, today, false).is_some() {
                    p.done = true;
                    failed_notice(p, loan, policy, rec, now, render, w);
                }
            } else if laddered && policy.ladder.within_slot && p.step + 1 < p.amounts.len() {
                p.step += 1;
            } else {
                p.done = true;
                if laddered && !policy.ladder.within_slot {
                    remember_ladder(p, loan);
                }
                failed_notice(p, loan, policy, rec, now, render, w);
            }
        }
    }
}

fn failed_notice(
    p: &Pursuit,
    loan: &LoanState,
    policy: &Policy,
    rec: &AttemptRec,
    now: DateTime<Utc>,
    render: &crate::domain::notice::NoticeRender,
    w: &mut Writes,
) {
    let today = local_date(now, loan.tz);
    let owed = loan.owed_through(today, p.early_seq);
    let key = format!("{}:{today}", loan.id);
    result_notice(
        NoticeKind::Failed,
        &key,
        loan,
        policy,
        rec,
        owed,
        owed,
        now,
        render,
        w,
    );
}

#[allow(clippy::too_many_arguments)]
fn result_notice(
    kind: NoticeKind,
    key: &str,
    loan: &LoanState,
    policy: &Policy,
    rec: &AttemptRec,
    amount: Decimal,
    remaining: Decimal,
    now: DateTime<Utc>,
    render: &crate::domain::notice::NoticeRender,
    w: &mut Writes,
) {
    if !policy.notices.on_result {
        return;
    }
    let account = loan
        .mandates
        .iter()
        .find(|m| m.id == rec.mandate_id)
        .map(|m| m.account_masked.clone())
        .unwrap_or_default();
    let facts = NoticeFacts {
        seq: Some(rec.seq),
        amount,
        remaining,
        due: loan
            .insts
            .iter()
            .find(|i| i.seq == rec.seq)
            .map(|i| i.due)
            .or_else(|| Some(rec.local_date)),
        account_masked: account,
    };
    w.notices.extend(notice::notice_rows(
        kind, key, loan, policy, &facts, render, now,
    ));
}
