//! The README's first command, `repayd demo`, end to end (in-process, shorter path names).

use repayd::app::demo::{run_demo, DemoOptions, SAMPLE_LOANS, SAMPLE_START};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_collects_the_sample_portfolio_with_a_zero_trial_balance() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        dir: dir.path().join("demo"),
        days: 90,
        start: chrono::NaiveDate::parse_from_str(SAMPLE_START, "%Y-%m-%d").unwrap(),
        progress: false,
    };
    let s = run_demo(&opts).await.unwrap();
    assert_eq!(s.loans, SAMPLE_LOANS as i64);
    assert!(
        s.loans >= 200,
        "the sample is a portfolio, not a handful: {s:?}"
    );
    assert!(s.installments_due > 500, "{s:?}");
    assert!(
        s.collected_in_full as f64 > 0.8 * s.installments_due as f64,
        "{s:?}"
    );
    assert!(
        s.collected_in_steps > 0,
        "some installments are collected in steps"
    );
    assert!(
        s.loans_in_collections > 0,
        "broke borrowers reach collections"
    );
    assert!(
        s.attempts.keys().any(|k| k.starts_with("payday/")),
        "payday-aware attempts ran"
    );
    assert!(
        s.notices.contains_key("rebind/sent"),
        "hard failures asked to re-bind"
    );
    assert!(!s.overdue_by_bucket.is_empty());
    // The sample holds three currencies; each has its own trial balance, and each is zero.
    let tb = s.trial_balance.unwrap();
    let books: Vec<&str> = tb.currencies.iter().map(|c| c.currency.as_str()).collect();
    assert_eq!(books, ["CNY", "GBP", "USD"]);
    for c in &tb.currencies {
        assert!(c.total_debit > rust_decimal::Decimal::ZERO, "{c:?}");
        assert_eq!(c.difference(), rust_decimal::Decimal::ZERO, "{c:?}");
    }
    let collected: Vec<&String> = s.collected.keys().collect();
    assert_eq!(collected, ["CNY", "GBP", "USD"], "collected per currency");
    // Run again in the same folder: a fresh database, the same figures.
    let again = run_demo(&opts).await.unwrap();
    assert_eq!(again.collected, s.collected);
    verify_demo_database(&opts.dir);
}

/// `repayd verify` (the real binary) finds the demo's database consistent.
fn verify_demo_database(dir: &std::path::Path) {
    let db = format!("sqlite://{}", dir.join("repayd.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args(["--database", &db, "verify"])
        .env_remove("REPAYD_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify after the demo: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("verify: clean ("), "{stdout}");
}
