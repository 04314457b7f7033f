//! `repayd verify` on real databases: green after realistic runs, and every kind of drift
//! made behind repayd's back is found and named by its row.

use crate::common;

use common::{local, spawn_app, Backend, TestApp};
use proptest::prelude::*;
use repayd::store::verify::{verify, VerifyOptions, VerifyReport};

const SH: &str = "Asia/Shanghai";

/// A loan with interest and fees on every installment.
fn loan(
    id: &str,
    channel: &str,
    agreement: &str,
    installments: &[(&str, &str)],
) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "borrower": { "id": format!("B-{id}"), "name": "Test Borrower", "phone": "13812345678",
                      "email": "t@example.com", "payday": 20 },
        "currency": "CNY",
        "timezone": SH,
        "policy": "standard",
        "allow_early": false,
        "mandates": [{ "channel": channel, "agreement": agreement, "account": "6222021234567890" }],
        "installments": installments.iter().map(|(d, p)| serde_json::json!({
            "due_date": d, "principal": p, "interest": "12.50", "fee": "3.00"
        })).collect::<Vec<_>>(),
    })
}

const SCENARIO: &str = r#"timezone = "Asia/Shanghai"
[[accounts]]
agreement = "AGR-RICH"
balance = "100000.00"
[[accounts]]
agreement = "AGR-SHORT"
balance = "760.00"
income = [{ date = "2027-01-20", amount = "3000.00" }]
[[accounts]]
agreement = "AGR-EMPTY"
balance = "0.00"
[[accounts]]
agreement = "AGR-FLAKY"
balance = "5000.00"
unknown_first = 1
"#;

/// Four loans (paid in full, in ladder steps then on payday, never, after an unknown result)
/// run from before the first due date to past the second.
async fn realistic(backend: Backend) -> TestApp {
    let app = spawn_app(backend, SCENARIO).await;
    let two = [("2027-01-15", "1000.00"), ("2027-02-15", "1000.00")];
    let loans = serde_json::json!([
        loan("L1", "unionpay", "AGR-RICH", &two),
        loan("L2", "bank", "AGR-SHORT", &two),
        loan("L3", "wechat", "AGR-EMPTY", &two),
        loan("L4", "unionpay", "AGR-FLAKY", &two),
    ]);
    app.import_json(&loans.to_string()).await;
    app.run_until(local(SH, 2027, 1, 10, 0, 0), local(SH, 2027, 2, 20, 0, 0))
        .await;
    app
}

/// The real binary against the test's database.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_repayd"))
        .arg("--database")
        .arg(&app.engine.db.display_url)
        .args(args)
        .current_dir(app.dir.path())
        .env_remove("REPAYD_DATABASE_URL")
        .output()
        .unwrap()
}

