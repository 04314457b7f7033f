//! Reconciliation, settlement, refunds and write-offs against the channel simulator, on
//! SQLite and PostgreSQL.

use crate::common;

use chrono::{DateTime, Utc};
use common::{date, loan_json, Backend, TestApp};
use repayd::recon::{self, ReconError, RefundKind, RefundRequest};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const UTC: &str = "UTC";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn import_loans(app: &TestApp, loans: Vec<serde_json::Value>) {
    app.import_json(&serde_json::Value::Array(loans).to_string())
        .await;
}

fn one_loan(id: &str, policy: &str, agreement: &str, insts: &[(&str, &str)]) -> serde_json::Value {
    loan_json(
        id,
        UTC,
        policy,
        None,
        false,
        &[("unionpay", agreement)],
        insts,
    )
}

const ANOMALIES: &str = r#"
[default]
fee_rate = "0.006"
[[accounts]]
agreement = "AGR-TIMEOUT"
unknown_first = 1
[[accounts]]
agreement = "AGR-LOST"
lost_first = 1
[[accounts]]
agreement = "AGR-MISMATCH"
statement_amount = "99.00"
[[statement_extra]]
date = 2026-12-19
order_no = "899999999999"
amount = "10.00"
"#;

async fn statement_classified_unknowns_resolved_and_settled(backend: Backend) {
    let app = common::spawn_app(backend, ANOMALIES).await;
    let due = [("2026-12-19", "100.00")];
    import_loans(
        &app,
        vec![
            one_loan("L-T", "test", "AGR-TIMEOUT", &due),
            one_loan("L-L", "test", "AGR-LOST", &due),
            one_loan("L-M", "test", "AGR-MISMATCH", &due),
            one_loan("L-OK", "test", "AGR-OK", &due),
        ],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    assert_eq!(status(&app, "L-T").await, "unknown");
    assert_eq!(status(&app, "L-L").await, "unknown");
    assert_eq!(status(&app, "L-M").await, "succeeded");
    assert_eq!(status(&app, "L-OK").await, "succeeded");
    let sim = app.sim("unionpay");
    assert_eq!(sim.journal().len(), 4, "the channel debited all four");

    // A malformed statement is refused whole, with line and column, and writes nothing.
    let bad = app.dir.path().join("bad.csv");
    let good = app.statement_file("unionpay", date("2026-12-19")).await;
    let text = std::fs::read_to_string(&good).unwrap();
    let mut rows: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<&str> = rows[2].split(',').collect();
    fields[2] = "100.001";
    rows[2] = fields.join(",");
    std::fs::write(&bad, rows.join("\n") + "\n").unwrap();
    let now = at("2026-12-20T09:00:00Z");
    let err = recon::import_file(&app.engine, "unionpay", &bad, None, now)
        .await
        .unwrap_err();
    match &err {
        ReconError::Statement { error: source, .. } => {
            let column = rows[2].find("100.001").unwrap() + 1;
            assert_eq!((source.line, source.column), (3, column), "{err}");
            assert!(source.message.contains("amount"), "{err}");
        }
        other => panic!("{other}"),
    }
    let truncated = app.dir.path().join("cut.csv");
    std::fs::write(&truncated, &text[..text.len() - 8]).unwrap();
    let err = recon::import_file(&app.engine, "unionpay", &truncated, None, now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    for t in [
        "statements",
        "statement_lines",
        "recon_items",
        "settlements",
    ] {
        assert_eq!(app.count(t).await, 0, "{t}");
    }

    let entries_before = app.count("journal_entries").await;
    let out = recon::import_file(&app.engine, "unionpay", &good, None, now)
        .await
        .unwrap();
    assert_eq!(out.date, "2026-12-19");
    let s = |x: &str| Some(x.to_string());
    let mut expected = vec![
        (
            order(&app, "L-T").await,
            "matched".to_string(),
            s("resolved_succeeded"),
            None,
        ),
        (
            order(&app, "L-L").await,
            "matched".to_string(),
            s("resolved_succeeded"),
            None,
        ),
        (
            order(&app, "L-M").await,
            "amount_differs".to_string(),
            None,
            s("open"),
        ),
        (order(&app, "L-OK").await, "matched".to_string(), None, None),
        (
            "899999999999".to_string(),
            "channel_only".to_string(),
            None,
            s("open"),
        ),
    ];
    expected.sort();
    assert_eq!(app.recon_items("unionpay", "2026-12-19").await, expected);
    assert_eq!((out.auto_fixed, out.open_cases), (2, 2));
    assert_eq!(status(&app, "L-T").await, "succeeded");
    assert_eq!(status(&app, "L-L").await, "succeeded");

    // No second debit: the channel's journal is unchanged and equals the ledger.
    assert_eq!(sim.journal().len(), 4);
    app.assert_sim_matches_ledger().await;
    let repaid = app
        .scalar_i64(
            "SELECT CAST(SUM(l.debit) AS BIGINT) FROM journal_lines l JOIN journal_entries e \
             ON e.id = l.entry_id WHERE e.kind = 'repayment' AND l.account = '1100.unionpay'",
        )
        .await;
    assert_eq!(Decimal::new(repaid, 2), sim.total_debited());
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L-T'")
            .await,
        "paid"
    );

    // Settled T+1 at import: the three matched successes, net of the statement's fees.
    assert_eq!(out.settled.len(), 1);
    let st = &out.settled[0];
    assert_eq!(
        (st.gross, st.fees, st.net),
        (dec!(300), dec!(1.80), dec!(298.20))
    );
    assert_eq!(app.balance_minor("1200").await, 29820);
    assert_eq!(app.balance_minor("5100").await, 180);
    assert_eq!(
        app.balance_minor("1100.unionpay").await,
        10000,
        "the mismatch stays"
    );
    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);

    // Re-import: nothing changes.
    let before = counts(&app).await;
    let again = recon::import_file(&app.engine, "unionpay", &good, None, now)
        .await
        .unwrap();
    assert!(again.already_imported);
    assert_eq!(counts(&app).await, before);
    assert_eq!(
        before[4],
        entries_before + 3,
        "two repayments and one settlement"
    );

    // The engine finds nothing left to query and debits nothing more.
    app.run(at("2026-12-20T10:00:00Z")).await;
    assert_eq!(sim.journal().len(), 4);
    assert_eq!(
        recon::settle_due(&app.engine, at("2026-12-22T00:00:00Z"))
            .await
            .unwrap(),
        vec![]
    );

    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let report = recon::recon_report(&mut conn, "2026-12-19").await.unwrap();
    assert_eq!(report.counts["unionpay"]["matched"], 3);
    assert_eq!(report.open_cases.len(), 2);
    let extra = report
        .open_cases
        .iter()
        .find(|c| c.outcome == "channel_only")
        .unwrap();
    assert_eq!(extra.evidence["theirs"]["amount"], "10.00");
    assert!(extra.evidence["ours"].is_null());
    assert!(report.table().contains("amount_differs"));
    drop(conn);
    app.cleanup().await;
}

