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
    daily_report_is_per_currency(&opts.dir).await;
}

/// `report daily` on the demo's busiest day: every amount row names its currency, and the
/// overall collections are one row per currency, never one CNY + GBP number.
async fn daily_report_is_per_currency(dir: &std::path::Path) {
    let url = format!("sqlite://{}", dir.join("repayd.db").display());
    let db = repayd::store::Db::open(&url).await.unwrap();
    let policies = repayd::app::policies::load_policies(std::path::Path::new("policies")).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 15).unwrap();
    let rows = repayd::ops::daily::daily_rows(&mut conn, &policies, day)
        .await
        .unwrap();
    let overall: Vec<&str> = rows
        .iter()
        .filter(|r| r.section == repayd::ops::daily::COLLECTIONS && r.channel == "all")
        .map(|r| r.currency.as_str())
        .collect();
    assert!(
        overall.len() >= 2 && overall.contains(&"CNY"),
        "{overall:?}"
    );
    let unnamed = rows
        .iter()
        .filter(|r| r.section != repayd::ops::daily::RECON)
        .find(|r| r.amount.is_some() && r.currency.is_empty());
    assert!(
        unnamed.is_none(),
        "an amount without its currency: {unnamed:?}"
    );
    // Each (channel, currency) collection row sums that currency only.
    for r in rows
        .iter()
        .filter(|r| r.section == repayd::ops::daily::COLLECTIONS)
    {
        let sql = "SELECT CAST(COALESCE(SUM(a.amount),0) AS BIGINT) FROM attempts a \
                   JOIN loans l ON l.id = a.loan_id WHERE a.local_date = $1 AND a.status = 'succeeded' \
                   AND l.currency = $2 AND ($3 = 'all' OR a.channel = $3)";
        let minor: i64 = sqlx::query_scalar(sql)
            .bind(day.to_string())
            .bind(&r.currency)
            .bind(&r.channel)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            r.amount,
            Some(rust_decimal::Decimal::new(minor, 2)),
            "{r:?}"
        );
    }
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
