//! The API's one error shape, `{"error": code, "message": text, "field": optional}`, and the
//! JSON body extractor whose rejections use it (naming the field at fault).

use crate::domain::json_field;
use crate::engine::EngineError;
use crate::ops::CollectionsError;
use crate::web::auth::AuthError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: unauthorized, forbidden, not_found, bad_request, invalid_field,
    /// conflict, idempotency_key_reused, idempotency_key_in_flight,
    /// idempotency_key_secret_shown, rate_limited, invalid_import,
    /// invalid_policy, internal.
    pub error: String,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem found (imports and policy validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub problems: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
                field: None,
                problems: None,
            },
        }
    }

    pub fn with_field(mut self, field: &str) -> Self {
        self.body.field = Some(field.into());
        self
    }

    /// 422 naming a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {message}"),
        )
        .with_field(field)
    }

    /// 400 naming a field (a malformed query parameter or header).
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{field}: {message}"),
        )
        .with_field(field)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} not found", what.into()),
        )
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed; see the daemon's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, Json(self.body)).into_response();
        if unauthorized {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match &e {
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "unavailable",
        };
        let message = match &e {
            AuthError::Store(_) => "the token store is unavailable".to_string(),
            other => other.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<CollectionsError> for ApiError {
    fn from(e: CollectionsError) -> Self {
        match e {
            CollectionsError::NotFound(what) => ApiError::not_found(what),
            CollectionsError::Invalid { field, message } => ApiError::invalid(&field, message),
            CollectionsError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CollectionsError::Sql(e) => ApiError::internal(e),
            CollectionsError::Engine(e) => ApiError::internal(e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        CollectionsError::from(e).into()
    }
}

/// A JSON body. Malformed JSON is a 400; a missing field or a value of the wrong type is a
/// 422 that names the field (`field` is its path, e.g. `until` or `mandates[0].channel`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a JSON body is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let field = json_field::field_of(&e.path().to_string(), &inner.to_string(), "(body)");
        ApiError::invalid(&field, json_field::strip_position(&inner.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        until: String,
        n: Option<u32>,
    }

    fn err(s: &str) -> ApiError {
        parse_json::<Body>(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = err(r#"{"n": 1}"#);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body.field.as_deref(), Some("until"));
        let e = err(r#"{"until": 5}"#);
        assert_eq!(e.body.field.as_deref(), Some("until"));
        assert!(
            e.body.message.contains("invalid type"),
            "{}",
            e.body.message
        );
        let e = err(r#"{"until": "x", "n": "many"}"#);
        assert_eq!(e.body.field.as_deref(), Some("n"));
        let e = err(r#"{"until": "x", "bogus": 1}"#);
        assert_eq!(e.body.field.as_deref(), Some("bogus"));
        let e = err("{not json");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(err("").status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Body>(br#"{"until": "2027-01-01"}"#).is_ok());
    }
}
