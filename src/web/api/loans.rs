//! Loans: list (filters, cursor pages), detail, import, contact (admin, audited), policy.

use super::error::{ApiError, ApiJson, ErrorBody};
use super::param;
use super::{cursor_in, cursor_out, limit_of, now};
use super::{Admin, Viewer};
use crate::domain::import::{self, ImportError};
use crate::ops::{self, Contact};
use crate::store::reports::{self, ActionView, AttemptView, LoanSummary, LoanView, NoticeView};
use crate::web::auth::Principal;
use crate::web::state::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Filters of `GET /api/v1/loans`. Every value is bound as a query parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LoanQuery {
    #[param(schema_with = param::loan_status)]
    pub status: Option<String>,
    /// A delinquency bucket name of the loan's policy, e.g. M1.
    #[param(schema_with = param::text)]
    pub bucket: Option<String>,
    #[param(schema_with = param::text)]
    pub policy: Option<String>,
    /// Loans with a mandate on this channel.
    #[param(schema_with = param::text)]
    pub channel: Option<String>,
    #[param(schema_with = param::days)]
    pub dpd_min: Option<String>,
    #[param(schema_with = param::days)]
    pub dpd_max: Option<String>,
    /// Text found in the loan id or the borrower id.
    #[param(schema_with = param::text)]
    pub q: Option<String>,
    /// `true`: only loans parked for a person; `false`: only the others.
    #[param(schema_with = param::boolean)]
    pub parked: Option<String>,
    /// `true`: only loans with a mandate to re-bind (it failed hard); `false`: the others.
    #[param(schema_with = param::boolean)]
    pub needs_rebinding: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(schema_with = param::cursor)]
    pub cursor: Option<String>,
    /// Default 50.
    #[param(schema_with = param::limit)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoanPage {
    pub items: Vec<LoanSummary>,
    pub next_cursor: Option<String>,
}

fn dpd(field: &str, v: &Option<String>) -> Result<Option<u32>, ApiError> {
    v.as_deref()
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|d| *d <= 36_500)
                .ok_or_else(|| ApiError::bad(field, "a whole number of days, 0 to 36500"))
        })
        .transpose()
}

fn flag(field: &str, v: &Option<String>) -> Result<Option<bool>, ApiError> {
    match nonempty(v).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad(field, "true or false")),
    }
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

#[utoipa::path(get, path = "/api/v1/loans", tag = "loans", params(LoanQuery),
    responses((status = 200, body = LoanPage), (status = "4XX", body = ErrorBody)))]
pub async fn list_loans(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiQuery(q): param::ApiQuery<LoanQuery>,
) -> Result<Json<LoanPage>, ApiError> {
    let filter = reports::LoanFilter {
        status: param::one_of("status", &q.status, &param::loan_statuses())?,
        bucket: nonempty(&q.bucket),
        policy: nonempty(&q.policy),
        channel: nonempty(&q.channel),
        dpd_min: dpd("dpd_min", &q.dpd_min)?,
        dpd_max: dpd("dpd_max", &q.dpd_max)?,
        q: nonempty(&q.q),
        parked: flag("parked", &q.parked)?,
        needs_rebinding: flag("needs_rebinding", &q.needs_rebinding)?,
    };
    let limit = limit_of(&q.limit)? as usize;
    let after = q.cursor.as_deref().map(cursor_in).transpose()?;
    let mut conn = s.engine.db.pool.acquire().await?;
    let (items, more) = reports::loans_page(
        &mut conn,
        &s.engine.policies,
        &filter,
        after.as_deref(),
        limit,
        now(),
    )
    .await?;
    let next_cursor = more
        .then(|| items.last().map(|l| cursor_out(&l.id)))
        .flatten();
    Ok(Json(LoanPage { items, next_cursor }))
}

/// A loan with everything staff need: plan and balances, agenda, attempts, notices, ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoanDetail {
    #[serde(flatten)]
    pub loan: LoanView,
    /// Everything still owed (all unpaid installments).
    #[schema(value_type = String)]
    pub outstanding: Decimal,
    /// Owed now: installments due on or before the loan's local today.
    #[schema(value_type = String)]
    pub due_now: Decimal,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    /// Set when the loan's pursuit failed and a person must look at it (then unpark it).
    pub parked_at: Option<DateTime<Utc>>,
    pub parked_reason: Option<String>,
    pub agenda: Vec<ActionView>,
    pub attempts: Vec<AttemptView>,
    pub notices: Vec<NoticeView>,
}

#[utoipa::path(get, path = "/api/v1/loans/{id}", tag = "loans",
    params(("id" = String, Path, description = "loan id")),
    responses((status = 200, body = LoanDetail), (status = "4XX", body = ErrorBody)))]
pub async fn get_loan(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
) -> Result<Json<LoanDetail>, ApiError> {
    let now = now();
    let mut conn = s.engine.db.pool.acquire().await?;
    let loan = reports::loan_view(&mut conn, &s.engine.policies, &id, now)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("loan {id}")))?;
    let tz = crate::store::decode::zone(&loan.timezone)?;
    let today = crate::domain::local_date(now, tz).to_string();
    let outstanding = loan.installments.iter().map(|i| i.outstanding).sum();
    let due_now = loan
        .installments
        .iter()
        .filter(|i| i.due_date <= today)
        .map(|i| i.outstanding)
        .sum();
    let (paused_until, pause_reason) = pause_of(&mut conn, &id, now).await?;
    let park = crate::ops::park_state(&mut conn, &id).await?;
    Ok(Json(LoanDetail {
        outstanding,
        due_now,
        paused_until,
        pause_reason,
        parked_at: park.parked_at,
        parked_reason: park.parked_reason,
        agenda: reports::plan_view(&mut conn, &id).await?,
        attempts: reports::attempts(&mut conn, Some(&id), 200).await?,
        notices: reports::notices_of(&mut conn, &id).await?,
        loan,
    }))
}

