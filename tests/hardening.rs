//! Hardening: hostile amounts, dates, accounts and borrower records are refused at the door
//! with located errors, and the book can never grow past what its sums can hold.

mod common;

use common::{loan_json, spawn_app, Backend, TestApp};
use repayd::import::{self, ImportError};
use serde_json::{json, Value};

fn channels() -> Vec<String> {
    vec!["unionpay".into(), "wechat".into(), "bank".into()]
}

/// Parse and validate `loans` the way `repayd loans import` does.
fn read(app: &TestApp, name: &str, loans: &Value) -> Result<Vec<import::LoanInput>, ImportError> {
    let path = app.dir.path().join(name);
    std::fs::write(&path, loans.to_string()).unwrap();
    import::read_file(&path, &app.engine.policies, &channels())
}

fn loan(id: &str, installments: &[(&str, &str)]) -> Value {
    loan_json(
        id,
        "Asia/Shanghai",
        "standard",
        None,
        true,
        &[("bank", &format!("A-{id}"))],
        installments,
    )
}

/// Every problem of a refused file, as text.
fn refused(r: Result<Vec<import::LoanInput>, ImportError>) -> String {
    match r {
        Err(ImportError::Invalid(p)) => p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => panic!("expected located problems, got {e}"),
        Ok(l) => panic!("expected a refusal, {} loans were accepted", l.len()),
    }
}

async fn store(app: &TestApp, loans: &[import::LoanInput]) -> Result<(), ImportError> {
    let mut tx = app.engine.db.pool.begin().await.unwrap();
    let r = import::store_loans(&mut tx, loans, 0).await;
    match r {
        Ok(_) => {
            tx.commit().await.unwrap();
            Ok(())
        }
        Err(e) => {
            tx.rollback().await.unwrap();
            Err(e)
        }
    }
}

async fn poison_amounts_are_refused_naming_record_and_field(backend: Backend) {
    let app = spawn_app(backend, "").await;
    // The tester's poison loan: principal and interest of 6e16 each, no mandate limits.
    let mut poison = loan("P1", &[("2027-01-15", "60000000000000000.00")]);
    poison["installments"][0]["interest"] = "60000000000000000.00".into();
    let text = refused(read(&app, "poison.json", &json!([poison])));
    assert!(
        text.contains("record 1 (loan P1): installments[0].principal")
            && text.contains("installments[0].interest")
            && text.contains("largest amount"),
        "{text}"
    );
    // Each amount within bounds, their sum not: named at the installment that passes.
    let sum = loan(
        "P2",
        &[
            ("2027-01-15", "600000000000.00"),
            ("2027-02-15", "600000000000.00"),
        ],
    );
    let text = refused(read(&app, "sum.json", &json!([sum])));
    assert!(
        text.contains("(loan P2): installments[1]: the loan's total passes"),
        "{text}"
    );
    // The largest Decimal (it overflowed a multiplication before) and i64's edge.
    for (i, amount) in ["79228162514264337593543950335", "92233720368547758.07"]
        .iter()
        .enumerate()
    {
        let l = loan(&format!("P3{i}"), &[("2027-01-15", amount)]);
        let text = refused(read(&app, "huge.json", &json!([l])));
        assert!(text.contains("installments[0].principal"), "{text}");
    }
    // The same file as CSV.
    let csv = "loan_id,borrower_id,borrower_name,phone,email,payday,currency,timezone,policy,allow_early,mandates,method,principal,annual_rate,months,first_due,due_date,interest,fee\n\
        C1,BC1,N,13900001111,n@example.com,,CNY,Asia/Shanghai,standard,true,bank:A:6222021234561234,,79228162514264337593543950335,,,,2027-01-15,0,0\n";
    let path = app.dir.path().join("huge.csv");
    std::fs::write(&path, csv).unwrap();
    let text = refused(import::read_file(&path, &app.engine.policies, &channels()));
    assert!(
        text.contains("line 2 (loan C1): installments[0].principal"),
        "{text}"
    );
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM loans").await, 0);
    app.cleanup().await;
}
both_backends!(poison_amounts_are_refused_naming_record_and_field);

async fn dates_outside_1900_to_2200_are_refused(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let early = loan("D1", &[("1899-12-31", "100.00")]);
    let late = loan("D2", &[("2201-01-01", "100.00")]);
    let text = refused(read(&app, "dates.json", &json!([early, late])));
    assert!(
        text.contains("(loan D1): installments[0].due_date: 1899-12-31 is outside")
            && text.contains("(loan D2): installments[0].due_date: 2201-01-01 is outside"),
        "{text}"
    );
    // Terms whose schedule runs past 2200.
    let mut terms = loan("D3", &[]);
    terms.as_object_mut().unwrap().remove("installments");
    terms["terms"] = json!({"principal": "1200.00", "annual_rate": "0.1", "months": 24,
        "first_due": "2200-06-01", "method": "annuity"});
    let text = refused(read(&app, "terms.json", &json!([terms])));
    assert!(
        text.contains("(loan D3): installments[7].due_date"),
        "{text}"
    );
    app.cleanup().await;
}
both_backends!(dates_outside_1900_to_2200_are_refused);

