//! Hardening: hostile amounts, dates, accounts and borrower records are refused at the door
//! with located errors, and the book can never grow past what its sums can hold.

use crate::common;

use common::{loan_json, spawn_app, Backend, TestApp};
use repayd::domain::import::{self, ImportError};
use serde_json::{json, Value};

fn channels() -> Vec<String> {
    vec!["unionpay".into(), "wechat".into(), "bank".into()]
}

/// Parse and validate `loans` the way `repayd loans import` does.
fn read(app: &TestApp, name: &str, loans: &Value) -> Result<Vec<import::LoanInput>, ImportError> {
    let path = app.dir.path().join(name);
    std::fs::write(&path, loans.to_string()).unwrap();
    repayd::ops::import::read_file(&path, &app.engine.policies, &channels())
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

async fn store(
    app: &TestApp,
    loans: &[import::LoanInput],
) -> Result<(), repayd::store::import::StoreLoansError> {
    let mut tx = app.engine.db.pool.begin().await.unwrap();
    let r = repayd::store::import::store_loans(&mut tx, loans, 0).await;
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
    let text = refused(repayd::ops::import::read_file(
        &path,
        &app.engine.policies,
        &channels(),
    ));
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
    let text = refused(repayd::ops::import::read_file(
        &path,
        &app.engine.policies,
        &channels(),
    ));
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
    let report = repayd::store::verify::verify(&app.engine.db, &Default::default())
        .await
        .expect("verify adds the whole book");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    app.cleanup().await;
}
both_backends!(the_book_has_a_ceiling_and_its_sums_fit);

// ---------------------------------------------------------------------------------------
// The engine: one bad loan never stops the others, and a crash or a busy loan drops no
// due work.

const SH: &str = "Asia/Shanghai";
const SCENARIO: &str = "timezone = \"Asia/Shanghai\"\n";

fn test_loan(id: &str, due: &str) -> Value {
    loan_json(
        id,
        SH,
        "test",
        None,
        false,
        &[("bank", &format!("A-{id}"))],
        &[(due, "100.00")],
    )
}

async fn import_loans(app: &TestApp, ids: &[&str]) {
    let loans: Vec<Value> = ids.iter().map(|id| test_loan(id, "2027-01-15")).collect();
    app.import_json(&Value::Array(loans).to_string()).await;
}

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sql)
        .execute(&app.engine.db.pool)
        .await
        .expect(sql);
}

async fn parked_reason(app: &TestApp, loan: &str) -> Option<String> {
    sqlx::query_scalar("SELECT parked_reason FROM loans WHERE id = $1")
        .bind(loan)
        .fetch_one(&app.engine.db.pool)
        .await
        .unwrap()
}

async fn statuses(app: &TestApp, loan: &str) -> Vec<String> {
    app.attempts(loan).await.into_iter().map(|a| a.1).collect()
}

fn cli_admin() -> repayd::domain::actor::Actor {
    repayd::domain::actor::Actor {
        name: "test-admin".into(),
        role: repayd::domain::actor::Role::Admin,
    }
}

