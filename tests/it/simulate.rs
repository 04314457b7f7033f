//! `repayd simulate` through the real binary: byte-identical CSV for the same inputs and
//! seed, the naive policy recovering less than `standard` on the shipped sample, no contact
//! in quiet hours, and bad input refused with its field; publishing to the API and dashboard.

use crate::common;
use common::procs::repayd;
use common::web::spawn_web;
use common::Backend;
use std::collections::HashMap;
use std::path::Path;

use repayd::app::simulate::files::CSV_FILES as FILES;

fn policy(name: &str) -> String {
    format!("{}/policies/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn simulate(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let (standard, naive) = (policy("standard.toml"), policy("examples/naive.toml"));
    let mut args = vec![
        "simulate",
        "--generate",
        "240",
        "--seed",
        "2027",
        "--days",
        "90",
    ];
    args.extend(["--policy", &standard, "--policy", &naive, "--out", out]);
    args.extend(extra);
    repayd(dir, &args).output().unwrap()
}

/// `money.csv` as policy → currency → recovered.
fn recovered(csv_text: &str) -> HashMap<(String, String), f64> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                (rec[0].to_string(), rec[1].to_string()),
                rec[3].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn simulate_is_deterministic_the_ladder_beats_naive_and_quiet_hours_hold() {
    let dir = tempfile::tempdir().unwrap();
    let first = simulate(dir.path(), "a", &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let table = String::from_utf8_lossy(&first.stdout);
    assert!(
        table.contains("contacts in quiet hours") && table.contains("naive"),
        "{table}"
    );
    let again = simulate(dir.path(), "b", &[]);
    assert!(again.status.success());
    for f in FILES {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(f)).unwrap();
        assert!(a.len() > 60, "{f} has rows");
        assert!(a == b, "{f} differs between two runs with the same seed");
    }
    let money = std::fs::read_to_string(dir.path().join("a/money.csv")).unwrap();
    let rec = recovered(&money);
    let cny = |p: &str| rec[&(p.to_string(), "CNY".to_string())];
    assert!(
        cny("naive") < cny("standard"),
        "naive {} vs standard {}",
        cny("naive"),
        cny("standard")
    );
    let protection = std::fs::read_to_string(dir.path().join("a/protection.csv")).unwrap();
    let rows: Vec<&str> = protection.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{protection}");
    for row in rows {
        let quiet: u64 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert_eq!(quiet, 0, "contacts in quiet hours: {row}");
    }
    let html = std::fs::read_to_string(dir.path().join("a/report.html")).unwrap();
    assert!(html.contains("<svg class=\"curve\"") && html.contains("<svg class=\"cost\""));
    assert!(
        !html.contains("src=\"http") && !html.contains("<script"),
        "self-contained"
    );
    // A folder with a report is refused without --force, and replaced with it.
    let refused = simulate(dir.path(), "a", &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
}

#[test]
fn bad_simulation_input_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = repayd(dir.path(), &["simulate", "--print-model"])
        .output()
        .unwrap();
    let text = String::from_utf8(model.stdout).unwrap();
    assert!(text.contains("monthly_rate = 0.01"));
    std::fs::write(
        dir.path().join("m.toml"),
        text.replace("monthly_rate = 0.01", "monthly_rate = 1.5"),
    )
    .unwrap();
    let out = simulate(dir.path(), "x", &["--model", "m.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("m.toml:")
            && err.contains("hard_failures.monthly_rate")
            && err.contains("between 0 and 1"),
        "{err}"
    );
    let out = simulate(dir.path(), "x", &["--days", "0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--days"),
        "{out:?}"
    );
    let bad = std::fs::read_to_string(policy("standard.toml"))
        .unwrap()
        .replace("daily_cap = 3", "daily_cap = 3\nweekly_cap = 9");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = repayd(
        dir.path(),
        &["simulate", "--generate", "5", "--policy", "bad.toml"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.toml:") && err.contains("weekly_cap"),
        "{err}"
    );
    assert!(
        !dir.path().join("x").join("report.html").exists(),
        "nothing written on bad input"
    );
}

async fn published_simulations_show_in_the_api_and_dashboard(backend: Backend) {
    let app = spawn_web(backend, "").await;
    let json = r#"[{"policy":"standard","money":[]}]"#;
    let who = repayd::domain::actor::Actor::system();
    let html = "<html><body><h1>Policy simulation</h1><svg class=\"curve\"></svg></body></html>";
    let id = repayd::ops::simulation::publish(
        &app.engine.db,
        &who,
        "240 loans: a vs b",
        json,
        html,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let list = app.get("/api/v1/simulations", Some(&app.viewer)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json["items"][0]["title"], "240 loans: a vs b");
    let one = app
        .get(&format!("/api/v1/simulations/{id}"), Some(&app.viewer))
        .await;
    assert_eq!(one.json["figures"][0]["policy"], "standard", "{}", one.text);
    assert_eq!(
        app.get("/api/v1/simulations/999999", Some(&app.viewer))
            .await
            .status,
        404
    );
    let bad = app.get("/api/v1/simulations/abc", Some(&app.viewer)).await;
    assert_eq!(
        (bad.status.as_u16(), bad.json["field"].as_str()),
        (400, Some("id"))
    );
    assert_eq!(app.get("/api/v1/simulations", None).await.status, 401);
    let cookie = format!("repayd_token={}", app.viewer);
    let page = app
        .send(
            app.client
                .get(app.url("/simulations"))
                .header("cookie", &cookie),
            "GET /simulations",
        )
        .await;
    assert!(page.text.contains("240 loans: a vs b"), "{}", page.text);
    let report = app
        .send(
            app.client
                .get(app.url(&format!("/simulations/{id}")))
                .header("cookie", &cookie),
            "GET report",
        )
        .await;
    assert!(report.text.contains("<svg class=\"curve\">"));
    let audited = app
        .scalar_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'publish_simulation'")
        .await;
    assert_eq!(audited, 1);
    app.cleanup().await;
}
both_backends!(published_simulations_show_in_the_api_and_dashboard);
