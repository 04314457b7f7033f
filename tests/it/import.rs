//! Import: all or nothing, idempotent, and errors that name file, record and field.

use crate::common;

use common::{loan_json, spawn_app, Backend};
use repayd::domain::import::ImportError;

fn channels() -> Vec<String> {
    vec!["unionpay".into(), "wechat".into(), "bank".into()]
}

async fn reimport_is_idempotent_and_conflicts_change_nothing(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let loans = serde_json::json!([
        loan_json(
            "I1",
            "Asia/Shanghai",
            "standard",
            None,
            true,
            &[("unionpay", "A1")],
            &[("2027-01-15", "100.00"), ("2027-02-15", "100.00")]
        ),
        loan_json(
            "I2",
            "Asia/Shanghai",
            "gentle",
            Some(10),
            true,
            &[("bank", "A2")],
            &[("2027-01-20", "300.00")]
        ),
    ])
    .to_string();
    let first = app.import_json(&loans).await;
    assert_eq!((first.loans_added, first.installments_added), (2, 3));
    let actions = app.scalar_i64("SELECT COUNT(*) FROM actions").await;
    let again = app.import_json(&loans).await;
    assert_eq!((again.loans_added, again.loans_unchanged), (0, 2));
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM actions").await,
        actions,
        "re-planning is idempotent"
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM journal_entries").await,
        2,
        "one opening entry per loan"
    );

    // Same id, different content: rejected, nothing changes.
    let changed = loans.replace("300.00", "301.00");
    let path = app.dir.path().join("changed.json");
    std::fs::write(&path, changed).unwrap();
    let parsed = repayd::ops::import::read_file(&path, &app.engine.policies, &channels()).unwrap();
    let mut tx = app.engine.db.pool.begin().await.unwrap();
    let err = repayd::store::import::store_loans(&mut tx, &parsed, 0)
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();
    assert!(
        err.to_string().contains("loan I2") && err.to_string().contains("different content"),
        "{err}"
    );
    assert_eq!(
        app.scalar_i64("SELECT principal FROM installments WHERE loan_id = 'I2'")
            .await,
        30000
    );
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    app.cleanup().await;
}
both_backends!(reimport_is_idempotent_and_conflicts_change_nothing);

async fn terms_generate_installments_that_sum_to_principal(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let csv = "loan_id,borrower_id,borrower_name,phone,email,payday,currency,timezone,policy,allow_early,mandates,method,principal,annual_rate,months,first_due,due_date,interest,fee\n\
               T1,BT1,Li Wei,13900001111,li@example.com,15,CNY,Asia/Shanghai,standard,true,unionpay:AT1:6222021234561234:5000:20000,annuity,10000.00,0.18,12,2027-01-31,,,\n\
               T2,BT2,Li Na,13900002222,na@example.com,,CNY,Asia/Shanghai,gentle,false,bank:AT2:6222021234565678,equal_principal,9999.99,0.12,7,2027-02-10,,,\n";
    let path = app.dir.path().join("loans.csv");
    std::fs::write(&path, csv).unwrap();
    let loans = repayd::ops::import::read_file(&path, &app.engine.policies, &channels()).unwrap();
    let mut tx = app.engine.db.pool.begin().await.unwrap();
    repayd::store::import::store_loans(&mut tx, &loans, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        app.scalar_i64(
            "SELECT CAST(SUM(principal) AS BIGINT) FROM installments WHERE loan_id = 'T1'"
        )
        .await,
        1_000_000
    );
    assert_eq!(
        app.scalar_i64(
            "SELECT CAST(SUM(principal) AS BIGINT) FROM installments WHERE loan_id = 'T2'"
        )
        .await,
        999_999
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM installments WHERE loan_id = 'T1'")
            .await,
        12
    );
    // Month ends clamp without drifting: Jan 31 -> Feb 28 -> Mar 31.
    assert_eq!(
        app.scalar_str("SELECT due_date FROM installments WHERE loan_id = 'T1' AND seq = 2")
            .await,
        "2027-02-28"
    );
    assert_eq!(
        app.scalar_str("SELECT due_date FROM installments WHERE loan_id = 'T1' AND seq = 3")
            .await,
        "2027-03-31"
    );
    // Only the masked account is stored.
    assert_eq!(
        app.scalar_str("SELECT account_masked FROM mandates WHERE loan_id = 'T1'")
            .await,
        "6222 **** **** 1234"
    );
    app.cleanup().await;
}
both_backends!(terms_generate_installments_that_sum_to_principal);

async fn bad_file_is_rejected_whole_with_located_errors(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let mut bad = loan_json(
        "X2",
        "Mars/Olympus",
        "standard",
        None,
        true,
        &[("paypal", "A")],
        &[("2027-01-15", "10.005")],
    );
    bad["borrower"]["payday"] = 32.into();
    let good = loan_json(
        "X1",
        "Asia/Shanghai",
        "standard",
        None,
        true,
        &[("bank", "A")],
        &[("2027-01-15", "10.00")],
    );
    let path = app.dir.path().join("bad.json");
    std::fs::write(&path, serde_json::json!([good, bad]).to_string()).unwrap();
    let err = repayd::ops::import::read_file(&path, &app.engine.policies, &channels()).unwrap_err();
    let ImportError::Invalid(problems) = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    for needle in [
        "bad.json: record 2 (loan X2): timezone",
        "mandates[0].channel: unknown channel `paypal`",
        "installments[0].principal: `10.005` has more than 2 decimal places",
        "borrower.payday",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert_eq!(problems.len(), 4, "{text}");
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM loans").await,
        0,
        "nothing imported"
    );

    let csv_path = app.dir.path().join("bad.csv");
    std::fs::write(&csv_path, "loan_id,borrower_id,borrower_name,phone,email,payday,currency,timezone,policy,allow_early,mandates,method,principal,annual_rate,months,first_due,due_date,interest,fee\n\
        C1,B,N,13900001111,n@example.com,,CNY,Asia/Shanghai,standard,true,bank:A:1234567812345678,annuity,1000.00,0.1,twelve,2027-01-01,,,\n").unwrap();
    let err = repayd::ops::import::read_file(&csv_path, &app.engine.policies, &channels())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.csv: line 2: months: `twelve` is not a whole number"),
        "{err}"
    );
    app.cleanup().await;
}
both_backends!(bad_file_is_rejected_whole_with_located_errors);
