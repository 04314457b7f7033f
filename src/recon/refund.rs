//! Refunds of a successful attempt (N+1 records: each refund is its own journal entry that
//! points at the repayment it corrects; the original is never edited).
//!
//! - `overpayment`: money beyond what was owed goes back: Dr 2100, Cr bank. Refused beyond
//!   the overpayment the attempt still holds.
//! - `erroneous`: the debit should not have happened: the overpayment part first, then the
//!   allocation from the last-allocated component back is reversed (Dr the same accounts,
//!   `seq` and `component` the repayment credited), Cr bank. Installments get their `paid_*`
//!   back, re-open (due or overdue, `paid_at` cleared, overdue plan redone by the next run),
//!   a paid loan becomes active again, and the installment's cancelled attempt actions are
//!   pending again, so the next run collects it by policy.
//!
//! Refunds of an attempt never exceed its amount in total. Refunds are paid from the bank.

use super::ReconError;
use crate::domain::ledger::{self, Entry, Reversed};
use crate::domain::status::AttemptStatus;
use crate::domain::{from_minor, local_date, to_minor, Component};
use crate::engine::Engine;
use crate::store::alloc_on;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundKind {
    Overpayment,
    Erroneous,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Overpayment => "overpayment",
            RefundKind::Erroneous => "erroneous",
        }
    }

    fn entry_kind(self) -> &'static str {
        match self {
            RefundKind::Overpayment => "refund",
            RefundKind::Erroneous => "reversal",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub attempt_id: i64,
    pub amount: Decimal,
    pub kind: RefundKind,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefundDone {
    pub refund_id: i64,
    pub entry_id: i64,
    pub corrects_entry: i64,
    pub loan_id: String,
    pub kind: RefundKind,
    pub amount: Decimal,
    /// What the attempt can still refund after this one.
    pub refundable_left: Decimal,
    /// Installments re-opened by a reversal.
    pub reopened: Vec<u32>,
}

struct Original {
    loan_id: String,
    /// The repayment entry's currency; its corrections are in the same one.
    currency: String,
    amount: Decimal,
    entry_id: i64,
    /// Credit lines in posting order: (account, seq, component, amount).
    credits: Vec<(String, Option<u32>, Option<Component>, Decimal)>,
}

/// Refund (part of) a succeeded attempt, in one transaction.
pub async fn refund(
    engine: &Engine,
    req: &RefundRequest,
    now: DateTime<Utc>,
) -> Result<RefundDone, ReconError> {
    let mut tx = engine.db.begin().await?;
    let done = refund_in(&mut tx, req, now).await?;
    tx.commit().await?;
    Ok(done)
}

/// Refund (part of) a succeeded attempt within the caller's transaction, so that the caller
/// can record it (the API's audit log) atomically with it.
#[tracing::instrument(skip(conn, req), fields(attempt = req.attempt_id, amount = %req.amount, kind = req.kind.as_str()))]
pub async fn refund_in(
    conn: &mut AnyConnection,
    req: &RefundRequest,
    now: DateTime<Utc>,
) -> Result<RefundDone, ReconError> {
    if req.amount <= Decimal::ZERO || req.amount.normalize().scale() > 2 {
        return Err(ReconError::BadAmount {
            text: req.amount.to_string(),
            message: "must be above 0 with at most 2 decimals".into(),
        });
    }
    let orig = original(&mut *conn, req.attempt_id).await?;
    let refunded: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds WHERE attempt_id = $1",
    )
    .bind(req.attempt_id)
    .fetch_one(&mut *conn)
    .await?;
    let refundable = orig.amount - from_minor(refunded);
    if req.amount > refundable {
        return Err(ReconError::ExceedsRefundable {
            attempt: req.attempt_id,
            asked: req.amount,
            left: refundable,
        });
    }
    let reversed = reversed_so_far(&mut *conn, orig.entry_id).await?;
    let held = credited(&orig, ledger::OVERPAYMENTS, None, None)
        - reversed
            .get(&(ledger::OVERPAYMENTS.to_string(), None, None))
            .copied()
            .unwrap_or_default();
    let (lines, parts) = match req.kind {
        RefundKind::Overpayment => {
            if req.amount > held {
                return Err(ReconError::ExceedsOverpayment {
                    attempt: req.attempt_id,
                    asked: req.amount,
                    left: held,
                });
            }
            (
                ledger::overpayment_refund_lines(req.amount, ledger::BANK),
                Vec::new(),
            )
        }
        RefundKind::Erroneous => {
            let over = req.amount.min(held);
            let parts = reverse_allocation(&orig, &reversed, req.amount - over);
            (ledger::reversal_lines(over, &parts, ledger::BANK), parts)
        }
    };
    let entry_id = alloc_on(&mut *conn, "entry", 1).await?;
    let entry = Entry {
        id: entry_id,
        kind: req.kind.entry_kind(),
        loan_id: Some(orig.loan_id.clone()),
        currency: orig.currency.clone(),
        attempt_id: None,
        posted_at: now.timestamp_millis(),
        memo: format!(
            "{} refund of attempt {}: {}",
            req.kind.as_str(),
            req.attempt_id,
            req.reason
        ),
        lines,
    };
    crate::store::ledger::post_corrections(&mut *conn, &[(entry, orig.entry_id)]).await?;
    let refund_id = alloc_on(&mut *conn, "refund", 1).await?;
    sqlx::query(
        "INSERT INTO refunds (id, attempt_id, loan_id, kind, amount, reason, actor, entry_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(refund_id)
    .bind(req.attempt_id)
    .bind(&orig.loan_id)
    .bind(req.kind.as_str())
    .bind(to_minor(req.amount)?)
    .bind(&req.reason)
    .bind(&req.actor)
    .bind(entry_id)
    .bind(now.timestamp_millis())
    .execute(&mut *conn)
    .await?;
    let reopened = reopen(&mut *conn, &orig.loan_id, &parts, refund_id, now).await?;
    tracing::info!(refund_id, entry_id, "refund posted");
    Ok(RefundDone {
        refund_id,
        entry_id,
        corrects_entry: orig.entry_id,
        loan_id: orig.loan_id,
        kind: req.kind,
        amount: req.amount,
        refundable_left: refundable - req.amount,
        reopened,
    })
}

async fn original(conn: &mut AnyConnection, attempt: i64) -> Result<Original, ReconError> {
    // The attempt row is the lock that serializes refunds of one attempt: without it two
    // transactions on PostgreSQL both read the same refunded-so-far sum and both insert.
    // SQLite already serializes writers (`BEGIN IMMEDIATE`) and has no `FOR UPDATE`.
    let lock = if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!("SELECT loan_id, amount, status FROM attempts WHERE id = $1{lock}");
    let a = sqlx::query(&sql)
        .bind(attempt)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ReconError::AttemptNotFound(attempt))?;
    let status: String = a.get("status");
    let entry: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT id, currency FROM journal_entries WHERE attempt_id = $1 AND kind = 'repayment'",
    )
    .bind(attempt)
    .fetch_optional(&mut *conn)
    .await?;
    let (true, Some((entry_id, currency))) = (status == AttemptStatus::Succeeded.as_str(), entry)
    else {
        return Err(ReconError::NotSucceeded {
            id: attempt,
            status,
        });
    };
    // Refundable is bounded by both the attempt's amount and what the channel collected (the
    // repayment entry's debit), should the channel have debited another amount.
    let lines = sqlx::query(
        "SELECT account, seq, component, debit, credit FROM journal_lines WHERE entry_id = $1 ORDER BY line_no",
    )
    .bind(entry_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut amount = Decimal::ZERO;
    let mut credits = Vec::new();
    for l in &lines {
        amount += from_minor(l.get("debit"));
        let c: i64 = l.get("credit");
        if c > 0 {
            credits.push((
                l.get::<String, _>("account"),
                l.get::<Option<i64>, _>("seq").map(|s| s as u32),
                l.get::<Option<String>, _>("component")
                    .and_then(|c| c.parse::<Component>().ok()),
                from_minor(c),
            ));
        }
    }
    Ok(Original {
        loan_id: a.get("loan_id"),
        // Every repayment entry has its currency (migration 0011 filled the older ones).
        currency: currency.unwrap_or_default(),
        amount: amount.min(from_minor(a.get("amount"))),
        entry_id,
        credits,
    })
}