async fn status(app: &TestApp, loan: &str) -> String {
    app.attempts(loan).await[0].1.clone()
}

async fn order(app: &TestApp, loan: &str) -> String {
    app.scalar_str(&format!(
        "SELECT order_no FROM attempts WHERE loan_id = '{loan}'"
    ))
    .await
}

async fn counts(app: &TestApp) -> Vec<i64> {
    let mut v = Vec::new();
    for t in [
        "statements",
        "statement_lines",
        "recon_items",
        "settlements",
        "journal_entries",
    ] {
        v.push(app.count(t).await);
    }
    v
}
both_backends!(statement_classified_unknowns_resolved_and_settled);

async fn refunds_and_write_offs(backend: Backend) {
    let scenario = "[[accounts]]\nagreement = \"AGR-B\"\nunknown_first = 1\n\
                    [[accounts]]\nagreement = \"AGR-C\"\nbalance = \"96.00\"\n";
    let mut app = common::spawn_app(backend, scenario).await;
    app.add_policy(&residue_policy());
    import_loans(
        &app,
        vec![
            one_loan("L-ERR", "test", "AGR-A", &[("2026-12-19", "100.00")]),
            one_loan("L-OVER", "test", "AGR-B", &[("2026-12-19", "100.00")]),
            one_loan("L-RES", "residue", "AGR-C", &[("2026-12-19", "100.00")]),
        ],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;

    let req = |attempt, amount, kind| RefundRequest {
        attempt_id: attempt,
        amount,
        kind,
        reason: "test".into(),
        actor: "tester".into(),
    };
    // Money that arrives for a loan already written off is an overpayment: refundable up to
    // what is held and what the attempt can still refund.
    let over = "L-OVER";
    assert_eq!(status(&app, over).await, "unknown");
    let t = at("2026-12-19T08:30:00Z");
    let wo = recon::write_off_admin(&app.engine, over, "uncollectable", "tester", t)
        .await
        .unwrap();
    assert_eq!(wo, dec!(100));
    assert!(matches!(
        recon::write_off_admin(&app.engine, over, "again", "tester", t).await,
        Err(ReconError::NothingToWriteOff { .. })
    ));
    assert_eq!(
        app.scalar_i64("SELECT wo_principal FROM installments WHERE loan_id = 'L-OVER'")
            .await,
        10000
    );
    assert_eq!(
        app.scalar_str("SELECT kind FROM write_offs WHERE loan_id = 'L-OVER'")
            .await,
        "admin"
    );
    assert_eq!(
        app.scalar_i64(
            "SELECT COUNT(*) FROM actions WHERE loan_id = 'L-OVER' AND status = 'pending'"
        )
        .await,
        0
    );
    app.run(at("2026-12-19T09:00:00Z")).await;
    assert_eq!(status(&app, over).await, "succeeded");
    assert_eq!(app.balance_minor("2100").await, -10000);
    let paid = app.attempt_id(over, 0).await;
    let t = at("2026-12-19T10:00:00Z");
    recon::refund(
        &app.engine,
        &req(paid, dec!(60), RefundKind::Overpayment),
        t,
    )
    .await
    .unwrap();
    let refused = recon::refund(
        &app.engine,
        &req(paid, dec!(50), RefundKind::Overpayment),
        t,
    )
    .await;
    assert!(
        matches!(refused, Err(ReconError::ExceedsRefundable { .. })),
        "{refused:?}"
    );
    let refused = recon::refund(
        &app.engine,
        &req(paid, dec!(40.01), RefundKind::Erroneous),
        t,
    )
    .await;
    assert!(
        matches!(refused, Err(ReconError::ExceedsRefundable { .. })),
        "{refused:?}"
    );
    let last = recon::refund(&app.engine, &req(paid, dec!(40), RefundKind::Erroneous), t)
        .await
        .unwrap();
    assert_eq!((last.refundable_left, last.reopened.len()), (dec!(0), 0));
    assert_eq!(app.balance_minor("2100").await, 0);
    assert_eq!(
        app.scalar_i64(&format!(
            "SELECT COUNT(*) FROM journal_entries WHERE corrects_entry IS NOT NULL AND loan_id = '{over}'"
        ))
        .await,
        2
    );

    // Erroneous debit: reversed, the installment re-opens and the next run collects it again.
    let err_attempt = app.attempt_id("L-ERR", 0).await;
    let done = recon::refund(
        &app.engine,
        &req(err_attempt, dec!(100), RefundKind::Erroneous),
        at("2026-12-21T08:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(done.reopened, vec![1]);
    assert_eq!(
        app.scalar_str("SELECT status FROM installments WHERE loan_id = 'L-ERR'")
            .await,
        "overdue"
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L-ERR'")
            .await,
        "active"
    );
    assert_eq!(
        app.scalar_i64(&format!(
            "SELECT COUNT(*) FROM journal_lines WHERE entry_id = {} AND account = '1310' \
             AND seq = 1 AND component = 'principal' AND debit = 10000",
            done.entry_id
        ))
        .await,
        1
    );
    let refused = recon::refund(
        &app.engine,
        &req(err_attempt, dec!(0.01), RefundKind::Erroneous),
        at("2026-12-21T08:00:00Z"),
    )
    .await;
    assert!(
        matches!(refused, Err(ReconError::ExceedsRefundable { .. })),
        "{refused:?}"
    );
    app.run(at("2026-12-21T10:00:00Z")).await;
    let atts = app.attempts("L-ERR").await;
    assert_eq!(atts.len(), 2, "{atts:?}");
    assert_eq!(atts[1].1, "succeeded");
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L-ERR'")
            .await,
        "paid"
    );

    // Residue: 96 of 100 collected, the 4 left is written off at once.
    let res = app.attempts("L-RES").await;
    assert_eq!(res.last().unwrap().1, "succeeded", "{res:?}");
    assert_eq!(res.last().unwrap().2, dec!(96.00));
    assert_eq!(
        app.scalar_str("SELECT kind FROM write_offs WHERE loan_id = 'L-RES'")
            .await,
        "residue"
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L-RES'")
            .await,
        "written_off"
    );
    assert_eq!(
        app.scalar_i64("SELECT amount FROM write_offs WHERE loan_id = 'L-RES'")
            .await,
        400
    );
    assert_eq!(app.balance_minor("5200").await, 10400);

    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);
    let err_second = app.attempt_id("L-ERR", 1).await;
    let refused = recon::refund(
        &app.engine,
        &req(err_second, dec!(1), RefundKind::Overpayment),
        at("2026-12-22T08:00:00Z"),
    )
    .await;
    assert!(
        matches!(refused, Err(ReconError::ExceedsOverpayment { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        recon::parse_amount("1.005"),
        Err(ReconError::BadAmount { .. })
    ));
    assert!(matches!(
        recon::parse_amount("-1"),
        Err(ReconError::BadAmount { .. })
    ));
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(refunds_and_write_offs);

/// The test policy with a 4.00 step and a 5.00 residue threshold.
fn residue_policy() -> String {
    common::TEST_POLICY
        .replace("name = \"test\"", "name = \"residue\"")
        .replace(
            "steps = [1, 0.75, 0.5, 0.25]\nmin_amount = \"50.00\"\non_codes = [\"INSUFFICIENT_BALANCE\"]",
            "steps = [1, 0.96]\nmin_amount = \"1.00\"\non_codes = [\"INSUFFICIENT_BALANCE\"]",
        )
        .replace(
            "stop_after_days_past_due = 10",
            "stop_after_days_past_due = 10\nresidue_threshold = \"5.00\"",
        )
}

async fn daemon_fetches_yesterdays_statement_once(backend: Backend) {
    let app = common::spawn_app(backend, ANOMALIES).await;
    import_loans(
        &app,
        vec![one_loan(
            "L-T",
            "test",
            "AGR-TIMEOUT",
            &[("2026-12-19", "100.00")],
        )],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    assert_eq!(status(&app, "L-T").await, "unknown");
    let channels = vec!["unionpay".to_string()];
    let early = recon::fetch_due(&app.engine, &channels, at("2026-12-20T08:59:00Z"))
        .await
        .unwrap();
    assert!(early.is_empty(), "before statement_time nothing is fetched");
    assert_eq!(app.count("statements").await, 0);
    let done = recon::fetch_due(&app.engine, &channels, at("2026-12-20T09:01:00Z"))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].date.as_str(), done[0].auto_fixed),
        ("2026-12-19", 1)
    );
    assert_eq!(status(&app, "L-T").await, "succeeded");
    assert_eq!(app.count("settlements").await, 1);
    let again = recon::fetch_due(&app.engine, &channels, at("2026-12-20T15:00:00Z"))
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(app.count("statements").await, 1);
    app.assert_sim_matches_ledger().await;
    app.cleanup().await;
}
both_backends!(daemon_fetches_yesterdays_statement_once);

async fn written_off_past_the_policy_point(backend: Backend) {
    let mut app = common::spawn_app(
        backend,
        "[[accounts]]\nagreement = \"AGR-EMPTY\"\nbalance = \"0.00\"\n",
    )
    .await;
    let policy = common::TEST_POLICY
        .replace("name = \"test\"", "name = \"wo\"")
        .replace(
            "stop_after_days_past_due = 10",
            "stop_after_days_past_due = 10\nwrite_off_after_days_past_due = 20",
        );
    app.add_policy(&policy);
    import_loans(
        &app,
        vec![one_loan(
            "L-WO",
            "wo",
            "AGR-EMPTY",
            &[("2026-12-19", "100.00")],
        )],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    app.run(at("2027-01-05T10:00:00Z")).await;
    assert_eq!(
        app.scalar_str("SELECT status FROM loans WHERE id = 'L-WO'")
            .await,
        "collections"
    );
    assert_eq!(app.count("write_offs").await, 0);
    app.run(at("2027-01-09T10:00:00Z")).await;
    assert_eq!(
        app.scalar_str("SELECT kind FROM write_offs WHERE loan_id = 'L-WO'")
            .await,
        "policy"
    );
    assert_eq!(
        app.scalar_str("SELECT status FROM installments WHERE loan_id = 'L-WO'")
            .await,
        "written_off"
    );
    // Principal goes through the ledger; the penalty is recorded on the installment only.
    assert_eq!(app.balance_minor("5200").await, 10000);
    let wo_penalty = app
        .scalar_i64("SELECT wo_penalty FROM installments WHERE loan_id = 'L-WO'")
        .await;
    assert!(wo_penalty > 0);
    assert_eq!(
        app.scalar_i64("SELECT amount FROM write_offs WHERE loan_id = 'L-WO'")
            .await,
        10000 + wo_penalty
    );
    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);
    app.run(at("2027-01-10T10:00:00Z")).await;
    assert_eq!(app.count("write_offs").await, 1);
    app.cleanup().await;
}
both_backends!(written_off_past_the_policy_point);

/// Against the HTTP simulator server: every debit times out after it was applied and no
/// callback is ever sent; the statement is fetched over HTTP and settles what it can.
async fn http_channel_statement_settles_unknowns(backend: Backend) {
    use repayd::adapters::channel::{serve_simulator, HttpChannel, Scenario, Simulator};
    use repayd::domain::secret::Secret;
    use std::sync::Arc;
    let mut app = common::spawn_app(backend, "").await;
    let scenario = Scenario::from_toml_str(
        "[default]\nfee_rate = \"0.01\"\n[[accounts]]\nagreement = \"AGR-MISMATCH\"\n\
         statement_amount = \"99.00\"\n[server]\ntimeout_after_debit_rate = 1.0\nhang_ms = 3000\n",
        "server.toml",
    )
    .unwrap();
    let mut cfg = app.engine.channel_configs["unionpay"].clone();
    cfg.timeout_ms = 300;
    let sim = Arc::new(
        Simulator::new("unionpay", scenario.clone()).with_order_no_rule(cfg.order_no.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_simulator(
        listener,
        sim.clone(),
        Secret::new("s3cret"),
        scenario.server.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = HttpChannel::new(&cfg, base, Secret::new("s3cret")).unwrap();
    app.engine
        .channels
        .insert("unionpay".into(), Arc::new(http));
    let due = [("2026-12-19", "100.00")];
    import_loans(
        &app,
        vec![
            one_loan("H-1", "test", "AGR-1", &due),
            one_loan("H-2", "test", "AGR-2", &due),
            one_loan("H-M", "test", "AGR-MISMATCH", &due),
        ],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    for loan in ["H-1", "H-2", "H-M"] {
        assert_eq!(status(&app, loan).await, "unknown", "{loan}");
    }
    assert_eq!(sim.journal().len(), 3);
    let channels = vec!["unionpay".to_string()];
    let done = recon::fetch_due(&app.engine, &channels, at("2026-12-20T09:30:00Z"))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].auto_fixed, done[0].open_cases), (2, 1));
    assert_eq!(done[0].outcomes["amount_differs"], 1);
    let st = &done[0].settled[0];
    assert_eq!(
        (st.gross, st.fees, st.net),
        (dec!(200), dec!(2.00), dec!(198.00))
    );
    assert_eq!(
        status(&app, "H-M").await,
        "unknown",
        "a mismatch is not auto-fixed"
    );
    // The engine's own query settles the mismatch with what the channel really debited.
    app.run(at("2026-12-20T10:00:00Z")).await;
    assert_eq!(status(&app, "H-M").await, "succeeded");
    assert_eq!(sim.journal().len(), 3, "nothing debited twice");
    let repaid = app
        .scalar_i64(
            "SELECT CAST(SUM(debit) AS BIGINT) FROM journal_lines WHERE account = '1100.unionpay'",
        )
        .await;
    assert_eq!(Decimal::new(repaid, 2), sim.total_debited());
    assert_eq!(app.balance_minor("1100.unionpay").await, 10000);
    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);
    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    app.cleanup().await;
}
both_backends!(http_channel_statement_settles_unknowns);

/// The CLI as a user runs it: import a statement, re-import it, a malformed one, the report,
/// a refund, a refusal and a write-off.
#[test]
fn cli_recon_refund_and_write_off() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_repayd"))
            .current_dir(dir.path())
            .args(args)
            .env_remove("REPAYD_DATABASE_URL")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let loans = r#"[{"id": "C1",
      "borrower": {"id": "B1", "name": "Wang Fang", "phone": "13812345678", "email": "wf@example.com"},
      "currency": "CNY", "timezone": "Asia/Shanghai", "policy": "standard",
      "mandates": [{"channel": "unionpay", "agreement": "AGR-C1", "account": "6222021234561234"}],
      "terms": {"principal": "3000.00", "annual_rate": "0.12", "months": 3, "first_due": "2027-01-15", "method": "annuity"}}]"#;
    std::fs::write(dir.path().join("loans.json"), loans).unwrap();
    assert!(run(&["init"]).0);
    assert!(run(&["loans", "import", "loans.json"]).0);
    let (ok, out) = run(&["run", "--once", "--now", "2027-01-15T09:00:00+08:00"]);
    assert!(ok, "{out}");
    // The channel's statement, written from the simulator's saved state.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("repayd-sim/unionpay.json")).unwrap(),
    )
    .unwrap();
    let (order_no, order) = state["state"]["orders"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let line = format!(
        "{order_no},{},{},0.50,success,{}",
        order["channel_ref"].as_str().unwrap(),
        order["amount"].as_str().unwrap(),
        order["at"].as_str().unwrap()
    );
    let header = "order_no,channel_ref,amount,fee,status,at";
    std::fs::write(
        dir.path().join("st.csv"),
        format!("{header}\n{line}\nEND,1\n"),
    )
    .unwrap();
    let now = "2027-01-16T09:00:00+08:00";
    let (ok, out) = run(&[
        "recon",
        "import",
        "--channel",
        "unionpay",
        "st.csv",
        "--now",
        now,
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2027-01-15: 1 lines") && out.contains("1 settlements"),
        "{out}"
    );
    let (ok, out) = run(&[
        "recon",
        "import",
        "--channel",
        "unionpay",
        "st.csv",
        "--now",
        now,
    ]);
    assert!(ok && out.contains("already imported"), "{out}");
    std::fs::write(
        dir.path().join("bad.csv"),
        format!("{header}\n{}\nEND,1\n", line.replacen(order_no, "X1", 1)),
    )
    .unwrap();
    let (ok, out) = run(&["recon", "import", "--channel", "unionpay", "bad.csv"]);
    assert!(
        !ok && out.contains("bad.csv: line 2, column 1: order_no"),
        "{out}"
    );
    let (ok, out) = run(&["--json", "recon", "report", "--date", "2027-01-15"]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["counts"]["unionpay"]["matched"], 1);
    let refund = [
        "refund",
        "1",
        "--amount",
        "10.00",
        "--reason",
        "debited twice",
        "--kind",
        "erroneous",
    ];
    let (ok, out) = run(&refund);
    assert!(ok && out.contains("re-opened [1]"), "{out}");
    let (ok, out) = run(&["refund", "1", "--amount", "5000", "--reason", "x"]);
    assert!(
        !ok && out.contains("exceeds what attempt 1 can still refund"),
        "{out}"
    );
    let (ok, out) = run(&["refund", "1", "--amount", "0.001", "--reason", "x"]);
    assert!(!ok && out.contains("more than 2 decimal places"), "{out}");
    // The CLI checks a reason as the API does (one operation behind both).
    let (ok, out) = run(&["write-off", "C1", "--reason", "   "]);
    assert!(!ok && out.contains("reason: a reason is required"), "{out}");
    let long = "x".repeat(501);
    let (ok, out) = run(&["refund", "1", "--amount", "1.00", "--reason", &long]);
    assert!(
        !ok && out.contains("reason: at most 500 characters"),
        "{out}"
    );
    let (ok, out) = run(&["write-off", "C1", "--reason", "fraud"]);
    assert!(ok && out.contains("loan C1 written off"), "{out}");
    let (ok, out) = run(&["write-off", "C1", "--reason", "again"]);
    assert!(!ok && out.contains("nothing to write off"), "{out}");
    // What an operator did at the command line is in the audit log, refusals are not.
    let url = format!("sqlite://{}", dir.path().join("repayd.db").display());
    let audited: Vec<(String, String, String)> =
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let db = repayd::store::Db::open(&url).await.unwrap();
            // The import is audited too (the CLI and the API share the operation); this test
            // is about the money actions.
            sqlx::query_as(
                "SELECT actor, action, reason FROM audit_log WHERE action <> 'import_loans' ORDER BY id",
            )
                .fetch_all(&db.pool)
                .await
                .unwrap()
        });
    let expect = |a: &str, r: &str| ("cli".to_string(), a.to_string(), r.to_string());
    assert_eq!(
        audited,
        [
            expect("refund", "debited twice"),
            expect("write_off", "fraud")
        ]
    );
}

