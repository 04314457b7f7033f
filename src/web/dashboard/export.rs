//! CSV exports of what the workspace shows: the worklist as filtered and sorted, and
//! attempts by filter. Amounts are in units with their currency on every row; accounts are
//! masked as everywhere else.

use super::pages::{worklist_rows, WorklistQuery};
use super::render::PageError;
use super::session::Session;
use crate::store::reports::{self, AttemptFilter, AttemptView, LoanSummary};
use crate::web::api::param;
use crate::web::state::ApiState;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The most attempts one export holds; a wider filter is cut here, and says so.
pub const ATTEMPTS_CSV_MAX: usize = 100_000;

/// Rows read from the database at a time.
const ATTEMPTS_CHUNK: i64 = 5_000;

/// The worklist's rows as CSV, one line per loan.
pub fn worklist_csv(rows: &[LoanSummary]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "loan_id",
        "borrower_id",
        "standing",
        "days_past_due",
        "bucket",
        "currency",
        "overdue",
        "outstanding",
        "next_due",
        "policy",
        "promise",
        "parked",
    ])?;
    for r in rows {
        let promise = r.promise.map(|p| format!("{p:?}").to_lowercase());
        w.write_record([
            r.id.as_str(),
            &r.borrower_id,
            &r.standing,
            &r.days_past_due.to_string(),
            r.bucket.as_deref().unwrap_or(""),
            &r.currency,
            &r.overdue.to_string(),
            &r.outstanding.to_string(),
            &r.next_due.map(|d| d.to_string()).unwrap_or_default(),
            &r.policy,
            promise.as_deref().unwrap_or(""),
            if r.parked { "yes" } else { "no" },
        ])?;
    }
    finish(w)
}

/// Attempts as CSV, newest first; `cut` adds a last line saying the export stopped short.
pub fn attempts_csv(rows: &[AttemptView], cut: bool) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "made_at_utc",
        "loan_id",
        "installment",
        "kind",
        "ladder_step",
        "channel",
        "account",
        "order_no",
        "currency",
        "amount",
        "status",
        "code",
        "requested_by",
    ])?;
    for a in rows {
        w.write_record([
            a.id.to_string().as_str(),
            &a.at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            &a.loan_id,
            &a.seq.to_string(),
            &a.kind,
            &a.ladder_step.to_string(),
            &a.channel,
            &a.account,
            &a.order_no,
            &a.currency,
            &a.amount.to_string(),
            &a.status,
            a.code.as_deref().unwrap_or(""),
            a.requested_by.as_deref().unwrap_or(""),
        ])?;
    }
    if cut {
        w.write_record([format!(
            "# cut at {ATTEMPTS_CSV_MAX} attempts: narrow the filter"
        )])?;
    }
    finish(w)
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 text is UTF-8"))
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `/worklist.csv`: the worklist's filters and order (every row, not one page).
pub async fn worklist_export(
    _session: Session,
    State(s): State<ApiState>,
    Query(q): Query<WorklistQuery>,
) -> Result<Response, PageError> {
    let (rows, _capped) = worklist_rows(&s, &q).await?;
    let body = worklist_csv(&rows).map_err(|e| PageError::BadRequest(e.to_string()))?;
    Ok(csv_response("worklist.csv", body))
}

/// Filters of `/attempts.csv`, as text (a bad one is a 400 naming it).
#[derive(Debug, Deserialize, Default)]
pub struct AttemptsCsvQuery {
    #[serde(default)]
    loan: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    /// Made on or after this date (YYYY-MM-DD, UTC).
    #[serde(default)]
    from: String,
    /// Made before this date (YYYY-MM-DD, UTC).
    #[serde(default)]
    to: String,
}

impl AttemptsCsvQuery {
    fn filter(&self) -> Result<AttemptFilter, PageError> {
        let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        let day = |name: &str, v: &str| match v.trim() {
            "" => Ok(None),
            t => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(|d| Some(crate::domain::utc_day_start_ms(d)))
                .map_err(|_| {
                    PageError::BadRequest(format!("{name}: `{t}` is not a date (YYYY-MM-DD)"))
                }),
        };
        // The API's check, its message made a page's 400.
        let one_of = |name: &str, v: &str, allowed: &[&'static str]| {
            param::one_of(name, &Some(v.to_string()), allowed)
                .map_err(|e| PageError::BadRequest(e.body.message))
        };
        Ok(AttemptFilter {
            loan_id: text(&self.loan),
            channel: text(&self.channel),
            kind: one_of("kind", &self.kind, &param::attempt_kinds())?,
            status: one_of("status", &self.status, &param::attempt_statuses())?,
            code: None,
            from_ms: day("from", &self.from)?,
            to_ms: day("to", &self.to)?,
        })
    }
}

/// `/attempts.csv`: attempts by filter, newest first, at most [`ATTEMPTS_CSV_MAX`].
pub async fn attempts_export(
    _session: Session,
    State(s): State<ApiState>,
    Query(q): Query<AttemptsCsvQuery>,
) -> Result<Response, PageError> {
    let filter = q.filter()?;
    let mut conn = s.engine.db.pool.acquire().await?;
    let mut rows: Vec<AttemptView> = Vec::new();
    let mut before = None;
    loop {
        let chunk = reports::attempts_page(&mut conn, &filter, before, ATTEMPTS_CHUNK).await?;
        let last = chunk.len() < ATTEMPTS_CHUNK as usize;
        before = chunk.last().map(|a| a.id);
        rows.extend(chunk);
        if last || rows.len() > ATTEMPTS_CSV_MAX {
            break;
        }
    }
    let cut = rows.len() > ATTEMPTS_CSV_MAX;
    rows.truncate(ATTEMPTS_CSV_MAX);
    let body = attempts_csv(&rows, cut).map_err(|e| PageError::BadRequest(e.to_string()))?;
    Ok(csv_response("attempts.csv", body))
}
