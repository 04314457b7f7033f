//! Delivering the outbox: claim what is due (with a lease, one instance at a time), hold what
//! quiet hours or the daily cap forbid, mark the rest `sending` while still this instance's
//! claim (committed before the sink is called), deliver, and record how each ended. A crash
//! between `sending` and the answer leaves the notice `sending`, never retried: at most once.

use crate::domain::notice::{plan_deliveries, DeliveryError, DispatchReport, NoticeSink, Pending};
use crate::domain::QuietWindow;
use crate::store::notices::{self, Delivered};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use sqlx::AnyConnection;
use std::collections::HashSet;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Who dispatches: the instance (claims carry its id) and when another's claims are stale.
pub struct Dispatcher<'a> {
    pub owner: &'a str,
    pub lease_ms: i64,
    pub sink: &'a dyn NoticeSink,
    pub rules: &'a (dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)> + Sync),
}

/// Deliver every notice due at `now`, batch by batch.
pub async fn dispatch(
    conn: &mut AnyConnection,
    d: &Dispatcher<'_>,
    now: DateTime<Utc>,
) -> Result<DispatchReport, NotifyError> {
    let mut report = DispatchReport::default();
    loop {
        let stale = Utc::now().timestamp_millis() - d.lease_ms;
        let batch = notices::claim_due(conn, d.owner, stale, now).await?;
        if batch.is_empty() {
            return Ok(report);
        }
        let mut counts = notices::sent_counts(conn, &batch, now).await?;
        let (send, hold) = plan_deliveries(batch, d.rules, &mut counts, now, &mut report);
        notices::reschedule(conn, &hold).await?;
        let (sent, retry) = deliver(conn, d, send, now).await?;
        report.sent += sent;
        report.retry_later += retry;
    }
}

/// Notices marked `sending` together, then delivered (16 at a time) and finished. A crash
/// gives up at most one chunk (they stay `sending`, never sent twice), so the chunk is small:
/// marking a whole claimed batch first would give up the whole batch.
const DELIVERY_CHUNK: usize = 64;

/// Deliveries in flight at once.
const DELIVERY_CONCURRENCY: usize = 16;

async fn deliver(
    conn: &mut AnyConnection,
    d: &Dispatcher<'_>,
    send: Vec<(Pending, NaiveDate)>,
    now: DateTime<Utc>,
) -> Result<(u64, u64), NotifyError> {
    let (mut sent, mut retry) = (0, 0);
    for chunk in send.chunks(DELIVERY_CHUNK) {
        let (s, r) = deliver_chunk(conn, d, chunk, now).await?;
        sent += s;
        retry += r;
    }
    Ok((sent, retry))
}

async fn deliver_chunk(
    conn: &mut AnyConnection,
    d: &Dispatcher<'_>,
    chunk: &[(Pending, NaiveDate)],
    now: DateTime<Utc>,
) -> Result<(u64, u64), NotifyError> {
    let days: Vec<(i64, NaiveDate)> = chunk.iter().map(|(p, day)| (p.id, *day)).collect();
    let taken: HashSet<i64> = notices::mark_sending(conn, d.owner, &days)
        .await?
        .into_iter()
        .collect();
    // Only notices still this instance's claim go out; the others were rescued meanwhile.
    let send: Vec<&Pending> = chunk
        .iter()
        .map(|(p, _)| p)
        .filter(|p| taken.contains(&p.id))
        .collect();
    let results: Vec<_> = futures::stream::iter(send.iter().map(|p| d.sink.deliver(&p.out)))
        .buffered(DELIVERY_CONCURRENCY)
        .collect()
        .await;
    let (mut sent, mut retry) = (0, 0);
    let mut done = Vec::with_capacity(send.len());
    for (p, r) in send.iter().zip(results) {
        let end = delivered(p.id, r, now);
        match end.status {
            "sent" => sent += 1,
            "pending" => retry += 1,
            _ => {}
        }
        metrics::counter!("repayd_notice_deliveries_total", "channel" => p.out.channel.clone(),
            "result" => end.status)
        .increment(1);
        done.push(end);
    }
    notices::finish(conn, &done, now).await?;
    Ok((sent, retry))
}

/// How one delivery ended: sent; retried a minute later; or failed for good.
fn delivered(id: i64, r: Result<Option<String>, DeliveryError>, now: DateTime<Utc>) -> Delivered {
    let (status, provider_id, error, after) = match r {
        Ok(pid) => ("sent", pid, None, now),
        Err(DeliveryError::Retry(e)) => {
            ("pending", None, Some(e), now + chrono::Duration::minutes(1))
        }
        Err(DeliveryError::Failed(e)) => ("failed", None, Some(e), now),
    };
    Delivered {
        id,
        status,
        provider_id,
        error,
        after,
    }
}
