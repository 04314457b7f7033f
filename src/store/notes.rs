//! Notes and promises to pay on a loan (`loan_notes`), and what was collected since each.

use super::alloc_on;
use crate::domain::{from_minor, to_minor, MoneyError};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

/// What a loan's succeeded attempts collected since the note `n` was written: the one
/// definition of "paid since a promise" for the notes and the loan list.
pub(crate) const PAID_SINCE: &str = "(SELECT CAST(COALESCE(SUM(a.amount), 0) AS BIGINT) \
     FROM attempts a WHERE a.loan_id = n.loan_id AND a.status = 'succeeded' \
     AND a.updated_at >= n.created_at)";

/// One stored note or promise, with what the loan's succeeded attempts collected since it
/// was written (the read side decides kept or broken from it).
#[derive(Debug, Clone, PartialEq)]
pub struct NoteRow {
    pub id: i64,
    pub loan_id: String,
    pub kind: String,
    pub body: String,
    pub amount: Option<Decimal>,
    pub promised_on: Option<NaiveDate>,
    pub created_by: String,
    pub created_at: i64,
    pub paid_since: Decimal,
}

/// What to write: a note, or a promise of `amount` by `promised_on`.
#[derive(Debug, Clone)]
pub struct NewNote<'a> {
    pub loan_id: &'a str,
    pub body: &'a str,
    pub promise: Option<(Decimal, NaiveDate)>,
    pub created_by: &'a str,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Insert a note or promise in the caller's transaction; returns its id.
pub async fn insert_note(conn: &mut AnyConnection, n: &NewNote<'_>) -> Result<i64, NoteError> {
    let id = alloc_on(&mut *conn, "loan_note", 1).await?;
    let amount = n.promise.map(|(a, _)| to_minor(a)).transpose()?;
    sqlx::query(
        "INSERT INTO loan_notes (id, loan_id, kind, body, amount, promised_on, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(n.loan_id)
    .bind(if n.promise.is_some() { "promise" } else { "note" })
    .bind(n.body)
    .bind(amount)
    .bind(n.promise.map(|(_, d)| d.to_string()))
    .bind(n.created_by)
    .bind(n.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// A loan's notes and promises, newest first (at most 500).
pub async fn notes_of(
    conn: &mut AnyConnection,
    loan_id: &str,
) -> Result<Vec<NoteRow>, sqlx::Error> {
    let sql = format!(
        "SELECT n.id, n.loan_id, n.kind, n.body, n.amount, n.promised_on, n.created_by, \
         n.created_at, {PAID_SINCE} AS paid \
         FROM loan_notes n WHERE n.loan_id = $1 ORDER BY n.id DESC LIMIT 500"
    );
    let rows = sqlx::query(&sql)
        .bind(loan_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| NoteRow {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            kind: r.get("kind"),
            body: r.get("body"),
            amount: r.get::<Option<i64>, _>("amount").map(from_minor),
            promised_on: r
                .get::<Option<String>, _>("promised_on")
                .and_then(|d| d.parse().ok()),
            created_by: r.get("created_by"),
            created_at: r.get("created_at"),
            paid_since: from_minor(r.get("paid")),
        })
        .collect())
}

/// Pause a loan's automatic attempts until `until_ms`, unless it is already paused longer.
pub async fn pause_at_least(
    conn: &mut AnyConnection,
    loan_id: &str,
    until_ms: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE loans SET paused_until = $1, pause_reason = $2 \
         WHERE id = $3 AND (paused_until IS NULL OR paused_until < $1)",
    )
    .bind(until_ms)
    .bind(reason)
    .bind(loan_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