/// The tester's poison loan (amounts whose sum does not fit), a stored date and a stored
/// zone that do not decode: each loan is parked with its reason, the run goes on for the
/// others, again on the next run, and the parked loans' actions stay pending for later.
async fn bad_stored_loans_are_parked_and_the_rest_collected(backend: Backend) {
    let app = spawn_app(backend, SCENARIO).await;
    import_loans(&app, &["G1", "P1", "D1", "Z1", "G2"]).await;
    exec(
        &app,
        "UPDATE installments SET principal = 6000000000000000000, interest = 6000000000000000000 WHERE loan_id = 'P1'",
    )
    .await;
    exec(
        &app,
        "UPDATE installments SET due_date = '2027-13-45' WHERE loan_id = 'D1'",
    )
    .await;
    exec(&app, "UPDATE loans SET tz = 'Mars/Olympus' WHERE id = 'Z1'").await;
    let summary = app.run(common::local(SH, 2027, 1, 15, 8, 1)).await;
    assert_eq!(summary.loans_parked, 3, "{summary:?}");
    for good in ["G1", "G2"] {
        assert_eq!(statuses(&app, good).await, ["succeeded"], "{good}");
    }
    let p1 = parked_reason(&app, "P1").await.expect("P1 parked");
    assert!(p1.contains("largest amount"), "{p1}");
    let d1 = parked_reason(&app, "D1").await.expect("D1 parked");
    assert!(d1.contains("stored due_date `2027-13-45`"), "{d1}");
    let z1 = parked_reason(&app, "Z1").await.expect("Z1 parked");
    assert!(z1.contains("stored tz `Mars/Olympus`"), "{z1}");
    // A restart (the next run) is not stopped by them either, and they keep their work.
    app.run(common::local(SH, 2027, 1, 15, 23, 1)).await;
    for bad in ["P1", "D1", "Z1"] {
        assert!(app.attempts(bad).await.is_empty(), "{bad} not attempted");
        let sql = format!(
            "SELECT COUNT(*) FROM actions WHERE loan_id = '{bad}' AND kind = 'attempt' AND status <> 'pending'"
        );
        assert_eq!(
            app.scalar_i64(&sql).await,
            0,
            "{bad}'s actions stay pending"
        );
    }
    // A person fixes the data and unparks: the loan is caught up in one attempt.
    exec(
        &app,
        "UPDATE installments SET principal = 10000, interest = 0 WHERE loan_id = 'P1'",
    )
    .await;
    let state = repayd::ops::unpark(
        &app.engine,
        &cli_admin(),
        "P1",
        "amounts corrected",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(state.parked_at.is_none());
    let again = repayd::ops::unpark(&app.engine, &cli_admin(), "P1", "x", chrono::Utc::now()).await;
    assert!(again.is_err(), "not parked any more");
    app.run(common::local(SH, 2027, 1, 16, 9, 1)).await;
    assert_eq!(statuses(&app, "P1").await, ["succeeded"]);
    let audit = app
        .scalar_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'unpark' AND loan_id = 'P1'")
        .await;
    assert_eq!(audit, 1, "unparking is audited");
    app.cleanup().await;
}
both_backends!(bad_stored_loans_are_parked_and_the_rest_collected);

/// Something a test channel does before it passes a debit on to the real simulator.
#[async_trait::async_trait]
trait BeforeSubmit: Send + Sync {
    async fn before_submit(&self, req: &repayd::domain::channel::DebitRequest);
}

/// A channel adapter that runs its hook, then forwards everything to the simulator.
struct Hooked<H> {
    hook: H,
    inner: std::sync::Arc<dyn repayd::domain::channel::Channel>,
}

#[async_trait::async_trait]
impl<H: BeforeSubmit> repayd::domain::channel::Channel for Hooked<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn submit(
        &self,
        req: &repayd::domain::channel::DebitRequest,
    ) -> Result<repayd::domain::channel::DebitOutcome, repayd::domain::channel::ChannelError> {
        self.hook.before_submit(req).await;
        self.inner.submit(req).await
    }
    async fn query(
        &self,
        order_no: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<repayd::domain::channel::QueryOutcome, repayd::domain::channel::ChannelError> {
        self.inner.query(order_no, at).await
    }
    async fn statement(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Vec<repayd::domain::channel::StatementLine>, repayd::domain::channel::ChannelError>
    {
        self.inner.statement(date).await
    }
}

/// Panics when asked to debit one agreement (before it sends anything).
struct PanicsOn {
    agreement: String,
}

#[async_trait::async_trait]
impl BeforeSubmit for PanicsOn {
    async fn before_submit(&self, req: &repayd::domain::channel::DebitRequest) {
        if req.agreement == self.agreement {
            panic!("adapter bug on {}", req.order_no);
        }
    }
}

/// A panic in one loan's pursuit is caught at the loan: it is parked with the panic's
/// message, its attempt (recorded before the call) is left to be queried, never resent, and
/// the other loans of the batch are collected.
async fn a_panic_parks_its_loan_and_the_run_goes_on(backend: Backend) {
    let mut app = spawn_app(backend, SCENARIO).await;
    let inner = app.engine.channels["bank"].clone();
    app.engine.channels.insert(
        "bank".into(),
        std::sync::Arc::new(Hooked {
            hook: PanicsOn {
                agreement: "A-X1".into(),
            },
            inner,
        }),
    );
    import_loans(&app, &["G1", "X1", "G2"]).await;
    let summary = app.run(common::local(SH, 2027, 1, 15, 8, 1)).await;
    assert_eq!(summary.loans_parked, 1, "{summary:?}");
    let why = parked_reason(&app, "X1").await.expect("X1 parked");
    assert!(
        why.contains("panicked") && why.contains("adapter bug"),
        "{why}"
    );
    assert_eq!(
        statuses(&app, "X1").await,
        ["unknown"],
        "queried, never resent"
    );
    for good in ["G1", "G2"] {
        assert_eq!(statuses(&app, good).await, ["succeeded"], "{good}");
    }
    app.run(common::local(SH, 2027, 1, 15, 23, 1)).await;
    assert_eq!(
        app.attempts("X1").await.len(),
        1,
        "no second attempt while parked"
    );
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(a_panic_parks_its_loan_and_the_run_goes_on);

/// A loan another live instance holds keeps its due actions pending (never ended as
/// "pursued by another instance"); once that instance's heartbeat is stale its hold is
/// released and the loan is caught up. An instance of this host whose process is gone is
/// known dead at once, whatever its last heartbeat.
async fn loans_held_elsewhere_keep_their_work(backend: Backend) {
    let app = spawn_app(backend, SCENARIO).await;
    import_loans(&app, &["H1", "H2", "F1"]).await;
    let wall = chrono::Utc::now().timestamp_millis();
    exec(&app, &format!(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ('elsewhere', 'other-host', 1, {wall}, {wall})"
    ))
    .await;
    let host = repayd::engine::instance::host_identity();
    exec(&app, &format!(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ('gone', '{host}', 2147483646, {wall}, {wall})"
    ))
    .await;
    exec(
        &app,
        &format!(
            "UPDATE loans SET busy_owner = 'elsewhere', busy_until = {} WHERE id = 'H1'",
            wall + 3_600_000
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "UPDATE loans SET busy_owner = 'gone', busy_until = {} WHERE id = 'H2'",
            wall + 3_600_000
        ),
    )
    .await;
    let summary = app.run(common::local(SH, 2027, 1, 15, 8, 1)).await;
    assert!(
        app.attempts("H1").await.is_empty(),
        "held by a live instance"
    );
    assert_eq!(
        statuses(&app, "H2").await,
        ["succeeded"],
        "its holder's pid is gone"
    );
    assert_eq!(statuses(&app, "F1").await, ["succeeded"]);
    let merged = "SELECT COUNT(*) FROM actions WHERE note LIKE '%another instance%'";
    assert_eq!(app.scalar_i64(merged).await, 0, "{summary:?}");
    let pending = "SELECT COUNT(*) FROM actions WHERE loan_id = 'H1' AND kind = 'attempt' AND status = 'pending' AND slot = 'due:08:00'";
    assert_eq!(
        app.scalar_i64(pending).await,
        1,
        "H1's due action is still pending"
    );
    // The other instance stops sending heartbeats: its hold is released, H1 catches up.
    exec(
        &app,
        "UPDATE instances SET heartbeat_at = 0 WHERE id = 'elsewhere'",
    )
    .await;
    app.run(common::local(SH, 2027, 1, 15, 9, 0)).await;
    assert_eq!(statuses(&app, "H1").await, ["succeeded"]);
    let held = "SELECT COUNT(*) FROM loans WHERE busy_owner IS NOT NULL";
    assert_eq!(app.scalar_i64(held).await, 0, "no hold is left behind");
    app.cleanup().await;
}
both_backends!(loans_held_elsewhere_keep_their_work);

/// After downtime the T-3 and T-1 advance notices are due together: only T-1 goes out, and
/// T-3 is ended as superseded.
async fn catch_up_sends_only_the_latest_pre_due_notice(backend: Backend) {
    let app = spawn_app(backend, SCENARIO).await;
    let loan = loan_json(
        "N1",
        SH,
        "standard",
        None,
        false,
        &[("bank", "A-N1")],
        &[("2027-01-15", "100.00")],
    );
    app.import_json(&json!([loan]).to_string()).await;
    app.run(common::local(SH, 2027, 1, 14, 11, 0)).await;
    let sql = "SELECT note FROM actions WHERE loan_id = 'N1' AND slot = 'pre:T-3'";
    assert_eq!(app.scalar_str(sql).await, "stale: superseded by pre:T-1");
    let pre = "SELECT COUNT(*) FROM notices WHERE loan_id = 'N1' AND kind = 'pre_due'";
    let per_channel = app
        .scalar_i64(
            "SELECT COUNT(DISTINCT channel) FROM notices WHERE loan_id = 'N1' AND kind = 'pre_due'",
        )
        .await;
    assert_eq!(
        app.scalar_i64(pre).await,
        per_channel,
        "one pre-due notice per channel"
    );
    app.cleanup().await;
}
both_backends!(catch_up_sends_only_the_latest_pre_due_notice);

/// An attempt whose query keeps answering a code no policy classifies is not left unknown
/// in silence: after `unknown_case_after_queries` it is an open reconciliation case for a
/// person (once), while it stays blocked and keeps being queried. The simulator's own
/// "timed out, not applied" answer is a soft failure in the shipped policies.
async fn unresolvable_unknowns_go_to_a_person(backend: Backend) {
    let scenario =
        "timezone = \"Asia/Shanghai\"\n[[accounts]]\nagreement = \"A-U1\"\nfail = \"WEIRD_CODE\"\n";
    let mut app = spawn_app(backend, scenario).await;
    app.engine.cfg.unknown_case_after_queries = 3;
    import_loans(&app, &["U1"]).await;
    let start = common::local(SH, 2027, 1, 15, 8, 1);
    app.run_until(start, start + chrono::Duration::days(3))
        .await;
    assert_eq!(statuses(&app, "U1").await, ["unknown"], "never resubmitted");
    let cases = "SELECT COUNT(*) FROM recon_items WHERE outcome = 'unresolved' AND case_status = 'open' AND our_status = 'unknown'";
    assert_eq!(app.scalar_i64(cases).await, 1, "one case for the person");
    let queries = app
        .scalar_i64("SELECT queries FROM attempts WHERE loan_id = 'U1'")
        .await;
    assert!(queries > 3, "still queried ({queries})");
    for p in ["standard", "gentle", "test"] {
        let policy = app.engine.policies.get(p).unwrap();
        assert_eq!(
            policy.classify("bank", "TIMEOUT_NOT_APPLIED"),
            repayd::domain::FailureClass::Soft,
            "{p}"
        );
    }
    app.cleanup().await;
}
both_backends!(unresolvable_unknowns_go_to_a_person);

/// An attempt recorded by an instance that died before calling the channel: its query
/// answers "not found", it is closed as never sent, and reconciliation raises no case for it.
async fn an_attempt_that_never_left_is_closed_without_a_case(backend: Backend) {
    let app = spawn_app(backend, SCENARIO).await;
    import_loans(&app, &["W1"]).await;
    let at = common::local(SH, 2027, 1, 15, 8, 0);
    let ms = at.timestamp_millis();
    let mandate = app
        .scalar_i64("SELECT id FROM mandates WHERE loan_id = 'W1'")
        .await;
    exec(&app, &format!(
        "INSERT INTO attempts (id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, amount, \
         status, local_date, created_at, updated_at, lease_until, lease_owner, submitted_by, queries) VALUES \
         (900001, 'W1', 1, {mandate}, 'bank', 'NEVERSENT00000001', 'due', 0, 10000, 'submitted', '2027-01-15', \
         {ms}, {ms}, {ms}, 'dead-instance', 'dead-instance', 0)"
    ))
    .await;
    app.run_until(at, at + chrono::Duration::hours(20)).await;
    let never = "SELECT status || ':' || code FROM attempts WHERE id = 900001";
    assert_eq!(app.scalar_str(never).await, "failed:NOT_FOUND");
    let day = common::date("2027-01-15");
    let lines = repayd::domain::channel::Channel::statement(app.sim("bank").as_ref(), day)
        .await
        .unwrap();
    repayd::recon::import_lines(&app.engine, "bank", day, &lines, "test", chrono::Utc::now())
        .await
        .unwrap();
    let item = "SELECT outcome FROM recon_items WHERE order_no = 'NEVERSENT00000001'";
    assert_eq!(app.scalar_str(item).await, "matched");
    let open = "SELECT COUNT(*) FROM recon_items WHERE case_status = 'open'";
    assert_eq!(app.scalar_i64(open).await, 0, "no case for a person");
    app.cleanup().await;
}
both_backends!(an_attempt_that_never_left_is_closed_without_a_case);

/// Channel callbacks are recorded while the engine writes big batches: on SQLite the
/// webhook's transaction takes the write lock up front and waits its turn, so none is
/// answered 500 ("database is locked").
async fn callbacks_are_recorded_while_the_engine_writes(backend: Backend) {
    use repayd::adapters::channel::protocol;
    let mut cfg = repayd::app::config::Config::default();
    for c in cfg.channels.iter_mut() {
        c.secret = "cb-secret".into();
    }
    let daemon = std::sync::Arc::new(repayd::web::DaemonState::default());
    let app = common::web::spawn_web_with(backend, SCENARIO, move |e| {
        repayd::app::daemon::api_state(e, daemon, &cfg)
    })
    .await;
    let loans: Vec<Value> = (0..1500)
        .map(|i| test_loan(&format!("C{i:04}"), "2027-01-15"))
        .collect();
    app.import(&Value::Array(loans)).await;
    let run = app.engine.run_once(common::local(SH, 2027, 1, 15, 8, 1));
    let mut statuses = Vec::new();
    let calls = (0..300).map(|i| {
        let cb = protocol::Callback {
            order_no: format!("X{i:011}"),
            outcome: repayd::domain::channel::DebitOutcome::Failed {
                code: "NSF".into(),
                message: "late".into(),
            },
        };
        let body = serde_json::to_vec(&cb).unwrap();
        let ts = protocol::now_unix();
        app.client
            .post(app.url("/webhooks/channels/bank"))
            .header(protocol::TIMESTAMP_HEADER, ts.to_string())
            .header(
                protocol::SIGNATURE_HEADER,
                protocol::sign(b"cb-secret", ts, &body),
            )
            .body(body)
            .send()
    });
    let fire = async {
        use futures::StreamExt;
        let mut stream = futures::stream::iter(calls).buffer_unordered(16);
        while let Some(r) = stream.next().await {
            statuses.push(r.unwrap().status().as_u16());
        }
    };
    let (summary, ()) = tokio::join!(run, fire);
    let summary = summary.unwrap();
    assert!(summary.total_attempts() >= 1500, "{summary:?}");
    let errors = statuses.iter().filter(|s| **s >= 500).count();
    assert_eq!(errors, 0, "callbacks answered 5xx: {statuses:?}");
    let recorded = app
        .scalar_i64("SELECT COUNT(*) FROM channel_callbacks")
        .await;
    assert_eq!(recorded, 300, "every callback recorded");
    app.cleanup().await;
}
both_backends!(callbacks_are_recorded_while_the_engine_writes);

/// A parked loan is visible where people look: the loan in the API (with its reason), the
/// loan list's `parked` filter, `/metrics` and the dashboard; unparking is collections'.
async fn parked_loans_are_visible_and_unparked_by_people(backend: Backend) {
    let app = common::web::spawn_web(backend, SCENARIO).await;
    let loans: Vec<Value> = ["V1", "P1"]
        .iter()
        .map(|id| test_loan(id, "2027-01-15"))
        .collect();
    app.import(&Value::Array(loans)).await;
    sqlx::query("UPDATE installments SET due_date = '2027-13-45' WHERE loan_id = 'P1'")
        .execute(&app.engine.db.pool)
        .await
        .unwrap();
    app.run(common::local(SH, 2027, 1, 15, 8, 1)).await;
    let loan = app.get("/api/v1/loans/P1", Some(&app.viewer)).await;
    assert!(loan.json["parked_at"].is_string(), "{}", loan.text);
    let reason = loan.json["parked_reason"].as_str().unwrap();
    assert!(reason.contains("due_date"), "{reason}");
    let list = app
        .get("/api/v1/loans?parked=true", Some(&app.viewer))
        .await;
    let ids: Vec<&str> = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["P1"], "{}", list.text);
    let bad = app
        .get("/api/v1/loans?parked=maybe", Some(&app.viewer))
        .await;
    assert!(
        bad.status.is_client_error() && bad.text.contains("parked"),
        "{}",
        bad.text
    );
    let metrics = app.get("/metrics", Some(&app.viewer)).await;
    assert!(
        metrics.text.contains("repayd_loans_parked 1"),
        "{}",
        metrics.text
    );
    let home = app.get("/", Some(&app.viewer)).await;
    assert!(home.text.contains("Parked for a person") && home.text.contains("P1"));
    let page = app.get("/loans/P1", Some(&app.viewer)).await;
    assert!(page.text.contains("parked-banner"), "{}", page.text);
    let reason = json!({ "reason": "amounts checked" });
    let denied = app
        .post("/api/v1/loans/P1/unpark", Some(&app.viewer), &reason)
        .await;
    assert_eq!(denied.status.as_u16(), 403);
    let ok = app
        .post("/api/v1/loans/P1/unpark", Some(&app.collections), &reason)
        .await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.text);
    let again = app
        .post("/api/v1/loans/P1/unpark", Some(&app.collections), &reason)
        .await;
    assert_eq!(again.status.as_u16(), 409, "{}", again.text);
    app.cleanup().await;
}
both_backends!(parked_loans_are_visible_and_unparked_by_people);

/// A database an earlier version filled with the poison loan (before the bounds existed):
/// the upgrade parks it, so the engine never touches it and runs for everyone else.
async fn the_upgrade_parks_loans_imported_past_the_bounds(backend: Backend) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, name) = common::create_pg_database().await;
            (url, Some(name))
        }
    };
    let _pg = common::PgGuard::new(pg.clone());
    let tree = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    for f in [
        "0001_core.sql",
        "0002_daemon.sql",
        "0003_workspace.sql",
        "0004_money.sql",
    ] {
        std::fs::copy(format!("{tree}/{f}"), old.join(f)).unwrap();
    }
    {
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO borrowers (id, name, phone, email) VALUES ('B', 'N', '13800000000', 'n@example.com')",
            "INSERT INTO loans (id, borrower_id, currency, tz, policy, content_hash, created_at) VALUES ('OLD', 'B', 'CNY', 'Asia/Shanghai', 'standard', 'h', 0)",
            "INSERT INTO loans (id, borrower_id, currency, tz, policy, content_hash, created_at) VALUES ('FINE', 'B', 'CNY', 'Asia/Shanghai', 'standard', 'h', 0)",
            "INSERT INTO installments (loan_id, seq, due_date, principal, interest, fee) VALUES ('OLD', 1, '2027-01-15', 6000000000000000000, 6000000000000000000, 0)",
            "INSERT INTO installments (loan_id, seq, due_date, principal, interest, fee) VALUES ('FINE', 1, '2027-01-15', 10000, 0, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
    }
    let db = repayd::store::Db::open(&url).await.expect("upgrade");
    let parked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM loans WHERE parked_at IS NOT NULL")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(parked, ["OLD"]);
    db.pool.close().await;
    if let Some(name) = pg {
        common::drop_pg_database(&name).await;
    }
}
both_backends!(the_upgrade_parks_loans_imported_past_the_bounds);

