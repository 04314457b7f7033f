//! What `repayd simulate` reads from a policy's run database (the rows its figures are
//! computed from, the borrowers a contact reached), and the published simulations a lender
//! shares through the dashboard and the API.

use super::decode::stored_date;
use super::owed::{billed, owed};
use crate::domain::money::from_minor;
use crate::domain::simulation::figures::{AttemptRow, InstallmentRow, NoticeRow};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

fn decode(e: super::DecodeError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn date_of(column: &'static str, v: &str) -> Result<NaiveDate, sqlx::Error> {
    stored_date(column, v).map_err(decode)
}

/// Every installment with what fell due (without penalty), its penalty and what it owes.
pub async fn installment_rows(
    conn: &mut AnyConnection,
) -> Result<Vec<InstallmentRow>, sqlx::Error> {
    let sql = format!(
        "SELECT i.loan_id, l.currency, i.due_date, {billed} - i.penalty + i.wo_penalty AS scheduled, \
         i.penalty, {owed} AS owed FROM installments i JOIN loans l ON l.id = i.loan_id \
         ORDER BY i.loan_id, i.seq",
        billed = billed("i"),
        owed = owed("i"),
    );
    let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            Ok(InstallmentRow {
                loan_id: r.get("loan_id"),
                currency: r.get("currency"),
                due_date: date_of("due_date", &r.get::<String, _>("due_date"))?,
                scheduled: from_minor(r.get("scheduled")),
                penalty: from_minor(r.get("penalty")),
                owed: from_minor(r.get("owed")),
            })
        })
        .collect()
}

/// Every attempt, oldest first.
pub async fn attempt_rows(conn: &mut AnyConnection) -> Result<Vec<AttemptRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.id, a.loan_id, a.seq, l.currency, a.mandate_id, a.kind, a.ladder_step, a.amount, \
         a.status, COALESCE(a.class, '') AS class, a.local_date \
         FROM attempts a JOIN loans l ON l.id = a.loan_id ORDER BY a.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRow {
                id: r.get("id"),
                loan_id: r.get("loan_id"),
                seq: r.get("seq"),
                currency: r.get("currency"),
                mandate_id: r.get("mandate_id"),
                kind: r.get("kind"),
                ladder_step: r.get("ladder_step"),
                amount: from_minor(r.get("amount")),
                succeeded: r.get::<String, _>("status") == "succeeded",
                hard: r.get::<String, _>("class") == "hard",
                local_date: date_of("local_date", &r.get::<String, _>("local_date"))?,
            })
        })
        .collect()
}

/// Every message sent, in sending order.
pub async fn notice_rows(conn: &mut AnyConnection) -> Result<Vec<NoticeRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT n.borrower_id, l.currency, n.channel, n.sent_at, n.tz FROM notices n \
         JOIN loans l ON l.id = n.loan_id WHERE n.status = 'sent' ORDER BY n.sent_at, n.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NoticeRow {
                borrower_id: r.get("borrower_id"),
                currency: r.get("currency"),
                channel: r.get("channel"),
                sent_at: DateTime::from_timestamp_millis(r.get("sent_at")).unwrap_or_default(),
                tz: super::decode::zone(&r.get::<String, _>("tz"))?,
            })
        })
        .collect()
}

/// A message that reached a borrower about a loan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub borrower_id: String,
    pub loan_id: String,
    pub sent_at: DateTime<Utc>,
}

/// Messages sent in `(after, until]`, in sending order.
pub async fn contacts_between(
    conn: &mut AnyConnection,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Contact>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT borrower_id, loan_id, sent_at FROM notices WHERE status = 'sent' \
         AND sent_at > $1 AND sent_at <= $2 ORDER BY sent_at, id",
    )
    .bind(after.timestamp_millis())
    .bind(until.timestamp_millis())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Contact {
            borrower_id: r.get("borrower_id"),
            loan_id: r.get("loan_id"),
            sent_at: DateTime::from_timestamp_millis(r.get("sent_at")).unwrap_or_default(),
        })
        .collect())
}

/// What a loan owes on its open installments due on or before `by` (YYYY-MM-DD), and the
/// agreement of its first active mandate, if it has one.
pub async fn owed_by(
    conn: &mut AnyConnection,
    loan_id: &str,
    by: NaiveDate,
) -> Result<(Decimal, Option<String>), sqlx::Error> {
    let sql = format!(
        "SELECT COALESCE(SUM({owed}), 0) FROM installments i WHERE i.loan_id = $1 \
         AND i.due_date <= $2 AND {open}",
        owed = owed("i"),
        open = super::owed::open("i"),
    );
    let minor: i64 = sqlx::query_scalar(&sql)
        .bind(loan_id)
        .bind(by.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let agreement: Option<String> = sqlx::query_scalar(
        "SELECT agreement FROM mandates WHERE loan_id = $1 AND status = 'active' \
         ORDER BY priority LIMIT 1",
    )
    .bind(loan_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok((from_minor(minor), agreement))
}

/// Loans, and loans handed to collections.
pub async fn loan_counts(conn: &mut AnyConnection) -> Result<(u64, u64), sqlx::Error> {
    let (all, coll): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'collections' THEN 1 ELSE 0 END), 0) \
         FROM loans",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((all as u64, coll as u64))
}

/// A simulation as published: its inputs in words, its figures as JSON, its report page.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: i64,
    pub created_at: i64,
    pub title: String,
    pub figures_json: String,
    pub report_html: String,
}

/// Store a simulation's results; returns its id.
pub async fn publish(
    conn: &mut AnyConnection,
    created_at: i64,
    title: &str,
    figures_json: &str,
    report_html: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO simulations (created_at, title, figures, report) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(created_at)
    .bind(title)
    .bind(figures_json)
    .bind(report_html)
    .fetch_one(&mut *conn)
    .await
}

/// Published simulations, newest first, without their bodies.
pub async fn list_published(
    conn: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<(i64, i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, created_at, title FROM simulations ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
}

pub async fn get_published(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<Published>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id, created_at, title, figures, report FROM simulations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|r| Published {
        id: r.get("id"),
        created_at: r.get("created_at"),
        title: r.get("title"),
        figures_json: r.get("figures"),
        report_html: r.get("report"),
    }))
}
