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

/// The worklist of one bucket, as of the dashboard's chosen date when it has one.
fn bucket_link(bucket: &str, date: Option<NaiveDate>) -> Option<String> {
    let date = date.map(|d| d.to_string()).unwrap_or_default();
    let q = serde_urlencoded::to_string([("bucket", bucket), ("date", date.as_str())]).ok()?;
    Some(format!("/worklist?{q}"))
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
                    // A bucket's bar opens the worklist filtered to it.
                    href: bucket_link(&b.name, fixed),
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
    let (trend_end, trend_days) =
        queries::daily_trend(&mut conn, today, super::trends::TREND_DAYS).await?;
    let trend_charts = super::trends::trend_charts(&trend_days, trend_end);
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
        tiles, bucket_charts, rate_charts, trend_charts, feed, rebind, parked,
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
    let today = Today::Clock(clock(&s));
    let loans = queries::search_loans(&mut conn, &q.q, q.status.trim(), LIMIT + 1, today).await?;
    let more = loans.len() as i64 > LIMIT;
    let loans: Vec<_> = loans.into_iter().take(LIMIT as usize).collect();
    let statuses = queries::loan_statuses(&mut conn).await?;
    let ctx = minijinja::context! {
        user => session.user(),
        q => q.q, status => q.status, statuses, loans, more,
    };
    page("loans.html", ctx)
}

/// The worklist's filters and order, as the form sends them (every value text, checked here
/// so a bad one is a 400 naming its field).
#[derive(Debug, Deserialize, Default)]
pub struct WorklistQuery {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    dpd_min: String,
    #[serde(default)]
    dpd_max: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    rebind: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: String,
    /// As of this date (YYYY-MM-DD, in every loan's zone); the daemon clock when empty.
    #[serde(default)]
    date: String,
}

const WORKLIST_PAGE: usize = 50;

fn days_field(name: &str, v: &str) -> Result<Option<u32>, PageError> {
    match v.trim() {
        "" => Ok(None),
        t => t.parse().map(Some).map_err(|_| {
            PageError::BadRequest(format!("{name}: `{t}` is not a whole number of days"))
        }),
    }
}

impl WorklistQuery {
    fn filter(&self) -> Result<reports::LoanFilter, PageError> {
        let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        Ok(reports::LoanFilter {
            bucket: text(&self.bucket),
            policy: text(&self.policy),
            channel: text(&self.channel),
            // The worklist is of overdue loans unless a range says otherwise.
            dpd_min: days_field("dpd_min", &self.dpd_min)?.or(Some(1)),
            dpd_max: days_field("dpd_max", &self.dpd_max)?,
            needs_rebinding: (self.rebind == "yes").then_some(true),
            ..reports::LoanFilter::default()
        })
    }

    fn order(&self) -> Result<reports::WorkOrder, PageError> {
        use reports::WorkOrder::*;
        match self.sort.as_str() {
            "" | "dpd" => Ok(DaysPastDue),
            "overdue" => Ok(Overdue),
            "next_due" => Ok(NextDue),
            "id" => Ok(Id),
            s => Err(PageError::BadRequest(format!(
                "sort: `{s}` is not one of dpd, overdue, next_due, id"
            ))),
        }
    }
}

/// Every row of the worklist as `q` filters and sorts it (at most `WORKLIST_MAX`), and
/// whether there were more: the page and its CSV export read the same rows.
pub(super) async fn worklist_rows(
    s: &ApiState,
    q: &WorklistQuery,
) -> Result<(Vec<reports::LoanSummary>, bool), PageError> {
    let (filter, order) = (q.filter()?, q.order()?);
    // A date is taken at noon UTC: that same date in every zone from UTC−11 to UTC+11.
    let now = match parse_date(Some(&q.date))? {
        Some(d) => d.and_hms_opt(12, 0, 0).expect("noon").and_utc(),
        None => clock(s),
    };
    let mut conn = s.engine.db.pool.acquire().await?;
    Ok(reports::worklist(&mut conn, &s.engine.policies, &filter, order, now).await?)
}

pub async fn worklist(
    session: Session,
    State(s): State<ApiState>,
    Query(q): Query<WorklistQuery>,
) -> Result<Response, PageError> {
    let (rows, capped) = worklist_rows(&s, &q).await?;
    let page_no: usize =
        match q.page.trim() {
            "" => 1,
            p => p.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                PageError::BadRequest(format!("page: `{p}` is not a page number"))
            })?,
        };
    let pages = rows.len().div_ceil(WORKLIST_PAGE).max(1);
    let shown: Vec<_> = rows
        .iter()
        .skip((page_no - 1) * WORKLIST_PAGE)
        .take(WORKLIST_PAGE)
        .collect();
    let mut channels: Vec<&String> = s.engine.channel_configs.keys().collect();
    channels.sort();
    let ctx = minijinja::context! {
        user => session.user(),
        rows => shown, total => rows.len(), capped, max => reports::WORKLIST_MAX,
        page => page_no, pages, q => minijinja::context! {
            bucket => q.bucket, dpd_min => q.dpd_min, dpd_max => q.dpd_max, channel => q.channel,
            policy => q.policy, rebind => q.rebind, sort => q.sort, date => q.date,
        },
        channels, policies => s.engine.policies.names(),
    };
    page("worklist.html", ctx)
}

pub async fn loan(
    session: Session,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let now = clock(&s);
    // Read before this handler takes its connection: the operation takes one of its own.
    let notes = loan_notes(&s, &id, now).await?;
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
    let today = crate::domain::local_date(now, tz);
    let attempts = reports::attempts(&mut conn, Some(&id), 500).await?;
    let standing = super::slots::standing(&view.installments, today);
    let ctx = minijinja::context! {
        user => session.user(),
        can_act => session.can_act(),
        today => today.to_string(),
        standing, notes,
        loan => view,
        paused, paused_until_local, pause_reason => pause.reason,
        parked_at => pause.parked_at, parked_reason => pause.parked_reason,
        plan => reports::plan_view(&mut conn, &id).await?,
        slots => super::slots::group_by_slot(&attempts, tz),
        notices => queries::notices(&mut conn, &id).await?,
        audit => queries::audit_log(&mut conn, &id).await?,
    };
    page("loan.html", ctx)
}

/// A loan's notes and promises (none for a loan that does not exist: the page says 404).
async fn loan_notes(
    s: &ApiState,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<crate::ops::notes::NoteView>, PageError> {
    use crate::ops::CollectionsError;
    match crate::ops::notes::notes(&s.engine, id, now).await {
        Ok(notes) => Ok(notes),
        Err(CollectionsError::NotFound(_)) => Ok(Vec::new()),
        Err(CollectionsError::Sql(e)) => Err(PageError::Sql(e)),
        Err(e) => Err(PageError::BadRequest(e.to_string())),
    }
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
