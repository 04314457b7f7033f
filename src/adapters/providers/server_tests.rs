//! Providers against real servers on loopback: an axum server playing the SMS gateways
//! (checking method, auth and body, and answering 4xx/5xx/slowly) and an embedded SMTP
//! server (mailin-embedded) that keeps what it receives.

use super::*;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn notice(id: i64, channel: &str, to: &str) -> OutgoingNotice {
    OutgoingNotice {
        id,
        message_id: OutgoingNotice::message_id_for(id),
        kind: "paid".into(),
        channel: channel.into(),
        recipient: to.into(),
        subject: "Payment received".into(),
        body: "[Acme] we collected 1250.00 CNY from 6222 **** **** 1234".into(),
    }
}

/// Serve `app` on 127.0.0.1 at a free port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot bind a loopback port for the test HTTP server");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------- generic JSON SMS gateway ----------

#[derive(Clone, Default)]
struct Gateway {
    seen: Arc<Mutex<Vec<(HeaderMap, serde_json::Value)>>>,
    fail_first: Arc<Mutex<u32>>,
}

/// The gateway's behaviour is picked by the number's last digits.
async fn generic_gateway(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    gw.seen
        .lock()
        .unwrap()
        .push((headers.clone(), body.clone()));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some("Bearer gw-token") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "bad token"})),
        );
    }
    let to = body["to"].as_str().unwrap_or_default().to_string();
    if body["message_id"].as_str().is_none() || body["text"].as_str().is_none() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"error": "fields"})),
        );
    }
    let fail = {
        let mut n = gw.fail_first.lock().unwrap();
        let fail = *n > 0;
        *n = n.saturating_sub(1);
        fail
    };
    match &to[to.len().saturating_sub(3)..] {
        "400" => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("invalid number {to}")})),
        ),
        "429" => (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({}))),
        "999" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, Json(serde_json::json!({"id": "late"})))
        }
        _ if fail => (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({"error": "upstream"})),
        ),
        _ => (
            StatusCode::OK,
            Json(serde_json::json!({"id": format!("gw-{}", body["message_id"].as_str().unwrap())})),
        ),
    }
}

async fn generic(token: &str) -> (GenericJsonSms, Gateway) {
    let gw = Gateway::default();
    let app = Router::new()
        .route("/sms", post(generic_gateway))
        .with_state(gw.clone());
    let url = format!("{}/sms", serve(app).await);
    let sms = GenericJsonSms::new(url, Secret::new(token), Duration::from_millis(500)).unwrap();
    (sms, gw)
}

#[tokio::test]
async fn generic_sms_sends_json_with_bearer_token_and_message_id() {
    let (sms, gw) = generic("gw-token").await;
    let n = notice(1, "sms", "13812345678");
    let r = sms.send(&n).await.unwrap();
    assert_eq!(r.provider_id, "gw-repayd-1");
    let seen = gw.seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert_eq!(body["message_id"], "repayd-1");
    assert_eq!(body["to"], "13812345678");
    assert_eq!(body["text"], n.body.as_str());
    assert_eq!(headers["idempotency-key"], "repayd-1");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn generic_sms_5xx_is_retryable_and_the_retry_keeps_the_message_id() {
    let (sms, gw) = generic("gw-token").await;
    *gw.fail_first.lock().unwrap() = 1;
    let n = notice(2, "sms", "13812345678");
    let e = sms.send(&n).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transport(_)) && e.retryable(),
        "{e}"
    );
    sms.send(&n).await.unwrap();
    let ids: Vec<_> = gw
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b["message_id"].clone())
        .collect();
    assert_eq!(ids, vec!["repayd-2", "repayd-2"]);
}

#[tokio::test]
async fn generic_sms_4xx_is_rejected_without_the_full_number() {
    let (sms, _) = generic("gw-token").await;
    let e = sms
        .send(&notice(3, "sms", "13800000400"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected(_)) && !e.retryable(),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("HTTP 400") && text.contains("138****0400"),
        "{text}"
    );
    assert!(!text.contains("13800000400"), "{text}");
}

#[tokio::test]
async fn generic_sms_bad_token_is_rejected() {
    let (sms, _) = generic("wrong").await;
    let e = sms
        .send(&notice(4, "sms", "13812345678"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected(ref s) if s.contains("401")),
        "{e}"
    );
}

