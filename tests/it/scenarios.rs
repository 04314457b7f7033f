//! Collection scenarios, each run on SQLite and on the local PostgreSQL with its own database.

use crate::common;

use common::{loan_json, local, spawn_app, Backend, TestApp};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const SH: &str = "Asia/Shanghai";

async fn import_one(app: &TestApp, loan: serde_json::Value) {
    app.import_json(&serde_json::json!([loan]).to_string())
        .await;
}

async fn succeeded(app: &TestApp, loan: &str) -> Vec<(String, Decimal, i64)> {
    app.attempts(loan)
        .await
        .into_iter()
        .filter(|a| a.1 == "succeeded")
        .map(|a| (a.0, a.2, a.3))
        .collect()
}

/// Short of money on the due date: 100% fails, 75% is collected, the rest (with penalty)
/// on payday when the salary arrives.
async fn short_borrower_collected_in_steps_then_on_payday(backend: Backend) {
    let app = spawn_app(
        backend,
        r#"timezone = "Asia/Shanghai"
           [[accounts]]
           agreement = "AGR-1"
           balance = "760.00"
           income = [{ date = "2027-01-20", amount = "3000.00" }]"#,
    )
    .await;
    import_one(
        &app,
        loan_json(
            "L1",
            SH,
            "standard",
            Some(20),
            false,
            &[("unionpay", "AGR-1")],
            &[("2027-01-15", "1000.00")],
        ),
    )
    .await;
    app.run_until(local(SH, 2027, 1, 10, 0, 0), local(SH, 2027, 1, 25, 0, 0))
        .await;

    let ok = succeeded(&app, "L1").await;
    assert_eq!(ok.len(), 2, "two successful attempts: {ok:?}");
    assert_eq!(
        ok[0],
        ("due".into(), dec!(750.00), 1),
        "75% on the due date"
    );
    assert_eq!(ok[1].0, "payday", "the rest on payday");
    let attempts = app.attempts("L1").await;
    assert_eq!(attempts[0].1, "failed", "100% failed first");
    assert_eq!(attempts[0].2, dec!(1000.00));
    let penalty = app
        .scalar_i64("SELECT penalty FROM installments WHERE loan_id = 'L1'")
        .await;
    assert!(penalty > 0, "penalty accrued while overdue");
    assert_eq!(
        ok[1].1,
        dec!(250.00) + Decimal::new(penalty, 2),
        "remainder plus penalty"
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM installments WHERE loan_id = 'L1'")
            .await,
        "paid"
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L1'")
            .await,
        "paid"
    );
    let partial = app
        .scalar_i64("SELECT COUNT(*) FROM notices WHERE kind = 'partial' AND loan_id = 'L1'")
        .await;
    assert_eq!(partial, 2, "one partial notice per channel (sms, email)");
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(short_borrower_collected_in_steps_then_on_payday);

/// A frozen card fails hard: that mandate is marked invalid, the next one is debited in the
/// same slot, and the borrower is asked to re-bind.
async fn frozen_card_falls_back_to_second_mandate(backend: Backend) {
    let app = spawn_app(
        backend,
        r#"[[accounts]]
           agreement = "AGR-F1"
           fail = "CARD_FROZEN""#,
    )
    .await;
    let mandates = [("unionpay", "AGR-F1"), ("wechat", "AGR-F2")];
    import_one(
        &app,
        loan_json(
            "L2",
            SH,
            "standard",
            None,
            false,
            &mandates,
            &[("2027-01-15", "1000.00")],
        ),
    )
    .await;
    app.run(local(SH, 2027, 1, 15, 8, 0)).await;

    let a = app.attempts("L2").await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!((a[0].1.as_str(), a[0].4.as_str()), ("failed", "unionpay"));
    assert_eq!(
        (a[1].1.as_str(), a[1].4.as_str(), a[1].2),
        ("succeeded", "wechat", dec!(1000.00))
    );
    let status = app.scalar_str("SELECT status || ':' || status_code FROM mandates WHERE loan_id = 'L2' AND priority = 1").await;
    assert_eq!(status, "invalid:CARD_FROZEN");
    let rebind = app
        .scalar_i64("SELECT COUNT(*) FROM notices WHERE kind = 'rebind' AND loan_id = 'L2'")
        .await;
    assert_eq!(rebind, 2, "re-bind notice by sms and email");
    // Later slots never use the dead mandate again.
    app.run(local(SH, 2027, 1, 15, 20, 0)).await;
    assert_eq!(app.attempts("L2").await.len(), 2);
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(frozen_card_falls_back_to_second_mandate);

/// A timeout after the channel debited: the attempt is unknown, queried later, resolved as a
/// success and posted once. Nothing is resubmitted.
async fn unknown_result_resolved_by_query_without_second_debit(backend: Backend) {
    let app = spawn_app(
        backend,
        r#"[[accounts]]
           agreement = "AGR-U"
           unknown_first = 1
           unknown_applies = true"#,
    )
    .await;
    import_one(
        &app,
        loan_json(
            "L3",
            SH,
            "standard",
            None,
            false,
            &[("bank", "AGR-U")],
            &[("2027-01-15", "1000.00")],
        ),
    )
    .await;
    let t0 = local(SH, 2027, 1, 15, 8, 0);
    app.run(t0).await;
    let a = app.attempts("L3").await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1, "unknown");
    // Same instant again, and before the first query is due: nothing new happens.
    app.run(t0).await;
    app.run(t0 + chrono::Duration::seconds(30)).await;
    assert_eq!(app.attempts("L3").await.len(), 1);
    // The query finds the debit.
    let s = app.run(t0 + chrono::Duration::minutes(2)).await;
    assert_eq!(s.resolved, 1);
    let a = app.attempts("L3").await;
    assert_eq!(a.len(), 1, "never resubmitted");
    assert_eq!(a[0].1, "succeeded");
    // The noon and evening slots have nothing left to do.
    app.run(local(SH, 2027, 1, 15, 12, 0)).await;
    app.run(local(SH, 2027, 1, 15, 20, 0)).await;
    assert_eq!(app.attempts("L3").await.len(), 1);
    assert_eq!(
        app.sim("bank").journal().len(),
        1,
        "the channel debited once"
    );
    let entries = app
        .scalar_i64("SELECT COUNT(*) FROM journal_entries WHERE kind = 'repayment'")
        .await;
    assert_eq!(entries, 1);
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(unknown_result_resolved_by_query_without_second_debit);

/// Paid in full by the early attempt: every remaining action of the loan is cancelled.
async fn loan_paid_early_cancels_remaining_actions(backend: Backend) {
    let app = spawn_app(backend, "").await;
    import_one(
        &app,
        loan_json(
            "L4",
            SH,
            "standard",
            None,
            true,
            &[("wechat", "AGR-E")],
            &[("2027-01-15", "1000.00")],
        ),
    )
    .await;
    app.run_until(local(SH, 2027, 1, 10, 0, 0), local(SH, 2027, 1, 17, 0, 0))
        .await;

    assert_eq!(
        succeeded(&app, "L4").await,
        vec![("early".into(), dec!(1000.00), 0)]
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L4'")
            .await,
        "paid"
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L4' AND status = 'pending'")
            .await,
        0
    );
    let cancelled = app.scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L4' AND status = 'cancelled' AND slot LIKE 'due:%'").await;
    assert_eq!(cancelled, 3, "the three due-date slots were cancelled");
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(loan_paid_early_cancels_remaining_actions);

/// DST: on the day New York springs forward (2026-03-08) the 08:00 slot is 08:00 EDT
/// (12:00 UTC), not 13:00 UTC; on the fall-back day (2026-11-01) it is 13:00 UTC.
async fn dst_slot_runs_at_local_time(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let ny = "America/New_York";
    import_one(
        &app,
        loan_json(
            "L5",
            ny,
            "test",
            None,
            false,
            &[("bank", "AGR-D")],
            &[("2026-03-08", "500.00"), ("2026-11-01", "500.00")],
        ),
    )
    .await;
    let due_at = |seq: i64| {
        let app = &app;
        async move {
            app.scalar_i64(&format!("SELECT due_at FROM actions WHERE loan_id = 'L5' AND seq = {seq} AND slot = 'due:08:00'")).await
        }
    };
    let spring = chrono::DateTime::parse_from_rfc3339("2026-03-08T12:00:00Z")
        .unwrap()
        .timestamp_millis();
    let autumn = chrono::DateTime::parse_from_rfc3339("2026-11-01T13:00:00Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(due_at(1).await, spring);
    assert_eq!(due_at(2).await, autumn);

    let before = chrono::DateTime::from_timestamp_millis(spring - 1000).unwrap();
    assert_eq!(
        app.run(before).await.total_attempts(),
        0,
        "not yet 08:00 in New York"
    );
    let at = chrono::DateTime::from_timestamp_millis(spring).unwrap();
    assert_eq!(app.run(at).await.total_attempts(), 1, "08:00 EDT");
    app.cleanup().await;
}
both_backends!(dst_slot_runs_at_local_time);

async fn counts(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        app.scalar_i64("SELECT COUNT(*) FROM attempts").await,
        app.scalar_i64("SELECT COUNT(*) FROM journal_lines").await,
        app.scalar_i64("SELECT COUNT(*) FROM notices").await,
        app.scalar_i64("SELECT COUNT(*) FROM actions WHERE status = 'pending'")
            .await,
    )
}

/// Running twice for the same instant changes nothing.
async fn running_twice_for_the_same_instant_changes_nothing(backend: Backend) {
    let app = spawn_app(
        backend,
        r#"[[accounts]]
           agreement = "AGR-R"
           balance = "600.00""#,
    )
    .await;
    import_one(
        &app,
        loan_json(
            "L6",
            SH,
            "standard",
            None,
            false,
            &[("unionpay", "AGR-R")],
            &[("2027-01-15", "1000.00")],
        ),
    )
    .await;
    let t = local(SH, 2027, 1, 15, 8, 0);
    let first = app.run(t).await;
    assert!(first.total_attempts() > 0);
    let before = counts(&app).await;
    let second = app.run(t).await;
    assert_eq!(second.total_attempts(), 0);
    assert!(second.collected.is_empty(), "{:?}", second.collected);
    assert_eq!(counts(&app).await, before);
    app.cleanup().await;
}
both_backends!(running_twice_for_the_same_instant_changes_nothing);

/// Catch-up after downtime merges missed slots into one attempt; the result notice falls in
/// quiet hours (23:00) and is held until 08:00 local.
async fn catch_up_merges_slots_and_quiet_hours_hold_notices(backend: Backend) {
    let app = spawn_app(backend, "").await;
    import_one(
        &app,
        loan_json(
            "L7",
            SH,
            "test",
            None,
            false,
            &[("unionpay", "AGR-Q")],
            &[("2027-01-15", "800.00")],
        ),
    )
    .await;
    let late = local(SH, 2027, 1, 15, 23, 0);
    let s = app.run(late).await;
    assert_eq!(
        s.total_attempts(),
        1,
        "08:00 and 23:00 slots merged into one attempt"
    );
    let held = app.scalar_i64("SELECT COUNT(*) FROM notices WHERE loan_id = 'L7' AND kind = 'paid' AND status = 'pending'").await;
    assert_eq!(held, 2);
    let release = app
        .scalar_i64("SELECT MIN(send_after) FROM notices WHERE loan_id = 'L7' AND kind = 'paid'")
        .await;
    assert_eq!(release, local(SH, 2027, 1, 16, 8, 0).timestamp_millis());
    app.run(local(SH, 2027, 1, 16, 7, 59)).await;
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM notices WHERE kind = 'paid' AND status = 'sent'")
            .await,
        0
    );
    app.run(local(SH, 2027, 1, 16, 8, 0)).await;
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM notices WHERE kind = 'paid' AND status = 'sent'")
            .await,
        2
    );
    // Stale pre-due notices were skipped, not sent after the due date.
    let stale = app.scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L7' AND slot LIKE 'pre:%' AND status = 'skipped'").await;
    assert_eq!(
        stale, 0,
        "T-1 notice was still current at catch-up on the due date"
    );
    app.cleanup().await;
}
both_backends!(catch_up_merges_slots_and_quiet_hours_hold_notices);

/// Past the policy's stop point the loan goes to collections and auto-debit stops.
async fn loan_past_stop_point_goes_to_collections(backend: Backend) {
    let app = spawn_app(
        backend,
        r#"[[accounts]]
           agreement = "AGR-B"
           balance = "0.00""#,
    )
    .await;
    import_one(
        &app,
        loan_json(
            "L8",
            SH,
            "test",
            None,
            false,
            &[("unionpay", "AGR-B")],
            &[("2027-01-15", "800.00")],
        ),
    )
    .await;
    app.run_until(local(SH, 2027, 1, 14, 0, 0), local(SH, 2027, 2, 10, 0, 0))
        .await;
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L8'")
            .await,
        "collections"
    );
    let pending = app.scalar_i64("SELECT COUNT(*) FROM actions WHERE loan_id = 'L8' AND kind = 'attempt' AND status = 'pending'").await;
    assert_eq!(pending, 0);
    let attempts_before = app.attempts("L8").await.len();
    app.run(local(SH, 2027, 2, 20, 9, 0)).await;
    assert_eq!(
        app.attempts("L8").await.len(),
        attempts_before,
        "no auto-debit after hand-off"
    );
    let overdue = app
        .scalar_str("SELECT status FROM installments WHERE loan_id = 'L8'")
        .await;
    assert_eq!(overdue, "overdue");
    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);
    app.cleanup().await;
}
both_backends!(loan_past_stop_point_goes_to_collections);