// ---------------------------------------------------------------------------------------
// Fuzzing: seeded, bounded mutations of valid inputs, with hostile tokens spliced in. No
// parser may panic; whatever import accepts stays within the money bounds.

const HOSTILE: &[&str] = &[
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "92233720368547758.07",
    "60000000000000000.00",
    "1000000000000.01",
    "1e30",
    "NaN",
    "-0",
    "0.001",
    "18446744073709551616",
    "1899-12-31",
    "2201-01-01",
    "0000-00-00",
    "9999-12-31T23:59:59Z",
    "+999999-01-01",
    "Mars/Olympus",
    "6222021234567*890",
    "\u{0}",
    "\u{202e}",
    "\"",
    "\\",
    "{",
    "]",
    "null",
    "true",
    ",,,,",
    "\n",
    "END,999999999999",
    "4294967296",
    "-1",
];

fn mutate(text: &str, rng: &mut rand::rngs::StdRng) -> String {
    use rand::Rng;
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.gen_range(1..5) {
        let pos = rng.gen_range(0..=chars.len());
        match rng.gen_range(0..6) {
            0 | 1 => {
                // Replace a token (a run of digits, letters or dots) by a hostile one.
                let end = (pos..chars.len())
                    .find(|&i| !chars[i].is_alphanumeric() && chars[i] != '.' && chars[i] != '-')
                    .unwrap_or(chars.len());
                let start = (0..pos)
                    .rev()
                    .find(|&i| !chars[i].is_alphanumeric() && chars[i] != '.' && chars[i] != '-')
                    .map_or(0, |i| i + 1);
                let t = HOSTILE[rng.gen_range(0..HOSTILE.len())];
                chars.splice(start..end.max(start), t.chars());
            }
            2 => {
                let t = HOSTILE[rng.gen_range(0..HOSTILE.len())];
                chars.splice(pos..pos, t.chars());
            }
            3 if pos < chars.len() => {
                chars.remove(pos);
            }
            4 if pos < chars.len() => {
                let c = chars[rng.gen_range(0..chars.len())];
                chars[pos] = c;
            }
            _ => chars.truncate(pos),
        }
    }
    chars.into_iter().collect()
}

