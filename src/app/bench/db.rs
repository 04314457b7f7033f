//! Every statement the benchmarks run themselves (the rest goes through the store): dropping
//! and creating bench databases, the raw multi-row insert baseline, and the naive worker's
//! one-row-at-a-time statements.

use crate::app::AppError;
use crate::domain::loan::{InstState, LoanState, MandateState};
use crate::domain::pursuit::{AttemptRec, ClaimedAction};
use crate::domain::status::{InstallmentStatus, LoanStatus, MandateStatus};
use crate::domain::{from_minor, to_minor, Outstanding};
use crate::engine::EngineError;
use crate::store::{backend_of, stored_date, stored_tz, Backend, Db, Rows, Val};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};
use std::collections::HashMap;
use std::time::Instant;

/// Start from an empty database. Only files or databases that are clearly benchmark
/// databases are dropped.
pub async fn fresh_database(url: &str) -> Result<(), AppError> {
    match backend_of(url)? {
        Backend::Sqlite => {
            let path = sqlite_path(url);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            Ok(())
        }
        Backend::Postgres => {
            let (base, name) = pg_parts(url)?;
            sqlx::any::install_default_drivers();
            let mut admin = sqlx::AnyConnection::connect(&format!("{base}/postgres")).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await?;
            Ok(())
        }
    }
}

fn sqlite_path(url: &str) -> &str {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    path.split('?').next().unwrap_or(path)
}

/// The server part and the database name of a PostgreSQL URL; the name must contain `bench`.
fn pg_parts(url: &str) -> Result<(&str, &str), AppError> {
    let (base, name) = url
        .rsplit_once('/')
        .ok_or_else(|| AppError::Config(format!("no database name in {url}")))?;
    let name = name.split('?').next().unwrap_or(name);
    if !name.contains("bench") {
        return Err(AppError::Config(format!(
            "refusing to drop PostgreSQL database `{name}`: the bench database name must contain `bench`"
        )));
    }
    Ok((base, name))
}

/// The URL of the naive baseline's database beside `url`: `<name>_naive` on the same
/// PostgreSQL server, or a sibling SQLite file (`bench.db` → `bench_naive.db`).
pub fn naive_url(url: &str) -> Result<String, AppError> {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    match backend_of(url)? {
        Backend::Postgres => {
            pg_parts(url)?;
            Ok(format!("{head}_naive{query}"))
        }
        Backend::Sqlite => {
            let (dir, file) = head.rsplit_once('/').unwrap_or(("", head));
            let file = match file.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => format!("{stem}_naive.{ext}"),
                _ => format!("{file}_naive"),
            };
            let sep = if head.contains('/') { "/" } else { "" };
            Ok(format!("{dir}{sep}{file}{query}"))
        }
    }
}

/// Rows per second of one multi-row insert of `rows` three-column rows: the ceiling the
/// import and the run are compared with.
pub async fn baseline(db: &Db, rows: usize) -> Result<f64, AppError> {
    let mut conn = db.pool.acquire().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_baseline (a BIGINT, b TEXT, c BIGINT)")
        .execute(&mut *conn)
        .await?;
    let mut r = Rows::new(3);
    for i in 0..rows {
        r.push(vec![
            Val::Int(i as i64),
            Val::Text(format!("row-{i}")),
            Val::Int(7),
        ]);
    }
    let t = Instant::now();
    let mut tx = conn.begin().await?;
    r.insert_values(&mut tx, "INSERT INTO bench_baseline (a, b, c)", "")
        .await?;
    tx.commit().await?;
    Ok(rows as f64 / t.elapsed().as_secs_f64())
}

/// Claim the first pending attempt action due by `now_ms`, alone (`FOR UPDATE SKIP LOCKED
/// LIMIT 1` on PostgreSQL), as a job-queue worker takes its next job.
pub async fn claim_one(
    conn: &mut AnyConnection,
    owner: &str,
    lease_until: i64,
    now_ms: i64,
) -> Result<Option<ClaimedAction>, sqlx::Error> {
    let lock = if crate::store::is_sqlite(conn) {
        ""
    } else {
        "FOR UPDATE SKIP LOCKED"
    };
    let sql = format!(
        "UPDATE actions SET status = 'claimed', lease_owner = $1, lease_until = $2 \
         WHERE id = (SELECT id FROM actions WHERE status = 'pending' AND kind = 'attempt' \
         AND due_at <= $3 ORDER BY due_at LIMIT 1 {lock}) RETURNING id, loan_id, seq, kind, slot"
    );
    let row = sqlx::query(&sql)
        .bind(owner)
        .bind(lease_until)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| ClaimedAction {
        id: r.get("id"),
        loan_id: r.get("loan_id"),
        seq: r.get::<i64, _>("seq") as u32,
        kind: r.get("kind"),
        slot: r.get("slot"),
    }))
}