/// The ladder never asks for more than the mandate's per-debit limit, and the daily limit
/// stops the ladder once used up.
async fn ladder_respects_mandate_limits(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let mut loan = loan_json(
        "L9",
        SH,
        "standard",
        None,
        false,
        &[("unionpay", "AGR-L")],
        &[("2027-01-15", "1000.00")],
    );
    loan["mandates"][0]["per_debit_limit"] = "300.00".into();
    loan["mandates"][0]["daily_limit"] = "500.00".into();
    import_one(&app, loan).await;
    app.run_until(local(SH, 2027, 1, 15, 0, 0), local(SH, 2027, 1, 16, 0, 0))
        .await;
    let ok = succeeded(&app, "L9").await;
    assert_eq!(
        ok.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![dec!(300.00), dec!(200.00)],
        "{ok:?}"
    );
    for a in app.attempts("L9").await {
        assert!(a.2 <= dec!(300.00));
    }
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(ladder_respects_mandate_limits);

/// The per-borrower daily cap holds the rest of a day's notices until the next day, in the
/// borrower's zone, outside quiet hours.
async fn daily_cap_holds_extra_notices_until_the_next_day(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let loans: Vec<_> = (0..6)
        .map(|i| {
            let mut l = loan_json(
                &format!("CAP{i}"),
                SH,
                "test",
                None,
                false,
                &[("bank", &format!("AGR-C{i}"))],
                &[("2027-01-15", "100.00")],
            );
            l["borrower"]["id"] = "B-SAME".into();
            l
        })
        .collect();
    app.import_json(&serde_json::Value::Array(loans).to_string())
        .await;
    app.run(local(SH, 2027, 1, 15, 8, 0)).await;
    // Six T-1 notices and six paid notices, by sms and email: 24 for one borrower, and the
    // test policy's cap is 10 a day.
    let sent = "SELECT COUNT(*) FROM notices WHERE status = 'sent'";
    assert_eq!(app.scalar_i64(sent).await, 10);
    let held = app
        .scalar_i64("SELECT MIN(send_after) FROM notices WHERE status = 'pending'")
        .await;
    assert_eq!(
        held,
        local(SH, 2027, 1, 16, 8, 0).timestamp_millis(),
        "held to the next day's window"
    );
    app.run(local(SH, 2027, 1, 16, 8, 0)).await;
    assert_eq!(app.scalar_i64(sent).await, 20);
    app.run(local(SH, 2027, 1, 17, 8, 0)).await;
    assert_eq!(app.scalar_i64(sent).await, 24);
    app.cleanup().await;
}
both_backends!(daily_cap_holds_extra_notices_until_the_next_day);