/// Every amount of an accepted loan is within the bounds, and so are its totals.
fn within_bounds(loans: &[import::LoanInput]) {
    use repayd::domain::{bounded_sum, to_minor};
    for l in loans {
        let parts = l
            .installments
            .iter()
            .flat_map(|i| [i.principal, i.interest, i.fee]);
        bounded_sum(parts).expect("accepted loan within the bound");
        for m in &l.mandates {
            for lim in [m.per_debit_limit, m.daily_limit].into_iter().flatten() {
                to_minor(lim).expect("limit fits");
            }
        }
    }
}

fn fuzz_one(kind: &str, text: &str, policies: &repayd::domain::policy::PolicySet) {
    let channels = channels();
    match kind {
        "policy" => {
            let _ = repayd::domain::policy::parse_policy(text, "fuzz.toml");
        }
        "statement" => {
            let rule = repayd::domain::channel::builtin_channels()[1]
                .order_no
                .clone();
            let _ = repayd::domain::statement::parse_statement(text, Some(&rule));
            let _ = repayd::domain::statement::parse_statement(text, None);
        }
        loans => {
            let parsed = match loans {
                "json" => import::parse_json(text, "fuzz.json"),
                "jsonl" => import::parse_jsonl(text, "fuzz.jsonl"),
                _ => repayd::domain::import::csv::parse_csv(text, "fuzz.csv"),
            };
            if let Ok(records) = parsed {
                if let Ok(valid) = import::validate_all(records, policies, &channels) {
                    within_bounds(&valid);
                }
            }
        }
    }
}

