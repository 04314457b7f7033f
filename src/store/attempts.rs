//! Attempts: recording results and finding which attempts are still open.

use super::{in_list, is_sqlite, Rows, Val};
use crate::domain::status::AttemptStatus;
use sqlx::{AnyConnection, Row};
use std::collections::HashSet;

/// A result to record on an attempt.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    pub id: i64,
    pub loan_id: String,
    pub status: AttemptStatus,
    pub code: Option<String>,
    pub class: Option<String>,
    pub channel_ref: Option<String>,
    pub next_query_at: Option<i64>,
    pub queries: u32,
}

/// `status IN ('submitted','unknown')`: the open statuses, from the enum. `|| ''` keeps
/// SQLite from driving the statement from the status index.
fn open_statuses_sql() -> String {
    format!(
        "attempts.status || '' IN ('{}','{}')",
        AttemptStatus::Submitted.as_str(),
        AttemptStatus::Unknown.as_str()
    )
}

/// Which of `ids` are still open (submitted or unknown), locked until the transaction ends
/// on PostgreSQL (SQLite's write transaction holds the whole file), so a result recorded
/// for them in the same transaction cannot lose a race with another writer.
pub async fn lock_open(conn: &mut AnyConnection, ids: &[i64]) -> Result<HashSet<i64>, sqlx::Error> {
    let lock = if is_sqlite(conn) { "" } else { "FOR UPDATE" };
    let mut open = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(5000) {
        let sql = format!(
            "SELECT id FROM attempts WHERE id IN ({}) AND {} {lock}",
            in_list(conn, 1, chunk.len()),
            open_statuses_sql()
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await? {
            open.insert(r.get::<i64, _>("id"));
        }
    }
    Ok(open)
}

/// Record results; an attempt that is no longer open is left as it is.
pub async fn write_attempts(
    conn: &mut AnyConnection,
    ups: &[AttemptUpdate],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if ups.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(7);
    for u in ups {
        rows.push(vec![
            Val::Int(u.id),
            u.status.as_str().into(),
            u.code.clone().into(),
            u.class.clone().into(),
            u.channel_ref.clone().into(),
            u.next_query_at.into(),
            u.queries.into(),
        ]);
    }
    let sql = format!(
        "UPDATE attempts SET status = v.status, code = v.code, class = v.class, \
         channel_ref = v.channel_ref, next_query_at = v.next_query_at, queries = v.queries, lease_until = NULL, \
         updated_at = {now_ms} FROM v WHERE attempts.id = v.id AND {}",
        open_statuses_sql()
    );
    rows.with_values(
        conn,
        "id, status, code, class, channel_ref, next_query_at, queries",
        &sql,
    )
    .await?;
    Ok(())
}

/// The status of the attempt with this order number on `channel`, if any.
pub async fn status_by_order(
    conn: &mut AnyConnection,
    channel: &str,
    order_no: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM attempts WHERE channel = $1 AND order_no = $2")
        .bind(channel)
        .bind(order_no)
        .fetch_optional(&mut *conn)
        .await
}

/// Make an unknown attempt due for a query right away.
pub async fn query_now(
    conn: &mut AnyConnection,
    channel: &str,
    order_no: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE attempts SET next_query_at = 0 WHERE channel = $1 AND order_no = $2 AND status = '{}'",
        AttemptStatus::Unknown.as_str()
    );
    sqlx::query(&sql)
        .bind(channel)
        .bind(order_no)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A channel callback as received, with what it did.
pub struct CallbackRow<'a> {
    pub channel: &'a str,
    pub order_no: &'a str,
    pub body: String,
    pub received_at: i64,
    pub effect: &'a str,
}

pub async fn insert_callback(
    conn: &mut AnyConnection,
    cb: &CallbackRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO channel_callbacks (channel, order_no, body, received_at, effect) VALUES ($1, $2, $3, $4, $5)")
        .bind(cb.channel)
        .bind(cb.order_no)
        .bind(cb.body.as_str())
        .bind(cb.received_at)
        .bind(cb.effect)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `owner`'s `submitted` attempts of `loans` become `unknown`, due for a query at `query_at`
/// (their answers were not written; the channel may have debited). Returns how many.
pub async fn interrupt_in_flight(
    conn: &mut AnyConnection,
    loans: &[String],
    owner: &str,
    query_at: i64,
) -> Result<u64, sqlx::Error> {
    let n = loans.len();
    let sql = format!(
        "UPDATE attempts SET status = '{unknown}', code = 'INTERRUPTED', class = 'unknown', \
         next_query_at = ${}, lease_until = NULL, lease_owner = NULL \
         WHERE status = '{submitted}' AND lease_owner = ${} AND loan_id IN ({})",
        n + 1,
        n + 2,
        in_list(conn, 1, n),
        unknown = AttemptStatus::Unknown.as_str(),
        submitted = AttemptStatus::Submitted.as_str(),
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for id in loans {
        q = q.bind(id.as_str());
    }
    let q = q.bind(query_at).bind(owner);
    Ok(q.execute(&mut *conn).await?.rows_affected())
}