type Key = (String, Option<u32>, Option<Component>);

/// What earlier refunds and reversals of this repayment debited, per account/seq/component.
async fn reversed_so_far(
    conn: &mut AnyConnection,
    entry_id: i64,
) -> Result<HashMap<Key, Decimal>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.account, l.seq, l.component, CAST(SUM(l.debit) AS BIGINT) AS d FROM journal_lines l \
         JOIN journal_entries e ON e.id = l.entry_id WHERE e.corrects_entry = $1 AND l.debit > 0 \
         GROUP BY l.account, l.seq, l.component",
    )
    .bind(entry_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let key = (
                r.get::<String, _>("account"),
                r.get::<Option<i64>, _>("seq").map(|s| s as u32),
                r.get::<Option<String>, _>("component")
                    .and_then(|c| c.parse::<Component>().ok()),
            );
            (key, from_minor(r.get("d")))
        })
        .collect())
}

fn credited(o: &Original, account: &str, seq: Option<u32>, c: Option<Component>) -> Decimal {
    o.credits
        .iter()
        .filter(|x| x.0 == account && x.1 == seq && x.2 == c)
        .map(|x| x.3)
        .sum()
}

/// Take `amount` back from the allocation, last-allocated component first.
fn reverse_allocation(
    o: &Original,
    done: &HashMap<Key, Decimal>,
    mut amount: Decimal,
) -> Vec<Reversed> {
    let mut out = Vec::new();
    for (account, seq, comp, credit) in o.credits.iter().rev() {
        let (Some(seq), Some(component)) = (seq, comp) else {
            continue;
        };
        if amount <= Decimal::ZERO {
            break;
        }
        let key = (account.clone(), Some(*seq), Some(*component));
        let left = *credit - done.get(&key).copied().unwrap_or_default();
        let take = amount.min(left);
        if take > Decimal::ZERO {
            out.push(Reversed {
                seq: *seq,
                component: *component,
                amount: take,
            });
            amount -= take;
        }
    }
    out
}

