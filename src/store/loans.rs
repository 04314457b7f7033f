//! Loading the loans a batch works on, with a few set-based queries: the loan and its
//! borrower, unpaid installments, mandates in priority order, and the attempt facts (open
//! attempts, amounts used per mandate and day). A stored value that does not decode marks
//! the loan broken instead of failing the load.

use crate::domain::loan::{InstState, LoanState, MandateState};
use crate::domain::status::{AttemptStatus, InstallmentStatus, LoanStatus, MandateStatus};
use crate::domain::{from_minor, Outstanding};
use crate::store::{in_list, stored_date, stored_status, stored_tz};
use chrono::NaiveDate;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

fn bind_ids<'q>(
    sql: &'q str,
    ids: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    // IN lists vary in length: not worth a cached prepared statement each.
    let mut q = sqlx::query(sql).persistent(false);
    for id in ids {
        q = q.bind(id.as_str());
    }
    q
}

/// Mark the loans with an attempt made at or after `at_ms`.
async fn load_attempted_since(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    at_ms: i64,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT DISTINCT loan_id FROM attempts WHERE loan_id IN ({list}) AND created_at >= ${}",
        ids.len() + 1
    );
    for r in bind_ids(&sql, ids)
        .bind(at_ms)
        .fetch_all(&mut *conn)
        .await?
    {
        if let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) {
            l.attempted_in_run = true;
        }
    }
    Ok(())
}

/// Note the first value of a loan that did not decode.
fn mark_broken(loan: &mut LoanState, e: crate::store::DecodeError) {
    loan.broken.get_or_insert_with(|| e.to_string());
}

/// Load loans, their unpaid installments, mandates and open attempts.
pub async fn load_loans(
    conn: &mut AnyConnection,
    ids: &[String],
    since_date: NaiveDate,
) -> Result<HashMap<String, LoanState>, sqlx::Error> {
    load_loans_for_run(conn, ids, since_date, None).await
}

/// `load_loans` for a run at `run_at_ms`: a loan with an attempt made at or after that
/// instant is marked `attempted_in_run`.
pub async fn load_loans_for_run(
    conn: &mut AnyConnection,
    ids: &[String],
    since_date: NaiveDate,
    run_at_ms: Option<i64>,
) -> Result<HashMap<String, LoanState>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(5000) {
        load_chunk(conn, chunk, (since_date, run_at_ms), &mut out).await?;
    }
    Ok(out)
}

async fn load_chunk(
    conn: &mut AnyConnection,
    ids: &[String],
    (since_date, run_at_ms): (NaiveDate, Option<i64>),
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let list = in_list(conn, 1, ids.len());
    let sql = format!(
        "SELECT l.id, l.borrower_id, b.name, b.phone, b.email, b.payday, l.currency, l.tz, \
         l.policy, l.allow_early, l.status, l.ladder_pos \
         FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.id IN ({list})"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let tz = stored_tz("tz", &r.get::<String, _>("tz"));
        let raw: String = r.get("status");
        let (status, bad_status) = stored_status("loans.status", &raw, LoanStatus::Active);
        let mut loan = LoanState {
            id: r.get("id"),
            borrower_id: r.get("borrower_id"),
            borrower_name: r.get("name"),
            phone: r.get("phone"),
            email: r.get("email"),
            payday: r.get::<Option<i64>, _>("payday").map(|d| d as u32),
            currency: r.get("currency"),
            // Placeholder only: a bad zone marks the loan broken below, and a broken loan is
            // parked, never pursued at UTC hours.
            tz: *tz.as_ref().unwrap_or(&chrono_tz::UTC),
            policy: r.get("policy"),
            allow_early: r.get::<i64, _>("allow_early") != 0,
            status,
            ladder_pos: r.get::<i64, _>("ladder_pos") as u32,
            insts: Vec::new(),
            mandates: Vec::new(),
            open_attempt: false,
            attempted_in_run: false,
            used: HashMap::new(),
            dirty: false,
            broken: None,
        };
        for e in [tz.err(), bad_status.err()].into_iter().flatten() {
            mark_broken(&mut loan, e);
        }
        out.insert(loan.id.clone(), loan);
    }
    load_installments(conn, ids, &list, out).await?;
    load_mandates(conn, ids, &list, out).await?;
    load_attempt_facts(conn, ids, &list, since_date, out).await?;
    if let Some(at) = run_at_ms {
        load_attempted_since(conn, ids, &list, at, out).await?;
    }
    Ok(())
}

