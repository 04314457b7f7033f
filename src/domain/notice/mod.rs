//! Notices: rendered into an outbox in the same transaction as the fact they announce, then
//! delivered at most once, outside quiet hours and under a per-borrower daily cap, both in
//! the borrower's own time zone.

pub mod templates;

use crate::adapters::providers::sms::{parse_delivery_report, DeliveryStatus};
use crate::adapters::providers::{
    NoticeContext, OutgoingNotice, ProviderError, ProviderSet, Templates,
};
use crate::domain::loan::LoanState;
use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::policy::{NoticeChannel, Policy};
use crate::domain::{local_date, local_to_utc, quiet_release, QuietWindow};
use crate::store::{in_list, is_sqlite, Rows, Val};
use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;
use tracing::Instrument;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("notice sink {path}: {source}")]
    Sink {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("delivery report: {0}")]
    Report(String),
}

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Before the due date (T-3, T-1).
    PreDue,
    /// Overdue reminder.
    Overdue,
    /// Collected in full.
    Paid,
    /// Collected in part; the rest will be pursued.
    Partial,
    /// Attempts today failed (soft).
    Failed,
    /// The mandate failed hard: re-bind.
    Rebind,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::PreDue => "pre_due",
            NoticeKind::Overdue => "overdue",
            NoticeKind::Paid => "paid",
            NoticeKind::Partial => "partial",
            NoticeKind::Failed => "failed",
            NoticeKind::Rebind => "rebind",
        }
    }
}

/// Facts a notice states.
#[derive(Debug, Clone)]
pub struct NoticeFacts {
    pub seq: Option<u32>,
    pub amount: Decimal,
    pub remaining: Decimal,
    pub due: Option<NaiveDate>,
    pub account_masked: String,
}

/// How notices are worded: the lender's name, the templates and the locale.
#[derive(Clone)]
pub struct NoticeRender {
    pub lender: String,
    pub locale: String,
    pub templates: Arc<Templates>,
}

impl std::fmt::Debug for NoticeRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoticeRender({}, {})", self.lender, self.locale)
    }
}

impl NoticeRender {
    pub fn builtin(lender: &str, locale: &str) -> Self {
        NoticeRender {
            lender: lender.to_string(),
            locale: locale.to_string(),
            templates: Arc::new(Templates::builtin()),
        }
    }

    /// Subject and body of a notice. Every notice names the lender, amount, due date and
    /// masked account (the templates are checked for that when loaded).
    pub fn render(&self, kind: NoticeKind, loan: &LoanState, f: &NoticeFacts) -> (String, String) {
        let ctx = NoticeContext {
            lender: self.lender.clone(),
            borrower_name: loan.borrower_name.clone(),
            loan_id: loan.id.clone(),
            installment: f.seq,
            amount: f.amount.to_string(),
            currency: loan.currency.clone(),
            due_date: f.due.map(|d| d.to_string()).unwrap_or_default(),
            account_masked: f.account_masked.clone(),
            remaining: f.remaining.to_string(),
        };
        self.templates
            .render(kind.as_str(), &self.locale, &ctx)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "template failed; plain text used");
                let body = format!(
                    "[{}] {} {} {} {}, {}",
                    ctx.lender,
                    ctx.loan_id,
                    ctx.amount,
                    ctx.currency,
                    ctx.due_date,
                    ctx.account_masked
                );
                (kind.as_str().to_string(), body)
            })
    }
}

/// The policy's quiet windows.
pub fn quiet_windows(policy: &Policy) -> Vec<QuietWindow> {
    policy
        .notices
        .quiet_hours
        .iter()
        .map(|q| QuietWindow {
            start: q.start,
            end: q.end,
        })
        .collect()
}

/// One outbox row.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub dedupe_key: String,
    pub loan_id: String,
    pub seq: Option<u32>,
    pub borrower_id: String,
    pub kind: NoticeKind,
    pub channel: &'static str,
    pub recipient: String,
    pub tz: Tz,
    pub subject: String,
    pub body: String,
    pub send_after: DateTime<Utc>,
}

/// Outbox rows for one notice, one per channel the policy lists. `key` makes the notice
/// unique: the same key never produces a second notice, whatever restarts happen.
pub fn notice_rows(
    kind: NoticeKind,
    key: &str,
    loan: &LoanState,
    policy: &Policy,
    facts: &NoticeFacts,
    render: &NoticeRender,
    now: DateTime<Utc>,
) -> Vec<NoticeRow> {
    let (subject, body) = render.render(kind, loan, facts);
    let send_after = quiet_release(now, loan.tz, &quiet_windows(policy));
    policy
        .notices
        .channels
        .iter()
        .map(|c| {
            let (channel, recipient) = match c {
                NoticeChannel::Sms => ("sms", loan.phone.clone()),
                NoticeChannel::Email => ("email", loan.email.clone()),
            };
            NoticeRow {
                dedupe_key: format!("{}:{key}:{channel}", kind.as_str()),
                loan_id: loan.id.clone(),
                seq: facts.seq,
                borrower_id: loan.borrower_id.clone(),
                kind,
                channel,
                recipient,
                tz: loan.tz,
                subject: subject.clone(),
                body: body.clone(),
                send_after,
            }
        })
        .collect()
}