#[tokio::test]
async fn generic_sms_rate_limit_is_retryable() {
    let (sms, _) = generic("gw-token").await;
    let e = sms
        .send(&notice(5, "sms", "13800000429"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Transport(_)), "{e}");
}

#[tokio::test]
async fn generic_sms_slow_gateway_is_a_timeout() {
    let (sms, _) = generic("gw-token").await;
    let e = sms
        .send(&notice(6, "sms", "13800000999"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Timeout(_)) && e.retryable(),
        "{e}"
    );
}

#[tokio::test]
async fn generic_sms_refused_connection_is_transport() {
    let url = format!("http://127.0.0.1:{}/sms", closed_port());
    let sms = GenericJsonSms::new(url, Secret::new("t"), Duration::from_millis(500)).unwrap();
    let e = sms
        .send(&notice(7, "sms", "13812345678"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Transport(_)), "{e}");
}

// ---------- Twilio ----------

type Forms = Arc<Mutex<Vec<HashMap<String, String>>>>;

async fn twilio_messages(
    State(seen): State<Forms>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<serde_json::Value>) {
    seen.lock().unwrap().push(form.clone());
    // base64("ACtest:tw-secret")
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if sid != "ACtest" || auth != Some("Basic QUN0ZXN0OnR3LXNlY3JldA==") {
        let body = serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401});
        return (StatusCode::UNAUTHORIZED, Json(body));
    }
    if form.get("To").map(String::as_str) == Some("+15005550001") {
        let body = serde_json::json!({"code": 21211, "message": "Invalid 'To' Phone Number: +15005550001", "status": 400});
        return (StatusCode::BAD_REQUEST, Json(body));
    }
    if form.get("To").map(String::as_str) == Some("+15005550500") {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({})));
    }
    let body =
        serde_json::json!({"sid": "SM0123456789abcdef", "status": "queued", "to": form["To"]});
    (StatusCode::CREATED, Json(body))
}

async fn twilio(sid: &str) -> (TwilioSms, Forms) {
    let seen = Forms::default();
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(twilio_messages),
        )
        .with_state(seen.clone());
    let mut cfg = TwilioConfig::new(sid, Secret::new("tw-secret"), "+15005550006");
    cfg.base_url = serve(app).await;
    cfg.timeout = Duration::from_millis(500);
    cfg.status_callback = Some("https://repayd.example/hooks/twilio".into());
    (TwilioSms::new(cfg).unwrap(), seen)
}

#[tokio::test]
async fn twilio_posts_the_messages_form_with_basic_auth() {
    let (sms, seen) = twilio("ACtest").await;
    let n = notice(10, "sms", "+8613812345678");
    let r = sms.send(&n).await.unwrap();
    assert_eq!(r.provider_id, "SM0123456789abcdef");
    let form = seen.lock().unwrap()[0].clone();
    assert_eq!(form["To"], "+8613812345678");
    assert_eq!(form["From"], "+15005550006");
    assert_eq!(form["Body"], n.body);
    assert_eq!(
        form["StatusCallback"],
        "https://repayd.example/hooks/twilio"
    );
}

#[tokio::test]
async fn twilio_errors_carry_its_code_and_message() {
    let (sms, _) = twilio("ACtest").await;
    let e = sms
        .send(&notice(11, "sms", "+15005550001"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ProviderError::Rejected(_)), "{text}");
    assert!(
        text.contains("Twilio error 21211") && !text.contains("+15005550001"),
        "{text}"
    );
    let e = sms
        .send(&notice(12, "sms", "+15005550500"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Transport(ref s) if s.contains("503")),
        "{e}"
    );
}

#[tokio::test]
async fn twilio_bad_credentials_are_rejected() {
    let (sms, _) = twilio("ACother").await;
    let e = sms
        .send(&notice(13, "sms", "+8613812345678"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected(ref s) if s.contains("20003")),
        "{e}"
    );
}

// ---------- SMTP ----------