/// The loan of a job with the one installment it is for and its first active mandate, in
/// one query; `None` when the loan is not active, the installment is paid or no mandate is
/// usable.
pub async fn read_due(
    conn: &mut AnyConnection,
    loan_id: &str,
    seq: u32,
) -> Result<Option<LoanState>, AppError> {
    let row = sqlx::query(
        "SELECT l.id, l.borrower_id, b.name, b.phone, b.email, l.currency, l.tz, l.policy, \
         i.due_date, i.principal, i.interest, i.fee, i.penalty, i.paid_principal, i.paid_interest, \
         i.paid_fee, i.paid_penalty, i.attempts, i.paid_at, m.id AS mid, m.channel, m.agreement, \
         m.account_masked, m.per_debit_limit, m.daily_limit \
         FROM loans l JOIN borrowers b ON b.id = l.borrower_id \
         JOIN installments i ON i.loan_id = l.id AND i.seq = $2 AND i.status || '' <> 'paid' \
         JOIN mandates m ON m.loan_id = l.id AND m.status || '' = 'active' \
         WHERE l.id = $1 AND l.status || '' = 'active' ORDER BY m.priority LIMIT 1",
    )
    .bind(loan_id)
    .bind(seq as i64)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| loan_of_row(&r, seq)).transpose()
}

fn loan_of_row(r: &AnyRow, seq: u32) -> Result<LoanState, AppError> {
    let bad = |e: crate::store::DecodeError| AppError::Config(e.to_string());
    let m = |c: &str| from_minor(r.get::<i64, _>(c));
    let lim = |c: &str| r.get::<Option<i64>, _>(c).map(from_minor);
    let inst = InstState {
        seq,
        due: stored_date("due_date", &r.get::<String, _>("due_date")).map_err(bad)?,
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
        status: InstallmentStatus::Pending,
        attempts: r.get::<i64, _>("attempts") as u32,
        paid_at: r.get("paid_at"),
        dirty: false,
    };
    let mandate = MandateState {
        id: r.get("mid"),
        channel: r.get("channel"),
        agreement: r.get("agreement"),
        account_masked: r.get("account_masked"),
        per_debit_limit: lim("per_debit_limit"),
        daily_limit: lim("daily_limit"),
        status: MandateStatus::Active,
        status_code: None,
        dirty: false,
    };
    Ok(LoanState {
        id: r.get("id"),
        borrower_id: r.get("borrower_id"),
        borrower_name: r.get("name"),
        phone: r.get("phone"),
        email: r.get("email"),
        payday: None,
        currency: r.get("currency"),
        tz: stored_tz("tz", &r.get::<String, _>("tz")).map_err(bad)?,
        policy: r.get("policy"),
        allow_early: false,
        status: LoanStatus::Active,
        ladder_pos: 0,
        insts: vec![inst],
        mandates: vec![mandate],
        open_attempt: false,
        attempted_in_run: false,
        used: HashMap::new(),
        dirty: false,
        broken: None,
    })
}

/// Insert one attempt as `submitted` and count it on its installment.
pub async fn insert_attempt(
    conn: &mut AnyConnection,
    rec: &AttemptRec,
    action_id: i64,
    owner: &str,
    lease_until: i64,
    now_ms: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO attempts (id, action_id, loan_id, seq, mandate_id, channel, order_no, kind, \
         ladder_step, amount, status, local_date, created_at, updated_at, lease_until, lease_owner, \
         submitted_by, queries) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'submitted', $11, $12, $12, $13, $14, $14, 0)",
    )
    .bind(rec.id)
    .bind(action_id)
    .bind(rec.loan_id.as_str())
    .bind(rec.seq as i64)
    .bind(rec.mandate_id)
    .bind(rec.channel.as_str())
    .bind(rec.order_no.as_str())
    .bind(rec.kind.as_str())
    .bind(rec.ladder_step as i64)
    .bind(to_minor(rec.amount).map_err(EngineError::from)?)
    .bind(rec.local_date.to_string())
    .bind(now_ms)
    .bind(lease_until)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE installments SET attempts = attempts + 1 WHERE loan_id = $1 AND seq = $2")
        .bind(rec.loan_id.as_str())
        .bind(rec.seq as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An attempt's result, for [`finish_attempt`].
pub struct AttemptResult<'a> {
    pub status: &'a str,
    pub code: Option<&'a str>,
    pub class: Option<&'a str>,
    pub channel_ref: Option<&'a str>,
    pub next_query_at: Option<i64>,
}