/// Write outbox rows; a dedupe key already present is left alone.
pub async fn queue_notices(
    conn: &mut AnyConnection,
    rows: &[NoticeRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut out = Rows::new(12);
    for n in rows {
        out.push(vec![
            n.dedupe_key.clone().into(),
            n.loan_id.clone().into(),
            n.seq.map(i64::from).into(),
            n.borrower_id.clone().into(),
            n.kind.as_str().into(),
            n.channel.into(),
            n.recipient.clone().into(),
            n.tz.name().into(),
            n.subject.clone().into(),
            n.body.clone().into(),
            Val::Int(now.timestamp_millis()),
            Val::Int(n.send_after.timestamp_millis()),
        ]);
    }
    out.insert(
        conn,
        "INSERT INTO notices (dedupe_key, loan_id, seq, borrower_id, kind, channel, recipient, tz, subject, body, created_at, send_after)",
        "ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .await
}

/// A notice ready to deliver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: i64,
    pub kind: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Certainly not delivered (or the provider dedupes by message id): try again later.
    Retry(String),
    /// Refused, or the outcome is unknown: never sent again.
    Failed(String),
}

/// Where notices go: the dev log sink, or SMS and email providers.
#[async_trait]
pub trait NoticeSink: Send + Sync {
    /// Deliver one notice; `Ok` carries the provider's id, if any.
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError>;
}

/// Appends one line per notice to a file, with the recipient masked.
pub struct LogSink {
    pub path: PathBuf,
}

#[async_trait]
impl NoticeSink for LogSink {
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError> {
        let to = if n.channel == "sms" {
            mask_phone(&n.recipient)
        } else {
            mask_email(&n.recipient)
        };
        let line = format!(
            "{}\t{}\t{}\t{to}\t{}\n",
            n.id,
            n.channel,
            n.kind,
            n.body.replace('\n', " ")
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| DeliveryError::Retry(format!("{}: {e}", self.path.display())))?;
        file.write_all(line.as_bytes())
            .map_err(|e| DeliveryError::Failed(format!("{}: {e}", self.path.display())))?;
        Ok(None)
    }
}

/// Sends through the SMS and email providers. A provider timeout is retried at once with the
/// same message id (providers dedupe on it); a notice still unanswered is marked failed rather
/// than risk sending it twice.
pub struct ProviderSink {
    pub providers: ProviderSet,
    pub timeout_retries: u32,
}

#[async_trait]
impl NoticeSink for ProviderSink {
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError> {
        let Some(provider) = self.providers.get(&n.channel) else {
            return Err(DeliveryError::Failed(format!(
                "no provider for {}",
                n.channel
            )));
        };
        let out = OutgoingNotice {
            id: n.id,
            message_id: OutgoingNotice::message_id_for(n.id),
            kind: n.kind.clone(),
            channel: n.channel.clone(),
            recipient: n.recipient.clone(),
            subject: n.subject.clone(),
            body: n.body.clone(),
        };
        let mut tries = 0;
        loop {
            let span =
                tracing::info_span!("notice", id = n.id, channel = %n.channel, kind = %n.kind);
            let result = provider.send(&out).instrument(span).await;
            match result {
                Ok(r) => return Ok(Some(r.provider_id)),
                Err(ProviderError::Timeout(e)) if tries < self.timeout_retries => {
                    tries += 1;
                    tracing::warn!(id = n.id, error = %e, "provider timeout; retrying with the same message id");
                }
                Err(ProviderError::Timeout(e)) => {
                    return Err(DeliveryError::Failed(format!("timeout: {e}")))
                }
                Err(e) if e.retryable() => return Err(DeliveryError::Retry(e.to_string())),
                Err(e) => return Err(DeliveryError::Failed(e.to_string())),
            }
        }
    }
}

/// Delivery counts of one dispatch pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchReport {
    pub sent: u64,
    pub retry_later: u64,
    pub held_quiet: u64,
    pub held_cap: u64,
}

struct Pending {
    id: i64,
    borrower: String,
    tz: Tz,
    out: Outgoing,
}