fn fuzz_seeds() -> Vec<(&'static str, String)> {
    let loan = |id: &str| {
        let mut l = loan(id, &[("2027-01-15", "100.00"), ("2027-02-15", "250.50")]);
        l["mandates"][0]["per_debit_limit"] = "500.00".into();
        l
    };
    let json = json!([loan("F1"), loan("F2")]).to_string();
    let jsonl = format!("{}\n{}\n", loan("F1"), loan("F2"));
    let csv = "loan_id,borrower_id,borrower_name,phone,email,payday,currency,timezone,policy,allow_early,mandates,method,principal,annual_rate,months,first_due,due_date,interest,fee\n\
        T1,BT1,Li Wei,13900001111,li@example.com,15,CNY,Asia/Shanghai,standard,true,unionpay:AT1:6222021234561234:5000:20000,annuity,10000.00,0.18,12,2027-01-31,,,\n\
        E1,BE1,Li Na,13900002222,na@example.com,,CNY,Asia/Shanghai,gentle,false,bank:AE1:6222021234565678,,100.00,,,,2027-01-15,1.00,0\n"
        .to_string();
    let statement = "order_no,channel_ref,amount,fee,status,at\n\
        900000000001,R1,12.34,0.10,success,2027-01-15T00:00:00Z\n\
        900000000002,R2,5.00,0,failed,2027-01-15T01:00:00Z\nEND,2\n"
        .to_string();
    vec![
        (
            "policy",
            std::fs::read_to_string("policies/standard.toml").unwrap(),
        ),
        (
            "policy",
            std::fs::read_to_string("policies/gentle.toml").unwrap(),
        ),
        ("json", json),
        ("jsonl", jsonl),
        ("csv", csv),
        ("statement", statement),
    ]
}

