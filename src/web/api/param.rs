//! Query parameters: typed in `/openapi.json`, read by hand. Every value arrives as text and
//! is parsed by its handler, so a bad one is a 422 (or 400) that names its parameter, never
//! an empty list or an extractor's message; these schemas tell clients what each one takes.

use super::error::ApiError;
use crate::domain::status::{AttemptKind, AttemptStatus, CaseStatus, LoanStatus};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::Object;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn one_of_schema(values: &[&str]) -> Object {
    string().enum_values(Some(values.iter().copied())).build()
}

/// A page size: 1 to 500.
pub fn limit() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(500))
        .build()
}

/// A whole number of days past due.
pub fn days() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(36_500))
        .build()
}

pub fn boolean() -> Object {
    ObjectBuilder::new().schema_type(Type::Boolean).build()
}

pub fn date() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .build()
}

/// An instant; a plain date (UTC midnight) is accepted too.
pub fn date_time() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

/// A non-empty identifier or text.
pub fn text() -> Object {
    string().min_length(Some(1)).max_length(Some(200)).build()
}

/// Required free text (a reason, a note): at least one visible character.
pub fn words() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(2000))
        .pattern(Some(r"\S"))
        .build()
}

/// An amount above zero, as a decimal string with at most 2 decimals ("12.50").
pub fn amount() -> Object {
    string()
        .pattern(Some(AMOUNT_PATTERN))
        .examples(["12.50"])
        .build()
}

/// An optional limit: an amount above zero, or null for none.
pub fn optional_amount() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .pattern(Some(AMOUNT_PATTERN))
        .build()
}

/// Above zero, whole units up to 12 digits and at most 2 decimals.
const AMOUNT_PATTERN: &str = r"^([1-9][0-9]{0,11}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$";

/// A required date (YYYY-MM-DD).
pub fn day() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .pattern(Some(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
        .build()
}

/// A mandate's agreement id: printable ASCII without spaces, at most 64 characters.
pub fn agreement() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(r"^[!-~]{1,64}$"))
        .build()
}

/// A card or account number: 4 to 32 digits (`domain::pii::check_account`; only its masked
/// form is stored).
pub fn account() -> Object {
    string().pattern(Some(r"^[0-9]{4,32}$")).build()
}

/// A token's role.
pub fn role() -> Object {
    one_of_schema(&["admin", "collections", "viewer"])
}

/// A name made of letters, digits, `-`, `_` and `.` (token names, policy names).
pub fn name() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(r"^[A-Za-z0-9._-]+$"))
        .build()
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn idempotency_key() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(255))
        .pattern(Some(r"^[!-~]{1,255}$"))
        .build()
}

/// A page cursor: the `next_cursor` of the previous page, given back as it came.
pub fn cursor() -> Object {
    string()
        .min_length(Some(2))
        .max_length(Some(MAX_QUERY_VALUE))
        .pattern(Some(r"^([0-9a-f]{2})+$"))
        .build()
}

/// The page cursor of a list ordered by id: the `next_cursor` of the previous page.
pub fn id_cursor() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(15))
        .pattern(Some(r"^[0-9a-f]{1,15}$"))
        .build()
}

/// An event id of the attempts feed (`<updated_at>-<id>`).
pub fn event_id() -> Object {
    string().pattern(Some(r"^[0-9]{1,15}-[0-9]{1,15}$")).build()
}

