//! Notes and promises to pay through the API, on both backends: audited, validated by
//! field, a promise pauses automatic attempts until its date, then reads kept (paid since)
//! or broken (its date passed unpaid).

use crate::common;

use chrono::{Datelike, Days, NaiveDate};
use common::web::{spawn_web, WebApp};
use common::{loan_json, local, Backend};
use reqwest::StatusCode;
use serde_json::json;

const SH: &str = "Asia/Shanghai";
const RICH: &str = "timezone = \"Asia/Shanghai\"\n[default]\nbalance = \"100000.00\"\n";

/// L1 with one installment of 1000.00 due ten days from today (so the test never depends on
/// the calendar), and the day it falls due.
async fn app_with_loan(backend: Backend) -> (WebApp, NaiveDate) {
    let app = spawn_web(backend, RICH).await;
    let due = chrono::Utc::now().date_naive() + Days::new(10);
    let loan = loan_json(
        "L1",
        SH,
        "test",
        None,
        false,
        &[("unionpay", "AGR-1")],
        &[(&due.to_string(), "1000.00")],
    );
    app.import(&json!([loan])).await;
    (app, due)
}

async fn attempts(app: &WebApp) -> i64 {
    app.scalar_i64("SELECT COUNT(*) FROM attempts WHERE loan_id = 'L1'")
        .await
}

async fn notes_and_promises(backend: Backend) {
    let (app, due) = app_with_loan(backend).await;
    let c = Some(app.collections.as_str());
    let r = app
        .post(
            "/api/v1/loans/L1/notes",
            c,
            &json!({ "text": "called, will pay on the 20th" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Bad input is refused by field; a viewer cannot record anything.
    let promise = |amount: &str, date: NaiveDate| json!({ "amount": amount, "date": date.to_string(), "text": "promised on the phone" });
    let today = chrono::Utc::now().date_naive();
    for (body, field) in [
        (promise("0", due), "amount"),
        (promise("500.00", today - Days::new(2)), "date"),
        (promise("500.00", today + Days::new(90)), "date"),
        (
            json!({ "amount": "5", "date": due.to_string(), "text": " " }),
            "text",
        ),
    ] {
        let r = app.post("/api/v1/loans/L1/promises", c, &body).await;
        assert_eq!(
            (r.status, r.json["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {}",
            r.text
        );
    }
    let r = app
        .post(
            "/api/v1/loans/L1/notes",
            Some(&app.viewer),
            &json!({ "text": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A promise for three days after the due date pauses the due-date attempts.
    let on = due + Days::new(3);
    let r = app
        .post("/api/v1/loans/L1/promises", c, &promise("1000.00", on))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let slot = |d: NaiveDate, h: u32| local(SH, d.year(), d.month(), d.day(), h, 5);
    app.run(slot(due, 8)).await;
    app.run(slot(due, 23)).await;
    assert_eq!(
        attempts(&app).await,
        0,
        "no attempt while the promise stands"
    );
    let list = app.get("/api/v1/loans/L1/notes", Some(&app.viewer)).await;
    let items = list.json["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", list.text);
    assert_eq!(
        (items[0]["kind"].as_str(), items[0]["state"].as_str()),
        (Some("promise"), Some("open"))
    );
    assert_eq!(items[0]["currency"], "CNY");
    assert_eq!(items[1]["kind"], "note");
    // After its date, the attempts resume; the debt is collected and the promise reads kept.
    for d in 1..=3 {
        for h in [8, 9, 23] {
            app.run(slot(on + Days::new(d), h)).await;
        }
    }
    assert!(
        attempts(&app).await > 0,
        "attempts resumed after the promise's date"
    );
    let first_attempt = app
        .scalar_i64("SELECT MIN(created_at) FROM attempts WHERE loan_id = 'L1'")
        .await;
    let resume = local(SH, on.year(), on.month(), on.day(), 0, 0) + chrono::Duration::days(1);
    assert!(
        first_attempt >= resume.timestamp_millis(),
        "none before the pause ended"
    );
    let list = app.get("/api/v1/loans/L1/notes", Some(&app.viewer)).await;
    assert_eq!(list.json["items"][0]["state"], "kept", "{}", list.text);
    let loans = app.get("/api/v1/loans", Some(&app.viewer)).await;
    assert_eq!(loans.json["items"][0]["promise"], "kept", "{}", loans.text);
    // Both were audited, with who and why.
    let audited = app
        .scalar_i64("SELECT COUNT(*) FROM audit_log WHERE action IN ('add_note', 'promise_to_pay') AND loan_id = 'L1'")
        .await;
    assert_eq!(audited, 2);
    app.cleanup().await;
}
both_backends!(notes_and_promises);

/// A promise whose date passed with nothing collected since reads broken.
async fn an_unpaid_promise_reads_broken(backend: Backend) {
    let (app, _) = app_with_loan(backend).await;
    let past = chrono::Utc::now().date_naive() - Days::new(3);
    let made = (chrono::Utc::now() - chrono::Duration::days(5)).timestamp_millis();
    sqlx::query(
        "INSERT INTO loan_notes (id, loan_id, kind, body, amount, promised_on, created_by, created_at) \
         VALUES (900, 'L1', 'promise', 'will pay', 50000, $1, 'carol', $2)",
    )
    .bind(past.to_string())
    .bind(made)
    .execute(&app.engine.db.pool)
    .await
    .unwrap();
    let list = app.get("/api/v1/loans/L1/notes", Some(&app.viewer)).await;
    let p = &list.json["items"][0];
    assert_eq!(
        (p["state"].as_str(), p["amount"].as_str()),
        (Some("broken"), Some("500.00")),
        "{}",
        list.text
    );
    // The loan list says so too (the worklist shows it beside the loan).
    let loans = app.get("/api/v1/loans", Some(&app.viewer)).await;
    assert_eq!(
        loans.json["items"][0]["promise"], "broken",
        "{}",
        loans.text
    );
    app.cleanup().await;
}
both_backends!(an_unpaid_promise_reads_broken);