async fn pause_of(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, Option<String>), sqlx::Error> {
    let row: Option<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT paused_until, pause_reason FROM loans WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let (until, reason) = row.unwrap_or_default();
    let until = until
        .and_then(DateTime::from_timestamp_millis)
        .filter(|t| *t > now);
    Ok((until, reason.filter(|_| until.is_some())))
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub loans_added: usize,
    pub loans_unchanged: usize,
    pub installments_added: usize,
    pub actions_planned: u64,
}

/// Import loans: the CLI's formats, chosen by Content-Type (`application/json`: an array or
/// one object; `application/x-ndjson` or `application/jsonl`: JSON Lines; `text/csv`).
#[utoipa::path(post, path = "/api/v1/loans", tag = "loans",
    request_body(content = String, description = "loans as JSON, JSON Lines or CSV",
        content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    responses((status = 201, body = ImportResult), (status = "4XX", body = ErrorBody)))]
pub async fn import_loans(
    Admin(p): Admin,
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ImportResult>), ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad("(body)", "not UTF-8"))?;
    let ctype = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let file = "request body";
    let records = match ctype.as_str() {
        "text/csv" => crate::domain::import::csv::parse_csv(text, file),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            import::parse_jsonl(text, file)
        }
        "application/json" => import::parse_json(text, file),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_request",
                format!(
                "Content-Type `{other}`: use application/json, application/x-ndjson or text/csv"
            ),
            )
            .with_field("Content-Type"))
        }
    }
    .map_err(import_error)?;
    let mut channels: Vec<String> = s.engine.channel_configs.keys().cloned().collect();
    channels.sort();
    let loans =
        import::validate_all(records, &s.engine.policies, &channels).map_err(import_error)?;
    let done = crate::ops::import::import_loans(&s.engine, &p.actor(), &loans, now())
        .await
        .map_err(|e| match e.refused() {
            Some(ImportError::Invalid(p)) => import_error(ImportError::Invalid(p.clone())),
            _ => ApiError::internal(e),
        })?;
    let (r, planned) = (done.report, done.actions_planned);
    Ok((
        StatusCode::CREATED,
        Json(ImportResult {
            loans_added: r.loans_added,
            loans_unchanged: r.loans_unchanged,
            installments_added: r.installments_added,
            actions_planned: planned,
        }),
    ))
}

fn import_error(e: ImportError) -> ApiError {
    match e {
        ImportError::Invalid(problems) => {
            let list: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| serde_json::json!({ "location": p.location, "field": p.field, "message": p.message }))
                .collect();
            let mut err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_import",
                e_text(&problems),
            );
            err.body.field = problems.first().map(|p| p.field.clone());
            err.body.problems = Some(serde_json::Value::Array(list));
            err
        }
        other => ApiError::internal(other),
    }
}

fn e_text(p: &[import::ImportProblem]) -> String {
    ImportError::Invalid(p.to_vec()).to_string()
}

#[utoipa::path(get, path = "/api/v1/loans/{id}/contact", tag = "loans",
    description = "The borrower's full name, phone and email. Admin only; every read is written to the audit log.",
    params(("id" = String, Path, description = "loan id")),
    responses((status = 200, body = Contact), (status = "4XX", body = ErrorBody)))]
pub async fn get_contact(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(
        ops::read_contact(&s.engine, &p.actor(), &id, now()).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    /// The policy's name.
    #[schema(schema_with = param::name)]
    pub policy: String,
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyChanged {
    pub loan_id: String,
    pub policy: String,
    /// Pending actions planned under the new policy.
    pub actions_planned: u64,
}

#[utoipa::path(put, path = "/api/v1/loans/{id}/policy", tag = "loans",
    description = "Move the loan to another policy; its pending actions are planned again.",
    params(("id" = String, Path, description = "loan id")),
    request_body = PolicyChange,
    responses((status = 200, body = PolicyChanged), (status = "4XX", body = ErrorBody)))]
pub async fn put_policy(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<PolicyChange>,
) -> Result<Json<PolicyChanged>, ApiError> {
    change_policy(p, s, id, b).await
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/policy", tag = "loans",
    description = "Same as PUT.",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = PolicyChange,
    responses((status = 200, body = PolicyChanged), (status = "4XX", body = ErrorBody)))]
pub async fn post_policy(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<PolicyChange>,
) -> Result<Json<PolicyChanged>, ApiError> {
    change_policy(p, s, id, b).await
}

async fn change_policy(
    p: Principal,
    s: ApiState,
    id: String,
    b: PolicyChange,
) -> Result<Json<PolicyChanged>, ApiError> {
    let planned =
        ops::change_policy(&s.engine, &p.actor(), &id, &b.policy, &b.reason, now()).await?;
    Ok(Json(PolicyChanged {
        loan_id: id,
        policy: b.policy,
        actions_planned: planned,
    }))
}
