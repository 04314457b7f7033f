//! Login with a token, the session cookie, and the page extractor that sends anyone without a
//! valid cookie to the login form instead of answering 401.

use super::render::{html_response, render, PageError};
use crate::web::auth::{authenticate, AuthError, Principal, Role, COOKIE};
use crate::web::state::ApiState;
use crate::web::throttle::AuthFailed;
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
            Err(e) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let mut resp = to_login(&next).into_response();
                if matches!(e, AuthError::Invalid) {
                    // A wrong cookie is a guess like a wrong bearer token: counted as one.
                    resp.extensions_mut().insert(AuthFailed);
                }
                Err(resp)
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

/// Pages a login may go on to, besides `/` (the router's pages; not `/login`, `/logout` or
/// the assets).
const NEXT_PAGES: [&str; 3] = ["/loans", "/recon", "/worklist"];
/// Longer than any link the dashboard makes.
const MAX_NEXT: usize = 2048;

/// Where to go after login: `next` when it is one of our pages written in plain URL
/// characters, `/` otherwise (no open redirect). Browsers drop tabs and newlines from a URL
/// and read `\` as `/`, so `/<TAB>/host` or `/\host` would leave the site: anything outside
/// RFC 3986's characters, or with an empty or dot segment (which could normalise to
/// `//host`), is refused rather than cleaned up. The answer is always a valid header value.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if is_dashboard_page(n) => n,
        _ => "/",
    }
}

fn is_dashboard_page(n: &str) -> bool {
    if n.len() > MAX_NEXT || !n.bytes().all(is_url_byte) {
        return false;
    }
    let (path, query) = n.split_once('?').unwrap_or((n, ""));
    if path == "/" {
        return decode(query).is_some();
    }
    let known = NEXT_PAGES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    known && path[1..].split('/').all(plain_segment) && decode(query).is_some()
}

/// Unreserved, sub-delimiter, `:@/?` and `%` (RFC 3986); no `#`, `\`, space or control.
fn is_url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// A path segment that stays itself however it is decoded: not empty, not `.` or `..`,
/// and no escaped separator, dot-only name or control character.
fn plain_segment(seg: &str) -> bool {
    let Some(raw) = decode(seg) else {
        return false;
    };
    !raw.is_empty()
        && !raw.iter().all(|b| *b == b'.')
        && !raw
            .iter()
            .any(|b| *b <= b' ' || *b == 0x7f || *b == b'/' || *b == b'\\')
}

/// Percent-decoding; None when a `%` is not followed by two hex digits.
fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
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

    #[test]
    fn next_is_a_dashboard_page_in_safe_characters() {
        for ok in [
            "/",
            "/?date=2027-01-15",
            "/loans",
            "/loans?q=l%20i&status=overdue",
            "/loans/L-1_a.b~c",
            "/recon",
            "/recon?date=2027-01-15",
        ] {
            assert_eq!(safe_next(Some(ok)), ok, "{ok:?}");
        }
        for bad in [
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r\nset-cookie:x",
            "/\u{0}",
            "/ /evil.example",
            "/%09/evil.example",
            "/%2f%2fevil.example",
            "/loans/%2e%2e//evil.example",
            "/loans/..//evil.example",
            "/loans/../../evil",
            "/./loans",
            "/loans//evil.example",
            "//evil.example",
            "///evil.example",
            "/\\evil",
            "/loans\\..",
            "https://evil.example",
            "evil.example",
            "/login",
            "/logout",
            "/assets/dashboard.js",
            "/loansx",
            "/reconx",
            "/loans/é",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(
            safe_next(Some(&format!("/loans/{}", "a".repeat(3000)))),
            "/"
        );
    }
}