/// Deliver notices due at `now`, at most once each: rows are marked `sending` (committed)
/// before the sink is called and `sent` after. A crash in between leaves `sending`, which is
/// never retried automatically.
pub async fn dispatch(
    conn: &mut AnyConnection,
    sink: &dyn NoticeSink,
    policy_rules: &dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)>,
    now: DateTime<Utc>,
) -> Result<DispatchReport, NotifyError> {
    let mut report = DispatchReport::default();
    loop {
        let batch = pending_batch(conn, now).await?;
        if batch.is_empty() {
            return Ok(report);
        }
        let (send, hold) = decide(conn, batch, policy_rules, now, &mut report).await?;
        reschedule(conn, &hold).await?;
        let (sent, retry) = deliver(conn, sink, &send, now).await?;
        report.sent += sent;
        report.retry_later += retry;
    }
}

async fn pending_batch(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(Pending, String)>, sqlx::Error> {
    // Claimed atomically, so two daemons never deliver the same notice. A claim left behind
    // by a crash before delivery started is given back after a minute.
    let wall = Utc::now().timestamp_millis();
    sqlx::query(
        "UPDATE notices SET status = 'pending' WHERE status = 'claimed' AND claimed_at < $1",
    )
    .bind(wall - 60_000)
    .execute(&mut *conn)
    .await?;
    let lock = if is_sqlite(conn) {
        ""
    } else {
        "FOR UPDATE SKIP LOCKED"
    };
    // Straight off the (status, send_after) index, with no sort over the whole outbox.
    let sql = format!(
        "UPDATE notices SET status = 'claimed', claimed_at = $2 WHERE id IN (\
         SELECT id FROM notices WHERE status = 'pending' AND send_after <= $1 \
         ORDER BY send_after LIMIT 2000 {lock}) \
         RETURNING id, loan_id, borrower_id, kind, channel, recipient, tz, subject, body"
    );
    let mut rows = sqlx::query(&sql)
        .bind(now.timestamp_millis())
        .bind(wall)
        .fetch_all(&mut *conn)
        .await?;
    rows.sort_by_key(|r| r.get::<i64, _>("id"));
    let policy_of = loan_policies(conn, &rows).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let tz: String = r.get("tz");
            let p = Pending {
                id: r.get("id"),
                borrower: r.get("borrower_id"),
                tz: tz.parse().unwrap_or(chrono_tz::UTC),
                out: Outgoing {
                    id: r.get("id"),
                    kind: r.get("kind"),
                    channel: r.get("channel"),
                    recipient: r.get("recipient"),
                    subject: r.get::<Option<String>, _>("subject").unwrap_or_default(),
                    body: r.get("body"),
                },
            };
            let policy = policy_of
                .get(&r.get::<String, _>("loan_id"))
                .cloned()
                .unwrap_or_default();
            (p, policy)
        })
        .collect())
}

/// The policy of each loan with a notice in the batch (whose quiet hours and cap apply).
async fn loan_policies(
    conn: &mut AnyConnection,
    rows: &[sqlx::any::AnyRow],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let mut ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>("loan_id")).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, policy FROM loans WHERE id IN ({})",
        in_list(conn, 1, ids.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for id in &ids {
        q = q.bind(id.as_str());
    }
    let found = q.fetch_all(&mut *conn).await?;
    Ok(found
        .into_iter()
        .map(|r| (r.get("id"), r.get("policy")))
        .collect())
}

/// Split a batch into notices to send now and notices to hold until a later instant.
async fn decide(
    conn: &mut AnyConnection,
    batch: Vec<(Pending, String)>,
    policy_rules: &dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)>,
    now: DateTime<Utc>,
    report: &mut DispatchReport,
) -> Result<(Vec<(Pending, NaiveDate)>, Vec<(i64, i64)>), sqlx::Error> {
    let mut sent_today = sent_counts(conn, &batch, now).await?;
    let mut send = Vec::new();
    let mut hold = Vec::new();
    for (p, policy) in batch {
        let (windows, cap) = policy_rules(&policy).unwrap_or((Vec::new(), u32::MAX));
        let release = quiet_release(now, p.tz, &windows);
        if release > now {
            report.held_quiet += 1;
            hold.push((p.id, release.timestamp_millis()));
            continue;
        }
        let today = local_date(now, p.tz);
        let count = sent_today.entry((p.borrower.clone(), today)).or_insert(0);
        if *count >= cap as i64 {
            report.held_cap += 1;
            let tomorrow = local_to_utc(today + Days::new(1), NaiveTime::MIN, p.tz);
            hold.push((
                p.id,
                quiet_release(tomorrow, p.tz, &windows).timestamp_millis(),
            ));
            continue;
        }
        *count += 1;
        send.push((p, today));
    }
    Ok((send, hold))
}