/// Record a result on an attempt that is still open; false when it was settled meanwhile.
pub async fn finish_attempt(
    conn: &mut AnyConnection,
    id: i64,
    r: &AttemptResult<'_>,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE attempts SET status = $1, code = $2, class = $3, channel_ref = $4, \
         next_query_at = $5, lease_until = NULL, updated_at = $6 \
         WHERE id = $7 AND status || '' IN ('submitted', 'unknown')",
    )
    .bind(r.status)
    .bind(r.code)
    .bind(r.class)
    .bind(r.channel_ref)
    .bind(r.next_query_at)
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Write one installment's paid amounts and status back.
pub async fn write_installment(
    conn: &mut AnyConnection,
    loan_id: &str,
    i: &InstState,
) -> Result<(), AppError> {
    let minor = |d| to_minor(d).map_err(|e| AppError::Engine(EngineError::from(e)));
    sqlx::query(
        "UPDATE installments SET paid_principal = $1, paid_interest = $2, paid_fee = $3, \
         paid_penalty = $4, status = $5, paid_at = $6 WHERE loan_id = $7 AND seq = $8",
    )
    .bind(minor(i.paid.principal)?)
    .bind(minor(i.paid.interest)?)
    .bind(minor(i.paid.fee)?)
    .bind(minor(i.paid.penalty)?)
    .bind(i.status.as_str())
    .bind(i.paid_at)
    .bind(loan_id)
    .bind(i.seq as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A paid installment stops its pending actions; when it was the loan's last, the loan is
/// paid and all its pending actions stop. `status || ''` keeps SQLite from driving these
/// from the status index (scanning every pending action) instead of the loan's key.
pub async fn settle_paid(
    conn: &mut AnyConnection,
    loan_id: &str,
    seq: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE actions SET status = 'cancelled', note = 'installment paid' \
         WHERE loan_id = $1 AND seq = $2 AND status || '' = 'pending'",
    )
    .bind(loan_id)
    .bind(seq as i64)
    .execute(&mut *conn)
    .await?;
    let paid = sqlx::query(
        "UPDATE loans SET status = 'paid' WHERE id = $1 AND NOT EXISTS \
         (SELECT 1 FROM installments WHERE loan_id = $1 AND status NOT IN ('paid', 'written_off'))",
    )
    .bind(loan_id)
    .execute(&mut *conn)
    .await?;
    if paid.rows_affected() > 0 {
        sqlx::query(
            "UPDATE actions SET status = 'cancelled', note = 'loan paid' \
             WHERE loan_id = $1 AND status || '' = 'pending'",
        )
        .bind(loan_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// End a claimed action.
pub async fn end_action(
    conn: &mut AnyConnection,
    id: i64,
    status: &str,
    note: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE actions SET status = $1, note = $2, done_at = $3, lease_owner = NULL, \
         lease_until = NULL WHERE id = $4",
    )
    .bind(status)
    .bind(note)
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Attempts in the database (the naive run's count, checked against what it reported).
pub async fn count_attempts(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&db.pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naive_database_sits_beside_the_bench_one() {
        let pg = "postgres://postgres@127.0.0.1:5432/repayd_bench";
        assert_eq!(naive_url(pg).unwrap(), format!("{pg}_naive"));
        assert_eq!(
            naive_url("postgres://h/x_bench?sslmode=disable").unwrap(),
            "postgres://h/x_bench_naive?sslmode=disable"
        );
        assert!(naive_url("postgres://h/prod").is_err());
        assert_eq!(
            naive_url("sqlite://repayd-bench.db").unwrap(),
            "sqlite://repayd-bench_naive.db"
        );
        assert_eq!(
            naive_url("sqlite:///tmp/a.b/bench.db?mode=rwc").unwrap(),
            "sqlite:///tmp/a.b/bench_naive.db?mode=rwc"
        );
        assert_eq!(naive_url("sqlite://bench").unwrap(), "sqlite://bench_naive");
    }
}
