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

/// One definition of what is owed: after loan W1 is written off, the loan view, the
/// dashboard's loan list and delinquency, the daily report and the delinquency report all
/// count only what W2 still owes, and `verify` finds the books consistent.
async fn a_write_off_is_seen_the_same_by_every_read_model(backend: Backend) {
    use repayd::store::{dashboard, reports};
    use rust_decimal::Decimal;
    let app = spawn_app(backend, "").await;
    let tz = "Asia/Shanghai";
    let dues = [("2027-01-15", "100.00"), ("2027-02-15", "150.00")];
    let loans: Vec<_> = ["W1", "W2"]
        .iter()
        .map(|id| {
            loan_json(
                id,
                tz,
                "test",
                None,
                false,
                &[("bank", &format!("A-{id}"))],
                &dues,
            )
        })
        .collect();
    app.import_json(&serde_json::json!(loans).to_string()).await;
    let now = Utc.with_ymd_and_hms(2027, 3, 1, 4, 0, 0).unwrap();
    let admin = repayd::domain::actor::Actor {
        name: "alice".into(),
        role: repayd::domain::actor::Role::Admin,
    };
    let off = repayd::ops::money::write_off(&app.engine, &admin, "W1", "borrower deceased", now)
        .await
        .unwrap();
    assert_eq!(off, Decimal::new(25000, 2));
    let owed = Decimal::new(25000, 2);
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let policies = &app.engine.policies;

    for (id, want) in [("W1", Decimal::ZERO), ("W2", owed)] {
        let view = reports::loan_view(&mut conn, policies, id, now)
            .await
            .unwrap()
            .unwrap();
        let left: Decimal = view.installments.iter().map(|i| i.outstanding).sum();
        assert_eq!(left, want, "loan view of {id}");
    }
    let rows = dashboard::search_loans(&mut conn, "W", "", 10, dashboard::Today::Clock(now))
        .await
        .unwrap();
    // The written-off loan's remainder is gone; W2 still owes, past due, so it stands overdue.
    let w2 = rows.iter().find(|r| r.id == "W2").unwrap();
    assert!(w2.days_past_due > 0 && w2.standing == "overdue", "{w2:?}");
    let listed: Vec<_> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.outstanding))
        .collect();
    assert_eq!(
        listed,
        [("W1", Decimal::ZERO), ("W2", owed)],
        "dashboard list"
    );
    let today = dashboard::Today::Clock(now);
    let buckets = dashboard::delinquency(&mut conn, policies, today)
        .await
        .unwrap();
    let cny: Decimal = buckets["CNY"].iter().map(|b| b.amount).sum();
    assert_eq!(cny, owed, "dashboard delinquency {buckets:?}");
    let report = reports::delinquency(&mut conn, policies, None, now)
        .await
        .unwrap();
    assert_eq!(
        (report.loans, report.amount),
        (1, owed),
        "delinquency report"
    );
    let date = chrono::NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
    let daily = repayd::ops::daily::daily_rows(&mut conn, policies, date)
        .await
        .unwrap();
    let bucketed: Decimal = daily
        .iter()
        .filter(|r| r.section == repayd::ops::daily::BUCKETS && r.channel != "all")
        .filter_map(|r| r.amount)
        .sum();
    assert_eq!(bucketed, owed, "daily report");
    drop(conn);
    let opts = repayd::store::verify::VerifyOptions::default();
    let checked = repayd::store::verify::verify(&app.engine.db, &opts)
        .await
        .unwrap();
    assert!(checked.is_clean(), "{:?}", checked.findings);
    app.cleanup().await;
}
both_backends!(a_write_off_is_seen_the_same_by_every_read_model);
