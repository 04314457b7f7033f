//! Attempts: a filtered, paged list and the live feed (Server-Sent Events).

use super::error::{ApiError, ErrorBody};
use super::Viewer;
use super::{cursor_in, cursor_out, limit_of};
use crate::api::ApiState;
use crate::report::{self, AttemptFilter, AttemptView};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use futures::Stream;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How often the feed looks for changed attempts.
const POLL: Duration = Duration::from_millis(500);

/// Filters of attempt lists and the feed. Every value is bound as a query parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Made at or after: RFC 3339 instant or YYYY-MM-DD (UTC midnight).
    pub from: Option<String>,
    /// Made before: RFC 3339 instant or YYYY-MM-DD (UTC midnight).
    pub to: Option<String>,
    pub channel: Option<String>,
    /// early, due, overdue, payday, manual
    pub kind: Option<String>,
    /// submitted, succeeded, failed, unknown (`outcome` is the same filter)
    pub status: Option<String>,
    pub outcome: Option<String>,
    /// The channel's failure code.
    pub code: Option<String>,
    pub loan_id: Option<String>,
    /// Same as `loan_id`.
    pub loan: Option<String>,
    /// `next_cursor` of the previous page (lists only).
    pub cursor: Option<String>,
    /// 1 to 500 (default 50; lists only).
    pub limit: Option<String>,
    /// Feed only: start after this event id (like `Last-Event-ID`).
    pub after: Option<String>,
}

fn instant(field: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.timestamp_millis()));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(|d| {
            Some(
                d.and_hms_opt(0, 0, 0)
                    .expect("midnight")
                    .and_utc()
                    .timestamp_millis(),
            )
        })
        .map_err(|_| ApiError::bad(field, "an RFC 3339 instant or YYYY-MM-DD"))
}

impl AttemptQuery {
    fn filter(&self) -> Result<AttemptFilter, ApiError> {
        let pick = |a: &Option<String>, b: &Option<String>| {
            a.clone().or_else(|| b.clone()).filter(|s| !s.is_empty())
        };
        Ok(AttemptFilter {
            loan_id: pick(&self.loan_id, &self.loan),
            channel: pick(&self.channel, &None),
            kind: pick(&self.kind, &None),
            status: pick(&self.status, &self.outcome),
            code: pick(&self.code, &None),
            from_ms: instant("from", &self.from)?,
            to_ms: instant("to", &self.to)?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptPage {
    pub items: Vec<AttemptView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/attempts", tag = "attempts", params(AttemptQuery),
    responses((status = 200, body = AttemptPage), (status = "4XX", body = ErrorBody)))]
pub async fn list_attempts(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    let filter = q.filter()?;
    let limit = limit_of(&q.limit)?;
    let before = match q.cursor.as_deref() {
        Some(c) => Some(
            cursor_in(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::bad("cursor", "not a cursor this API gave"))?,
        ),
        None => None,
    };
    let mut conn = s.engine.db.pool.acquire().await?;
    let mut items = report::attempts_page(&mut conn, &filter, before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|a| cursor_out(&a.id.to_string())))
        .flatten();
    Ok(Json(AttemptPage { items, next_cursor }))
}

/// One event of the live feed (`event: attempt`); its SSE `id:` is a cursor to resume from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptEvent {
    pub id: i64,
    /// When the attempt last changed.
    pub at: DateTime<Utc>,
    pub loan_id: String,
    pub seq: u32,
    pub channel: String,
    /// Masked.
    pub account: String,
    pub kind: String,
    pub ladder_step: u32,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub status: String,
    pub code: Option<String>,
    pub order_no: String,
}

impl From<&AttemptView> for AttemptEvent {
    fn from(a: &AttemptView) -> Self {
        AttemptEvent {
            id: a.id,
            at: a.updated_at,
            loan_id: a.loan_id.clone(),
            seq: a.seq,
            channel: a.channel.clone(),
            account: a.account.clone(),
            kind: a.kind.clone(),
            ladder_step: a.ladder_step,
            amount: a.amount,
            status: a.status.clone(),
            code: a.code.clone(),
            order_no: a.order_no.clone(),
        }
    }
}

/// The feed's position: the last change seen, `(updated_at, id)`, written `UPDATED-ID`.
fn event_id(pos: (i64, i64)) -> String {
    format!("{}-{}", pos.0, pos.1)
}

fn parse_event_id(s: &str) -> Option<(i64, i64)> {
    let (u, i) = s.trim().rsplit_once('-')?;
    Some((u.parse().ok()?, i.parse().ok()?))
}

struct Feed {
    state: ApiState,
    filter: AttemptFilter,
    pos: (i64, i64),
    queue: VecDeque<AttemptView>,
    first: bool,
}

/// Live attempts as Server-Sent Events. Starts after `Last-Event-ID` (or `after`) when
/// given, otherwise with changes from now on; polls every 500 ms.
#[utoipa::path(get, path = "/api/v1/attempts/stream", tag = "attempts", params(AttemptQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses((status = 200, description = "`event: attempt` with `id:` a cursor and `data:` JSON",
        content_type = "text/event-stream", body = AttemptEvent),
        (status = "4XX", body = ErrorBody)))]
pub async fn stream_attempts(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<AttemptQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = q.filter()?;
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| ("Last-Event-ID", v.to_string()))
        .or_else(|| q.after.clone().map(|v| ("after", v)))
        .filter(|(_, v)| !v.is_empty());
    let pos = match given {
        Some((field, v)) => parse_event_id(&v)
            .ok_or_else(|| ApiError::bad(field, "not an event id of this feed"))?,
        None => {
            let mut conn = s.engine.db.pool.acquire().await?;
            report::attempts_feed_head(&mut conn).await?
        }
    };
    let feed = Feed {
        state: s,
        filter,
        pos,
        queue: VecDeque::new(),
        first: true,
    };
    let stream = futures::stream::unfold(feed, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn next_event(mut f: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    loop {
        if let Some(a) = f.queue.pop_front() {
            f.pos = (a.updated_at.timestamp_millis(), a.id);
            let data = serde_json::to_string(&AttemptEvent::from(&a)).expect("serialisable");
            let ev = Event::default()
                .event("attempt")
                .id(event_id(f.pos))
                .data(data);
            return Some((Ok(ev), f));
        }
        if f.state.engine.cfg.stop.load(Ordering::SeqCst) {
            return None;
        }
        if f.first {
            // Tell the client where it stands, so it can resume even before any change.
            f.first = false;
            let ev = Event::default()
                .event("ready")
                .id(event_id(f.pos))
                .data("{}");
            return Some((Ok(ev), f));
        }
        let rows = match f.state.engine.db.pool.acquire().await {
            Ok(mut conn) => report::attempts_changed_after(&mut conn, &f.filter, f.pos, 500).await,
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) if !rows.is_empty() => f.queue.extend(rows),
            Ok(_) => tokio::time::sleep(POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, "attempt feed query failed; retrying");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let pos = (1_767_225_600_000, 42);
        assert_eq!(parse_event_id(&event_id(pos)), Some(pos));
        assert_eq!(parse_event_id("nonsense"), None);
        assert_eq!(parse_event_id("1-x"), None);
    }
}
