//! CSV exports of the workspace, on both backends: the worklist as filtered (every row, one
//! per loan, amounts with their currency) and attempts by filter (masked accounts).

use crate::common;

use chrono::{Datelike, Days};
use common::web::spawn_web;
use common::{loan_json, local, Backend};
use reqwest::StatusCode;
use serde_json::json;

const SH: &str = "Asia/Shanghai";
const BROKE: &str = "timezone = \"Asia/Shanghai\"\n[default]\nbalance = \"0.00\"\n";

fn rows(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

async fn worklist_and_attempts_export_as_csv(backend: Backend) {
    let app = spawn_web(backend, BROKE).await;
    let due = chrono::Utc::now().date_naive() - Days::new(10);
    let loan = |id: &str| {
        loan_json(
            id,
            SH,
            "test",
            None,
            false,
            &[("unionpay", "AGR-1")],
            &[(&due.to_string(), "1000.00")],
        )
    };
    app.import(&json!([loan("L1"), loan("L2")])).await;
    app.run(local(SH, due.year(), due.month(), due.day(), 8, 5))
        .await;

    let r = app.get("/worklist.csv?sort=id", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let header = r.text.lines().next().unwrap();
    assert!(
        header.starts_with("loan_id,borrower_id,standing,days_past_due,bucket,currency,overdue"),
        "{header}"
    );
    let lines = rows(&r.text);
    assert_eq!(lines.len(), 2, "every overdue loan, not a page: {}", r.text);
    assert_eq!(lines[0][0], "L1");
    assert_eq!(lines[0][2], "overdue");
    assert!(lines[0][3].parse::<u32>().unwrap() >= 9, "{:?}", lines[0]);
    assert_eq!(
        (lines[0][5].as_str(), lines[0][6].as_str()),
        ("CNY", "1000.00")
    );

    let r = app.get("/attempts.csv?loan=L1", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let lines = rows(&r.text);
    assert!(!lines.is_empty(), "{}", r.text);
    for a in &lines {
        assert_eq!(a[2], "L1", "{a:?}");
        assert_eq!(a[9], "CNY", "every amount names its currency: {a:?}");
        assert_eq!(a[11], "failed", "{a:?}");
    }
    assert!(
        !r.text.contains("6222021234567890"),
        "accounts are masked: {}",
        r.text
    );
    let r = app.get("/attempts.csv?kind=bogus", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("kind: `bogus`"), "{}", r.text);
    let r = app
        .get("/attempts.csv?from=2027-13-01", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Signed in only: without a token the dashboard sends the browser to its login page.
    let r = app.get("/worklist.csv", None).await;
    assert!(!r.text.contains("loan_id,"), "{}", r.text);
    assert!(r.headers.get("content-disposition").is_none());
    app.cleanup().await;
}
both_backends!(worklist_and_attempts_export_as_csv);
