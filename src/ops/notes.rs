//! Notes and promises to pay, recorded by collections staff on a loan. Each is audited in the
//! transaction that writes it; a promise also pauses the loan's automatic attempts until the
//! end of its date (in the loan's zone).

use super::{action, audit, invalid, loan_tz, CollectionsError};
use crate::domain::actor::Actor;
use crate::domain::promise::{check_promise, promise_state, PromiseState};
use crate::domain::{local_date, local_to_utc, parse_money};
use crate::engine::Engine;
use crate::store::notes::{self, NewNote, NoteError, NoteRow};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

/// A note or promise as staff read it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NoteView {
    pub id: i64,
    pub loan_id: String,
    /// `note` or `promise`.
    pub kind: String,
    pub text: String,
    /// A promise's amount, in the loan's currency.
    #[schema(value_type = Option<String>)]
    pub amount: Option<Decimal>,
    pub currency: String,
    pub promised_on: Option<NaiveDate>,
    /// A promise's state now: open, kept or broken.
    pub state: Option<PromiseState>,
    /// Collected since the promise was made.
    #[schema(value_type = Option<String>)]
    pub paid_since: Option<Decimal>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<NoteError> for CollectionsError {
    fn from(e: NoteError) -> Self {
        match e {
            NoteError::Sql(e) => CollectionsError::Sql(e),
            NoteError::Money(e) => invalid("amount", e.to_string()),
        }
    }
}

fn text_of(text: &str) -> Result<&str, CollectionsError> {
    let t = text.trim();
    match t.chars().count() {
        0 => Err(invalid("text", "is required")),
        n if n > 2000 => Err(invalid("text", "at most 2000 characters")),
        _ => Ok(t),
    }
}

/// Record a note on a loan (audited).
pub async fn add_note(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<i64, CollectionsError> {
    let text = text_of(text)?;
    let mut tx = engine.db.begin().await?;
    loan_tz(&mut tx, loan_id).await?;
    let note = NewNote {
        loan_id,
        body: text,
        promise: None,
        created_by: &who.name,
        created_at: now.timestamp_millis(),
    };
    let id = record(&mut tx, who, action::ADD_NOTE, &note, json!({})).await?;
    tx.commit().await?;
    Ok(id)
}

/// Write `note` and its audit row (with `detail` and the note's id) in the caller's
/// transaction; returns the id.
async fn record(
    tx: &mut sqlx::AnyConnection,
    who: &Actor,
    action: &str,
    note: &NewNote<'_>,
    mut detail: serde_json::Value,
) -> Result<i64, CollectionsError> {
    let id = notes::insert_note(&mut *tx, note).await?;
    detail["note_id"] = json!(id);
    let (loan, why) = (Some(note.loan_id), Some(note.body));
    audit(&mut *tx, who, action, loan, why, &detail, note.created_at).await?;
    Ok(id)
}

/// Record a promise to pay `amount` by `on` (the loan's local date), audited, and pause the
/// loan's automatic attempts until that date is over.
pub async fn promise_to_pay(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    amount: &str,
    on: NaiveDate,
    text: &str,
    now: DateTime<Utc>,
) -> Result<i64, CollectionsError> {
    let text = text_of(text)?;
    let amount = parse_money(amount).map_err(|e| invalid("amount", e.to_string()))?;
    let mut tx = engine.db.begin().await?;
    let tz = loan_tz(&mut tx, loan_id).await?;
    check_promise(amount, on, local_date(now, tz)).map_err(|(f, m)| invalid(f, m))?;
    let note = NewNote {
        loan_id,
        body: text,
        promise: Some((amount, on)),
        created_by: &who.name,
        created_at: now.timestamp_millis(),
    };
    let resume_at = local_to_utc(on + Days::new(1), NaiveTime::MIN, tz);
    let reason = format!("promise to pay {amount} by {on}");
    notes::pause_at_least(&mut tx, loan_id, resume_at.timestamp_millis(), &reason).await?;
    let detail = json!({ "amount": amount, "date": on, "paused_until": resume_at });
    let id = record(&mut tx, who, action::PROMISE_TO_PAY, &note, detail).await?;
    tx.commit().await?;
    Ok(id)
}

/// A loan's notes and promises, newest first, each promise with its state as of `now`.
pub async fn notes(
    engine: &Engine,
    loan_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<NoteView>, CollectionsError> {
    let mut conn = engine.db.pool.acquire().await?;
    let tz = loan_tz(&mut conn, loan_id).await?;
    let currency: String = crate::store::loans::currency_of(&mut conn, loan_id).await?;
    let today = local_date(now, tz);
    let rows = notes::notes_of(&mut conn, loan_id).await?;
    Ok(rows
        .into_iter()
        .map(|r| view(r, &currency, today))
        .collect())
}

fn view(r: NoteRow, currency: &str, today: NaiveDate) -> NoteView {
    let state = match (r.amount, r.promised_on) {
        (Some(a), Some(on)) => Some(promise_state(a, r.paid_since, on, today)),
        _ => None,
    };
    NoteView {
        id: r.id,
        loan_id: r.loan_id,
        kind: r.kind,
        text: r.body,
        amount: r.amount,
        currency: currency.to_string(),
        promised_on: r.promised_on,
        paid_since: state.map(|_| r.paid_since),
        state,
        created_by: r.created_by,
        created_at: DateTime::from_timestamp_millis(r.created_at).unwrap_or_default(),
    }
}