/// Give the installments their reversed components back and re-open them and the loan.
async fn reopen(
    conn: &mut AnyConnection,
    loan_id: &str,
    parts: &[Reversed],
    refund_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<u32>, ReconError> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let tz: String = sqlx::query_scalar("SELECT tz FROM loans WHERE id = $1")
        .bind(loan_id)
        .fetch_one(&mut *conn)
        .await?;
    let today = local_date(now, crate::store::decode::zone(&tz)?);
    let mut seqs: Vec<u32> = parts.iter().map(|p| p.seq).collect();
    seqs.sort();
    seqs.dedup();
    for p in parts {
        let col = match p.component {
            Component::Principal => "paid_principal",
            Component::Interest => "paid_interest",
            Component::Fee => "paid_fee",
            Component::Penalty => "paid_penalty",
        };
        sqlx::query(&format!(
            "UPDATE installments SET {col} = {col} - $1 WHERE loan_id = $2 AND seq = $3"
        ))
        .bind(to_minor(p.amount)?)
        .bind(loan_id)
        .bind(p.seq as i64)
        .execute(&mut *conn)
        .await?;
    }
    for seq in &seqs {
        let due: String =
            sqlx::query_scalar("SELECT due_date FROM installments WHERE loan_id = $1 AND seq = $2")
                .bind(loan_id)
                .bind(*seq as i64)
                .fetch_one(&mut *conn)
                .await?;
        let due = NaiveDate::parse_from_str(&due, "%Y-%m-%d").expect("stored date");
        let status = if due < today { "overdue" } else { "pending" };
        sqlx::query(
            "UPDATE installments SET status = $1, paid_at = NULL, overdue_planned = 0 \
             WHERE loan_id = $2 AND seq = $3 AND status = 'paid'",
        )
        .bind(status)
        .bind(loan_id)
        .bind(*seq as i64)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE actions SET status = 'pending', note = $1, lease_owner = NULL, lease_until = NULL \
             WHERE loan_id = $2 AND seq = $3 AND kind = 'attempt' AND status = 'cancelled' \
             AND note IN ('installment paid', 'loan paid')",
        )
        .bind(format!("re-opened by refund {refund_id}"))
        .bind(loan_id)
        .bind(*seq as i64)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE loans SET status = 'active' WHERE id = $1 AND status = 'paid'")
        .bind(loan_id)
        .execute(&mut *conn)
        .await?;
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{allocate, InstallmentOrder, Outstanding};
    use proptest::prelude::*;

    fn minor() -> impl Strategy<Value = Decimal> {
        (0i64..50_000).prop_map(from_minor)
    }

    proptest! {
        /// Successive reversals of one repayment take the overpayment first, then components
        /// from the last allocated back, never more than any line credited, and add up to
        /// exactly what was asked while the total stays within the repayment.
        #[test]
        fn reversals_unwind_the_allocation(
            owed in proptest::collection::vec((minor(), minor(), minor(), minor()), 1..4),
            paid in (1i64..200_000).prop_map(from_minor),
            asks in proptest::collection::vec((1i64..80_000).prop_map(from_minor), 1..6),
        ) {
            let outstanding: Vec<Outstanding> = owed.iter().enumerate().map(|(i, (p, f, n, pr))| Outstanding {
                seq: i as u32 + 1, penalty: *p, fee: *f, interest: *n, principal: *pr,
            }).collect();
            let (allocs, over) = allocate(paid, &outstanding, &Component::DEFAULT_ORDER, InstallmentOrder::OldestFirst);
            let lines = ledger::repayment_lines("sim", paid, &allocs, over);
            let orig = Original {
                loan_id: "L".into(),
                currency: "CNY".into(),
                amount: paid,
                entry_id: 1,
                credits: lines.iter().filter(|l| l.credit > Decimal::ZERO)
                    .map(|l| (l.account.clone(), l.seq, l.component, l.credit)).collect(),
            };
            let mut done: HashMap<Key, Decimal> = HashMap::new();
            let mut total = Decimal::ZERO;
            for ask in asks {
                if total + ask > paid {
                    continue;
                }
                let held = credited(&orig, ledger::OVERPAYMENTS, None, None)
                    - done.get(&(ledger::OVERPAYMENTS.to_string(), None, None)).copied().unwrap_or_default();
                let from_over = ask.min(held);
                let parts = reverse_allocation(&orig, &done, ask - from_over);
                let sum: Decimal = parts.iter().map(|p| p.amount).sum();
                prop_assert_eq!(sum + from_over, ask);
                prop_assert!(from_over == ask || from_over == held, "overpayment first");
                let e = ledger::reversal_lines(from_over, &parts, ledger::BANK);
                let entry = Entry { id: 2, kind: "reversal", loan_id: None, currency: "CNY".into(), attempt_id: None,
                    posted_at: 0, memo: "r".into(), lines: e };
                prop_assert!(entry.check_balanced().is_ok());
                *done.entry((ledger::OVERPAYMENTS.to_string(), None, None)).or_default() += from_over;
                for p in parts {
                    let key = (ledger::credit_account(p.component).to_string(), Some(p.seq), Some(p.component));
                    *done.entry(key.clone()).or_default() += p.amount;
                    prop_assert!(done[&key] <= credited(&orig, &key.0, key.1, key.2));
                }
                total += ask;
            }
        }
    }
}