/// What the SMTP server received: one raw message per DATA.
#[derive(Clone, Default)]
struct Inbox {
    messages: Arc<Mutex<Vec<String>>>,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for Inbox {
    fn rcpt(&mut self, to: &str) -> mailin_embedded::Response {
        if to.starts_with("nobody@") {
            mailin_embedded::response::NO_MAILBOX
        } else {
            mailin_embedded::response::OK
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let msg = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        self.messages.lock().unwrap().push(msg);
        mailin_embedded::response::OK
    }

    fn auth_plain(
        &mut self,
        _authz: &str,
        user: &str,
        password: &str,
    ) -> mailin_embedded::Response {
        if user == "repayd" && password == "smtp-secret" {
            mailin_embedded::response::AUTH_OK
        } else {
            mailin_embedded::response::INVALID_CREDENTIALS
        }
    }
}

/// Start a real SMTP server on a free loopback port, with STARTTLS and AUTH PLAIN when
/// `tls` (mailin offers AUTH only over TLS). Panics, failing the test, if it cannot start.
fn smtp_server(tls: bool) -> (u16, Inbox) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot start the embedded SMTP test server on 127.0.0.1: {e}"));
    let port = listener.local_addr().unwrap().port();
    let inbox = Inbox::default();
    let mut server = mailin_embedded::Server::new(inbox.clone());
    server.with_name("smtp.test").with_tcp_listener(listener);
    if tls {
        server
            .with_ssl(server_tls())
            .unwrap_or_else(|e| panic!("cannot set up TLS for the embedded SMTP test server: {e}"))
            .with_auth(mailin_embedded::AuthMechanism::Plain);
    }
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            panic!("embedded SMTP test server stopped: {e}");
        }
    });
    (port, inbox)
}

/// The test certificate for 127.0.0.1 (see testdata/README.md), written where mailin can
/// read it.
fn server_tls() -> mailin_embedded::SslConfig {
    // Several rustls crypto providers are compiled in; mailin needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap().keep();
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, include_str!("testdata/server.pem")).unwrap();
    std::fs::write(&key, include_str!("testdata/server.key")).unwrap();
    mailin_embedded::SslConfig::SelfSigned {
        cert_path: cert.display().to_string(),
        key_path: key.display().to_string(),
    }
}

fn smtp_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        username: None,
        password: None,
        from: "Acme Credit <noreply@lender.example>".into(),
        timeout: Duration::from_secs(5),
        root_cert_pem: None,
    }
}

fn context() -> NoticeContext {
    NoticeContext {
        lender: "Acme Credit".into(),
        borrower_name: "Li Lei".into(),
        loan_id: "L-42".into(),
        installment: Some(2),
        amount: "1250.00".into(),
        currency: "CNY".into(),
        due_date: "2026-03-15".into(),
        account_masked: "6222 **** **** 1234".into(),
        remaining: "250.00".into(),
    }
}

fn email_notice(id: i64, to: &str, locale: &str) -> OutgoingNotice {
    let (subject, body) = Templates::builtin()
        .render("partial", locale, &context())
        .unwrap();
    OutgoingNotice {
        subject,
        body,
        kind: "partial".into(),
        ..notice(id, "email", to)
    }
}

/// The header block and the body of a raw message, with folded header lines unfolded.
fn split_message(raw: &str) -> (String, String) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("message has headers and a body");
    (
        head.replace("\r\n ", " ").replace("\r\n\t", " "),
        body.to_string(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in {head}"))
}

#[tokio::test]
async fn smtp_delivers_subject_body_and_a_stable_message_id() {
    let (port, inbox) = smtp_server(false);
    let email = SmtpEmail::new(smtp_config(port)).unwrap();
    let n = email_notice(21, "li.lei@borrower.example", "en");
    email.send(&n).await.unwrap();
    let raw = inbox.messages.lock().unwrap()[0].clone();
    let (head, body) = split_message(&raw);
    assert_eq!(
        header(&head, "Subject"),
        "[Acme Credit] Part payment received: 1250.00 CNY"
    );
    assert_eq!(header(&head, "Message-ID"), "<repayd-21@lender.example>");
    assert_eq!(header(&head, "To"), "li.lei@borrower.example");
    let body = body.replace("=\r\n", "");
    assert!(
        body.contains("6222 **** **** 1234") && body.contains("1250.00 CNY"),
        "{body}"
    );
    assert!(body.contains("250.00 CNY remains"), "{body}");
}

#[tokio::test]
async fn smtp_delivers_chinese_text_intact() {
    use base64::Engine;
    let (port, inbox) = smtp_server(false);
    let email = SmtpEmail::new(smtp_config(port)).unwrap();
    let n = email_notice(22, "li.lei@borrower.example", "zh-CN");
    email.send(&n).await.unwrap();
    let raw = inbox.messages.lock().unwrap()[0].clone();
    let (head, body) = split_message(&raw);
    assert_eq!(
        header(&head, "Content-Transfer-Encoding"),
        "base64",
        "{head}"
    );
    let text = base64::engine::general_purpose::STANDARD
        .decode(body.split_whitespace().collect::<String>())
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text, n.body);
    assert!(
        text.contains("6222 **** **** 1234") && text.contains("1250.00 CNY"),
        "{text}"
    );
    assert!(header(&head, "Subject").starts_with("=?utf-8?b?"), "{head}");
}

