//! Notices: rendered into an outbox in the same transaction as the fact they announce, then
//! delivered at most once, outside quiet hours and under a per-borrower daily cap, both in
//! the borrower's own time zone.

use crate::domain::{local_date, local_to_utc, quiet_release, QuietWindow};
use crate::engine::state::LoanState;
use crate::pii::{mask_email, mask_phone};
use crate::policy::{NoticeChannel, Policy};
use crate::store::{in_list, Rows, Val};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("notice sink {path}: {source}")]
    Sink {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
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

/// Render the text of a notice. Every notice names the lender, amount, date and account.
pub fn render(kind: NoticeKind, lender: &str, loan: &LoanState, f: &NoticeFacts) -> String {
    let cur = &loan.currency;
    let due = f.due.map(|d| d.to_string()).unwrap_or_default();
    let acct = &f.account_masked;
    let body = match kind {
        NoticeKind::PreDue => format!(
            "{} {cur} is due on {due} for loan {}; it will be debited from {acct}.",
            f.amount, loan.id
        ),
        NoticeKind::Overdue => format!(
            "loan {} is overdue: {} {cur} was due on {due}. Please keep funds in {acct}.",
            loan.id, f.amount
        ),
        NoticeKind::Paid => format!(
            "we collected {} {cur} from {acct} for loan {} (due {due}). Thank you.",
            f.amount, loan.id
        ),
        NoticeKind::Partial => format!(
            "we collected {} {cur} from {acct} for loan {} (due {due}); {} {cur} remains and will be collected later.",
            f.amount, loan.id, f.remaining
        ),
        NoticeKind::Failed => format!(
            "we could not collect {} {cur} from {acct} for loan {} (due {due}). We will try again.",
            f.amount, loan.id
        ),
        NoticeKind::Rebind => format!(
            "the debit agreement for {acct} no longer works (loan {}, {} {cur} due {due}). Please bind a new card.",
            loan.id, f.amount
        ),
    };
    format!("[{lender}] Dear {}, {body}", loan.borrower_name)
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
    lender: &str,
    now: DateTime<Utc>,
) -> Vec<NoticeRow> {
    let body = render(kind, lender, loan, facts);
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
    let mut out = Rows::new(11);
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
            n.body.clone().into(),
            Val::Int(now.timestamp_millis()),
            Val::Int(n.send_after.timestamp_millis()),
        ]);
    }
    out.insert(
        conn,
        "INSERT INTO notices (dedupe_key, loan_id, seq, borrower_id, kind, channel, recipient, tz, body, created_at, send_after)",
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
    pub body: String,
}

/// Where notices go. The dev sink writes them to a log file; SMS and email providers plug in
/// here too.
pub trait NoticeSink: Send + Sync {
    fn deliver(&self, batch: &[Outgoing]) -> Result<(), NotifyError>;
}

/// Appends one line per notice to a file, with the recipient masked.
pub struct LogSink {
    pub path: PathBuf,
}

impl NoticeSink for LogSink {
    fn deliver(&self, batch: &[Outgoing]) -> Result<(), NotifyError> {
        let err = |source| NotifyError::Sink {
            path: self.path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        let mut w = std::io::BufWriter::new(file);
        for n in batch {
            let to = if n.channel == "sms" {
                mask_phone(&n.recipient)
            } else {
                mask_email(&n.recipient)
            };
            writeln!(w, "{}\t{}\t{}\t{to}\t{}", n.id, n.channel, n.kind, n.body).map_err(err)?;
        }
        w.flush().map_err(err)
    }
}

/// Delivery counts of one dispatch pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchReport {
    pub sent: u64,
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
    policy_for_loan: &dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)>,
    now: DateTime<Utc>,
) -> Result<DispatchReport, NotifyError> {
    let mut report = DispatchReport::default();
    loop {
        let batch = pending_batch(conn, now).await?;
        if batch.is_empty() {
            return Ok(report);
        }
        let (send, hold) = decide(conn, batch, policy_for_loan, now, &mut report).await?;
        reschedule(conn, &hold).await?;
        deliver(conn, sink, &send, now).await?;
        report.sent += send.len() as u64;
    }
}

async fn pending_batch(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(Pending, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, loan_id, borrower_id, kind, channel, recipient, tz, body FROM notices \
         WHERE status = 'pending' AND send_after <= $1 ORDER BY send_after, id LIMIT 2000",
    )
    .bind(now.timestamp_millis())
    .fetch_all(&mut *conn)
    .await?;
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
                    body: r.get("body"),
                },
            };
            (p, r.get::<String, _>("loan_id"))
        })
        .collect())
}

/// Split a batch into notices to send now and notices to hold until a later instant.
async fn decide(
    conn: &mut AnyConnection,
    batch: Vec<(Pending, String)>,
    policy_for_loan: &dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)>,
    now: DateTime<Utc>,
    report: &mut DispatchReport,
) -> Result<(Vec<(Pending, NaiveDate)>, Vec<(i64, i64)>), sqlx::Error> {
    let mut sent_today = sent_counts(conn, &batch, now).await?;
    let mut send = Vec::new();
    let mut hold = Vec::new();
    for (p, loan_id) in batch {
        let (windows, cap) = policy_for_loan(&loan_id).unwrap_or((Vec::new(), u32::MAX));
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
        let mut q = sqlx::query(&sql);
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
        "UPDATE notices SET send_after = v.send_after FROM v WHERE notices.id = v.id",
    )
    .await?;
    Ok(())
}

async fn deliver(
    conn: &mut AnyConnection,
    sink: &dyn NoticeSink,
    send: &[(Pending, NaiveDate)],
    now: DateTime<Utc>,
) -> Result<(), NotifyError> {
    if send.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(2);
    for (p, day) in send {
        rows.push(vec![Val::Int(p.id), Val::Text(day.to_string())]);
    }
    let ids_days = rows;
    ids_days
        .with_values(
            conn,
            "id, day",
            "UPDATE notices SET status = 'sending', sent_local_date = v.day FROM v \
             WHERE notices.id = v.id AND notices.status || '' = 'pending'",
        )
        .await?;
    let out: Vec<Outgoing> = send.iter().map(|(p, _)| p.out.clone()).collect();
    sink.deliver(&out)?;
    let mut done = Rows::new(1);
    for (p, _) in send {
        done.push(vec![Val::Int(p.id)]);
    }
    done.with_values(
        conn,
        "id",
        &format!(
            "UPDATE notices SET status = 'sent', sent_at = {} FROM v WHERE notices.id = v.id",
            now.timestamp_millis()
        ),
    )
    .await?;
    Ok(())
}
