//! The naive baseline: the due-date work done the way a plain job-queue worker would do it
//! (graphile-worker style), one job per attempt, one job at a time.
//!
//! A job is: in one transaction, claim ONE pending due action (`FOR UPDATE SKIP LOCKED
//! LIMIT 1` on PostgreSQL), read its loan's installment and mandate, allocate an order
//! number and insert the attempt as `submitted`, commit (durable before the call); call the
//! channel; then in one transaction write the attempt's result, on success the balanced
//! repayment entry (`store::ledger::post_entries`), the installment's paid amounts and
//! status, a result notice and the action's end. A soft failure on the ladder's codes is a
//! new job for the next, smaller amount (its own attempt, as the engine steps down within the
//! slot), so the attempt counts compare with the engine's. It writes the same tables and rows
//! as the engine; it only knows the bench portfolio's shape (one mandate, due-date attempts).

use super::db::{self, AttemptResult};
use crate::app::AppError;
use crate::domain::channel::DebitRequest;
use crate::domain::ladder::{ladder_amounts, LadderInput};
use crate::domain::ledger::{repayment_lines, Entry};
use crate::domain::loan::LoanState;
use crate::domain::notice::{notice_rows, NoticeFacts, NoticeKind};
use crate::domain::planner::AttemptKind;
use crate::domain::policy::Policy;
use crate::domain::pursuit::{AttemptRec, ClaimedAction};
use crate::domain::status::InstallmentStatus;
use crate::domain::{allocate, local_date, Allocation, Component, FailureClass};
use crate::engine::apply::{next_query_at, verdict_of_submit, Verdict};
use crate::engine::{Engine, EngineError};
use crate::store::alloc_on;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::AnyConnection;
use std::time::Instant;

/// What the naive worker did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NaiveRun {
    pub jobs: u64,
    pub attempts: u64,
    pub succeeded: u64,
    pub seconds: f64,
}