#[tokio::test]
async fn smtp_starttls_with_login() {
    let (port, inbox) = smtp_server(true);
    let mut cfg = smtp_config(port);
    cfg.security = Security::Starttls;
    cfg.root_cert_pem = Some(include_str!("testdata/ca.pem").to_string());
    cfg.username = Some("repayd".into());
    cfg.password = Some(Secret::new("smtp-secret"));
    let n = email_notice(23, "li.lei@borrower.example", "en");
    SmtpEmail::new(cfg.clone()).unwrap().send(&n).await.unwrap();
    let raw = inbox.messages.lock().unwrap()[0].clone();
    assert_eq!(
        header(&split_message(&raw).0, "Message-ID"),
        "<repayd-23@lender.example>"
    );

    cfg.password = Some(Secret::new("wrong"));
    let e = SmtpEmail::new(cfg.clone())
        .unwrap()
        .send(&n)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected(ref s) if s.contains("535")),
        "{e}"
    );
    assert!(
        !format!("{cfg:?}").contains("wrong"),
        "config Debug shows the password"
    );
}

#[tokio::test]
async fn smtp_starttls_with_an_untrusted_certificate_is_transport() {
    let (port, inbox) = smtp_server(true);
    let mut cfg = smtp_config(port);
    cfg.security = Security::Starttls;
    let e = SmtpEmail::new(cfg)
        .unwrap()
        .send(&email_notice(24, "li.lei@borrower.example", "en"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Transport(ref s) if s.contains("UnknownIssuer")),
        "{e}"
    );
    assert!(inbox.messages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn smtp_permanent_refusal_is_rejected_and_masks_the_address() {
    let (port, inbox) = smtp_server(false);
    let email = SmtpEmail::new(smtp_config(port)).unwrap();
    let e = email
        .send(&email_notice(25, "nobody@borrower.example", "en"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Rejected(_)) && !e.retryable(),
        "{e}"
    );
    assert!(!e.to_string().contains("nobody@"), "{e}");
    assert!(inbox.messages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn smtp_bad_address_is_rejected_before_connecting() {
    let email = SmtpEmail::new(smtp_config(closed_port())).unwrap();
    let e = email
        .send(&email_notice(26, "not an address", "en"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Rejected(_)), "{e}");
}

#[tokio::test]
async fn smtp_refused_connection_is_transport() {
    let email = SmtpEmail::new(smtp_config(closed_port())).unwrap();
    let e = email
        .send(&email_notice(27, "li.lei@borrower.example", "en"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Transport(_)) && e.retryable(),
        "{e}"
    );
}

#[tokio::test]
async fn smtp_server_that_never_answers_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut cfg = smtp_config(port);
    cfg.timeout = Duration::from_millis(300);
    let e = SmtpEmail::new(cfg)
        .unwrap()
        .send(&email_notice(28, "li.lei@borrower.example", "en"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Timeout(_)), "{e}");
}

#[test]
fn smtp_config_errors() {
    let mut cfg = smtp_config(25);
    cfg.from = "not a mailbox".into();
    assert!(matches!(SmtpEmail::new(cfg), Err(ProviderError::Config(_))));
    let mut cfg = smtp_config(25);
    cfg.username = Some("u".into());
    assert!(matches!(SmtpEmail::new(cfg), Err(ProviderError::Config(_))));
}

#[test]
fn provider_set_picks_by_channel() {
    let sms = GenericJsonSms::new(
        "http://127.0.0.1:1/",
        Secret::new("t"),
        Duration::from_secs(1),
    )
    .unwrap();
    let email = SmtpEmail::new(smtp_config(25)).unwrap();
    let set = ProviderSet::new().with(Arc::new(sms)).with(Arc::new(email));
    assert_eq!(set.get("sms").unwrap().channel(), "sms");
    assert_eq!(set.get("email").unwrap().channel(), "email");
    assert!(set.get("fax").is_none());
}