/// A T+2 channel whose fees are a rate with a minimum per line: nothing settles on T+1.
async fn settlement_by_rate_waits_for_its_day(backend: Backend) {
    let mut app = common::spawn_app(backend, "").await;
    {
        let rule = &mut app
            .engine
            .channel_configs
            .get_mut("unionpay")
            .unwrap()
            .settlement;
        rule.days = 2;
        rule.fees = repayd::domain::channel::FeeSource::Rate;
        rule.fee_rate = dec!(0.01);
        rule.fee_min = dec!(1.50);
    }
    let due = [("2026-12-19", "100.00")];
    import_loans(
        &app,
        vec![
            one_loan("R-1", "test", "AGR-1", &[("2026-12-19", "300.00")]),
            one_loan("R-2", "test", "AGR-2", &due),
        ],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    let file = app.statement_file("unionpay", date("2026-12-19")).await;
    let out = recon::import_file(
        &app.engine,
        "unionpay",
        &file,
        None,
        at("2026-12-20T09:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(out.outcomes["matched"], 2);
    assert!(out.settled.is_empty(), "T+2: not yet");
    assert_eq!(app.count("settlements").await, 0);
    let done = recon::settle_due(&app.engine, at("2026-12-21T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    // 1% of 300 is 3.00; 1% of 100 is 1.00, below the 1.50 minimum.
    assert_eq!(
        (done[0].gross, done[0].fees, done[0].net),
        (dec!(400), dec!(4.50), dec!(395.50))
    );
    assert_eq!(done[0].settle_date, "2026-12-21");
    assert_eq!(app.balance_minor("1100.unionpay").await, 0);
    assert_eq!(app.balance_minor("1200").await, 39550);
    assert!(recon::settle_due(&app.engine, at("2026-12-22T00:00:00Z"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(app.trial_balance_difference().await, Decimal::ZERO);
    app.cleanup().await;
}
both_backends!(settlement_by_rate_waits_for_its_day);

/// One channel collects in two currencies: the day settles once per currency, each with its
/// own entry, and each currency's trial balance is zero on its own (none adds CNY to GBP).
async fn settlement_is_per_currency(backend: Backend) {
    let app = common::spawn_app(backend, "").await;
    let mut pound = one_loan("X-GBP", "test", "AGR-2", &[("2026-12-19", "100.00")]);
    pound["currency"] = "GBP".into();
    import_loans(
        &app,
        vec![
            one_loan("X-CNY", "test", "AGR-1", &[("2026-12-19", "300.00")]),
            pound,
        ],
    )
    .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    let file = app.statement_file("unionpay", date("2026-12-19")).await;
    let out = recon::import_file(
        &app.engine,
        "unionpay",
        &file,
        None,
        at("2026-12-20T09:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(out.outcomes["matched"], 2);
    let mut settled: Vec<(String, Decimal)> = out
        .settled
        .iter()
        .map(|s| (s.currency.clone(), s.gross))
        .collect();
    settled.sort();
    assert_eq!(
        settled,
        [
            ("CNY".to_string(), dec!(300)),
            ("GBP".to_string(), dec!(100))
        ]
    );
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let tb = repayd::store::ledger::trial_balance(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let books: Vec<&str> = tb.currencies.iter().map(|c| c.currency.as_str()).collect();
    assert_eq!(books, ["CNY", "GBP"]);
    for book in &tb.currencies {
        assert_eq!(book.difference(), Decimal::ZERO, "{book:?}");
        let clearing = book
            .rows
            .iter()
            .find(|r| r.code == "1100.unionpay")
            .unwrap();
        assert_eq!(
            clearing.balance(),
            Decimal::ZERO,
            "{}: cleared",
            book.currency
        );
    }
    // Settling again finds nothing new.
    assert!(recon::settle_due(&app.engine, at("2026-12-22T00:00:00Z"))
        .await
        .unwrap()
        .is_empty());
    let report = repayd::store::verify::verify(&app.engine.db, &Default::default())
        .await
        .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    app.cleanup().await;
}
both_backends!(settlement_is_per_currency);