async fn sent_counts(
    conn: &mut AnyConnection,
    batch: &[(Pending, String)],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, NaiveDate), i64>, sqlx::Error> {
    let mut borrowers: Vec<String> = batch.iter().map(|(p, _)| p.borrower.clone()).collect();
    borrowers.sort();
    borrowers.dedup();
    let utc_day = now.date_naive();
    let days = [utc_day - Days::new(1), utc_day, utc_day + Days::new(1)];
    let mut out = HashMap::new();
    for chunk in borrowers.chunks(5000) {
        let sql = format!(
            "SELECT borrower_id, sent_local_date, COUNT(*) AS n FROM notices \
             WHERE status IN ('sent','sending') AND sent_local_date IN ($1,$2,$3) \
             AND borrower_id IN ({}) GROUP BY borrower_id, sent_local_date",
            in_list(conn, 4, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for d in &days {
            q = q.bind(d.to_string());
        }
        for b in chunk {
            q = q.bind(b.as_str());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let day: String = r.get("sent_local_date");
            let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d").expect("stored date");
            out.insert((r.get("borrower_id"), day), r.get::<i64, _>("n"));
        }
    }
    Ok(out)
}

async fn reschedule(conn: &mut AnyConnection, hold: &[(i64, i64)]) -> Result<(), sqlx::Error> {
    if hold.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(2);
    for (id, at) in hold {
        rows.push(vec![Val::Int(*id), Val::Int(*at)]);
    }
    rows.with_values(
        conn,
        "id, send_after",
        "UPDATE notices SET send_after = v.send_after, status = 'pending' FROM v WHERE notices.id = v.id",
    )
    .await?;
    Ok(())
}

async fn deliver(
    conn: &mut AnyConnection,
    sink: &dyn NoticeSink,
    send: &[(Pending, NaiveDate)],
    now: DateTime<Utc>,
) -> Result<(u64, u64), NotifyError> {
    if send.is_empty() {
        return Ok((0, 0));
    }
    let mut rows = Rows::new(2);
    for (p, day) in send {
        rows.push(vec![Val::Int(p.id), Val::Text(day.to_string())]);
    }
    rows.with_values(
        conn,
        "id, day",
        "UPDATE notices SET status = 'sending', sent_local_date = v.day FROM v \
         WHERE notices.id = v.id AND notices.status || '' = 'claimed'",
    )
    .await?;
    let results: Vec<_> = futures::stream::iter(send.iter().map(|(p, _)| sink.deliver(&p.out)))
        .buffered(16)
        .collect()
        .await;
    let mut done = Rows::new(5);
    let (mut sent, mut retry) = (0, 0);
    for ((p, _), r) in send.iter().zip(results) {
        let (status, provider_id, error, after) = match r {
            Ok(id) => {
                sent += 1;
                ("sent", id, None, now)
            }
            Err(DeliveryError::Retry(e)) => {
                retry += 1;
                ("pending", None, Some(e), now + chrono::Duration::minutes(1))
            }
            Err(DeliveryError::Failed(e)) => ("failed", None, Some(e), now),
        };
        metrics::counter!("repayd_notice_deliveries_total", "channel" => p.out.channel.clone(),
            "result" => status)
        .increment(1);
        done.push(vec![
            Val::Int(p.id),
            status.into(),
            provider_id.into(),
            error.into(),
            Val::Int(after.timestamp_millis()),
        ]);
    }
    done.with_values(
        conn,
        "id, status, provider_id, error, after",
        &format!(
            "UPDATE notices SET status = v.status, provider_id = v.provider_id, error = v.error, \
             send_after = v.after, sent_at = CASE WHEN v.status = 'sent' THEN {} ELSE NULL END, \
             sent_local_date = CASE WHEN v.status = 'pending' THEN NULL ELSE notices.sent_local_date END \
             FROM v WHERE notices.id = v.id",
            now.timestamp_millis()
        ),
    )
    .await?;
    Ok((sent, retry))
}

/// A delivery report from the SMS gateway: record the status on the notice it names.
/// Returns whether a notice matched.
pub async fn record_delivery_report(
    conn: &mut AnyConnection,
    body: &[u8],
) -> Result<bool, NotifyError> {
    let report = parse_delivery_report(body).map_err(|e| NotifyError::Report(e.to_string()))?;
    let status = match &report.status {
        DeliveryStatus::Pending => "pending".to_string(),
        DeliveryStatus::Delivered => "delivered".to_string(),
        DeliveryStatus::Failed => "failed".to_string(),
        DeliveryStatus::Other(s) => s.clone(),
    };
    let id = report
        .message_id
        .as_deref()
        .and_then(|m| m.strip_prefix("repayd-"))
        .and_then(|n| n.parse::<i64>().ok());
    let n = sqlx::query("UPDATE notices SET delivery_status = $1 WHERE id = $2 OR (provider_id IS NOT NULL AND provider_id = $3)")
        .bind(status)
        .bind(id.unwrap_or(-1))
        .bind(report.provider_id.unwrap_or_default())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}
