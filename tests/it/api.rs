//! The JSON API over real HTTP on loopback, on SQLite and PostgreSQL: auth per role and
//! endpoint, idempotency, manual attempts through the ledger, pause/resume against engine
//! runs, field-named errors, SQL metacharacters, the OpenAPI document, the live feed, and a
//! scan of every response for unmasked account and phone numbers.

use crate::common;

use common::web::{spawn_web, Resp, WebApp};
use common::{loan_json, local, Backend};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const SH: &str = "Asia/Shanghai";
/// The fixture's full numbers (see `common::loan_json`), which no response may show.
const ACCOUNT: &str = "6222021234567890";
const PHONE: &str = "13812345678";
const NEW_ACCOUNT: &str = "6222029999998888";

const RICH: &str = r#"timezone = "Asia/Shanghai"
[[accounts]]
agreement = "AGR-1"
balance = "5000.00"
"#;

async fn app_with_loan(backend: Backend) -> WebApp {
    let app = spawn_web(backend, RICH).await;
    let loan = loan_json(
        "L1",
        SH,
        "test",
        None,
        false,
        &[("unionpay", "AGR-1")],
        &[("2027-01-15", "1000.00"), ("2027-02-15", "1000.00")],
    );
    app.import(&json!([loan])).await;
    app
}

/// No response except the admin contact read shows a full account or phone number.
fn assert_no_pii(app: &WebApp) {
    let bodies = app.bodies.lock().unwrap();
    assert!(!bodies.is_empty());
    for (what, body) in bodies.iter() {
        if what.starts_with("GET") && what.ends_with("/contact") {
            continue;
        }
        for secret in [ACCOUNT, PHONE, NEW_ACCOUNT] {
            assert!(!body.contains(secret), "{what} shows {secret}: {body}");
        }
    }
}

fn field(r: &Resp) -> &str {
    r.json["field"].as_str().unwrap_or("")
}

