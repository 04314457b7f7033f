//! Templates (compiled in from `templates/dashboard/`), page responses and page errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::{Environment, Value};
use serde::Serialize;
use std::sync::OnceLock;
use thiserror::Error;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../templates/dashboard/", $name)))),*]
    };
}

const TEMPLATES: [(&str, &str); 10] = templates![
    "base.html",
    "macros.html",
    "login.html",
    "home.html",
    "loans.html",
    "worklist.html",
    "loan.html",
    "recon.html",
    "simulations.html",
    "error.html",
];

#[derive(Debug, Error)]
pub enum PageError {
    #[error("the database is unavailable")]
    Sql(#[from] sqlx::Error),
    #[error("page rendering failed: {0}")]
    Template(#[from] minijinja::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::Sql(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "dashboard page failed");
        }
        let ctx = minijinja::context! {
            status => status.as_u16(), message => self.to_string(), user => (),
        };
        match render("error.html", ctx) {
            Ok(html) => html_response(status, html),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("built-in template {name}: {e}"));
        }
        env.add_filter("when", when);
        env.add_filter("scrub", scrub);
        env.add_filter("segment", |v: Value| path_segment(&v.to_string()));
        env.add_filter("urlencode", |v: Value| query_value(&v.to_string()));
        env
    })
}

/// Render a template to a string. `.html` templates escape every value.
pub fn render<S: Serialize>(name: &str, ctx: S) -> Result<String, minijinja::Error> {
    env().get_template(name)?.render(ctx)
}

/// A rendered page with the headers every dashboard page carries: no caching, and a
/// content security policy that allows only our own script and style files.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(h, header::CACHE_CONTROL, "no-store");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; form-action 'self'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    resp
}

pub fn page<S: Serialize>(name: &str, ctx: S) -> Result<Response, PageError> {
    Ok(html_response(StatusCode::OK, render(name, ctx)?))
}

/// An instant as `YYYY-MM-DD HH:MM:SS` in UTC (column headings say so), the format the
/// feed's script uses too.
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Template filter: epoch milliseconds or an RFC 3339 string → [`format_instant`].
fn when(v: Value) -> String {
    if v.is_none() || v.is_undefined() {
        return String::new();
    }
    if let Some(ms) = v.as_i64() {
        return DateTime::from_timestamp_millis(ms)
            .map(format_instant)
            .unwrap_or_default();
    }
    let s = v.to_string();
    DateTime::parse_from_rfc3339(&s)
        .map(|d| format_instant(d.with_timezone(&Utc)))
        .unwrap_or(s)
}

/// Template filter: masks any run of eight or more digits (an account or phone number that
/// found its way into free text such as a notice body or an audit detail).
fn scrub(v: Value) -> String {
    if v.is_none() || v.is_undefined() {
        return String::new();
    }
    scrub_digits(&v.to_string())
}

/// Percent-encode one URL path segment (everything but unreserved characters).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn scrub_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 8 {
            out.push_str(&crate::domain::pii::mask_phone(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A value for a query string (`a b&c` → `a+b%26c`), as a form would send it.
fn query_value(v: &str) -> String {
    let pair = serde_urlencoded::to_string([("", v)]).unwrap_or_default();
    pair.trim_start_matches('=').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            env().get_template(name).expect(name);
        }
    }

    #[test]
    fn scrub_masks_long_digit_runs_only() {
        assert_eq!(
            scrub_digits("call 13812345678 re 6222021234567890, owe 1234.50 by 2026-03-01"),
            "call 138****5678 re ************7890, owe 1234.50 by 2026-03-01"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("L-1_a.b~"), "L-1_a.b~");
        assert_eq!(path_segment("a/b c?d"), "a%2Fb%20c%3Fd");
        assert_eq!(path_segment("贷"), "%E8%B4%B7");
    }

    #[test]
    fn when_formats_millis_and_rfc3339() {
        assert_eq!(when(Value::from(0i64)), "1970-01-01 00:00:00");
        assert_eq!(
            when(Value::from("2026-03-01T08:00:00+08:00")),
            "2026-03-01 00:00:00"
        );
        assert_eq!(when(Value::from(())), "");
    }
}