/// A date query parameter: absent is `None`; given, it must be a date (an empty value is a
/// mistake, not "absent").
pub fn day_of(field: &str, v: &Option<String>) -> Result<Option<chrono::NaiveDate>, ApiError> {
    match v.as_deref().map(str::trim) {
        None => Ok(None),
        Some(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| ApiError::bad(field, "a date, YYYY-MM-DD")),
    }
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

pub fn attempt_kind() -> Object {
    one_of_schema(&names(AttemptKind::ALL, AttemptKind::as_str))
}

pub fn attempt_status() -> Object {
    one_of_schema(&names(AttemptStatus::ALL, AttemptStatus::as_str))
}

pub fn loan_status() -> Object {
    one_of_schema(&names(LoanStatus::ALL, LoanStatus::as_str))
}

pub fn case_status() -> Object {
    one_of_schema(&names(CaseStatus::ALL, CaseStatus::as_str))
}

/// `v` when it is one of `allowed` (empty means absent); otherwise a 422 naming `field` and
/// listing what it takes. An unknown filter value is an error, never an empty list.
pub fn one_of(
    field: &str,
    v: &Option<String>,
    allowed: &[&'static str],
) -> Result<Option<String>, ApiError> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if allowed.contains(&s) => Ok(Some(s.to_string())),
        Some(s) => Err(ApiError::invalid(
            field,
            format!("`{s}` is not one of {}", allowed.join(", ")),
        )),
    }
}

pub fn attempt_kinds() -> Vec<&'static str> {
    names(AttemptKind::ALL, AttemptKind::as_str)
}

pub fn attempt_statuses() -> Vec<&'static str> {
    names(AttemptStatus::ALL, AttemptStatus::as_str)
}

pub fn loan_statuses() -> Vec<&'static str> {
    names(LoanStatus::ALL, LoanStatus::as_str)
}

pub fn case_statuses() -> Vec<&'static str> {
    names(CaseStatus::ALL, CaseStatus::as_str)
}

/// Path parameters whose refusal is JSON like every other error (axum's own is text).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for ApiPath<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad("(path)", e.body_text()))
    }
}

/// The longest value of any query parameter.
pub const MAX_QUERY_VALUE: usize = 200;

/// Query parameters, read the way the schema describes them: a parameter given twice takes
/// its last value; an empty or over-long value is a 400 naming the parameter (given empty is
/// a mistake, not "absent"); errors are JSON like every other.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let pairs = last_values(parts.uri.query().unwrap_or(""))?;
        let text = serde_urlencoded::to_string(&pairs)
            .map_err(|e| ApiError::bad("(query)", e.to_string()))?;
        serde_urlencoded::from_str(&text)
            .map(ApiQuery)
            .map_err(|e| ApiError::bad("(query)", e.to_string()))
    }
}

/// The query's parameters, each with its last value, checked for empty and over-long values.
pub fn last_values(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let given: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| ApiError::bad("(query)", e.to_string()))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in given {
        if v.trim().is_empty() {
            return Err(ApiError::bad(
                &k,
                "given empty; leave the parameter out instead",
            ));
        }
        if v.chars().count() > MAX_QUERY_VALUE {
            return Err(ApiError::bad(
                &k,
                format!("longer than {MAX_QUERY_VALUE} characters"),
            ));
        }
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_given_twice_takes_its_last_value_and_empty_or_long_ones_are_refused() {
        let pairs = last_values("status=a&kind=due&status=b").unwrap();
        assert_eq!(
            pairs,
            [("status".into(), "b".into()), ("kind".into(), "due".into())]
        );
        let e = last_values("as_of=").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("as_of"), "{}", e.body.message);
        let long = format!("q={}", "x".repeat(MAX_QUERY_VALUE + 1));
        assert!(last_values(&long)
            .unwrap_err()
            .body
            .message
            .contains("longer than"));
        assert!(last_values("").unwrap().is_empty());
    }

    #[test]
    fn an_unknown_value_names_its_parameter() {
        let kinds = attempt_kinds();
        assert_eq!(
            one_of("kind", &Some("due".into()), &kinds)
                .unwrap()
                .as_deref(),
            Some("due")
        );
        assert_eq!(one_of("kind", &Some(String::new()), &kinds).unwrap(), None);
        let e = one_of("kind", &Some("bogus".into()), &kinds).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.body
                .message
                .starts_with("kind: `bogus` is not one of early, due"),
            "{}",
            e.body.message
        );
    }
}