async fn load_installments(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT loan_id, seq, due_date, principal, interest, fee, penalty, paid_principal, \
         paid_interest, paid_fee, paid_penalty, status, attempts, paid_at FROM installments \
         WHERE loan_id IN ({list}) AND status <> 'paid' ORDER BY loan_id, seq"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let m = |c: &str| from_minor(r.get::<i64, _>(c));
        let seq = r.get::<i64, _>("seq") as u32;
        let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) else {
            continue;
        };
        let due = stored_date("due_date", &r.get::<String, _>("due_date"));
        let raw: String = r.get("status");
        let (status, bad_status) =
            stored_status("installments.status", &raw, InstallmentStatus::Pending);
        let inst = InstState {
            seq,
            due: *due.as_ref().unwrap_or(&NaiveDate::MIN),
            principal: m("principal"),
            interest: m("interest"),
            fee: m("fee"),
            penalty: m("penalty"),
            paid: Outstanding {
                seq,
                penalty: m("paid_penalty"),
                fee: m("paid_fee"),
                interest: m("paid_interest"),
                principal: m("paid_principal"),
            },
            status,
            attempts: r.get::<i64, _>("attempts") as u32,
            paid_at: r.get("paid_at"),
            dirty: false,
        };
        for e in [due.err(), bad_status.err()].into_iter().flatten() {
            mark_broken(l, e);
        }
        l.insts.push(inst);
    }
    Ok(())
}

async fn load_mandates(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT id, loan_id, channel, agreement, account_masked, per_debit_limit, daily_limit, \
         status, status_code FROM mandates WHERE loan_id IN ({list}) ORDER BY loan_id, priority"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let lim = |c: &str| r.get::<Option<i64>, _>(c).map(from_minor);
        let raw: String = r.get("status");
        // Taken as revoked (never debited) until a person looks at the parked loan.
        let (status, bad_status) = stored_status("mandates.status", &raw, MandateStatus::Revoked);
        let m = MandateState {
            id: r.get("id"),
            channel: r.get("channel"),
            agreement: r.get("agreement"),
            account_masked: r.get("account_masked"),
            per_debit_limit: lim("per_debit_limit"),
            daily_limit: lim("daily_limit"),
            status,
            status_code: r.get("status_code"),
            dirty: false,
        };
        if let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) {
            if let Err(e) = bad_status {
                mark_broken(l, e);
            }
            l.mandates.push(m);
        }
    }
    Ok(())
}

async fn load_attempt_facts(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    since_date: NaiveDate,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let n = ids.len();
    let sql = format!(
        "SELECT loan_id, mandate_id, local_date, status, CAST(SUM(amount) AS BIGINT) AS total \
         FROM attempts WHERE loan_id IN ({list}) AND (status IN ('submitted','unknown') OR \
         (status = 'succeeded' AND local_date >= ${})) \
         GROUP BY loan_id, mandate_id, local_date, status",
        n + 1
    );
    let rows = bind_ids(&sql, ids)
        .bind(since_date.to_string())
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) else {
            continue;
        };
        let status: String = r.get("status");
        if status != AttemptStatus::Succeeded.as_str() {
            l.open_attempt = true;
        }
        let day = match stored_date("local_date", &r.get::<String, _>("local_date")) {
            Ok(d) => d,
            Err(e) => {
                mark_broken(l, e);
                continue;
            }
        };
        let key = (r.get::<i64, _>("mandate_id"), day);
        *l.used.entry(key).or_default() += from_minor(r.get::<i64, _>("total"));
    }
    Ok(())
}

/// Park `loan` for a person; whether it was parked now (it may have been parked already).
pub async fn park(
    conn: &mut AnyConnection,
    loan: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE loans SET parked_at = $1, parked_reason = $2 WHERE id = $3 AND parked_at IS NULL",
    )
    .bind(now_ms)
    .bind(reason)
    .bind(loan)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// How many loans wait for a person.
pub async fn parked_count(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM loans WHERE parked_at IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
}

/// Loans under `policy`, active or in collections, with an open installment due before
/// `before`: the candidates for a write-off past the policy's point.
pub async fn with_open_due_before(
    conn: &mut AnyConnection,
    policy: &str,
    before: NaiveDate,
) -> Result<Vec<String>, sqlx::Error> {
    use crate::domain::status::{InstallmentStatus as I, LoanStatus as L};
    let sql = format!(
        "SELECT DISTINCT l.id FROM loans l JOIN installments i ON i.loan_id = l.id \
         WHERE l.policy = $1 AND l.status IN ('{}', '{}') \
         AND i.status NOT IN ('{}', '{}') AND i.due_date < $2 ORDER BY l.id",
        L::Active.as_str(),
        L::Collections.as_str(),
        I::Paid.as_str(),
        I::WrittenOff.as_str(),
    );
    let rows = sqlx::query(&sql)
        .bind(policy)
        .bind(before.to_string())
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// Whether a loan of this id exists.
pub async fn loan_exists(conn: &mut AnyConnection, loan_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM loans WHERE id = $1")
        .bind(loan_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// A loan's currency; `RowNotFound` when there is no such loan.
pub async fn currency_of(conn: &mut AnyConnection, loan_id: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT currency FROM loans WHERE id = $1")
        .bind(loan_id)
        .fetch_one(&mut *conn)
        .await
}
