//! Login with a token, the session cookie, and the page extractor that sends anyone without a
//! valid cookie to the login form instead of answering 401.

use super::render::{html_response, render, PageError};
use crate::api::ApiState;
use crate::web::auth::{authenticate, AuthError, Principal, Role, COOKIE};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};

/// The signed-in person of a page request.
pub struct Session(pub Principal);

impl Session {
    /// Whether the person may pause, resume and trigger attempts.
    pub fn can_act(&self) -> bool {
        self.0.role >= Role::Collections
    }

    /// Whether the person may resolve reconciliation cases.
    pub fn is_admin(&self) -> bool {
        self.0.role >= Role::Admin
    }

    /// What the header of every page shows.
    pub fn user(&self) -> UserView {
        UserView {
            name: self.0.name.clone(),
            role: self.0.role.as_str(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    pub role: &'static str,
}

impl FromRequestParts<ApiState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Response> {
        match Principal::from_request_parts(parts, s).await {
            Ok(p) => Ok(Session(p)),
            Err(AuthError::Store(e)) => Err(PageError::Sql(e).into_response()),
            Err(_) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                Err(to_login(&next).into_response())
            }
        }
    }
}

fn to_login(next: &str) -> Redirect {
    if next == "/" {
        return Redirect::to("/login");
    }
    let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/login?{q}"))
}

/// Only our own absolute paths are followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_form(Query(q): Query<NextQuery>) -> Result<Response, PageError> {
    login_page(StatusCode::OK, safe_next(q.next.as_deref()), None)
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Result<Response, PageError> {
    let ctx = minijinja::context! { next, error, user => () };
    Ok(html_response(status, render("login.html", ctx)?))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login_submit(
    State(s): State<ApiState>,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    let principal = if token.is_empty() {
        None
    } else {
        let mut conn = s.engine.db.pool.acquire().await?;
        authenticate(&mut conn, token).await?
    };
    let Some(p) = principal else {
        tracing::info!("dashboard login refused: unknown or revoked token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            next,
            Some("That token is not valid (unknown or revoked)."),
        );
    };
    tracing::info!(actor = %p.name, role = %p.role, "dashboard login");
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    Ok(with_cookie(Redirect::to(next), &cookie))
}

pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    with_cookie(Redirect::to("/login"), &cookie)
}

fn with_cookie(r: Redirect, cookie: &str) -> Response {
    let mut resp = r.into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/loans/L1")), "/loans/L1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
