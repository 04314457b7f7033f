//! Reconciliation, refunds and write-offs: the day's recon report and its cases (viewer),
//! resolving a case, refunding an attempt and writing a loan off (admin), each audited.

use super::error::{ApiError, ApiJson, ErrorBody};
use super::param;
use super::{id_cursor_in, id_cursor_out, limit_of, now};
use super::{Admin, Viewer};
use crate::ops::{self, money::MoneyError};
use crate::recon::{self, CaseError, CaseRow, ReconError, RefundKind};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// The most open cases one report lists.
pub const REPORT_CASES: i64 = 1000;

/// One reconciliation item that needs (or needed) a person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseView {
    pub id: i64,
    pub channel: String,
    /// The statement day, YYYY-MM-DD in the channel's statement zone.
    pub recon_date: String,
    pub order_no: String,
    pub attempt_id: Option<i64>,
    /// ours_only, channel_only, amount_differs, status_differs.
    pub outcome: String,
    pub our_status: Option<String>,
    #[schema(value_type = Option<String>)]
    pub our_amount: Option<Decimal>,
    pub their_status: Option<String>,
    #[schema(value_type = Option<String>)]
    pub their_amount: Option<Decimal>,
    /// open or resolved.
    pub case_status: String,
    /// The attempt and the statement line as seen when matched (no account numbers).
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl From<CaseRow> for CaseView {
    fn from(c: CaseRow) -> Self {
        CaseView {
            id: c.id,
            channel: c.channel,
            recon_date: c.recon_date,
            order_no: c.order_no,
            attempt_id: c.attempt_id,
            outcome: c.outcome,
            our_status: c.our_status,
            our_amount: c.our_amount,
            their_status: c.their_status,
            their_amount: c.their_amount,
            case_status: c.case_status,
            evidence: c.evidence,
            created_at: at(c.created_at),
            resolved_at: c.resolved_at.map(at),
            resolved_by: c.resolved_by,
            resolution: c.resolution,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Default: today, UTC.
    #[param(schema_with = param::date)]
    pub date: Option<String>,
    #[param(schema_with = param::text)]
    pub channel: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconReportView {
    pub date: String,
    /// channel → outcome → count.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// channel → items the match fixed by itself.
    #[schema(value_type = Object)]
    pub auto_fixed: BTreeMap<String, u64>,
    /// The day's open cases (at most 1000).
    pub open_cases: Vec<CaseView>,
}

/// The day's outcome counts per channel and its open cases.
pub async fn report_of(
    conn: &mut sqlx::AnyConnection,
    date: NaiveDate,
    channel: Option<&str>,
) -> Result<ReconReportView, sqlx::Error> {
    let date = date.to_string();
    let mut r = recon::recon_report(conn, &date).await?;
    if let Some(ch) = channel {
        r.counts.retain(|c, _| c == ch);
        r.auto_fixed.retain(|c, _| c == ch);
    }
    let cases = recon::cases_page(conn, "open", Some(&date), channel, None, REPORT_CASES).await?;
    Ok(ReconReportView {
        date,
        counts: r.counts,
        auto_fixed: r.auto_fixed,
        open_cases: cases.into_iter().map(CaseView::from).collect(),
    })
}

pub fn date_of(v: &Option<String>) -> Result<NaiveDate, ApiError> {
    Ok(param::day_of("date", v)?.unwrap_or_else(|| now().date_naive()))
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[utoipa::path(get, path = "/api/v1/recon/report", tag = "recon", params(ReportQuery),
    responses((status = 200, body = ReconReportView), (status = "4XX", body = ErrorBody)))]
pub async fn report(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiQuery(q): param::ApiQuery<ReportQuery>,
) -> Result<Json<ReconReportView>, ApiError> {
    let date = date_of(&q.date)?;
    let mut conn = s.engine.db.pool.acquire().await?;
    Ok(Json(
        report_of(&mut conn, date, nonempty(&q.channel)).await?,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CasesQuery {
    /// Default open.
    #[param(schema_with = param::case_status)]
    pub status: Option<String>,
    /// Only cases of this statement day.
    #[param(schema_with = param::date)]
    pub date: Option<String>,
    #[param(schema_with = param::text)]
    pub channel: Option<String>,
    #[param(schema_with = param::id_cursor)]
    pub cursor: Option<String>,
    /// Default 50.
    #[param(schema_with = param::limit)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CasePage {
    pub items: Vec<CaseView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/recon/cases", tag = "recon", params(CasesQuery),
    description = "Reconciliation cases, newest first.",
    responses((status = 200, body = CasePage), (status = "4XX", body = ErrorBody)))]
pub async fn cases(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiQuery(q): param::ApiQuery<CasesQuery>,
) -> Result<Json<CasePage>, ApiError> {
    let status = param::one_of("status", &q.status, &param::case_statuses())?;
    let status = status.as_deref().unwrap_or("open");
    let date = match &q.date {
        Some(_) => Some(date_of(&q.date)?.to_string()),
        None => None,
    };
    let limit = limit_of(&q.limit)?;
    let before = match nonempty(&q.cursor) {
        Some(c) => Some(id_cursor_in(c)?),
        None => None,
    };
    let mut conn = s.engine.db.pool.acquire().await?;
    let mut items = recon::cases_page(
        &mut conn,
        status,
        date.as_deref(),
        nonempty(&q.channel),
        before,
        limit + 1,
    )
    .await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|c| id_cursor_out(c.id)))
        .flatten();
    Ok(Json(CasePage {
        items: items.into_iter().map(CaseView::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// What was done about it, e.g. "channel confirmed the debit failed".
    #[schema(schema_with = param::words)]
    pub resolution: String,
    #[schema(schema_with = param::words)]
    pub reason: String,
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::Invalid { field, message } => ApiError::invalid(&field, message),
            MoneyError::Recon(e) => e.into(),
            MoneyError::Case(e) => e.into(),
            MoneyError::Sql(e) => ApiError::internal(e),
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::NotFound(id) => ApiError::not_found(format!("reconciliation case {id}")),
            CaseError::AlreadyResolved { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            CaseError::Invalid { field, message } => ApiError::invalid(&field, message),
            CaseError::Sql(e) => ApiError::internal(e),
        }
    }
}

impl From<ReconError> for ApiError {
    fn from(e: ReconError) -> Self {
        match e {
            ReconError::AttemptNotFound(id) => ApiError::not_found(format!("attempt {id}")),
            ReconError::LoanNotFound(id) => ApiError::not_found(format!("loan {id}")),
            ReconError::NotSucceeded { .. } | ReconError::NothingToWriteOff { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            // Well-formed, but beyond what the attempt holds now: a conflict with its state.
            ReconError::ExceedsRefundable { .. } | ReconError::ExceedsOverpayment { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()).with_field("amount")
            }
            ReconError::BadAmount { .. } => ApiError::invalid("amount", e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/recon/cases/{id}/resolve", tag = "recon",
    params(("id" = i64, Path, description = "case (recon item) id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = ResolveRequest,
    responses((status = 200, body = CaseView), (status = "4XX", body = ErrorBody)))]
pub async fn resolve(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<i64>,
    ApiJson(b): ApiJson<ResolveRequest>,
) -> Result<Json<CaseView>, ApiError> {
    let case = ops::money::resolve_case(&s.engine, &p.actor(), id, &b.resolution, &b.reason, now())
        .await?;
    Ok(Json(case.into()))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundKindBody {
    /// Money beyond what was owed goes back.
    Overpayment,
    /// The debit should not have happened: the allocation is reversed too.
    Erroneous,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// A decimal string above zero, e.g. "12.50".
    #[schema(schema_with = param::amount)]
    pub amount: String,
    #[schema(schema_with = param::words)]
    pub reason: String,
    pub kind: RefundKindBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub refund_id: i64,
    pub attempt_id: i64,
    pub loan_id: String,
    /// overpayment or erroneous.
    pub kind: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// The journal entry posted, and the repayment entry it corrects.
    pub entry_id: i64,
    pub corrects_entry: i64,
    /// What the attempt can still refund.
    #[schema(value_type = String)]
    pub refundable_left: Decimal,
    /// Installments re-opened by a reversal.
    pub reopened: Vec<u32>,
}

#[utoipa::path(post, path = "/api/v1/attempts/{id}/refund", tag = "recon",
    description = "Refund (part of) a succeeded attempt from the bank: its own journal entry pointing at the repayment. Refunds of an attempt never exceed its amount.",
    params(("id" = i64, Path, description = "attempt id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = RefundBody,
    responses((status = 200, body = RefundView), (status = "4XX", body = ErrorBody)))]
pub async fn refund(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<i64>,
    ApiJson(b): ApiJson<RefundBody>,
) -> Result<Json<RefundView>, ApiError> {
    let kind = match b.kind {
        RefundKindBody::Overpayment => RefundKind::Overpayment,
        RefundKindBody::Erroneous => RefundKind::Erroneous,
    };
    let (who, at) = (p.actor(), now());
    let done = ops::money::refund(&s.engine, &who, id, &b.amount, kind, &b.reason, at).await?;
    let view = RefundView {
        refund_id: done.refund_id,
        attempt_id: id,
        loan_id: done.loan_id,
        kind: kind.as_str().into(),
        amount: done.amount,
        entry_id: done.entry_id,
        corrects_entry: done.corrects_entry,
        refundable_left: done.refundable_left,
        reopened: done.reopened,
    };
    Ok(Json(view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOffRequest {
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteOffView {
    pub loan_id: String,
    /// Everything the loan still owed, now written off.
    #[schema(value_type = String)]
    pub amount: Decimal,
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/write-off", tag = "recon",
    description = "Write off everything the loan still owes.",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = WriteOffRequest,
    responses((status = 200, body = WriteOffView), (status = "4XX", body = ErrorBody)))]
pub async fn write_off(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<WriteOffRequest>,
) -> Result<Json<WriteOffView>, ApiError> {
    let amount = ops::money::write_off(&s.engine, &p.actor(), &id, &b.reason, now()).await?;
    let view = WriteOffView {
        loan_id: id,
        amount,
    };
    Ok(Json(view))
}
