//! Attempts: a filtered, paged list and the live feed (Server-Sent Events).

use super::error::{ApiError, ErrorBody};
use super::param;
use super::Viewer;
use super::{id_cursor_in, id_cursor_out, limit_of};
use crate::store::reports::{self, AttemptFilter, AttemptView};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use futures::Stream;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How often the feed looks for changed attempts.
const POLL: Duration = Duration::from_millis(500);

/// Filters of attempt lists and the feed. Every value is bound as a query parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    /// Made at or after: RFC 3339 instant or YYYY-MM-DD (UTC midnight).
    #[param(schema_with = param::date_time)]
    pub from: Option<String>,
    /// Made before: RFC 3339 instant or YYYY-MM-DD (UTC midnight).
    #[param(schema_with = param::date_time)]
    pub to: Option<String>,
    #[param(schema_with = param::text)]
    pub channel: Option<String>,
    #[param(schema_with = param::attempt_kind)]
    pub kind: Option<String>,
    /// `outcome` is the same filter.
    #[param(schema_with = param::attempt_status)]
    pub status: Option<String>,
    #[param(schema_with = param::attempt_status)]
    pub outcome: Option<String>,
    /// The channel's failure code.
    #[param(schema_with = param::text)]
    pub code: Option<String>,
    #[param(schema_with = param::text)]
    pub loan_id: Option<String>,
    /// Same as `loan_id`.
    #[param(schema_with = param::text)]
    pub loan: Option<String>,
    /// `next_cursor` of the previous page (lists only).
    #[param(schema_with = param::id_cursor)]
    pub cursor: Option<String>,
    /// Default 50; lists only.
    #[param(schema_with = param::limit)]
    pub limit: Option<String>,
    /// Feed only: start after this event id (like `Last-Event-ID`).
    #[param(schema_with = param::event_id)]
    pub after: Option<String>,
}

fn instant(field: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    // Given empty is a mistake, not "absent".
    let Some(v) = v.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.timestamp_millis()));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(|d| Some(crate::domain::utc_day_start_ms(d)))
        .map_err(|_| ApiError::bad(field, "an RFC 3339 instant or YYYY-MM-DD"))
}

impl AttemptQuery {
    fn filter(&self) -> Result<AttemptFilter, ApiError> {
        if let Some(v) = self.after.as_deref() {
            parse_event_id(v)
                .ok_or_else(|| ApiError::bad("after", "not an event id of this feed"))?;
        }
        let pick = |a: &Option<String>, b: &Option<String>| {
            a.clone().or_else(|| b.clone()).filter(|s| !s.is_empty())
        };
        Ok(AttemptFilter {
            loan_id: pick(&self.loan_id, &self.loan),
            channel: pick(&self.channel, &None),
            kind: param::one_of("kind", &self.kind, &param::attempt_kinds())?,
            // Both are checked; `status` wins when both are given.
            status: param::one_of("status", &self.status, &param::attempt_statuses())?.or(
                param::one_of("outcome", &self.outcome, &param::attempt_statuses())?,
            ),
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
    param::ApiQuery(q): param::ApiQuery<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    let filter = q.filter()?;
    let limit = limit_of(&q.limit)?;
    let before = match q.cursor.as_deref() {
        Some(c) => Some(id_cursor_in(c)?),
        None => None,
    };
    let mut conn = s.engine.db.pool.acquire().await?;
    let mut items = reports::attempts_page(&mut conn, &filter, before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|a| id_cursor_out(a.id)))
        .flatten();
    Ok(Json(AttemptPage { items, next_cursor }))
}

/// One Server-Sent Event of the feed: `ready` first (its `id:` is where the feed stands,
/// its data `{"ready":true}`), then one `attempt` per change, its data an [`AttemptEvent`].
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedEvent {
    #[schema(schema_with = feed_event_kind)]
    pub event: String,
    /// `<updated_at>-<id>`: give it back as `Last-Event-ID` (or `after`) to resume.
    pub id: String,
    /// JSON text.
    pub data: String,
}

fn feed_event_kind() -> utoipa::openapi::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["ready", "attempt"]))
        .build()
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
    /// The loan's currency: `amount` is in it.
    pub currency: String,
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
            currency: a.currency.clone(),
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
    /// The newest `(updated_at, id)` sent.
    pos: (i64, i64),
    queue: VecDeque<AttemptView>,
    first: bool,
    /// Attempts sent while open (submitted, unknown) → the status sent. A result written by
    /// the same run keeps the attempt's `updated_at`, so it is not past `pos`: these are
    /// looked up by id instead.
    open: BTreeMap<i64, String>,
    /// `(updated_at, id, status)` of the changes sent within the lookback window, so a
    /// change re-read there is not sent twice.
    sent: BTreeSet<(i64, i64, String)>,
}

/// How far behind its position the feed re-reads changes on each poll: `updated_at` is the
/// writer's clock, not the commit time, so a change can commit after newer ones were sent.
const LOOKBACK_MS: i64 = 60 * 1000;
/// Changes re-read per poll at most (the newest of the window).
const LOOKBACK_ROWS: i64 = 2000;
/// Changes remembered as sent at most.
const SENT_MAX: usize = 20_000;

fn change_key(a: &AttemptView) -> (i64, i64, String) {
    (a.updated_at.timestamp_millis(), a.id, a.status.clone())
}

/// How far back an open attempt is followed when a feed starts.
const OPEN_LOOKBACK_MS: i64 = 3600 * 1000;
/// Open attempts followed at most (the newest).
const OPEN_MAX: usize = 2000;