async fn request(
    app: &WebApp,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Resp {
    let url = app.url(path);
    let mut req = match method {
        "GET" => app.client.get(url),
        "PUT" => app.client.put(url),
        _ => app.client.post(url),
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    app.send(req, &format!("{method} {path}")).await
}

/// Every endpoint × role: no token or a wrong one is 401, a role below the endpoint's is 403,
/// and the endpoint's own role gets past auth.
async fn roles_per_endpoint(backend: Backend) {
    let app = app_with_loan(backend).await;
    let reason = json!({ "reason": "test" });
    #[rustfmt::skip]
    let table: Vec<(&str, &str, Option<Value>, &str)> = vec![
        ("GET", "/api/v1/loans", None, "viewer"),
        ("POST", "/api/v1/loans", Some(json!([])), "admin"),
        ("GET", "/api/v1/loans/L1", None, "viewer"),
        ("GET", "/api/v1/loans/L1/contact", None, "admin"),
        ("PUT", "/api/v1/loans/L1/policy", Some(json!({ "policy": "test", "reason": "r" })), "admin"),
        ("POST", "/api/v1/loans/L1/policy", Some(json!({ "policy": "test", "reason": "r" })), "admin"),
        ("POST", "/api/v1/loans/L1/pause", Some(json!({ "until": "2099-01-01", "reason": "dispute" })), "collections"),
        ("POST", "/api/v1/loans/L1/resume", Some(reason.clone()), "collections"),
        ("POST", "/api/v1/loans/L1/unpark", Some(reason.clone()), "collections"),
        ("POST", "/api/v1/loans/L1/manual-attempt", Some(json!({ "amount": "0", "reason": "r" })), "collections"),
        ("POST", "/api/v1/loans/L1/mandates", Some(json!({})), "collections"),
        ("POST", "/api/v1/loans/L1/mandates/999/revoke", Some(reason.clone()), "collections"),
        ("GET", "/api/v1/loans/L1/notes", None, "viewer"),
        ("POST", "/api/v1/loans/L1/notes", Some(json!({ "text": "" })), "collections"),
        ("POST", "/api/v1/loans/L1/promises", Some(json!({})), "collections"),
        ("GET", "/api/v1/audit", None, "viewer"),
        ("GET", "/api/v1/attempts", None, "viewer"),
        ("GET", "/api/v1/attempts/stream", None, "viewer"),
        ("GET", "/api/v1/delinquency", None, "viewer"),
        ("GET", "/api/v1/policies", None, "viewer"),
        ("GET", "/api/v1/policies/standard", None, "viewer"),
        ("POST", "/api/v1/policies/validate", Some(json!("name = 1")), "admin"),
        ("POST", "/api/v1/tokens", Some(json!({})), "admin"),
        ("GET", "/api/v1/tokens", None, "admin"),
        ("POST", "/api/v1/tokens/nobody/revoke", None, "admin"),
        ("GET", "/api/v1/recon/report", None, "viewer"),
        ("GET", "/api/v1/simulations", None, "viewer"),
        ("GET", "/api/v1/recon/cases", None, "viewer"),
        ("POST", "/api/v1/recon/cases/999/resolve", Some(json!({ "resolution": "x", "reason": "r" })), "admin"),
        ("POST", "/api/v1/attempts/999/refund", Some(json!({ "amount": "1", "reason": "r", "kind": "erroneous" })), "admin"),
        ("POST", "/api/v1/loans/NOPE/write-off", Some(reason.clone()), "admin"),
        ("GET", "/openapi.json", None, "viewer"),
        ("GET", "/metrics", None, "viewer"),
    ];
    let rank = |r: &str| {
        ["viewer", "collections", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    let tokens = [
        ("viewer", app.viewer.clone()),
        ("collections", app.collections.clone()),
        ("admin", app.admin.clone()),
    ];
    for (method, path, body, need) in &table {
        for bad in [None, Some("rpd_not-a-token")] {
            let r = request(&app, method, path, body.as_ref(), bad).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {bad:?}: {}",
                r.text
            );
            if *path != "/metrics" {
                assert_eq!(r.json["error"], "unauthorized", "{method} {path}");
            }
        }
        for (role, token) in &tokens {
            let allowed = rank(role) >= rank(need);
            if *path == "/api/v1/attempts/stream" {
                // A live stream: look at the status only.
                let r = app
                    .client
                    .get(app.url(path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let want = if allowed {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(r.status(), want, "{path} as {role}");
                continue;
            }
            let r = request(&app, method, path, body.as_ref(), Some(token)).await;
            if allowed {
                assert!(
                    r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {} {}",
                    r.status,
                    r.text
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {}",
                    r.text
                );
                assert_eq!(r.json["error"], "forbidden");
            }
        }
    }
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/healthz needs no token");
    // An admin cannot revoke the token of the request itself (a 409 naming it).
    let r = app
        .post(
            "/api/v1/tokens/alice-admin/revoke",
            Some(&app.admin),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["field"], "name", "{}", r.text);
    assert_eq!(
        app.get("/api/v1/tokens", Some(&app.admin)).await.status,
        StatusCode::OK
    );
    // A revoked token is refused.
    let r = app
        .post(
            "/api/v1/tokens/victor-viewer/revoke",
            Some(&app.admin),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get("/api/v1/loans", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Cookie auth (the dashboard's) works like the bearer header.
    let r = app
        .client
        .get(app.url("/api/v1/loans/L1"))
        .header("cookie", format!("repayd_token={}", app.collections))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(roles_per_endpoint);

async fn audit_count(app: &WebApp, action: &str) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(&app.engine.db.pool)
        .await
        .unwrap()
}

/// Same key and body: the first response again, one effect. Same key, other body: 422.
/// A request still in flight with the key: 409.
async fn idempotent_posts(backend: Backend) {
    let app = app_with_loan(backend).await;
    let path = "/api/v1/loans/L1/manual-attempt";
    let body = json!({ "amount": "100.00", "reason": "promise to pay" });
    let first = app
        .post_keyed(path, Some(&app.collections), &body, Some("k-1"))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = app
        .post_keyed(path, Some(&app.collections), &body, Some("k-1"))
        .await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.json, first.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM attempts").await,
        1,
        "one attempt"
    );
    assert_eq!(app.sim_debits(), 1, "one debit");
    assert_eq!(audit_count(&app, "manual_attempt").await, 1);

    let other = json!({ "amount": "200.00", "reason": "promise to pay" });
    let reused = app
        .post_keyed(path, Some(&app.collections), &other, Some("k-1"))
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json["error"], "idempotency_key_reused");
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM attempts").await, 1);

    // A refusal is not kept: the corrected request may use the same key.
    let bad = json!({ "amount": "-1", "reason": "x" });
    let r = app
        .post_keyed(path, Some(&app.collections), &bad, Some("k-2"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fixed = json!({ "amount": "50.00", "reason": "x" });
    let r = app
        .post_keyed(path, Some(&app.collections), &fixed, Some("k-2"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM attempts").await, 2);
    // Attempt pages, newest first.
    let p1 = app.get("/api/v1/attempts?limit=1", Some(&app.viewer)).await;
    let cursor = p1.json["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let p2 = app
        .get(
            &format!("/api/v1/attempts?limit=1&cursor={cursor}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(p2.json["next_cursor"], Value::Null);
    let (a, b) = (
        p1.json["items"][0]["id"].as_i64().unwrap(),
        p2.json["items"][0]["id"].as_i64().unwrap(),
    );
    assert!(a > b, "{a} then {b}");
    assert_eq!(p1.json["items"][0]["amount"], "50.00");

    // Keys are per token: the admin's "k-1" is a different key.
    let pause = json!({ "until": "2099-01-01", "reason": "dispute" });
    let r = app
        .post_keyed(
            "/api/v1/loans/L1/pause",
            Some(&app.admin),
            &pause,
            Some("k-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r2 = app
        .post_keyed(
            "/api/v1/loans/L1/pause",
            Some(&app.admin),
            &pause,
            Some("k-1"),
        )
        .await;
    assert_eq!((r2.status, &r2.json), (r.status, &r.json));
    assert_eq!(audit_count(&app, "pause").await, 1, "one pause recorded");

    // In flight: the key is reserved but has no answer yet.
    let resume = json!({ "reason": "paid" });
    let hash = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"POST\n/api/v1/loans/L1/resume\n");
        h.update(serde_json::to_vec(&resume).unwrap());
        hex::encode(h.finalize())
    };
    sqlx::query(
        "INSERT INTO idempotency_keys (token_id, key, method, path, request_hash, created_at) \
         SELECT id, 'k-busy', 'POST', '/api/v1/loans/L1/resume', $1, $2 \
         FROM api_tokens WHERE name = 'carol-collections'",
    )
    .bind(hash)
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&app.engine.db.pool)
    .await
    .unwrap();
    let busy = app
        .post_keyed(
            "/api/v1/loans/L1/resume",
            Some(&app.collections),
            &resume,
            Some("k-busy"),
        )
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.text);
    assert_eq!(busy.json["error"], "idempotency_key_in_flight");
    assert_eq!(audit_count(&app, "resume").await, 0);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(idempotent_posts);

/// A manual attempt is recorded, sent and posted like a planned one: one journal entry,
/// the trial balance at zero, one debit in the simulator's journal, and an audit record.
async fn manual_attempt_goes_through_the_ledger(backend: Backend) {
    let app = app_with_loan(backend).await;
    let path = "/api/v1/loans/L1/manual-attempt";
    let r = app
        .post(
            path,
            Some(&app.collections),
            &json!({ "amount": "300.00", "reason": "promise to pay" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let a = &r.json;
    assert_eq!(a["kind"], "manual");
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["amount"], "300.00");
    assert_eq!(a["requested_by"], "carol-collections");
    assert_eq!(a["account"], "6222 **** **** 7890");
    let id = a["id"].as_i64().unwrap();
    let entries = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM journal_entries WHERE attempt_id = $1 AND kind = 'repayment'",
    )
    .bind(id)
    .fetch_one(&app.engine.db.pool)
    .await
    .unwrap();
    assert_eq!(entries, 1);
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    assert_eq!(app.sim_debits(), 1);
    let stored: Option<String> =
        sqlx::query_scalar("SELECT requested_by FROM attempts WHERE id = $1")
            .bind(id)
            .fetch_one(&app.engine.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("carol-collections"));

    let detail = app.get("/api/v1/loans/L1", Some(&app.viewer)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.json["outstanding"], "1700.00");
    assert_eq!(detail.json["attempts"][0]["id"].as_i64(), Some(id));
    assert!(detail.json["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["kind"] == "repayment"));

    let audit = app.get("/api/v1/audit?loan_id=L1", Some(&app.viewer)).await;
    let item = &audit.json["items"][0];
    assert_eq!(item["action"], "manual_attempt");
    assert_eq!(item["actor"], "carol-collections");
    assert_eq!(item["role"], "collections");
    assert_eq!(item["reason"], "promise to pay");
    assert_eq!(item["detail"]["attempt_id"].as_i64(), Some(id));

    // More than is outstanding: a conflict with the loan's state, naming the amount.
    let r = app
        .post(
            path,
            Some(&app.collections),
            &json!({ "amount": "1700.01", "reason": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.text
            .contains("amount: 1700.01 is more than the outstanding"),
        "{}",
        r.text
    );
    // Nothing, or not an amount: refused, naming the amount; nothing is sent.
    for amount in ["0", "-5", "abc"] {
        let r = app
            .post(
                path,
                Some(&app.collections),
                &json!({ "amount": amount, "reason": "x" }),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{amount}: {}",
            r.text
        );
        assert_eq!(field(&r), "amount", "{amount}");
    }
    assert_eq!(app.sim_debits(), 1);
    let r = app
        .post(
            "/api/v1/loans/NOPE/manual-attempt",
            Some(&app.collections),
            &json!({ "amount": "1", "reason": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(manual_attempt_goes_through_the_ledger);

/// A paused loan is not attempted when its due date passes; after resume the missed slot is
/// caught up.
async fn pause_stops_attempts_and_resume_brings_them_back(backend: Backend) {
    let app = app_with_loan(backend).await;
    let pause = json!({ "until": "2027-02-01", "reason": "dispute" });
    let r = app
        .post("/api/v1/loans/L1/pause", Some(&app.collections), &pause)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["pause_reason"], "dispute");
    assert_eq!(
        r.json["paused_until"], "2027-01-31T16:00:00Z",
        "local midnight in Shanghai"
    );

    app.run(local(SH, 2027, 1, 15, 12, 0)).await;
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM attempts").await,
        0,
        "paused: no attempt"
    );
    let detail = app.get("/api/v1/loans/L1", Some(&app.viewer)).await;
    assert_eq!(detail.json["pause_reason"], "dispute");

    let r = app
        .post(
            "/api/v1/loans/L1/resume",
            Some(&app.collections),
            &json!({ "reason": "dispute settled" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["paused_until"], Value::Null);
    app.run(local(SH, 2027, 1, 15, 13, 0)).await;
    let attempts = app
        .get("/api/v1/attempts?loan_id=L1", Some(&app.viewer))
        .await;
    let items = attempts.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "caught up once: {items:?}");
    assert_eq!(items[0]["kind"], "due");
    assert_eq!(items[0]["status"], "succeeded");

    let r = app
        .post(
            "/api/v1/loans/L1/resume",
            Some(&app.collections),
            &json!({ "reason": "again" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "not paused any more");
    let audit = app.get("/api/v1/audit?loan_id=L1", Some(&app.viewer)).await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["resume", "pause"], "newest first");
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(pause_stops_attempts_and_resume_brings_them_back);

/// Bad bodies get 4xx naming the field.
async fn bad_bodies_name_the_field(backend: Backend) {
    let app = app_with_loan(backend).await;
    let c = Some(app.collections.as_str());
    let pause = "/api/v1/loans/L1/pause";
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            pause,
            json!({ "until": 5, "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "until",
        ),
        (
            pause,
            json!({ "until": "2099-01-01" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            pause,
            json!({ "until": "2099-13-01", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "until",
        ),
        (
            pause,
            json!({ "until": "2001-01-01", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "until",
        ),
        (
            pause,
            json!({ "until": "2099-01-01", "reason": "  " }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            pause,
            json!({ "until": "2099-01-01", "reason": "x", "extra": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "extra",
        ),
        (
            "/api/v1/loans/L1/mandates",
            json!({ "channel": "nochannel", "agreement": "A", "account": NEW_ACCOUNT, "reason": "rebound" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel",
        ),
        (
            "/api/v1/loans/L1/mandates",
            json!({ "channel": "unionpay", "agreement": "A", "account": NEW_ACCOUNT, "daily_limit": "-1", "reason": "rebound" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "daily_limit",
        ),
        (
            "/api/v1/loans/L1/mandates",
            json!({ "channel": "unionpay", "agreement": "A", "account": "12ab", "reason": "rebound" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "account",
        ),
        (
            "/api/v1/loans/L1/mandates",
            json!({ "channel": "unionpay", "agreement": "A", "account": "1".repeat(40), "reason": "rebound" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "account",
        ),
        (
            "/api/v1/loans/L1/mandates",
            json!({ "channel": "unionpay", "agreement": "AGR 1\n", "account": NEW_ACCOUNT, "reason": "rebound" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agreement",
        ),
    ];
    for (path, body, status, f) in &cases {
        let r = app.post(path, c, body).await;
        assert_eq!(r.status, *status, "{path} {body}: {}", r.text);
        assert_eq!(field(&r), *f, "{path} {body}: {}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains(f),
            "{}",
            r.text
        );
    }
    let r = app
        .send(
            app.client
                .post(app.url(pause))
                .bearer_auth(&app.collections)
                .body("{not json"),
            "POST pause",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"], "bad_request");
    let r = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin),
            &json!({ "name": "x", "role": "root" }),
        )
        .await;
    assert_eq!(
        (r.status, field(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "role")
    );
    let r = app
        .get("/api/v1/loans?dpd_min=many", Some(&app.viewer))
        .await;
    assert_eq!((r.status, field(&r)), (StatusCode::BAD_REQUEST, "dpd_min"));
    let r = app
        .get("/api/v1/attempts?cursor=zz", Some(&app.viewer))
        .await;
    assert_eq!((r.status, field(&r)), (StatusCode::BAD_REQUEST, "cursor"));
    // Import problems name the record's field.
    let mut bad = loan_json(
        "L2",
        SH,
        "test",
        None,
        false,
        &[("unionpay", "AGR-2")],
        &[("2027-01-15", "1000.00")],
    );
    bad["currency"] = json!("");
    let r = app
        .post("/api/v1/loans", Some(&app.admin), &json!([bad]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_import");
    assert_eq!(field(&r), "currency", "{}", r.text);
    // Policy validation: the same problems as `repayd policy check`.
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/policies/validate"))
                .bearer_auth(&app.admin)
                .body("name = \"p\"\nversion = 1\n[ladder]\nsteps = [1, 2]\n"),
            "POST validate",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_policy");
    let expected = repayd::domain::policy::parse_policy(
        "name = \"p\"\nversion = 1\n[ladder]\nsteps = [1, 2]\n",
        "policy",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(r.json["message"], expected);
    let ok = std::fs::read_to_string("policies/standard.toml").unwrap();
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/policies/validate"))
                .bearer_auth(&app.admin)
                .body(ok),
            "POST validate",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "standard");
    // Nothing was paused by the refused requests.
    assert_eq!(audit_count(&app, "pause").await, 0);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(bad_bodies_name_the_field);

/// SQL metacharacters in filters are just text: 200 and nothing found for free text, a 422
/// naming the parameter for an enum (kind, status); the tables stay intact.
async fn sql_metacharacters_change_nothing(backend: Backend) {
    let app = app_with_loan(backend).await;
    app.run(local(SH, 2027, 1, 15, 12, 0)).await;
    let loans = app.scalar_i64("SELECT COUNT(*) FROM loans").await;
    let attempts = app.scalar_i64("SELECT COUNT(*) FROM attempts").await;
    assert_eq!((loans, attempts), (1, 1));
    let nasty = [
        "' OR 1=1 --",
        "%",
        "_",
        "\"; DROP TABLE loans; --",
        "L1' --",
        "\\",
    ];
    let lists = [
        (
            "/api/v1/loans",
            ["q", "status", "policy", "channel", "bucket"].as_slice(),
        ),
        (
            "/api/v1/attempts",
            ["loan_id", "channel", "kind", "status", "code"].as_slice(),
        ),
        ("/api/v1/audit", ["loan_id"].as_slice()),
    ];
    for (path, params) in lists {
        for p in params {
            for v in nasty {
                let url = format!("{path}?{}", serde_urlencoded::to_string([(p, v)]).unwrap());
                let r = app.get(&url, Some(&app.viewer)).await;
                if matches!(*p, "status" | "kind") {
                    assert_eq!(
                        r.status,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "{url}: {}",
                        r.text
                    );
                    assert_eq!(r.json["field"], *p, "{url}: {}", r.text);
                    continue;
                }
                assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.text);
                assert_eq!(r.json["items"], json!([]), "{url}: {}", r.text);
            }
        }
    }
    let r = app
        .get("/api/v1/loans/%27%20OR%201=1%20--", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The real values still match.
    let r = app.get("/api/v1/loans?q=l1", Some(&app.viewer)).await;
    assert_eq!(r.json["items"][0]["id"], "L1");
    let r = app
        .get(
            "/api/v1/attempts?channel=unionpay&kind=due",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let count = |r: &Resp| r.json["items"].as_array().map_or(0, |a| a.len());
    let r = app
        .get(
            "/api/v1/attempts?from=2027-01-15&to=2027-01-16&outcome=succeeded",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(count(&r), 1, "{}", r.text);
    let r = app
        .get(
            "/api/v1/attempts?from=2027-01-15T05:00:00Z",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(
        count(&r),
        0,
        "made at 04:00 UTC (12:00 in Shanghai): {}",
        r.text
    );
    let r = app
        .get("/api/v1/attempts?from=yesterday", Some(&app.viewer))
        .await;
    assert_eq!((r.status, field(&r)), (StatusCode::BAD_REQUEST, "from"));
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM loans").await, loans);
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM attempts").await,
        attempts
    );
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(sql_metacharacters_change_nothing);

/// Loan list: filters and cursor pages that together visit every loan once.
async fn loan_list_pages_and_filters(backend: Backend) {
    let app = spawn_web(backend, RICH).await;
    let loans: Vec<Value> = (1..=7)
        .map(|i| {
            let policy = if i % 2 == 0 { "standard" } else { "test" };
            loan_json(
                &format!("P{i}"),
                SH,
                policy,
                None,
                false,
                &[("unionpay", "AGR-1")],
                &[("2027-01-15", "100.00")],
            )
        })
        .collect();
    app.import(&Value::Array(loans[..6].to_vec())).await;
    // JSON Lines by Content-Type; loans already there with the same content are skipped.
    let jsonl = format!("{}\n{}\n", loans[5], loans[6]);
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/loans"))
                .bearer_auth(&app.admin)
                .header("content-type", "application/x-ndjson")
                .body(jsonl),
            "POST loans",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        (
            r.json["loans_added"].as_u64(),
            r.json["loans_unchanged"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(r.json["actions_planned"].as_u64().unwrap() > 0);
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/loans"))
                .bearer_auth(&app.admin)
                .header("content-type", "application/xml")
                .body("<loans/>"),
            "POST loans",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
    let mut seen = Vec::new();
    let mut url = "/api/v1/loans?limit=3".to_string();
    loop {
        let r = app.get(&url, Some(&app.viewer)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for l in r.json["items"].as_array().unwrap() {
            seen.push(l["id"].as_str().unwrap().to_string());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/loans?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["P1", "P2", "P3", "P4", "P5", "P6", "P7"]);
    let r = app
        .get("/api/v1/loans?policy=standard", Some(&app.viewer))
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 3);
    let r = app.get("/api/v1/loans?dpd_min=1", Some(&app.viewer)).await;
    assert_eq!(r.json["items"], json!([]), "nothing is past due yet");
    let r = app
        .get("/api/v1/delinquency?as_of=2027-02-01", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["loans"], 7, "{}", r.text);
    assert_eq!(r.json["amount"], "700.00");
    assert_eq!(r.json["buckets"][0]["bucket"], "M1", "{}", r.text);
    let r = app.get("/api/v1/delinquency", Some(&app.viewer)).await;
    assert_eq!(r.json["loans"], 0);

    // A loan 40 days past due today: in bucket M2 of the standard policy.
    let due = (chrono::Utc::now().date_naive() - chrono::Days::new(40)).to_string();
    let late = loan_json(
        "Q1",
        SH,
        "standard",
        None,
        false,
        &[("unionpay", "AGR-9")],
        &[(&due, "300.00")],
    );
    app.import(&json!([late])).await;
    let ids = |r: &Resp| -> Vec<String> {
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = app.get("/api/v1/loans?bucket=M2", Some(&app.viewer)).await;
    assert_eq!(ids(&r), ["Q1"], "{}", r.text);
    let dpd = r.json["items"][0]["days_past_due"].as_u64().unwrap();
    assert!((40..=41).contains(&dpd), "{dpd}");
    assert_eq!(r.json["items"][0]["outstanding"], "300.00");
    let r = app
        .get("/api/v1/loans?dpd_min=35&dpd_max=45", Some(&app.viewer))
        .await;
    assert_eq!(ids(&r), ["Q1"]);
    let r = app
        .get("/api/v1/loans?dpd_max=0&limit=500", Some(&app.viewer))
        .await;
    assert_eq!(ids(&r).len(), 7);
    let r = app
        .get(
            "/api/v1/loans?q=q&channel=unionpay&status=active",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(ids(&r), ["Q1"]);
    let r = app.get("/api/v1/delinquency", Some(&app.viewer)).await;
    assert_eq!(
        (
            r.json["loans"].as_i64(),
            r.json["buckets"][0]["bucket"].as_str()
        ),
        (Some(1), Some("M2")),
        "{}",
        r.text
    );
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(loan_list_pages_and_filters);

/// Mandates and policy changes (audited), and the admin-only contact read (audited too).
async fn mandates_policy_and_contact(backend: Backend) {
    let app = app_with_loan(backend).await;
    let body = json!({ "channel": "unionpay", "agreement": "AGR-NEW", "account": NEW_ACCOUNT,
        "per_debit_limit": "500.00", "reason": "re-bound card" });
    let r = app
        .post("/api/v1/loans/L1/mandates", Some(&app.collections), &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["account"], "6222 **** **** 8888");
    assert_eq!(r.json["priority"], 2, "after the imported mandate");
    let stored: String =
        sqlx::query_scalar("SELECT account_masked FROM mandates WHERE agreement = 'AGR-NEW'")
            .fetch_one(&app.engine.db.pool)
            .await
            .unwrap();
    assert_eq!(
        stored, "6222 **** **** 8888",
        "only the masked account is stored"
    );
    let detail = app.get("/api/v1/loans/L1", Some(&app.viewer)).await;
    let first = detail.json["mandates"][0]["id"].as_i64().unwrap();
    let r = app
        .post(
            &format!("/api/v1/loans/L1/mandates/{first}/revoke"),
            Some(&app.collections),
            &json!({ "reason": "card lost" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "revoked");
    let r = app
        .post(
            &format!("/api/v1/loans/L1/mandates/{first}/revoke"),
            Some(&app.collections),
            &json!({ "reason": "again" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Changing the policy re-plans the pending agenda under the new one.
    let before = app
        .scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L1' AND status = 'pending' AND slot = 'due:23:00'")
        .await;
    assert!(before > 0, "the test policy has a 23:00 due slot");
    let r = app
        .send(
            app.client
                .put(app.url("/api/v1/loans/L1/policy"))
                .bearer_auth(&app.admin)
                .json(&json!({ "policy": "standard", "reason": "moved to the standard plan" })),
            "PUT policy",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["actions_planned"].as_u64().unwrap() > 0);
    let after = app
        .scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L1' AND status = 'pending' AND slot = 'due:23:00'")
        .await;
    assert_eq!(after, 0, "the old policy's slots are gone");
    let r = app.get("/api/v1/loans/L1", Some(&app.viewer)).await;
    assert_eq!(r.json["policy"], "standard");
    let r = app
        .post(
            "/api/v1/loans/L1/policy",
            Some(&app.admin),
            &json!({ "policy": "nope", "reason": "x" }),
        )
        .await;
    assert_eq!(
        (r.status, field(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "policy")
    );

    let r = app.get("/api/v1/loans/L1/contact", Some(&app.admin)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["phone"], PHONE, "the admin sees the full phone");
    let r = app
        .get("/api/v1/loans/L1/contact", Some(&app.collections))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin),
            &json!({ "name": "bob", "role": "viewer" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_string();
    assert_eq!(
        app.get("/api/v1/loans", Some(&token)).await.status,
        StatusCode::OK
    );
    let r = app.get("/api/v1/tokens", Some(&app.admin)).await;
    assert!(
        !r.text.contains(&token) && !r.text.contains("hash"),
        "{}",
        r.text
    );

    let audit = app.get("/api/v1/audit?limit=50", Some(&app.viewer)).await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create_token",
            "read_contact",
            "change_policy",
            "revoke_mandate",
            "add_mandate",
            "import_loans"
        ]
    );
    let page = app.get("/api/v1/audit?limit=2", Some(&app.viewer)).await;
    let cursor = page.json["next_cursor"].as_str().unwrap();
    let next = app
        .get(
            &format!("/api/v1/audit?limit=2&cursor={cursor}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(next.json["items"][0]["action"], "change_policy");
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(mandates_policy_and_contact);

/// The OpenAPI document lists every route the API serves.
async fn openapi_lists_every_route(backend: Backend) {
    let app = app_with_loan(backend).await;
    let r = app.get("/openapi.json", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.json["paths"].as_object().unwrap();
    let routes = [
        ("get", "/api/v1/loans"),
        ("post", "/api/v1/loans"),
        ("get", "/api/v1/loans/{id}"),
        ("get", "/api/v1/loans/{id}/contact"),
        ("put", "/api/v1/loans/{id}/policy"),
        ("post", "/api/v1/loans/{id}/policy"),
        ("post", "/api/v1/loans/{id}/pause"),
        ("post", "/api/v1/loans/{id}/resume"),
        ("post", "/api/v1/loans/{id}/unpark"),
        ("post", "/api/v1/loans/{id}/manual-attempt"),
        ("post", "/api/v1/loans/{id}/mandates"),
        ("post", "/api/v1/loans/{id}/mandates/{mandate_id}/revoke"),
        ("get", "/api/v1/loans/{id}/notes"),
        ("post", "/api/v1/loans/{id}/notes"),
        ("post", "/api/v1/loans/{id}/promises"),
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/attempts"),
        ("get", "/api/v1/attempts/stream"),
        ("get", "/api/v1/delinquency"),
        ("get", "/api/v1/policies"),
        ("get", "/api/v1/policies/{name}"),
        ("post", "/api/v1/policies/validate"),
        ("get", "/api/v1/tokens"),
        ("post", "/api/v1/tokens"),
        ("post", "/api/v1/tokens/{name}/revoke"),
        ("get", "/api/v1/recon/report"),
        ("get", "/api/v1/recon/cases"),
        ("post", "/api/v1/recon/cases/{id}/resolve"),
        ("post", "/api/v1/attempts/{id}/refund"),
        ("post", "/api/v1/loans/{id}/write-off"),
        ("get", "/api/v1/simulations"),
        ("get", "/api/v1/simulations/{id}"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "no undocumented extras: {:?}",
        paths.keys()
    );
    for (_, path) in routes {
        // Every documented route is served (anything but 404 for a real id).
        let real = path
            .replace("{id}", "L1")
            .replace("{name}", "standard")
            .replace("{mandate_id}", "1");
        if real.ends_with("/stream") {
            continue;
        }
        let r = app.get(&real, Some(&app.admin)).await;
        assert_ne!(r.status, StatusCode::NOT_FOUND, "{real}: {}", r.text);
    }
    assert!(r.json["components"]["schemas"]["ErrorBody"].is_object());
    assert!(r.json["components"]["schemas"]["PauseRequest"].is_object());
    // Query parameters say what they take: integers with bounds, dates, enums, no empty text.
    let param = |path: &str, name: &str| {
        let list = r.json["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap();
        let p = list
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} {name}"));
        p["schema"].clone()
    };
    let limit = param("/api/v1/attempts", "limit");
    assert_eq!(
        (
            limit["type"].as_str(),
            limit["minimum"].as_i64(),
            limit["maximum"].as_i64()
        ),
        (Some("integer"), Some(1), Some(500)),
        "{limit}"
    );
    assert_eq!(param("/api/v1/attempts", "from")["format"], "date-time");
    assert_eq!(param("/api/v1/recon/report", "date")["format"], "date");
    assert_eq!(param("/api/v1/loans", "dpd_min")["type"], "integer");
    assert_eq!(param("/api/v1/loans", "parked")["type"], "boolean");
    assert_eq!(param("/api/v1/loans", "q")["minLength"], 1);
    let kinds = param("/api/v1/attempts", "kind");
    assert!(
        kinds["enum"].as_array().unwrap().contains(&json!("payday")),
        "{kinds}"
    );
    let statuses = param("/api/v1/loans", "status");
    assert!(
        statuses["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("collections")),
        "{statuses}"
    );
    // And an unknown value is refused by name, not answered with an empty list.
    let bad = app
        .get("/api/v1/attempts?outcome=bogus", Some(&app.viewer))
        .await;
    assert_eq!(
        (bad.status, bad.json["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("outcome"))
    );
    app.cleanup().await;
}
both_backends!(openapi_lists_every_route);

async fn manual(app: &WebApp, amount: &str) -> Value {
    let r = app
        .post(
            "/api/v1/loans/L1/manual-attempt",
            Some(&app.collections),
            &json!({ "amount": amount, "reason": "promise to pay" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "succeeded");
    r.json
}

/// A refund posts its own entry pointing at the repayment; refunds beyond what the attempt
/// can still refund are refused naming the amount; both audited.
async fn refunds_through_the_api(backend: Backend) {
    let app = app_with_loan(backend).await;
    let a = manual(&app, "300.00").await;
    let attempt = a["id"].as_i64().unwrap();
    let path = format!("/api/v1/attempts/{attempt}/refund");
    let body = |amount: &str, kind: &str| json!({ "amount": amount, "reason": "debited in error", "kind": kind });
    let r = app
        .post_keyed(
            &path,
            Some(&app.admin),
            &body("100.00", "erroneous"),
            Some("rf-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["refundable_left"], "200.00");
    assert_eq!(r.json["kind"], "erroneous");
    let entry = r.json["entry_id"].as_i64().unwrap();
    let repayment: i64 = sqlx::query_scalar(
        "SELECT id FROM journal_entries WHERE attempt_id = $1 AND kind = 'repayment'",
    )
    .bind(attempt)
    .fetch_one(&app.engine.db.pool)
    .await
    .unwrap();
    let corrects: Option<i64> =
        sqlx::query_scalar("SELECT corrects_entry FROM journal_entries WHERE id = $1")
            .bind(entry)
            .fetch_one(&app.engine.db.pool)
            .await
            .unwrap();
    assert_eq!(corrects, Some(repayment));
    assert_eq!(r.json["corrects_entry"].as_i64(), Some(repayment));
    // The same key replays the answer; nothing is posted twice.
    let again = app
        .post_keyed(
            &path,
            Some(&app.admin),
            &body("100.00", "erroneous"),
            Some("rf-1"),
        )
        .await;
    assert_eq!(again.json["refund_id"], r.json["refund_id"]);
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM refunds").await, 1);
    // Beyond what the attempt holds: a conflict with its state (409); not an amount: 422.
    for (amount, kind, status) in [
        ("200.01", "erroneous", StatusCode::CONFLICT),
        ("5.00", "overpayment", StatusCode::CONFLICT),
        ("0", "erroneous", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = app.post(&path, Some(&app.admin), &body(amount, kind)).await;
        assert_eq!(r.status, status, "{amount}: {}", r.text);
        assert_eq!(field(&r), "amount", "{amount}");
    }
    let r = app.post(&path, Some(&app.admin), &body("1", "gift")).await;
    assert_eq!(
        (r.status, field(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "kind")
    );
    let r = app
        .post(
            "/api/v1/attempts/999999/refund",
            Some(&app.admin),
            &body("1", "erroneous"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM refunds").await, 1);
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    assert_eq!(audit_count(&app, "refund").await, 1);
    let audit = app.get("/api/v1/audit?loan_id=L1", Some(&app.viewer)).await;
    let item = &audit.json["items"][0];
    assert_eq!(item["action"], "refund");
    assert_eq!(item["actor"], "alice-admin");
    assert_eq!(item["detail"]["entry_id"].as_i64(), Some(entry));

    // A write-off by an admin takes what is left; a second one has nothing to take.
    let w = "/api/v1/loans/L1/write-off";
    let reason = json!({ "reason": "borrower deceased" });
    let r = app.post(w, Some(&app.admin), &reason).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["amount"], "1800.00");
    let r = app.post(w, Some(&app.admin), &reason).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(audit_count(&app, "write_off").await, 1);
    let loan = app.get("/api/v1/loans/L1", Some(&app.viewer)).await;
    assert_eq!(loan.json["status"], "written_off", "{}", loan.text);
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(refunds_through_the_api);

/// A statement naming our attempts with other amounts opens cases; the report counts them,
/// the case list pages them, resolving one is audited and a second resolve is a conflict.
async fn recon_cases_through_the_api(backend: Backend) {
    let app = app_with_loan(backend).await;
    let a = manual(&app, "300.00").await;
    let b = manual(&app, "100.00").await;
    let day = app.statement_naming(&[(&a, "299.00"), (&b, "99.00")]).await;
    let r = app
        .get(
            &format!("/api/v1/recon/report?date={day}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["counts"]["unionpay"]["amount_differs"], 2,
        "{}",
        r.text
    );
    let cases = r.json["open_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let case = cases.iter().find(|c| c["attempt_id"] == a["id"]).unwrap();
    let other_case = cases.iter().find(|c| c["attempt_id"] == b["id"]).unwrap();
    assert_eq!(case["order_no"], a["order_no"]);
    assert_eq!(case["our_amount"], "300.00");
    assert_eq!(case["their_amount"], "299.00");
    let other = app
        .get(
            &format!("/api/v1/recon/report?date={day}&channel=other"),
            Some(&app.viewer),
        )
        .await;
    assert!(other.json["open_cases"].as_array().unwrap().is_empty());
    let r = app
        .get("/api/v1/recon/report?date=2027-13-01", Some(&app.viewer))
        .await;
    assert_eq!((r.status, field(&r)), (StatusCode::BAD_REQUEST, "date"));

    // Pages of one.
    let p1 = app
        .get("/api/v1/recon/cases?limit=1", Some(&app.viewer))
        .await;
    assert_eq!(p1.json["items"].as_array().unwrap().len(), 1);
    let cursor = p1.json["next_cursor"].as_str().unwrap().to_string();
    let p2 = app
        .get(
            &format!("/api/v1/recon/cases?limit=1&cursor={cursor}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(p2.json["items"].as_array().unwrap().len(), 1);
    assert!(p2.json["next_cursor"].is_null());
    assert_ne!(p1.json["items"][0]["id"], p2.json["items"][0]["id"]);
    let r = app
        .get("/api/v1/recon/cases?status=lost", Some(&app.viewer))
        .await;
    assert_eq!(
        (r.status, field(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "status")
    );

    let id = case["id"].as_i64().unwrap();
    let path = format!("/api/v1/recon/cases/{id}/resolve");
    let body =
        json!({ "resolution": "channel fee withheld", "reason": "checked with the channel" });
    let r = app
        .post_keyed(&path, Some(&app.admin), &body, Some("rs-1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["case_status"], "resolved");
    assert_eq!(r.json["resolved_by"], "alice-admin");
    assert_eq!(r.json["resolution"], "channel fee withheld");
    let replay = app
        .post_keyed(&path, Some(&app.admin), &body, Some("rs-1"))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "the same key replays");
    let twice = app
        .post_keyed(&path, Some(&app.admin), &body, Some("rs-2"))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.text);
    assert_eq!(twice.json["error"], "conflict");
    let r = app
        .post(
            "/api/v1/recon/cases/999999/resolve",
            Some(&app.admin),
            &body,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            &format!("/api/v1/recon/cases/{}/resolve", other_case["id"]),
            Some(&app.admin),
            &json!({ "resolution": " ", "reason": "r" }),
        )
        .await;
    assert_eq!(
        (r.status, field(&r)),
        (StatusCode::UNPROCESSABLE_ENTITY, "resolution")
    );
    assert_eq!(audit_count(&app, "resolve_case").await, 1);
    let audit = app.get("/api/v1/audit?loan_id=L1", Some(&app.viewer)).await;
    let item = &audit.json["items"][0];
    assert_eq!(item["action"], "resolve_case");
    assert_eq!(item["actor"], "alice-admin");
    assert_eq!(item["reason"], "checked with the channel");
    assert_eq!(item["detail"]["case_id"].as_i64(), Some(id));
    let (state, by): (Option<String>, Option<String>) = {
        let row = sqlx::query_as::<_, (Option<String>, Option<String>)>(
            "SELECT case_status, resolved_by FROM recon_items WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.engine.db.pool)
        .await
        .unwrap();
        row
    };
    assert_eq!(
        (state.as_deref(), by.as_deref()),
        (Some("resolved"), Some("alice-admin"))
    );
    let open = app.get("/api/v1/recon/cases", Some(&app.viewer)).await;
    assert_eq!(open.json["items"].as_array().unwrap().len(), 1);
    let done = app
        .get("/api/v1/recon/cases?status=resolved", Some(&app.viewer))
        .await;
    assert_eq!(done.json["items"][0]["id"].as_i64(), Some(id));
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(recon_cases_through_the_api);

/// Read SSE blocks until one of `event` arrives; returns (id, data).
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
    event: &str,
) -> (String, Value) {
    let read = async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let get = |k: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                        .unwrap_or_default()
                };
                if get("event:") == event {
                    return (get("id:"), serde_json::from_str(&get("data:")).unwrap());
                }
            }
            let chunk = resp.chunk().await.unwrap().expect("stream open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("event in time")
}

/// The live feed: an attempt made after connecting arrives as an `attempt` event with a
/// masked account; reconnecting with Last-Event-ID replays from there; the cookie works.
async fn live_feed_streams_attempts(backend: Backend) {
    let app = app_with_loan(backend).await;
    let mut resp = app
        .client
        .get(app.url("/api/v1/attempts/stream?loan_id=L1"))
        .header("cookie", format!("repayd_token={}", app.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let (ready_id, _) = next_event(&mut resp, &mut buf, "ready").await;
    let r = app
        .post(
            "/api/v1/loans/L1/manual-attempt",
            Some(&app.collections),
            &json!({ "amount": "250.00", "reason": "call" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (mut id, mut ev) = next_event(&mut resp, &mut buf, "attempt").await;
    if ev["status"] == "submitted" {
        // Recorded before the channel was called; the result follows.
        (id, ev) = next_event(&mut resp, &mut buf, "attempt").await;
    }
    assert_eq!(ev["id"], r.json["id"]);
    assert_eq!(ev["loan_id"], "L1");
    assert_eq!(ev["kind"], "manual");
    assert_eq!(ev["status"], "succeeded");
    assert_eq!(ev["amount"], "250.00");
    assert_eq!(ev["account"], "6222 **** **** 7890");
    assert_eq!(ev["ladder_step"], 0);
    assert_eq!(ev["order_no"], r.json["order_no"]);
    for k in ["at", "seq", "channel", "code"] {
        assert!(ev.get(k).is_some(), "{k} in {ev}");
    }
    drop(resp);

    // Resume from before the attempt: it is sent again; from after it: nothing new.
    let mut again = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .bearer_auth(&app.viewer)
        .header("last-event-id", &ready_id)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let (id2, ev2) = next_event(&mut again, &mut buf, "attempt").await;
    assert_eq!((id2.as_str(), &ev2["id"]), (id.as_str(), &ev["id"]));
    drop(again);

    // A result written with the same `updated_at` as the open attempt it settles (as a run
    // does) still reaches the feed.
    let attempt = ev["id"].as_i64().unwrap();
    let set = |status: &'static str| {
        sqlx::query("UPDATE attempts SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(attempt)
            .execute(&app.engine.db.pool)
    };
    set("unknown").await.unwrap();
    let mut follow = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .bearer_auth(&app.viewer)
        .header("last-event-id", &ready_id)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let (_, open) = next_event(&mut follow, &mut buf, "attempt").await;
    assert_eq!(
        (open["id"].as_i64(), open["status"].as_str()),
        (Some(attempt), Some("unknown"))
    );
    set("succeeded").await.unwrap();
    let (_, settled) = next_event(&mut follow, &mut buf, "attempt").await;
    assert_eq!(
        (settled["id"].as_i64(), settled["status"].as_str()),
        (Some(attempt), Some("succeeded"))
    );
    assert_eq!(settled["at"], open["at"], "same updated_at");
    drop(follow);
    let bad = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .bearer_auth(&app.viewer)
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .header("cookie", "repayd_token=rpd_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(!buf.contains(ACCOUNT));
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(live_feed_streams_attempts);

/// Attempt events until the one `until` returns true for; returns them all.
async fn events_until(
    resp: &mut reqwest::Response,
    buf: &mut String,
    until: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let (id, ev) = next_event(resp, buf, "attempt").await;
        let done = until(&ev);
        seen.push((id, ev));
        if done {
            return seen;
        }
    }
}

/// A change committed late, with an `updated_at` behind events already sent (as a long run
/// or a second daemon writes it), still reaches the feed, exactly once; a feed resumed from
/// the last event replays the lookback window and so gets it too.
async fn live_feed_delivers_late_commits(backend: Backend) {
    let app = app_with_loan(backend).await;
    let early = manual(&app, "100.00").await;
    let mut resp = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .bearer_auth(&app.viewer)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    next_event(&mut resp, &mut buf, "ready").await;
    let later = manual(&app, "50.00").await;
    let sent = events_until(&mut resp, &mut buf, |e| {
        e["id"] == later["id"] && e["status"] == "succeeded"
    })
    .await;
    assert!(
        sent.iter().all(|(_, e)| e["id"] != early["id"]),
        "a new feed starts from now: {sent:?}"
    );
    let last_at: chrono::DateTime<chrono::Utc> = sent.last().unwrap().1["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let last_id = sent.last().unwrap().0.clone();
    // The late commit: the early attempt changes, stamped 5 s before the last event sent.
    let stamp = last_at.timestamp_millis() - 5000;
    sqlx::query(
        "UPDATE attempts SET status = 'failed', code = 'LATE', updated_at = $1 WHERE id = $2",
    )
    .bind(stamp)
    .bind(early["id"].as_i64().unwrap())
    .execute(&app.engine.db.pool)
    .await
    .unwrap();
    let (_, late) = next_event(&mut resp, &mut buf, "attempt").await;
    assert_eq!(late["id"], early["id"]);
    assert_eq!(
        (late["status"].as_str(), late["code"].as_str()),
        (Some("failed"), Some("LATE"))
    );
    assert_eq!(
        late["at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp_millis(),
        stamp
    );
    // Several polls later, a new change arrives and the late one is not sent again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let next = manual(&app, "25.00").await;
    let more = events_until(&mut resp, &mut buf, |e| {
        e["id"] == next["id"] && e["status"] == "succeeded"
    })
    .await;
    assert!(
        more.iter().all(|(_, e)| e["id"] != early["id"]),
        "sent once: {more:?}"
    );
    drop(resp);
    // Resumed after the last event before the late commit: the lookback replays it.
    let mut again = app
        .client
        .get(app.url("/api/v1/attempts/stream"))
        .bearer_auth(&app.viewer)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let replay = events_until(&mut again, &mut buf, |e| {
        e["id"] == next["id"] && e["status"] == "succeeded"
    })
    .await;
    let late_again: Vec<_> = replay
        .iter()
        .filter(|(_, e)| e["id"] == early["id"])
        .collect();
    assert_eq!(late_again.len(), 1, "{replay:?}");
    assert_eq!(late_again[0].1["status"], "failed");
    drop(again);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(live_feed_delivers_late_commits);

/// `repayd attempts watch` follows the feed and prints one row per attempt.
async fn watch_prints_attempts(backend: Backend) {
    use std::io::{BufRead, BufReader};
    let app = app_with_loan(backend).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args(["attempts", "watch", "--url", &app.base, "--kind", "manual"])
        .env("REPAYD_TOKEN", &app.viewer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let header = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        header.contains("loan") && header.contains("status"),
        "{header}"
    );
    // The feed starts from "now" once connected: attempt until a row shows up.
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let mut orders = Vec::new();
    let mut row = None;
    for _ in 0..5 {
        let r = app
            .post(
                "/api/v1/loans/L1/manual-attempt",
                Some(&app.collections),
                &json!({ "amount": "120.00", "reason": "call" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        orders.push(r.json["order_no"].as_str().unwrap().to_string());
        let rx = rx.clone();
        // The attempt shows as `submitted`, then with its result.
        let got = tokio::task::spawn_blocking(move || {
            let rx = rx.lock().unwrap();
            let mut seen = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(3)) {
                let done = line.contains("succeeded");
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        })
        .await
        .unwrap();
        if let Some(line) = got.into_iter().find(|l| l.contains("succeeded")) {
            row = Some(line);
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    let row = row.expect("a row for an attempt");
    for part in ["L1", "manual", "120.00", "succeeded", "6222 **** **** 7890"] {
        assert!(row.contains(part), "{part} in {row}");
    }
    assert!(
        orders.iter().any(|o| row.ends_with(o.as_str())),
        "{row} vs {orders:?}"
    );
    app.cleanup().await;
}
both_backends!(watch_prints_attempts);

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// After login the browser goes only to a page of the dashboard: anything else in `next`
/// (other hosts, control characters, backslashes, `//`, dot segments) goes to `/`, and a
/// malformed `next` is never a server error.
async fn login_next_stays_on_the_dashboard(backend: Backend) {
    let app = spawn_web(backend, RICH).await;
    let http = no_redirects();
    #[rustfmt::skip]
    let cases = [
        ("/loans/L1", "/loans/L1"),
        ("/loans?q=l&status=overdue", "/loans?q=l&status=overdue"),
        ("/recon?date=2027-01-15", "/recon?date=2027-01-15"),
        ("/?date=2027-01-15", "/?date=2027-01-15"),
        ("/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\n/evil.example/", "/"),
        ("/\r\nset-cookie: x=1", "/"),
        ("/ /evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/%09/evil.example", "/"),
        ("/loans/..//evil.example", "/"),
        ("/loans//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/login", "/"),
        ("/loansx", "/"),
        ("", "/"),
    ];
    for (next, want) in cases {
        let form = [("token", app.viewer.as_str()), ("next", next)];
        let r = http
            .post(app.url("/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(r.headers()["location"], want, "{next:?}");
        let q = serde_urlencoded::to_string([("next", next)]).unwrap();
        let r = http.get(app.url(&format!("/login?{q}"))).send().await;
        assert_eq!(
            r.unwrap().status(),
            StatusCode::OK,
            "login form for {next:?}"
        );
    }
    app.cleanup().await;
}
both_backends!(login_next_stays_on_the_dashboard);

/// A failure callback for `order_no`, signed with `key`, to the channel's webhook.
async fn callback(app: &WebApp, channel: &str, key: &[u8], order_no: &str) -> Resp {
    use repayd::adapters::channel::protocol::{self, Callback};
    let outcome = repayd::domain::channel::DebitOutcome::Failed {
        code: "NSF".into(),
        message: "forged".into(),
    };
    let cb = Callback {
        order_no: order_no.into(),
        outcome,
    };
    let body = serde_json::to_vec(&cb).unwrap();
    let ts = protocol::now_unix();
    let req = app
        .client
        .post(app.url(&format!("/webhooks/channels/{channel}")))
        .header(protocol::TIMESTAMP_HEADER, ts.to_string())
        .header(protocol::SIGNATURE_HEADER, protocol::sign(key, ts, &body))
        .body(body);
    app.send(req, &format!("POST callback {channel}")).await
}

/// A channel without a secret accepts no callback: one signed with the empty key is refused
/// and not recorded. A channel with a secret still takes its signed callbacks.
async fn callbacks_need_a_channel_secret(backend: Backend) {
    let mut cfg = repayd::app::config::Config::default();
    let wechat = cfg.channels.iter_mut().find(|c| c.name == "wechat");
    wechat.unwrap().secret = "wx-secret".into();
    cfg.notices.sms = Some(repayd::app::config::SmsConfig {
        kind: "generic".into(),
        url: "http://127.0.0.1:9/sms".into(),
        token: Default::default(),
        account_sid: String::new(),
        from: String::new(),
        timeout_ms: 1000,
    });
    let daemon = std::sync::Arc::new(repayd::web::DaemonState::default());
    let app = common::web::spawn_web_with(backend, RICH, move |e| {
        repayd::app::daemon::api_state(e, daemon, &cfg)
    })
    .await;
    let loan = loan_json(
        "L1",
        SH,
        "test",
        None,
        false,
        &[("unionpay", "AGR-1")],
        &[("2027-01-15", "1000.00")],
    );
    app.import(&json!([loan])).await;
    let attempt = manual(&app, "100.00").await;
    let order_no = attempt["order_no"].as_str().unwrap().to_string();
    let forged = callback(&app, "unionpay", b"", &order_no).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.text);
    let recorded = "SELECT COUNT(*) FROM channel_callbacks";
    assert_eq!(app.scalar_i64(recorded).await, 0, "nothing recorded");
    let r = callback(&app, "wechat", b"", "WX-NOPE").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = callback(&app, "wechat", b"wx-secret", "WX-NOPE").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(r.text.contains("unknown order number"), "{}", r.text);
    assert_eq!(app.scalar_i64(recorded).await, 1, "the signed one recorded");
    // An SMS gateway without a token: its delivery reports are refused the same way.
    let body = br#"{"id":"sms-1","status":"delivered"}"#.to_vec();
    let ts = repayd::adapters::channel::protocol::now_unix();
    let req = app
        .client
        .post(app.url("/webhooks/sms"))
        .header("x-repayd-timestamp", ts.to_string())
        .header(
            "x-repayd-signature",
            repayd::adapters::channel::protocol::sign(b"", ts, &body),
        )
        .body(body);
    let r = app.send(req, "POST sms report").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    app.cleanup().await;
}
both_backends!(callbacks_need_a_channel_secret);

/// Idempotency keys belong to one token (by id), a response holding a secret is never
/// stored or replayed, and token names are never given out twice: the outside tester's
/// escalation (a revoked admin's key replayed to a viewer of the same name, with the admin
/// token it had created) cannot happen.
async fn idempotency_keys_belong_to_one_token(backend: Backend) {
    use repayd::web::auth::{create_token, Role};
    let app = app_with_loan(backend).await;
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let (alice_id, alice) = create_token(&mut conn, "alice", Role::Admin, 0)
        .await
        .unwrap();
    let body = json!({ "name": "mallory", "role": "admin" });
    let first = app
        .post_keyed("/api/v1/tokens", Some(&alice), &body, Some("k"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let secret = first.json["token"].as_str().unwrap().to_string();
    // Shown once: the same key again is refused, and the token is not shown again.
    let again = app
        .post_keyed("/api/v1/tokens", Some(&alice), &body, Some("k"))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.json["error"], "idempotency_key_secret_shown");
    assert!(!again.text.contains(&secret), "{}", again.text);
    let n = "SELECT COUNT(*) FROM api_tokens WHERE name = 'mallory'";
    assert_eq!(app.scalar_i64(n).await, 1, "one token made");
    let stored = "SELECT COUNT(*) FROM idempotency_keys WHERE response LIKE '%rpd_%'";
    assert_eq!(
        app.scalar_i64(stored).await,
        0,
        "no stored answer holds a token"
    );
    let by_id =
        format!("SELECT COUNT(*) FROM idempotency_keys WHERE token_id = {alice_id} AND key = 'k'");
    assert_eq!(
        app.scalar_i64(&by_id).await,
        1,
        "kept under alice's token id"
    );
    // Another token with the same key and body: a key of its own, refused by its role.
    let viewer = app
        .post_keyed("/api/v1/tokens", Some(&app.viewer), &body, Some("k"))
        .await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN, "{}", viewer.text);
    // Alice revoked: her key gets 401, and her name is not given to anyone else.
    let r = app
        .post(
            "/api/v1/tokens/alice/revoke",
            Some(&app.admin),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post_keyed("/api/v1/tokens", Some(&alice), &body, Some("k"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let new_alice = json!({ "name": "alice", "role": "viewer" });
    let r = app
        .post_keyed("/api/v1/tokens", Some(&app.admin), &new_alice, Some("k"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(field(&r), "name");
    assert!(!r.text.contains(&secret));
    // Not even straight into the table (a unique index).
    assert!(create_token(&mut conn, "alice", Role::Viewer, 0)
        .await
        .is_err());
    drop(conn);
    assert_no_pii(&app);
    app.cleanup().await;
}
both_backends!(idempotency_keys_belong_to_one_token);

/// Send a POST's head and the first bytes of a large body, then wait for an answer: a
/// server that reads the body first never answers, one that refuses first answers at once.
async fn answer_before_body(app: &WebApp, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: 31457280\r\n{headers}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b' '; 4096]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A keyed POST is authenticated first: without a valid token it gets 401, whatever its
/// Idempotency-Key (even an empty one) and before its body is read.
async fn keyed_posts_authenticate_first(backend: Backend) {
    let app = spawn_web(backend, RICH).await;
    for token in [None, Some("rpd_not-a-token")] {
        for key in ["", "k"] {
            let r = app
                .post_keyed("/api/v1/loans", token, &json!([]), Some(key))
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?} {key:?}");
            assert_eq!(r.json["error"], "unauthorized");
        }
    }
    let r = app
        .post_keyed("/api/v1/loans", Some(&app.admin), &json!([]), Some(""))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    for auth in ["", "authorization: Bearer rpd_not-a-token\r\n"] {
        let headers = format!("{auth}idempotency-key: big\r\n");
        let answer = answer_before_body(&app, "/api/v1/loans", &headers).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    app.cleanup().await;
}
both_backends!(keyed_posts_authenticate_first);

/// Failed authentication is limited per client address: a burst of 20 failures, then about
/// 5 a second. Over that, 429 with Retry-After before the token is even looked at (so a
/// valid token from that address waits too), for bearer tokens, the dashboard's cookie and
/// the login form alike; another address is not affected; both are counted in /metrics.
async fn failed_auth_is_rate_limited(backend: Backend) {
    let app =
        common::web::spawn_web_with(backend, RICH, repayd::web::state::ApiState::for_engine).await;
    let bad_bearer = || async {
        let r = app.get("/api/v1/loans", Some("rpd_guess")).await;
        (r.status.as_u16(), r.headers.get("retry-after").cloned())
    };
    let (seen, retry) = fail_until_limited(bad_bearer).await;
    assert!(
        seen.len() > 20 && seen[..20].iter().all(|s| *s == 401),
        "{seen:?}"
    );
    // While limited, a valid token from that address is refused unseen. The refusal lasts
    // about 1/5 s, so a slow machine may need another bad token to be inside it.
    let mut blocked = None;
    for _ in 0..20 {
        fail_until_limited(bad_bearer).await;
        let r = app.get("/api/v1/loans", Some(&app.viewer)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            blocked = Some(r);
            break;
        }
    }
    let blocked = blocked.expect("a valid token is refused while the address is limited");
    assert_eq!(blocked.json["error"], "rate_limited", "{}", blocked.text);
    retry_after(&blocked);
    let elsewhere = get_from(&app, "127.0.0.2", "/api/v1/loans", &app.viewer).await;
    assert_eq!(elsewhere, StatusCode::OK, "another address is not limited");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = app.get("/api/v1/loans", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "let in again after Retry-After");
    // The dashboard's cookie counts too (its pages send a bad one to the login form).
    let http = no_redirects();
    let bad_cookie = || async {
        let r = http
            .get(app.url("/loans"))
            .header("cookie", "repayd_token=rpd_guess");
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").cloned())
    };
    let (seen, retry) = fail_until_limited(bad_cookie).await;
    assert_eq!(seen[0], 303, "{seen:?}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    // And so does the login form.
    let bad_login = || async {
        let r = http.post(app.url("/login")).form(&[("token", "rpd_guess")]);
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").cloned())
    };
    let (seen, retry) = fail_until_limited(bad_login).await;
    assert_eq!(seen[0], 401, "{seen:?}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let m = app.get("/metrics", Some(&app.viewer)).await;
    assert_eq!(m.status, StatusCode::OK);
    for name in [
        "repayd_auth_failures_total",
        "repayd_auth_rate_limited_total",
    ] {
        assert!(
            m.text.contains(&format!("# HELP {name} ")),
            "{name}: {}",
            m.text
        );
        assert!(m.text.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    app.cleanup().await;
}

/// GET `path` with `token` from another loopback address.
async fn get_from(app: &WebApp, ip: &str, path: &str, token: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = client.get(app.url(path)).bearer_auth(token).send().await;
    r.unwrap().status()
}

/// Send `fail` until it is answered 429 (at most 500 times): the statuses seen, and the
/// 429's Retry-After in seconds.
async fn fail_until_limited<F, Fut>(fail: F) -> (Vec<u16>, u64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Option<reqwest::header::HeaderValue>)>,
{
    let mut seen = Vec::new();
    for _ in 0..500 {
        let (status, retry) = fail().await;
        seen.push(status);
        if status == 429 {
            let secs: u64 = retry
                .expect("Retry-After")
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&secs), "{secs}");
            return (seen, secs);
        }
    }
    panic!("never limited: {seen:?}");
}
both_backends!(failed_auth_is_rate_limited);

fn retry_after(r: &Resp) -> u64 {
    let v = r.headers.get("retry-after").expect("Retry-After");
    let secs: u64 = v.to_str().unwrap().parse().expect("seconds");
    assert!((1..=60).contains(&secs), "{secs}");
    secs
}
