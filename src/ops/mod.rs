//! Collections actions taken by people (pause, resume, manual attempt, mandates, policy
//! changes, contact reads) and the audit log that records each of them: who (the token's
//! name and role), what, when, why (the reason given) and the details.

pub mod daily;
pub mod import;
pub mod money;
pub mod notes;
pub mod simulation;

use crate::domain::actor::Actor;
use crate::domain::pii::mask_account;
use crate::domain::{from_minor, local_to_utc, parse_money, to_minor};
use crate::engine::{manual, plan, Engine, EngineError};
use crate::store::alloc_on;
use crate::store::audit::AuditRow;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};
use thiserror::Error;

/// The action names the audit log uses.
pub mod action {
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const UNPARK: &str = "unpark";
    pub const MANUAL_ATTEMPT: &str = "manual_attempt";
    pub const REVOKE_MANDATE: &str = "revoke_mandate";
    pub const ADD_MANDATE: &str = "add_mandate";
    pub const CHANGE_POLICY: &str = "change_policy";
    pub const READ_CONTACT: &str = "read_contact";
    pub const CREATE_TOKEN: &str = "create_token";
    pub const REVOKE_TOKEN: &str = "revoke_token";
    pub const IMPORT_LOANS: &str = "import_loans";
    pub const RESOLVE_CASE: &str = "resolve_case";
    pub const REFUND: &str = "refund";
    pub const WRITE_OFF: &str = "write_off";
    pub const PUBLISH_SIMULATION: &str = "publish_simulation";
    pub const ADD_NOTE: &str = "add_note";
    pub const PROMISE_TO_PAY: &str = "promise_to_pay";
}

#[derive(Debug, Error)]
pub enum CollectionsError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Engine(EngineError),
}

impl From<EngineError> for CollectionsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => CollectionsError::NotFound(what),
            EngineError::Invalid { field, message } => CollectionsError::Invalid { field, message },
            EngineError::Conflict(m) => CollectionsError::Conflict(m),
            EngineError::Sql(e) => CollectionsError::Sql(e),
            EngineError::UnknownPolicy { policy, .. } => CollectionsError::Invalid {
                field: "policy".into(),
                message: format!("no policy `{policy}`"),
            },
            other => CollectionsError::Engine(other),
        }
    }
}

pub fn invalid(field: &str, message: impl Into<String>) -> CollectionsError {
    CollectionsError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A reason is required for every action, so the log says why.
pub(crate) fn reason_of(reason: &str) -> Result<&str, CollectionsError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(invalid("reason", "a reason is required"));
    }
    if r.chars().count() > 500 {
        return Err(invalid("reason", "at most 500 characters"));
    }
    Ok(r)
}

/// Write one audit record in the caller's transaction.
pub async fn audit(
    conn: &mut AnyConnection,
    who: &Actor,
    action: &str,
    loan_id: Option<&str>,
    reason: Option<&str>,
    detail: &Value,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let row = audit_row(who, action, loan_id, reason, detail.clone());
    crate::store::audit::insert_audit(conn, &row, now_ms).await
}