impl NaiveRun {
    pub fn attempts_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.attempts as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One job: a claimed action and the ladder step to try.
struct Job {
    action: ClaimedAction,
    step: usize,
}

/// An attempt recorded and about to be sent.
struct Recorded {
    action_id: i64,
    loan: LoanState,
    rec: AttemptRec,
    agreement: String,
    steps: usize,
}

/// Work through every attempt action due at `now`, one job at a time, until none is left.
pub async fn run_naive(engine: &Engine, now: DateTime<Utc>) -> Result<NaiveRun, AppError> {
    let started = Instant::now();
    let mut run = NaiveRun::default();
    let mut next: Option<Job> = None;
    loop {
        let mut tx = engine.db.begin().await?;
        let job = match next.take() {
            Some(job) => job,
            None => match claim(&mut tx, engine, now).await? {
                Some(action) => Job { action, step: 0 },
                None => {
                    tx.commit().await?;
                    break;
                }
            },
        };
        run.jobs += 1;
        let Some(r) = record(&mut tx, engine, &job, now).await? else {
            db::end_action(
                &mut tx,
                job.action.id,
                "skipped",
                "nothing to attempt",
                now.timestamp_millis(),
            )
            .await?;
            tx.commit().await?;
            continue;
        };
        tx.commit().await?;
        let verdict = submit(engine, &r, now).await?;
        run.attempts += 1;
        run.succeeded += matches!(verdict, Verdict::Succeeded { .. }) as u64;
        let mut tx = engine.db.begin().await?;
        let step_down = write_result(&mut tx, engine, r, &verdict, job.step, now).await?;
        tx.commit().await?;
        next = step_down.then(|| Job {
            step: job.step + 1,
            action: job.action,
        });
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

async fn claim(
    conn: &mut AnyConnection,
    engine: &Engine,
    now: DateTime<Utc>,
) -> Result<Option<ClaimedAction>, AppError> {
    let lease_until = Utc::now().timestamp_millis() + engine.cfg.lease_ms;
    let owner = engine.cfg.owner.as_str();
    Ok(db::claim_one(conn, owner, lease_until, now.timestamp_millis()).await?)
}

/// Read the job's installment and mandate, give the attempt its id and order number and
/// insert it as `submitted`. `None` when there is nothing to attempt at this step.
async fn record(
    conn: &mut AnyConnection,
    engine: &Engine,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Option<Recorded>, AppError> {
    let a = &job.action;
    let Some(loan) = db::read_due(conn, &a.loan_id, a.seq).await? else {
        return Ok(None);
    };
    let policy = engine.policy(&loan.policy)?;
    let (inst, m) = (&loan.insts[0], &loan.mandates[0]);
    let amounts = ladder_amounts(&LadderInput {
        owed: inst.owed(),
        per_debit_limit: m.per_debit_limit,
        daily_remaining: m.daily_limit,
        steps: &policy.ladder.steps,
        min_amount: policy.ladder.min_amount,
    });
    let Some(&amount) = amounts.get(job.step) else {
        return Ok(None);
    };
    let cfg = engine
        .channel_configs
        .get(&m.channel)
        .ok_or_else(|| EngineError::UnknownChannel(m.channel.clone()))?;
    let id = alloc_on(conn, "attempt", 1).await?;
    let n = alloc_on(conn, &format!("order:{}", m.channel), 1).await?;
    let order_no = cfg
        .order_no
        .format(n as u64)
        .map_err(|e| EngineError::OrderNo {
            channel: m.channel.clone(),
            message: e.to_string(),
        })?;
    let rec = AttemptRec {
        id,
        loan_id: loan.id.clone(),
        seq: a.seq,
        mandate_id: m.id,
        channel: m.channel.clone(),
        order_no,
        kind: AttemptKind::of_slot(&a.slot).as_str().into(),
        ladder_step: job.step as u32,
        amount,
        local_date: local_date(now, loan.tz),
        queries: 0,
    };
    let lease_until = Utc::now().timestamp_millis() + engine.cfg.lease_ms;
    let owner = engine.cfg.owner.as_str();
    db::insert_attempt(conn, &rec, a.id, owner, lease_until, now.timestamp_millis()).await?;
    let (agreement, steps) = (m.agreement.clone(), amounts.len());
    Ok(Some(Recorded {
        action_id: a.id,
        loan,
        rec,
        agreement,
        steps,
    }))
}

/// Call the same channel the engine calls, and classify the answer by the loan's policy.
async fn submit(engine: &Engine, r: &Recorded, now: DateTime<Utc>) -> Result<Verdict, AppError> {
    let channel = engine.channel(&r.rec.channel)?;
    let req = DebitRequest {
        order_no: r.rec.order_no.clone(),
        agreement: r.agreement.clone(),
        amount: r.rec.amount,
        currency: r.loan.currency.clone(),
        at: now,
    };
    let answer = channel.submit(&req).await;
    Ok(verdict_of_submit(
        engine.policy(&r.loan.policy)?,
        &r.rec.channel,
        answer,
    ))
}

/// The attempt row's result for a verdict.
fn attempt_result<'a>(v: &'a Verdict, engine: &Engine, now: DateTime<Utc>) -> AttemptResult<'a> {
    let (status, code, class, channel_ref, next_query) = match v {
        Verdict::Succeeded { channel_ref, .. } => {
            ("succeeded", None, None, Some(channel_ref), None)
        }
        Verdict::Failed { code, class } => ("failed", Some(code), Some(class.as_str()), None, None),
        Verdict::Unknown { code } => {
            let at = next_query_at(now, 0, &engine.cfg.query_backoff_secs);
            let class = FailureClass::Unknown.as_str();
            (
                "unknown",
                Some(code),
                Some(class),
                None,
                Some(at.timestamp_millis()),
            )
        }
    };
    AttemptResult {
        status,
        code: code.map(String::as_str),
        class,
        channel_ref: channel_ref.map(String::as_str),
        next_query_at: next_query,
    }
}

/// Write the result, its entry, installment, notice and the action's end. Returns whether
/// the next ladder step is a job of its own (the action then stays claimed).
async fn write_result(
    conn: &mut AnyConnection,
    engine: &Engine,
    mut r: Recorded,
    v: &Verdict,
    step: usize,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let policy = engine.policy(&r.loan.policy)?;
    let now_ms = now.timestamp_millis();
    if !db::finish_attempt(conn, r.rec.id, &attempt_result(v, engine, now), now_ms).await? {
        // Settled meanwhile (a query, a statement): nothing else of it is written.
        db::end_action(
            conn,
            r.action_id,
            "done",
            "attempt settled meanwhile",
            now_ms,
        )
        .await?;
        return Ok(false);
    }
    let notice = match v {
        Verdict::Succeeded { amount, .. } => {
            Some(post_repayment(conn, &mut r, policy, *amount, now).await?)
        }
        Verdict::Failed { code, class } => {
            let laddered = policy.ladder.on_codes.iter().any(|c| c == code);
            let soft = *class == FailureClass::Soft;
            if soft && laddered && policy.ladder.within_slot && step + 1 < r.steps {
                return Ok(true);
            }
            Some(NoticeKind::Failed)
        }
        Verdict::Unknown { .. } => None,
    };
    if let Some(kind) = notice {
        queue_result_notice(conn, engine, policy, &r, kind, v, now).await?;
    }
    db::end_action(conn, r.action_id, "done", "attempted", now_ms).await?;
    Ok(false)
}

/// Allocate what was collected over the installment, post the balanced repayment entry and
/// write the installment back (and stop its actions once it is paid). Returns the notice.
async fn post_repayment(
    conn: &mut AnyConnection,
    r: &mut Recorded,
    policy: &Policy,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<NoticeKind, AppError> {
    let inst = &mut r.loan.insts[0];
    let order = &policy.allocation.order;
    let (allocs, over) = allocate(
        amount,
        &[inst.outstanding()],
        order,
        policy.allocation.installments,
    );
    pay(inst, &allocs, now);
    let entry = Entry {
        id: alloc_on(conn, "entry", 1).await?,
        kind: "repayment",
        loan_id: Some(r.rec.loan_id.clone()),
        currency: r.loan.currency.clone(),
        attempt_id: Some(r.rec.id),
        posted_at: now.timestamp_millis(),
        memo: format!("repayment {} via {}", r.rec.order_no, r.rec.channel),
        lines: repayment_lines(&r.rec.channel, amount, &allocs, over),
    };
    crate::store::ledger::post_entries(conn, std::slice::from_ref(&entry))
        .await
        .map_err(|e| AppError::Engine(EngineError::Ledger(e)))?;
    db::write_installment(conn, &r.rec.loan_id, inst).await?;
    if inst.status == InstallmentStatus::Paid {
        db::settle_paid(conn, &r.rec.loan_id, inst.seq).await?;
    }
    let owed = r.loan.owed_through(r.rec.local_date, None);
    Ok(if owed > Decimal::ZERO {
        NoticeKind::Partial
    } else {
        NoticeKind::Paid
    })
}

/// Add the allocations to the installment's paid amounts; paid when nothing is left.
fn pay(inst: &mut crate::domain::loan::InstState, allocs: &[Allocation], now: DateTime<Utc>) {
    for a in allocs {
        match a.component {
            Component::Penalty => inst.paid.penalty += a.amount,
            Component::Fee => inst.paid.fee += a.amount,
            Component::Interest => inst.paid.interest += a.amount,
            Component::Principal => inst.paid.principal += a.amount,
        }
    }
    if inst.owed() <= Decimal::ZERO {
        inst.status = InstallmentStatus::Paid;
        inst.paid_at = Some(now.timestamp_millis());
    }
}

/// The result notice the engine queues for the same outcome, with the same dedupe key.
async fn queue_result_notice(
    conn: &mut AnyConnection,
    engine: &Engine,
    policy: &Policy,
    r: &Recorded,
    kind: NoticeKind,
    v: &Verdict,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    if !policy.notices.on_result {
        return Ok(());
    }
    let owed = r.loan.owed_through(r.rec.local_date, None);
    let (key, amount) = match v {
        Verdict::Succeeded { amount, .. } => (r.rec.id.to_string(), *amount),
        _ => (format!("{}:{}", r.loan.id, r.rec.local_date), owed),
    };
    let facts = NoticeFacts {
        seq: Some(r.rec.seq),
        amount,
        remaining: owed,
        due: Some(r.loan.insts[0].due),
        account_masked: r.loan.mandates[0].account_masked.clone(),
    };
    let rows = notice_rows(kind, &key, &r.loan, policy, &facts, &engine.cfg.render, now);
    crate::store::notices::queue_notices(conn, &rows, now).await?;
    Ok(())
}
