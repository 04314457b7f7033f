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

#[cfg(test)]
mod tests {
    use super::*;

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
