//! What the layering review found, each with its test: a stored time zone that does not
//! decode is an error (never UTC), in the read models and in notice delivery.

use crate::common::{loan_json, spawn_app, Backend};
use chrono::{TimeZone, Utc};

async fn a_bad_stored_zone_is_an_error_never_utc(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let loan = loan_json(
        "Z1",
        "Asia/Shanghai",
        "test",
        None,
        false,
        &[("bank", "A-Z1")],
        &[("2027-01-15", "100.00")],
    );
    app.import_json(&serde_json::json!([loan]).to_string())
        .await;
    sqlx::query("UPDATE loans SET tz = 'Mars/Olympus' WHERE id = 'Z1'")
        .execute(&app.engine.db.pool)
        .await
        .unwrap();
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let now = Utc.with_ymd_and_hms(2027, 1, 10, 4, 0, 0).unwrap();
    let view = repayd::store::reports::loan_view(&mut conn, &app.engine.policies, "Z1", now).await;
    let e = view.expect_err("a loan view in a guessed zone");
    assert!(e.to_string().contains("stored tz `Mars/Olympus`"), "{e}");
    let plan = repayd::store::reports::plan_view(&mut conn, "Z1").await;
    assert!(
        plan.is_err(),
        "the agenda's local times are not shown in UTC"
    );
    // A queued notice whose zone does not decode is failed with the reason, never sent at a
    // guessed hour.
    let row = repayd::domain::notice::NoticeRow {
        dedupe_key: "bad-zone".into(),
        loan_id: "Z1".into(),
        seq: Some(1),
        borrower_id: "B-Z1".into(),
        kind: repayd::domain::notice::NoticeKind::Failed,
        channel: "sms",
        recipient: "13812345678".into(),
        tz: chrono_tz::Asia::Shanghai,
        subject: String::new(),
        body: "debit failed".into(),
        send_after: now,
    };
    repayd::store::notices::queue_notices(&mut conn, &[row], now)
        .await
        .unwrap();
    sqlx::query("UPDATE notices SET tz = 'Mars/Olympus'")
        .execute(&app.engine.db.pool)
        .await
        .unwrap();
    let queued = app.scalar_i64("SELECT COUNT(*) FROM notices").await;
    assert!(queued > 0);
    drop(conn);
    app.run(Utc.with_ymd_and_hms(2027, 1, 20, 4, 0, 0).unwrap())
        .await;
    let failed = app
        .scalar_i64(
            "SELECT COUNT(*) FROM notices WHERE status = 'failed' AND error LIKE '%stored tz%'",
        )
        .await;
    assert_eq!(failed, queued);
    app.cleanup().await;
}
both_backends!(a_bad_stored_zone_is_an_error_never_utc);
