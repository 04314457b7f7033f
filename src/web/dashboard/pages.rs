//! The pages: the dashboard (feed, tiles, charts, re-binding list), loan search, loan detail.

use super::charts::{bar_chart, rate_row, BarChart, Row};
use super::render::{page, PageError};
use super::session::Session;
use crate::store::dashboard::{self as queries, RateBy, Today};
use crate::store::reports;
use crate::web::api::recon::CaseView;
use crate::web::state::ApiState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

/// Attempts shown in the feed when the page loads; newer ones arrive over the stream.
const FEED_ROWS: i64 = 50;

/// The clock pages are computed with: the API's, so pages and actions agree.
fn clock(_s: &ApiState) -> DateTime<Utc> {
    crate::web::api::now()
}

#[derive(Debug, Deserialize)]
pub struct HomeQuery {
    date: Option<String>,
}

fn parse_date(s: Option<&str>) -> Result<Option<NaiveDate>, PageError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| PageError::BadRequest(format!("date: `{d}` is not a date (YYYY-MM-DD)"))),
    }
}

pub async fn home(
    session: Session,
    State(s): State<ApiState>,
    Query(q): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let now = clock(&s);
    let fixed = parse_date(q.date.as_deref())?;
    let today = fixed.map_or(Today::Clock(now), Today::Fixed);
    let mut conn = s.engine.db.pool.acquire().await?;
    let tiles = queries::today_tiles(&mut conn, today).await?;
    let buckets = queries::delinquency(&mut conn, &s.engine.policies, today).await?;
    let bucket_charts: Vec<BarChart> = buckets
        .into_iter()
        .map(|(currency, rows)| {
            let rows = rows
                .into_iter()
                .map(|b| Row {
                    text: format!(
                        "{currency} {} · {} loan{}",
                        b.amount,
                        b.loans,
                        if b.loans == 1 { "" } else { "s" }
                    ),
                    label: b.name,
                    value: b.amount,
                    tone: "bad",
                })
                .collect();
            bar_chart(&format!("Overdue by bucket ({currency})"), rows, None)
        })
        .collect();
    let mut rate_charts = Vec::new();
    for (by, title, prefix) in [
        (RateBy::Channel, "Success rate by channel", ""),
        (RateBy::Kind, "Success rate by attempt kind", ""),
        (RateBy::LadderStep, "Success rate by ladder step", "step "),
    ] {
        let rows = queries::success_rates(&mut conn, by, today)
            .await?
            .into_iter()
            .map(|(k, ok, n)| rate_row(format!("{prefix}{k}"), ok, n))
            .collect();
        rate_charts.push(bar_chart(title, rows, Some(rust_decimal::Decimal::ONE)));
    }
    // The stream starts where the rendered rows end, so nothing falls in between.
    let head = reports::attempts_feed_head(&mut conn).await?;
    let feed = reports::attempts(&mut conn, None, FEED_ROWS).await?;
    let rebind = queries::needs_rebinding(&mut conn).await?;
    let parked = queries::parked_loans(&mut conn).await?;
    let ctx = minijinja::context! {
        user => session.user(),
        date => fixed.map(|d| d.to_string()),
        now => now.timestamp_millis(),
        feed_after => format!("{}-{}", head.0, head.1),
        tiles, bucket_charts, rate_charts, feed, rebind, parked,
    };
    page("home.html", ctx)
}

#[derive(Debug, Deserialize)]
pub struct LoansQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

pub async fn loans(
    session: Session,
    State(s): State<ApiState>,
    Query(q): Query<LoansQuery>,
) -> Result<Response, PageError> {
    const LIMIT: i64 = 200;
    let mut conn = s.engine.db.pool.acquire().await?;
    let loans = queries::search_loans(&mut conn, &q.q, q.status.trim(), LIMIT + 1).await?;
    let more = loans.len() as i64 > LIMIT;
    let loans: Vec<_> = loans.into_iter().take(LIMIT as usize).collect();
    let statuses = queries::loan_statuses(&mut conn).await?;
    let ctx = minijinja::context! {
        user => session.user(),
        q => q.q, status => q.status, statuses, loans, more,
    };
    page("loans.html", ctx)
}

pub async fn loan(
    session: Session,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let now = clock(&s);
    let mut conn = s.engine.db.pool.acquire().await?;
    let Some(view) = reports::loan_view(&mut conn, &s.engine.policies, &id, now).await? else {
        return Err(PageError::NotFound(format!("loan {id}")));
    };
    let tz = crate::store::decode::zone(&view.timezone)?;
    let pause = queries::pause_state(&mut conn, &id).await?;
    let paused = pause
        .paused_until
        .is_some_and(|u| u > now.timestamp_millis());
    let paused_until_local = pause
        .paused_until
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string());
    let ctx = minijinja::context! {
        user => session.user(),
        can_act => session.can_act(),
        today => crate::domain::local_date(now, tz).to_string(),
        loan => view,
        paused, paused_until_local, pause_reason => pause.reason,
        parked_at => pause.parked_at, parked_reason => pause.parked_reason,
        plan => reports::plan_view(&mut conn, &id).await?,
        attempts => reports::attempts(&mut conn, Some(&id), 500).await?,
        notices => queries::notices(&mut conn, &id).await?,
        audit => queries::audit_log(&mut conn, &id).await?,
    };
    page("loan.html", ctx)
}

/// Open reconciliation cases shown on the page (newest first).
const RECON_CASES: i64 = 200;

/// Reconciliation: a statement day's outcomes per channel (`?date=`, default the latest day
/// reconciled) and every open case, with a resolve form for admins.
pub async fn recon(
    session: Session,
    State(s): State<ApiState>,
    Query(q): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let mut conn = s.engine.db.pool.acquire().await?;
    let date = match parse_date(q.date.as_deref())? {
        Some(d) => d,
        None => queries::latest_recon_date(&mut conn)
            .await?
            .unwrap_or_else(|| clock(&s).date_naive()),
    };
    let day = crate::recon::recon_report(&mut conn, &date.to_string()).await?;
    let cases: Vec<CaseView> =
        crate::recon::cases_page(&mut conn, "open", None, None, None, RECON_CASES + 1)
            .await?
            .into_iter()
            .map(CaseView::from)
            .collect();
    let more = cases.len() as i64 > RECON_CASES;
    let cases: Vec<_> = cases.into_iter().take(RECON_CASES as usize).collect();
    let ctx = minijinja::context! {
        user => session.user(),
        can_resolve => session.is_admin(),
        date => date.to_string(),
        counts => day.counts, auto_fixed => day.auto_fixed,
        cases, more,
    };
    page("recon.html", ctx)
}