/// 20,000 seeded mutations over the policy, loan (JSON, JSON Lines, CSV) and statement
/// parsers: errors, never a panic.
#[test]
fn fuzzed_inputs_never_panic() {
    use rand::SeedableRng;
    let policies = repayd::app::load_policies(std::path::Path::new("policies")).unwrap();
    let seeds = fuzz_seeds();
    for (kind, text) in &seeds {
        fuzz_one(kind, text, &policies);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_201);
    let mut panics = Vec::new();
    let cases = 20_000;
    for i in 0..cases {
        let (kind, seed) = &seeds[i % seeds.len()];
        let text = mutate(seed, &mut rng);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fuzz_one(kind, &text, &policies)
        }));
        if r.is_err() {
            panics.push((kind.to_string(), text));
        }
    }
    assert!(
        panics.is_empty(),
        "{} of {cases} inputs panicked; the first ({}):\n{}",
        panics.len(),
        panics[0].0,
        panics[0].1
    );
}

/// Counts, when asked to debit, the audit rows of manual attempts already committed for
/// that order number.
struct SeesAudit {
    pool: sqlx::AnyPool,
    seen: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
}

#[async_trait::async_trait]
impl BeforeSubmit for SeesAudit {
    async fn before_submit(&self, req: &repayd::domain::channel::DebitRequest) {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'manual_attempt' AND detail LIKE $1",
        )
        .bind(format!("%{}%", req.order_no))
        .fetch_one(&self.pool)
        .await
        .unwrap();
        self.seen.lock().unwrap().push(n);
    }
}

