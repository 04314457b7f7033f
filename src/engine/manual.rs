//! A manual attempt, asked for by a person: the same path as planned attempts (the loan
//! held, the attempt recorded with its order number and its audit row before the channel is
//! called, the mandate's limits, the result written in one transaction).

use super::apply::AttemptRec;
use super::pursue::{apply_round, claim_loans, record_submitted, release_loans, NextAttempt};
use super::{Engine, EngineError, RunSummary};
use crate::domain::loan::LoanState;
use crate::domain::local_date;
use crate::domain::planner::AttemptKind;
use crate::domain::pursuit::Pursuit;
use crate::store::audit::AuditRow;
use crate::store::loans::load_loans;
use chrono::{DateTime, Days, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// A manual attempt for `amount`, asked for by a person (`requested_by`). It takes the same
/// path as planned attempts: the loan is held by this instance, the attempt is recorded as
/// `submitted` with its order number before the channel is called, the mandate's limits
/// apply, and the result, ledger entry and notices are written in one transaction.
/// Returns the attempt's id.
pub async fn manual_attempt(
    engine: &Engine,
    loan_id: &str,
    amount: Decimal,
    audit: &AuditRow,
    now: DateTime<Utc>,
) -> Result<i64, EngineError> {
    let ids = vec![loan_id.to_string()];
    let mut conn = engine.db.pool.acquire().await?;
    let mine = claim_loans(&mut conn, engine, &ids).await?;
    if !mine.contains(loan_id) {
        let exists = crate::store::loans::loan_exists(&mut conn, loan_id).await?;
        return Err(match exists {
            false => EngineError::NotFound(format!("loan {loan_id}")),
            true => EngineError::Conflict(
                "the loan is being pursued right now; try again shortly".into(),
            ),
        });
    }
    let since = now.date_naive() - Days::new(2);
    let loaded = load_loans(&mut conn, &ids, since).await;
    drop(conn);
    let result = match loaded {
        Ok(mut loans) => manual_in_hold(engine, &mut loans, loan_id, amount, audit, now).await,
        Err(e) => Err(e.into()),
    };
    release_loans(engine, &mine).await?;
    result
}

async fn manual_in_hold(
    engine: &Engine,
    loans: &mut HashMap<String, LoanState>,
    loan_id: &str,
    amount: Decimal,
    audit: &AuditRow,
    now: DateTime<Utc>,
) -> Result<i64, EngineError> {
    let loan = loans
        .get(loan_id)
        .ok_or_else(|| EngineError::NotFound(format!("loan {loan_id}")))?;
    let (seq, idx) = manual_target(loan, amount, now)?;
    let m = &loan.mandates[idx];
    let today = local_date(now, loan.tz);
    let next = vec![NextAttempt {
        pursuit: 0,
        action_id: 0,
        rec: AttemptRec {
            id: 0,
            loan_id: loan.id.clone(),
            seq,
            mandate_id: m.id,
            channel: m.channel.clone(),
            order_no: String::new(),
            kind: crate::domain::status::AttemptKind::Manual.as_str().into(),
            ladder_step: 0,
            amount,
            local_date: today,
            queries: 0,
        },
        agreement: m.agreement.clone(),
        currency: loan.currency.clone(),
        requested_by: Some(audit.actor.clone()),
    }];
    let mut pursuits = vec![Pursuit {
        loan_id: loan.id.clone(),
        kind: AttemptKind::Due,
        action_id: 0,
        early_seq: None,
        mandate_idx: idx,
        amounts: vec![amount],
        step: 0,
        done: false,
    }];
    let next = record_submitted(engine, loans, next, &[], &[], Some(audit), now).await?;
    let mut summary = RunSummary::default();
    apply_round(engine, loans, &mut pursuits, &next, now, &mut summary).await?;
    Ok(next[0].rec.id)
}

/// The installment a manual attempt counts against and the mandate it uses: the oldest
/// owed installment, and the first active mandate whose limits allow the amount.
fn manual_target(
    loan: &LoanState,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<(u32, usize), EngineError> {
    let invalid = |message: String| EngineError::Invalid {
        field: "amount".into(),
        message,
    };
    if amount <= Decimal::ZERO {
        return Err(invalid("must be more than zero".into()));
    }
    let outstanding: Decimal = loan.insts.iter().map(|i| i.owed()).sum();
    if outstanding <= Decimal::ZERO {
        return Err(EngineError::Conflict("nothing is owed on this loan".into()));
    }
    if amount > outstanding {
        // Well-formed, but more than this loan owes now: a conflict with its state (409).
        return Err(EngineError::Conflict(format!(
            "amount: {amount} is more than the outstanding {outstanding}"
        )));
    }
    if loan.open_attempt {
        return Err(EngineError::Conflict(
            "an earlier attempt is unresolved; it is being queried".into(),
        ));
    }
    let seq = loan
        .insts
        .iter()
        .find(|i| i.owed() > Decimal::ZERO)
        .map(|i| i.seq)
        .expect("something is owed");
    let today = local_date(now, loan.tz);
    let usable: Vec<(usize, &crate::domain::loan::MandateState)> = loan
        .mandates
        .iter()
        .enumerate()
        .filter(|(_, m)| m.usable())
        .collect();
    if usable.is_empty() {
        return Err(EngineError::Conflict(
            "the loan has no active mandate".into(),
        ));
    }
    let fits = |m: &crate::domain::loan::MandateState| {
        m.per_debit_limit.is_none_or(|l| amount <= l)
            && m.daily_limit
                .is_none_or(|l| amount <= l - loan.used_on(m.id, today))
    };
    usable
        .iter()
        .find(|(_, m)| fits(m))
        .map(|(i, _)| (seq, *i))
        .ok_or_else(|| {
            invalid(format!(
                "{amount} is over the per-debit or remaining daily limit of every active mandate"
            ))
        })
}