async fn check(app: &TestApp) -> VerifyReport {
    verify(&app.engine.db, &VerifyOptions::default())
        .await
        .expect("verify runs")
}

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sql)
        .execute(&app.engine.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn assert_names(r: &VerifyReport, table: &str, key: &str, message: &str) {
    assert!(
        r.findings
            .iter()
            .any(|f| f.table == table && f.key.contains(key) && f.message.contains(message)),
        "expected a finding on {table} {key} ({message}); got:\n{}",
        r.findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn green_after_a_realistic_run(backend: Backend) {
    let app = realistic(backend).await;
    let steps = app
        .scalar_i64("SELECT COUNT(*) FROM attempts WHERE status = 'succeeded' AND ladder_step > 0")
        .await;
    assert!(steps > 0, "some debits were partial ladder steps");
    let r = check(&app).await;
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert!(r.rows_of("installments.components") == 8, "{}", r.summary());
    assert!(r.rows_of("attempts.postings") >= 5, "{}", r.summary());
    assert!(r.summary().starts_with("verify: clean"), "{}", r.summary());
    app.cleanup().await;
}
both_backends!(green_after_a_realistic_run);

async fn paid_amount_edited_behind_our_back(backend: Backend) {
    let app = realistic(backend).await;
    exec(
        &app,
        "UPDATE installments SET paid_interest = paid_interest - 1 WHERE loan_id = 'L1' AND seq = 1",
    )
    .await;
    let r = check(&app).await;
    assert!(!r.is_clean());
    assert_names(
        &r,
        "installments",
        "loan_id=L1 seq=1 component=interest",
        "paid_interest is 12.49",
    );
    assert_names(
        &r,
        "installments",
        "loan_id=L1 seq=1",
        "status paid with 0.01 outstanding",
    );
    app.cleanup().await;
}
both_backends!(paid_amount_edited_behind_our_back);

async fn succeeded_attempt_without_posting(backend: Backend) {
    let app = realistic(backend).await;
    exec(
        &app,
        "INSERT INTO attempts (id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, \
         amount, status, local_date, created_at, updated_at) \
         SELECT 990001, loan_id, 2, id, channel, '899999999999', 'manual', 0, 5000, 'succeeded', '2027-02-16', 0, 0 \
         FROM mandates WHERE loan_id = 'L3'",
    )
    .await;
    let r = check(&app).await;
    assert_names(
        &r,
        "attempts",
        "id=990001 channel=wechat order_no=899999999999",
        "no repayment entry",
    );
    assert_eq!(r.total_findings, 1, "{:#?}", r.findings);
    app.cleanup().await;
}
both_backends!(succeeded_attempt_without_posting);

async fn order_number_used_twice(backend: Backend) {
    let app = realistic(backend).await;
    // Someone rebuilt the table without its UNIQUE (channel, order_no).
    exec(&app, "CREATE TABLE attempts_copy AS SELECT * FROM attempts").await;
    exec(&app, "DROP TABLE attempts").await;
    exec(&app, "ALTER TABLE attempts_copy RENAME TO attempts").await;
    exec(
        &app,
        "INSERT INTO attempts (id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, \
         amount, status, local_date, created_at, updated_at, queries) \
         SELECT 990002, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, amount, 'failed', \
         local_date, created_at, updated_at, 0 FROM attempts WHERE id = (SELECT MIN(id) FROM attempts)",
    )
    .await;
    let (channel, order_no) = (
        app.scalar_str("SELECT channel FROM attempts WHERE id = 990002")
            .await,
        app.scalar_str("SELECT order_no FROM attempts WHERE id = 990002")
            .await,
    );
    let r = check(&app).await;
    assert_names(
        &r,
        "attempts",
        &format!("channel={channel} order_no={order_no}"),
        "used by 2 attempts",
    );
    app.cleanup().await;
}
both_backends!(order_number_used_twice);

async fn unbalanced_entry(backend: Backend) {
    let app = realistic(backend).await;
    exec(
        &app,
        "INSERT INTO journal_entries (id, kind, loan_id, posted_at, memo, currency) VALUES \
         (990003, 'adjustment', 'L2', 0, 'by hand', 'CNY'), (990004, 'adjustment', NULL, 0, 'no currency', NULL)",
    )
    .await;
    exec(
        &app,
        "INSERT INTO journal_lines (entry_id, line_no, account, loan_id, debit, credit) VALUES \
         (990003, 1, '1200', 'L2', 10000, 0), (990003, 2, '3100', 'L2', 0, 9999), \
         (990004, 1, '1200', NULL, 500, 0), (990004, 2, '3100', NULL, 0, 500)",
    )
    .await;
    let r = check(&app).await;
    assert_names(
        &r,
        "journal_entries",
        "id=990003",
        "unbalanced: debits 100.00 != credits 99.99",
    );
    assert_names(&r, "journal_lines", "currency=CNY", "trial balance is off");
    assert_names(&r, "journal_entries", "id=990004", "has no currency");
    // The command exits non-zero and prints the row.
    let out = cli(&app, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("journal_entries id=990003: adjustment entry is unbalanced"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("verify: 3 finding(s)"),
        "{stdout}"
    );
    app.cleanup().await;
}
both_backends!(unbalanced_entry);

async fn refund_beyond_the_attempt(backend: Backend) {
    let app = realistic(backend).await;
    let (attempt, amount, entry) = (
        app.scalar_i64("SELECT MIN(id) FROM attempts WHERE status = 'succeeded' AND loan_id = 'L1'")
            .await,
        app.scalar_i64("SELECT amount FROM attempts WHERE id = (SELECT MIN(id) FROM attempts WHERE status = 'succeeded' AND loan_id = 'L1')")
            .await,
        app.scalar_i64("SELECT id FROM journal_entries WHERE attempt_id = (SELECT MIN(id) FROM attempts WHERE status = 'succeeded' AND loan_id = 'L1')")
            .await,
    );
    let too_much = amount + 100;
    exec(
        &app,
        &format!(
            "INSERT INTO journal_entries (id, kind, loan_id, posted_at, memo, corrects_entry) \
             VALUES (990004, 'refund', 'L1', 0, 'refund', {entry})"
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "INSERT INTO journal_lines (entry_id, line_no, account, loan_id, debit, credit) VALUES \
             (990004, 1, '2100', 'L1', {too_much}, 0), (990004, 2, '1200', 'L1', 0, {too_much})"
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "INSERT INTO refunds (id, attempt_id, loan_id, kind, amount, reason, actor, entry_id, created_at) \
             VALUES (1, {attempt}, 'L1', 'overpayment', {too_much}, 'test', 'tester', 990004, 0)"
        ),
    )
    .await;
    let r = check(&app).await;
    assert_names(
        &r,
        "refunds",
        &format!("attempt_id={attempt}"),
        "but the attempt collected",
    );
    app.cleanup().await;
}
both_backends!(refund_beyond_the_attempt);

async fn finding_limit_keeps_counting(backend: Backend) {
    let app = realistic(backend).await;
    exec(&app, "UPDATE installments SET paid_fee = paid_fee + 1").await;
    let r = verify(
        &app.engine.db,
        &VerifyOptions {
            limit: 2,
            progress: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.findings.len(), 2);
    assert!(r.total_findings >= 8, "{}", r.summary());
    assert!(r.summary().contains("first 2 shown"), "{}", r.summary());
    app.cleanup().await;
}
both_backends!(finding_limit_keeps_counting);

/// What happens to a loan after its first due date, behind the debits.
#[derive(Debug, Clone, Copy)]
enum Correction {
    None,
    /// Reverse this percentage of its first successful debit (re-opens what it paid).
    Reverse(u32),
    /// Refund this percentage of its first successful debit as overpayment (refused unless
    /// that debit overpaid; refusals are part of the test).
    RefundOverpayment(u32),
    WriteOff,
}

/// A random portfolio: per loan an installment amount, the account's balance as a share of
/// it (empty, short, enough, more than enough), optional salary on payday, an unknown first
/// answer, and a correction.
#[derive(Debug, Clone)]
struct LoanCase {
    principal: u32,
    balance_pct: u32,
    salary: bool,
    unknown_first: bool,
    installments: usize,
    correction: Correction,
}

fn correction() -> impl Strategy<Value = Correction> {
    prop_oneof![
        Just(Correction::None),
        (1u32..=100).prop_map(Correction::Reverse),
        (1u32..=100).prop_map(Correction::RefundOverpayment),
        Just(Correction::WriteOff),
    ]
}

fn loan_case() -> impl Strategy<Value = LoanCase> {
    (
        200u32..3000,
        0u32..260,
        any::<bool>(),
        any::<bool>(),
        1usize..3,
        correction(),
    )
        .prop_map(
            |(principal, balance_pct, salary, unknown_first, installments, correction)| LoanCase {
                principal,
                balance_pct,
                salary,
                unknown_first,
                installments,
                correction,
            },
        )
}

async fn must_be_green(app: &TestApp, when: &str) -> Result<(), TestCaseError> {
    let r = check(app).await;
    prop_assert!(r.is_clean(), "{when}: {:#?}", r.findings);
    Ok(())
}

/// Apply a loan's correction at `now`; refusals (nothing to refund or write off) are fine.
async fn correct(app: &TestApp, loan: &str, c: Correction, now: chrono::DateTime<chrono::Utc>) {
    use repayd::recon::{refund, write_off_admin, RefundKind, RefundRequest};
    let first: Option<(i64, i64)> = sqlx::query_as(
        "SELECT id, amount FROM attempts WHERE loan_id = $1 AND status = 'succeeded' ORDER BY id LIMIT 1",
    )
    .bind(loan)
    .fetch_optional(&app.engine.db.pool)
    .await
    .unwrap();
    let req = |pct: u32, kind| {
        first.map(|(id, amount)| RefundRequest {
            attempt_id: id,
            amount: rust_decimal::Decimal::new((amount * pct as i64 / 100).max(1), 2),
            kind,
            reason: "property test".into(),
            actor: "tester".into(),
        })
    };
    match c {
        Correction::None => {}
        Correction::Reverse(pct) => {
            if let Some(r) = req(pct, RefundKind::Erroneous) {
                refund(&app.engine, &r, now)
                    .await
                    .expect("reversal within the debit");
            }
        }
        Correction::RefundOverpayment(pct) => {
            if let Some(r) = req(pct, RefundKind::Overpayment) {
                let _ = refund(&app.engine, &r, now).await;
            }
        }
        Correction::WriteOff => {
            let _ = write_off_admin(&app.engine, loan, "property test", "tester", now).await;
        }
    }
}

/// Debits (partial, stepped, unknown), then statements reconciled and settled, refunds,
/// reversals and write-offs, then more debits: verify is green at each stage.
/// Returns how many refunds, write-offs and non-empty settlements were made.
async fn random_run(backend: Backend, cases: &[LoanCase]) -> Result<[i64; 3], TestCaseError> {
    let mut scenario = String::from("timezone = \"Asia/Shanghai\"\n");
    let mut loans = Vec::new();
    let dues = ["2027-01-15", "2027-02-15"];
    for (i, c) in cases.iter().enumerate() {
        let agreement = format!("AGR-{i}");
        // principal (yuan) × pct / 100, in cents
        let balance = c.principal as u64 * c.balance_pct as u64;
        scenario.push_str(&format!(
            "[[accounts]]\nagreement = \"{agreement}\"\nbalance = \"{}.{:02}\"\nunknown_first = {}\n",
            balance / 100,
            balance % 100,
            u32::from(c.unknown_first)
        ));
        if c.salary {
            scenario.push_str("income = [{ date = \"2027-01-20\", amount = \"2000.00\" }]\n");
        }
        let channel = ["unionpay", "wechat", "bank"][i % 3];
        let principal = format!("{}.00", c.principal);
        let inst: Vec<(&str, &str)> = dues[..c.installments]
            .iter()
            .map(|d| (*d, principal.as_str()))
            .collect();
        loans.push(loan(&format!("P{i}"), channel, &agreement, &inst));
    }
    let app = spawn_app(backend, &scenario).await;
    app.import_json(&serde_json::Value::Array(loans).to_string())
        .await;
    app.run_until(local(SH, 2027, 1, 12, 0, 0), local(SH, 2027, 1, 25, 0, 0))
        .await;
    must_be_green(&app, "after the first due date").await?;

    let now = local(SH, 2027, 1, 25, 12, 0);
    for channel in ["unionpay", "wechat", "bank"] {
        for day in ["2027-01-14", "2027-01-15", "2027-01-20"] {
            let file = app.statement_file(channel, common::date(day)).await;
            repayd::recon::import_file(&app.engine, channel, &file, Some(common::date(day)), now)
                .await
                .expect("statement of the simulator imports");
        }
    }
    for (i, c) in cases.iter().enumerate() {
        correct(&app, &format!("P{i}"), c.correction, now).await;
    }
    must_be_green(&app, "after statements and corrections").await?;

    app.run_until(now, local(SH, 2027, 2, 20, 0, 0)).await;
    must_be_green(&app, "after the second due date").await?;
    app.assert_sim_matches_ledger().await;
    let made = [
        app.scalar_i64("SELECT COUNT(*) FROM refunds").await,
        app.scalar_i64("SELECT COUNT(*) FROM write_offs").await,
        app.scalar_i64("SELECT COUNT(*) FROM settlements WHERE gross > 0")
            .await,
    ];
    app.cleanup().await;
    Ok(made)
}

/// The corrections of the property test, each certainly made, on both backends.
async fn corrections_keep_verify_green(backend: Backend) {
    let case = |principal, balance_pct, installments, correction| LoanCase {
        principal,
        balance_pct,
        salary: false,
        unknown_first: false,
        installments,
        correction,
    };
    let cases = [
        case(1000, 250, 2, Correction::Reverse(50)),
        case(800, 0, 1, Correction::WriteOff),
        case(600, 250, 2, Correction::Reverse(100)),
        case(700, 60, 2, Correction::WriteOff),
        case(900, 250, 1, Correction::RefundOverpayment(10)),
    ];
    let [refunds, write_offs, settlements] = random_run(backend, &cases).await.unwrap();
    assert!(refunds >= 2, "two reversals at least ({refunds})");
    assert_eq!(write_offs, 2);
    assert!(settlements > 0);
}
both_backends!(corrections_keep_verify_green);

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn random_debits_and_corrections_keep_verify_green(cases in proptest::collection::vec(loan_case(), 1..5)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(random_run(Backend::Sqlite, &cases))?;
    }
}

/// The CSV's rows as (section, channel, key) → (count, amount).
/// (section, channel, currency, key) → (count, amount).
fn read_daily(
    path: &std::path::Path,
) -> std::collections::HashMap<(String, String, String, String), (i64, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "date",
            "section",
            "channel",
            "currency",
            "key",
            "count",
            "succeeded",
            "amount",
            "rate"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                (
                    rec[1].to_string(),
                    rec[2].to_string(),
                    rec[3].to_string(),
                    rec[4].to_string(),
                ),
                (rec[5].parse().unwrap(), rec[7].to_string()),
            )
        })
        .collect()
}

async fn daily_report_of_a_realistic_run(backend: Backend) {
    let app = realistic(backend).await;
    exec(
        &app,
        "INSERT INTO recon_items (id, channel, recon_date, order_no, outcome, their_amount, case_status, evidence, created_at) VALUES \
         (1, 'bank', '2027-01-15', 'BK1', 'matched', 10000, NULL, '{}', 0), \
         (2, 'bank', '2027-01-15', 'BK2', 'amount_differs', 5000, 'open', '{}', 0)",
    )
    .await;
    let out = app.dir.path().join("reports");
    let files = repayd::ops::daily::write_daily(
        &app.engine.db,
        &app.engine.policies,
        common::date("2027-01-15"),
        &out,
    )
    .await
    .unwrap();
    assert_eq!(files.csv, out.join("daily-2027-01-15.csv"));
    let rows = read_daily(&files.csv);
    // The realistic book is in CNY; recon items planted without an attempt have no currency.
    let key = |s: &str, c: &str, cur: &str, k: &str| {
        (s.to_string(), c.to_string(), cur.to_string(), k.to_string())
    };
    let n = app
        .scalar_i64("SELECT COUNT(*) FROM attempts WHERE status = 'succeeded' AND local_date = '2027-01-15'")
        .await;
    let amount = app
        .scalar_i64("SELECT CAST(SUM(amount) AS BIGINT) FROM attempts WHERE status = 'succeeded' AND local_date = '2027-01-15'")
        .await;
    assert_eq!(
        rows[&key("collections", "all", "CNY", "succeeded")],
        (n, rust_decimal::Decimal::new(amount, 2).to_string())
    );
    let tried_bank = app
        .scalar_i64("SELECT COUNT(*) FROM attempts WHERE channel = 'bank' AND local_date = '2027-01-15' AND ladder_step = 1")
        .await;
    assert!(tried_bank > 0, "the short borrower stepped down the ladder");
    assert_eq!(
        rows[&key("success_by_ladder_step", "bank", "CNY", "step 2")].0,
        tried_bank
    );
    assert_eq!(rows[&key("recon", "all", "", "matched")].0, 1);
    assert_eq!(rows[&key("recon", "bank", "", "open cases")].0, 1);
    let run = cli(
        &app,
        &[
            "report",
            "daily",
            "--date",
            "2027-01-15",
            "--out",
            "cli-reports",
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("daily-2027-01-15.svg"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(app.dir.path().join("cli-reports/daily-2027-01-15.csv")).unwrap(),
        std::fs::read_to_string(&files.csv).unwrap()
    );
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Success rate by ladder step"));

    // A day later, as of then: the short borrower (bank) still owed what the due date left,
    // although it is paid now.
    let files = repayd::ops::daily::write_daily(
        &app.engine.db,
        &app.engine.policies,
        common::date("2027-01-16"),
        &out,
    )
    .await
    .unwrap();
    let rows = read_daily(&files.csv);
    assert_eq!(
        app.scalar_str("SELECT status FROM installments WHERE loan_id = 'L2' AND seq = 1")
            .await,
        "paid"
    );
    let due = app
        .scalar_i64("SELECT principal + interest + fee + penalty FROM installments WHERE loan_id = 'L2' AND seq = 1")
        .await;
    let paid_by_then = app
        .scalar_i64("SELECT CAST(COALESCE(SUM(amount),0) AS BIGINT) FROM attempts WHERE loan_id = 'L2' AND status = 'succeeded' AND local_date <= '2027-01-16'")
        .await;
    assert_eq!(
        rows[&key("delinquency_bucket", "bank", "CNY", "M1")],
        (
            1,
            rust_decimal::Decimal::new(due - paid_by_then, 2).to_string()
        )
    );
    app.cleanup().await;
}
both_backends!(daily_report_of_a_realistic_run);

async fn write_off_edited_behind_our_back(backend: Backend) {
    let app = realistic(backend).await;
    let now = local(SH, 2027, 2, 20, 12, 0);
    repayd::recon::write_off_admin(&app.engine, "L3", "uncollectable", "tester", now)
        .await
        .unwrap();
    assert!(
        check(&app).await.is_clean(),
        "a write-off keeps verify green"
    );
    exec(
        &app,
        "UPDATE write_offs SET amount = amount + 1 WHERE loan_id = 'L3'",
    )
    .await;
    exec(
        &app,
        "UPDATE installments SET wo_principal = wo_principal - 1 WHERE loan_id = 'L3' AND seq = 2",
    )
    .await;
    let r = check(&app).await;
    assert_names(
        &r,
        "write_offs",
        "loan_id=L3",
        "but write_offs.amount sums to",
    );
    assert_names(
        &r,
        "installments",
        "loan_id=L3 seq=2 component=principal",
        "but write-off entries credit",
    );
    app.cleanup().await;
}
both_backends!(write_off_edited_behind_our_back);