fn audit_row(
    who: &Actor,
    action: &str,
    loan_id: Option<&str>,
    reason: Option<&str>,
    detail: Value,
) -> AuditRow {
    AuditRow {
        actor: who.name.clone(),
        role: who.role.as_str().to_string(),
        action: action.to_string(),
        loan_id: loan_id.map(str::to_string),
        reason: reason.map(str::to_string),
        detail,
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditItem {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub loan_id: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// Audit records newest first, optionally for one loan, with ids below `before_id`.
pub async fn audit_page(
    conn: &mut AnyConnection,
    loan_id: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditItem>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor, role, action, loan_id, reason, detail FROM audit_log \
         WHERE ($1 = '' OR loan_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(loan_id.unwrap_or(""))
    .bind(before_id.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditItem {
            id: r.get("id"),
            at: DateTime::from_timestamp_millis(r.get("at")).unwrap_or_default(),
            actor: r.get("actor"),
            role: r.get("role"),
            action: r.get("action"),
            loan_id: r.get("loan_id"),
            reason: r.get("reason"),
            detail: serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or(Value::Null),
        })
        .collect())
}

/// Whether a loan's auto-debit is paused, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PauseState {
    pub loan_id: String,
    /// Auto-debit resumes at this instant (local midnight of the `until` date).
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
}

pub(crate) async fn loan_tz(
    conn: &mut AnyConnection,
    loan_id: &str,
) -> Result<chrono_tz::Tz, CollectionsError> {
    let tz: Option<String> = sqlx::query_scalar("SELECT tz FROM loans WHERE id = $1")
        .bind(loan_id)
        .fetch_optional(&mut *conn)
        .await?;
    let tz = tz.ok_or_else(|| CollectionsError::NotFound(format!("loan {loan_id}")))?;
    // A stored zone that does not parse is an error, never a guess at UTC.
    Ok(crate::store::decode::zone(&tz)?)
}

/// Pause auto-debit until the start of `until` (in the loan's zone). Planned actions that
/// fall due meanwhile stay pending and are caught up, merged, once the pause ends.
pub async fn pause(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    until: NaiveDate,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<PauseState, CollectionsError> {
    let reason = reason_of(reason)?;
    let mut tx = engine.db.begin().await?;
    let tz = loan_tz(&mut tx, loan_id).await?;
    let resume_at = local_to_utc(until, NaiveTime::MIN, tz);
    if resume_at <= now {
        return Err(invalid("until", format!("{until} is not in the future")));
    }
    sqlx::query("UPDATE loans SET paused_until = $1, pause_reason = $2 WHERE id = $3")
        .bind(resume_at.timestamp_millis())
        .bind(reason)
        .bind(loan_id)
        .execute(&mut *tx)
        .await?;
    let detail = json!({ "until": until.to_string(), "paused_until": resume_at });
    audit(
        &mut tx,
        who,
        action::PAUSE,
        Some(loan_id),
        Some(reason),
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(PauseState {
        loan_id: loan_id.into(),
        paused_until: Some(resume_at),
        pause_reason: Some(reason.into()),
    })
}

/// End a pause now; missed actions are caught up on the next run.
pub async fn resume(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<PauseState, CollectionsError> {
    let reason = reason_of(reason)?;
    let mut tx = engine.db.begin().await?;
    loan_tz(&mut tx, loan_id).await?;
    let r = sqlx::query(
        "UPDATE loans SET paused_until = NULL, pause_reason = NULL WHERE id = $1 AND paused_until > $2",
    )
    .bind(loan_id)
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Err(CollectionsError::Conflict(format!(
            "loan {loan_id} is not paused"
        )));
    }
    audit(
        &mut tx,
        who,
        action::RESUME,
        Some(loan_id),
        Some(reason),
        &json!({}),
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(PauseState {
        loan_id: loan_id.into(),
        paused_until: None,
        pause_reason: None,
    })
}

/// Whether a loan is parked for a person (its pursuit failed), and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParkState {
    pub loan_id: String,
    pub parked_at: Option<DateTime<Utc>>,
    pub parked_reason: Option<String>,
}

pub async fn park_state(conn: &mut AnyConnection, loan_id: &str) -> Result<ParkState, sqlx::Error> {
    let row: Option<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT parked_at, parked_reason FROM loans WHERE id = $1")
            .bind(loan_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (at, reason) = row.unwrap_or_default();
    Ok(ParkState {
        loan_id: loan_id.into(),
        parked_at: at.and_then(DateTime::from_timestamp_millis),
        parked_reason: reason,
    })
}

/// Give a parked loan back to the engine once a person has looked at it: its pending
/// actions are claimed again on the next run (missed slots merge into one attempt).
pub async fn unpark(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<ParkState, CollectionsError> {
    let reason = reason_of(reason)?;
    let mut tx = engine.db.begin().await?;
    let before = park_state(&mut tx, loan_id).await?;
    loan_tz(&mut tx, loan_id).await?;
    let r = sqlx::query(
        // Planned again too: a loan parked while being planned has no agenda yet (keys
        // already planned are left as they are).
        "UPDATE loans SET parked_at = NULL, parked_reason = NULL, planned = 0 \
         WHERE id = $1 AND parked_at IS NOT NULL",
    )
    .bind(loan_id)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Err(CollectionsError::Conflict(format!(
            "loan {loan_id} is not parked"
        )));
    }
    let detail = json!({ "parked_at": before.parked_at, "parked_reason": before.parked_reason });
    audit(
        &mut tx,
        who,
        action::UNPARK,
        Some(loan_id),
        Some(reason),
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(ParkState {
        loan_id: loan_id.into(),
        parked_at: None,
        parked_reason: None,
    })
}

/// A manual attempt through the engine (see [`manual::manual_attempt`]); returns its id.
pub async fn manual_attempt(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    amount: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<i64, CollectionsError> {
    let reason = reason_of(reason)?;
    let amount = parse_money(amount).map_err(|e| invalid("amount", e.to_string()))?;
    if amount <= Decimal::ZERO {
        return Err(invalid("amount", "must be more than zero"));
    }
    // The audit row goes into the transaction that records the attempt, before the
    // channel is called: an attempt is never on record without who asked for it.
    let detail = json!({ "amount": amount.to_string() });
    let row = audit_row(
        who,
        action::MANUAL_ATTEMPT,
        Some(loan_id),
        Some(reason),
        detail,
    );
    let id = manual::manual_attempt(engine, loan_id, amount, &row, now).await?;
    Ok(id)
}

/// A mandate as staff see it: the account masked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MandateOut {
    pub id: i64,
    pub loan_id: String,
    pub priority: u32,
    pub channel: String,
    pub agreement: String,
    pub account: String,
    #[schema(value_type = Option<String>)]
    pub per_debit_limit: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub daily_limit: Option<Decimal>,
    pub status: String,
}

async fn mandate_out(conn: &mut AnyConnection, id: i64) -> Result<MandateOut, sqlx::Error> {
    let r = sqlx::query(
        "SELECT id, loan_id, priority, channel, agreement, account_masked, per_debit_limit, \
         daily_limit, status FROM mandates WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(MandateOut {
        id: r.get("id"),
        loan_id: r.get("loan_id"),
        priority: r.get::<i64, _>("priority") as u32,
        channel: r.get("channel"),
        agreement: r.get("agreement"),
        account: mask_account(&r.get::<String, _>("account_masked")),
        per_debit_limit: r.get::<Option<i64>, _>("per_debit_limit").map(from_minor),
        daily_limit: r.get::<Option<i64>, _>("daily_limit").map(from_minor),
        status: r.get("status"),
    })
}

/// Stop using a mandate (the borrower withdrew it, or it was re-bound).
pub async fn revoke_mandate(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    mandate_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<MandateOut, CollectionsError> {
    let reason = reason_of(reason)?;
    let mut tx = engine.db.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM mandates WHERE id = $1 AND loan_id = $2")
            .bind(mandate_id)
            .bind(loan_id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => {
            return Err(CollectionsError::NotFound(format!(
                "mandate {mandate_id} of loan {loan_id}"
            )))
        }
        Some("revoked") => {
            return Err(CollectionsError::Conflict(format!(
                "mandate {mandate_id} is already revoked"
            )))
        }
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE mandates SET status = 'revoked', status_code = 'REVOKED_BY_STAFF' WHERE id = $1",
    )
    .bind(mandate_id)
    .execute(&mut *tx)
    .await?;
    let detail = json!({ "mandate_id": mandate_id, "was": status });
    audit(
        &mut tx,
        who,
        action::REVOKE_MANDATE,
        Some(loan_id),
        Some(reason),
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    let out = mandate_out(&mut tx, mandate_id).await?;
    tx.commit().await?;
    Ok(out)
}

/// A mandate to add after the borrower re-bound a card or account.
#[derive(Debug, Clone)]
pub struct NewMandate {
    pub channel: String,
    pub agreement: String,
    pub account: String,
    pub per_debit_limit: Option<String>,
    pub daily_limit: Option<String>,
}

fn limit(field: &str, v: &Option<String>) -> Result<Option<Decimal>, CollectionsError> {
    let Some(v) = v else { return Ok(None) };
    let d = parse_money(v).map_err(|e| invalid(field, e.to_string()))?;
    if d <= Decimal::ZERO {
        return Err(invalid(field, "must be more than zero"));
    }
    Ok(Some(d))
}

/// Add a mandate at the lowest priority. Only the masked account is stored.
pub async fn add_mandate(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    m: &NewMandate,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<MandateOut, CollectionsError> {
    let reason = reason_of(reason)?;
    if !engine.channel_configs.contains_key(&m.channel) {
        let mut known: Vec<&String> = engine.channel_configs.keys().collect();
        known.sort();
        return Err(invalid(
            "channel",
            format!("unknown channel `{}` (known: {known:?})", m.channel),
        ));
    }
    crate::domain::pii::check_agreement(&m.agreement).map_err(|e| invalid("agreement", e))?;
    // The same rule as the import: digits of a real length, or an already masked number.
    crate::domain::pii::check_account(&m.account).map_err(|e| invalid("account", e))?;
    let per_debit = limit("per_debit_limit", &m.per_debit_limit)?;
    let daily = limit("daily_limit", &m.daily_limit)?;
    let mut tx = engine.db.begin().await?;
    loan_tz(&mut tx, loan_id).await?;
    let priority: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(priority), -1) + 1 AS BIGINT) FROM mandates WHERE loan_id = $1",
    )
    .bind(loan_id)
    .fetch_one(&mut *tx)
    .await?;
    let id = alloc_on(&mut tx, "mandate", 1).await?;
    sqlx::query(
        "INSERT INTO mandates (id, loan_id, priority, channel, agreement, account_masked, \
         per_debit_limit, daily_limit, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active')",
    )
    .bind(id)
    .bind(loan_id)
    .bind(priority)
    .bind(m.channel.as_str())
    .bind(m.agreement.trim())
    .bind(mask_account(&m.account))
    .bind(
        per_debit
            .map(to_minor)
            .transpose()
            .map_err(EngineError::from)?,
    )
    .bind(daily.map(to_minor).transpose().map_err(EngineError::from)?)
    .execute(&mut *tx)
    .await?;
    let out = mandate_out(&mut tx, id).await?;
    let detail = json!({ "mandate_id": id, "channel": m.channel, "account": out.account,
        "per_debit_limit": per_debit.map(|d| d.to_string()), "daily_limit": daily.map(|d| d.to_string()) });
    audit(
        &mut tx,
        who,
        action::ADD_MANDATE,
        Some(loan_id),
        Some(reason),
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Move a loan to another policy and re-plan its pending actions; returns actions planned.
pub async fn change_policy(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    policy: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, CollectionsError> {
    let reason = reason_of(reason)?;
    if engine.policies.get(policy).is_none() {
        return Err(invalid(
            "policy",
            format!(
                "no policy `{policy}` (known: {:?})",
                engine.policies.names()
            ),
        ));
    }
    let mut tx = engine.db.begin().await?;
    let old: Option<String> = sqlx::query_scalar("SELECT policy FROM loans WHERE id = $1")
        .bind(loan_id)
        .fetch_optional(&mut *tx)
        .await?;
    let old = old.ok_or_else(|| CollectionsError::NotFound(format!("loan {loan_id}")))?;
    let planned = plan::change_policy(engine, &mut tx, loan_id, policy).await?;
    let detail = json!({ "from": old, "to": policy, "actions_planned": planned });
    audit(
        &mut tx,
        who,
        action::CHANGE_POLICY,
        Some(loan_id),
        Some(reason),
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(planned)
}

/// A borrower's full contact details (admin only; every read is audited).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Contact {
    pub loan_id: String,
    pub borrower_id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
}

pub async fn read_contact(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    now: DateTime<Utc>,
) -> Result<Contact, CollectionsError> {
    let mut tx = engine.db.begin().await?;
    let r = sqlx::query(
        "SELECT b.id, b.name, b.phone, b.email FROM loans l JOIN borrowers b ON b.id = l.borrower_id \
         WHERE l.id = $1",
    )
    .bind(loan_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| CollectionsError::NotFound(format!("loan {loan_id}")))?;
    let c = Contact {
        loan_id: loan_id.into(),
        borrower_id: r.get("id"),
        name: r.get("name"),
        phone: r.get("phone"),
        email: r.get("email"),
    };
    let detail = json!({ "borrower_id": c.borrower_id });
    audit(
        &mut tx,
        who,
        action::READ_CONTACT,
        Some(loan_id),
        None,
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}