/// A manual attempt's audit row commits with the attempt's record, before the channel is
/// called: a crash during the call leaves no attempt without who asked for it.
async fn a_manual_attempt_is_audited_with_its_record(backend: Backend) {
    let mut app = spawn_app(backend, SCENARIO).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = app.engine.channels["bank"].clone();
    app.engine.channels.insert(
        "bank".into(),
        std::sync::Arc::new(Hooked {
            hook: SeesAudit {
                pool: app.engine.db.pool.clone(),
                seen: seen.clone(),
            },
            inner,
        }),
    );
    import_loans(&app, &["G1"]).await;
    let who = repayd::domain::actor::Actor {
        name: "carol".into(),
        role: repayd::domain::actor::Role::Collections,
    };
    let now = common::local(SH, 2027, 1, 10, 10, 0);
    let id = repayd::ops::manual_attempt(&app.engine, &who, "G1", "100.00", "promise to pay", now)
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [1],
        "audited before the channel call"
    );
    let detail = app
        .scalar_str("SELECT detail FROM audit_log WHERE action = 'manual_attempt'")
        .await;
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["attempt_id"], id, "{detail}");
    assert_eq!(detail["amount"], "100.00", "{detail}");
    app.cleanup().await;
}
both_backends!(a_manual_attempt_is_audited_with_its_record);