async fn accounts_are_digits_or_masks_and_errors_never_echo_them(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let mut starred = loan("A1", &[("2027-01-15", "100.00")]);
    starred["mandates"][0]["account"] = "6222021234567*890".into();
    let text = refused(read(&app, "star.json", &json!([starred])));
    assert!(text.contains("(loan A1): mandates[0].account"), "{text}");
    assert!(!text.contains("6222021234567"), "{text}");

    let mut masked = loan("A2", &[("2027-01-15", "100.00")]);
    masked["mandates"][0]["account"] = "6222 **** **** 7890".into();
    let loans = read(&app, "masked.json", &json!([masked])).unwrap();
    store(&app, &loans).await.unwrap();
    assert_eq!(
        app.scalar_str("SELECT account_masked FROM mandates").await,
        "6222 **** **** 7890"
    );

    // A malformed CSV mandate cell is reported without the raw account number.
    let csv = "loan_id,borrower_id,borrower_name,phone,email,payday,currency,timezone,policy,allow_early,mandates,method,principal,annual_rate,months,first_due,due_date,interest,fee\n\
        C1,BC1,N,13900001111,n@example.com,,CNY,Asia/Shanghai,standard,true,bank:A:6222021234569999:1:2:3,,100.00,,,,2027-01-15,0,0\n";
    let path = app.dir.path().join("cell.csv");
    std::fs::write(&path, csv).unwrap();
    let text = refused(import::read_file(&path, &app.engine.policies, &channels()));
    assert!(text.contains("line 2: mandates[0]"), "{text}");
    assert!(!text.contains("6222021234569999"), "{text}");
    app.cleanup().await;
}
both_backends!(accounts_are_digits_or_masks_and_errors_never_echo_them);

async fn a_borrower_id_is_one_person(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let first = loan("B1", &[("2027-01-15", "100.00")]);
    let mut other = loan("B2", &[("2027-01-15", "100.00")]);
    other["borrower"]["id"] = first["borrower"]["id"].clone();
    other["borrower"]["phone"] = "13700009999".into();
    // In one file: both records are named.
    let text = refused(read(&app, "two.json", &json!([first, other])));
    assert!(
        text.contains("record 2 (loan B2): borrower: borrower `B-B1`")
            && text.contains("record 1 (loan B1)"),
        "{text}"
    );
    // Against the database: the stored record is named.
    let stored = read(&app, "first.json", &json!([first])).unwrap();
    store(&app, &stored).await.unwrap();
    let later = read(&app, "later.json", &json!([other])).unwrap();
    let err = store(&app, &later).await.unwrap_err().to_string();
    assert!(
        err.contains("loan B2: borrower") && err.contains("loan B1") && err.contains("update"),
        "{err}"
    );
    assert!(!err.contains("13812345678"), "phones are masked: {err}");
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM loans").await, 1);
    // Said to be an update: accepted, and notices go to the new phone.
    other["borrower"]["update"] = true.into();
    let update = read(&app, "update.json", &json!([other])).unwrap();
    store(&app, &update).await.unwrap();
    assert_eq!(
        app.scalar_str("SELECT phone FROM borrowers WHERE id = 'B-B1'")
            .await,
        "13700009999"
    );
    app.cleanup().await;
}
both_backends!(a_borrower_id_is_one_person);

/// The book is capped so that every sum over it fits: 10,000 loans of the largest amount
/// fill it exactly, and one cent more is refused. Verify and the trial balance add the full
/// book without overflowing.
async fn the_book_has_a_ceiling_and_its_sums_fit(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let max = repayd::domain::MAX_AMOUNT.to_string();
    let loans: Vec<Value> = (0..10_000)
        .map(|i| loan(&format!("M{i:05}"), &[("2027-01-15", &max)]))
        .collect();
    let parsed = read(&app, "book.json", &Value::Array(loans)).unwrap();
    store(&app, &parsed).await.unwrap();
    let cent = read(
        &app,
        "cent.json",
        &json!([loan("OVER", &[("2027-01-15", "0.01")])]),
    )
    .unwrap();
    let err = store(&app, &cent).await.unwrap_err().to_string();
    assert!(
        err.contains("loan OVER: installments: the book would pass"),
        "{err}"
    );
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    let report = repayd::verify::verify(&app.engine.db, &Default::default())
        .await
        .expect("verify adds the whole book");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    app.cleanup().await;
}
both_backends!(the_book_has_a_ceiling_and_its_sums_fit);