impl Feed {
    fn note(&mut self, a: &AttemptView) {
        if matches!(a.status.as_str(), "submitted" | "unknown") {
            self.open.insert(a.id, a.status.clone());
            while self.open.len() > OPEN_MAX {
                self.open.pop_first();
            }
        } else {
            self.open.remove(&a.id);
        }
    }

    /// Remember a change as sent, forgetting those behind the lookback window.
    fn remember(&mut self, a: &AttemptView) {
        self.sent.insert(change_key(a));
        let horizon = self.pos.0 - LOOKBACK_MS;
        while let Some(first) = self.sent.first() {
            if first.0 >= horizon && self.sent.len() <= SENT_MAX {
                break;
            }
            self.sent.pop_first();
        }
    }

    /// Changes past `pos` and changes committed late within the lookback window, then
    /// results of attempts sent while open; none sent before.
    async fn poll(&mut self) -> Result<(), sqlx::Error> {
        let mut conn = self.state.engine.db.pool.acquire().await?;
        let mut rows =
            reports::attempts_changed_after(&mut conn, &self.filter, self.pos, 500).await?;
        let window = reports::attempts_changed_within(
            &mut conn,
            &self.filter,
            self.pos.0 - LOOKBACK_MS,
            self.pos.0,
            LOOKBACK_ROWS,
        )
        .await?;
        rows.extend(window);
        let mut fresh = HashSet::new();
        rows.retain(|a| {
            let key = change_key(a);
            !self.sent.contains(&key) && fresh.insert(key)
        });
        if !rows.is_empty() {
            rows.sort_by_key(|a| (a.updated_at, a.id));
            self.queue.extend(rows);
            return Ok(());
        }
        let ids: Vec<i64> = self.open.keys().copied().collect();
        for a in reports::attempts_by_ids(&mut conn, &ids).await? {
            if self.open.get(&a.id) == Some(&a.status) || self.sent.contains(&change_key(&a)) {
                continue;
            }
            if self.filter.status.as_ref().is_some_and(|s| *s != a.status) {
                self.note(&a);
            } else {
                self.queue.push_back(a);
            }
        }
        Ok(())
    }
}

/// Live attempts as Server-Sent Events. Starts after `Last-Event-ID` (or `after`) when
/// given, otherwise with changes from now on; polls every 500 ms. The first event, `ready`,
/// carries the starting position as its id.
///
/// Changes are ordered by `(updated_at, id)`. `updated_at` is the writer's clock, not the
/// commit time, so a change can commit after newer ones were sent (a manual attempt during
/// a long run, or two daemons): each poll also re-reads the last minute of `updated_at`
/// behind the position (its newest 2000 changes) and sends what was not sent yet, once.
/// Attempts sent while open are also followed by id, since a run writes a result with the
/// same `updated_at` as the attempt it settles. A feed resumed from `Last-Event-ID` replays
/// that minute (clients replace an attempt's row by id); a new one starts from now.
#[utoipa::path(get, path = "/api/v1/attempts/stream", tag = "attempts", params(AttemptQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event",
            pattern = r"^[0-9]{1,15}-[0-9]{1,15}$")),
    responses((status = 200, description = "`event: attempt` with `id:` a cursor and `data:` JSON",
        content_type = "text/event-stream", body = FeedEvent),
        (status = "4XX", body = ErrorBody)))]
pub async fn stream_attempts(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    headers: HeaderMap,
    param::ApiQuery(q): param::ApiQuery<AttemptQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = q.filter()?;
    // Lists only, but a bad value is still refused, never ignored.
    limit_of(&q.limit)?;
    q.cursor.as_deref().map(id_cursor_in).transpose()?;
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| ("Last-Event-ID", v.to_string()))
        .or_else(|| q.after.clone().map(|v| ("after", v)))
        .filter(|(_, v)| !v.is_empty());
    let resumed = given.is_some();
    let pos = match given {
        Some((field, v)) => parse_event_id(&v)
            .ok_or_else(|| ApiError::bad(field, "not an event id of this feed"))?,
        None => {
            let mut conn = s.engine.db.pool.acquire().await?;
            reports::attempts_feed_head(&mut conn).await?
        }
    };
    let mut feed = Feed {
        state: s,
        filter,
        pos,
        queue: VecDeque::new(),
        first: true,
        open: BTreeMap::new(),
        sent: BTreeSet::new(),
    };
    let mut conn = feed.state.engine.db.pool.acquire().await?;
    if !resumed {
        // A new feed starts from now: what was there before it is not news.
        let before = reports::attempts_changed_within(
            &mut conn,
            &feed.filter,
            pos.0 - LOOKBACK_MS,
            pos.0,
            LOOKBACK_ROWS,
        )
        .await?;
        for a in before
            .iter()
            .filter(|a| (a.updated_at.timestamp_millis(), a.id) <= pos)
        {
            feed.remember(a);
        }
    }
    let open =
        reports::open_attempts_since(&mut conn, &feed.filter, pos.0 - OPEN_LOOKBACK_MS).await?;
    drop(conn);
    for a in open
        .iter()
        .filter(|a| (a.updated_at.timestamp_millis(), a.id) <= pos)
    {
        feed.note(a);
    }
    let stream = futures::stream::unfold(feed, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn next_event(mut f: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    loop {
        if let Some(a) = f.queue.pop_front() {
            f.pos = f.pos.max((a.updated_at.timestamp_millis(), a.id));
            f.note(&a);
            f.remember(&a);
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
                .data(r#"{"ready":true}"#);
            return Some((Ok(ev), f));
        }
        match f.poll().await {
            Ok(()) if !f.queue.is_empty() => {}
            Ok(()) => tokio::time::sleep(POLL).await,
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
