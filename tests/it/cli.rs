//! The `repayd` binary as a user runs it: import, plan, run, show, trial balance, and the
//! errors a user sees for bad files.

use std::path::Path;
use std::process::{Command, Output};

fn repayd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repayd"))
        .current_dir(dir)
        .args(args)
        .env_remove("REPAYD_DATABASE_URL")
        .output()
        .expect("run repayd")
}

/// A fresh database in `dir` (only `init` and `demo` create one).
fn init(dir: &Path) {
    let o = repayd(dir, &["init"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const LOANS: &str = r#"[{
  "id": "C1",
  "borrower": {"id": "B1", "name": "Wang Fang", "phone": "13812345678", "email": "wf@example.com", "payday": 20},
  "currency": "CNY", "timezone": "Asia/Shanghai", "policy": "standard",
  "mandates": [{"channel": "unionpay", "agreement": "AGR-C1", "account": "6222021234561234", "daily_limit": "5000.00"}],
  "terms": {"principal": "3000.00", "annual_rate": "0.12", "months": 3, "first_due": "2027-01-15", "method": "annuity"}
}]"#;

#[test]
fn import_plan_run_show_and_trial_balance() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loans.json"), LOANS).unwrap();
    init(dir.path());
    let o = repayd(dir.path(), &["loans", "import", "loans.json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 loans added (3 installments)"),
        "{}",
        text(&o)
    );
    assert!(
        dir.path().join("repayd.db").exists(),
        "SQLite is the default, created by init"
    );

    let o = repayd(dir.path(), &["plan", "show", "C1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("due:08:00") && text(&o).contains("2027-01-15 08:00 CST"),
        "{}",
        text(&o)
    );

    // Placed against a moment: the 08:00 CST slot is due at 00:00 UTC, not before.
    let o = repayd(
        dir.path(),
        &[
            "--json",
            "plan",
            "show",
            "C1",
            "--as-of",
            "2027-01-15T00:00:00Z",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let slot = |p: &serde_json::Value| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["slot"] == "due:08:00" && a["seq"] == 1)
            .map(|a| a["when"].clone())
    };
    assert_eq!(slot(&plan), Some("due".into()), "{plan}");
    let o = repayd(
        dir.path(),
        &[
            "--json",
            "plan",
            "show",
            "C1",
            "--as-of",
            "2027-01-14T23:59:00Z",
        ],
    );
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(slot(&plan), Some("due".into()), "{plan}");
    let o = repayd(dir.path(), &["plan", "show", "C1", "--as-of", "2027-01-15"]);
    assert!(
        text(&o).contains("local time (zone)") && text(&o).contains("pending actions"),
        "a table with headers: {}",
        text(&o)
    );
    let o = repayd(dir.path(), &["plan", "show", "C1", "--as-of", "soon"]);
    assert!(
        !o.status.success() && text(&o).contains("--as-of `soon`"),
        "{}",
        text(&o)
    );

    let o = repayd(
        dir.path(),
        &["run", "--once", "--now", "2027-01-15T08:00:00+08:00"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\"due/succeeded\": 1"), "{}", text(&o));
    // Money in the run's summary is per currency, in units: never a mixed minor-unit total.
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(summary["collected"]["CNY"].is_string(), "{summary}");
    assert!(summary.get("collected_minor").is_none(), "{summary}");

    let o = repayd(dir.path(), &["loans", "show", "C1"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("138****5678"), "phone masked: {out}");
    assert!(out.contains("6222 **** **** 1234"), "account masked: {out}");
    assert!(
        !out.contains("13812345678") && !out.contains("6222021234561234"),
        "no unmasked PII: {out}"
    );
    assert!(out.contains("repayment"), "ledger lines shown: {out}");

    let o = repayd(dir.path(), &["attempts", "list"]);
    assert!(text(&o).contains("succeeded"), "{}", text(&o));
    assert!(
        text(&o).starts_with("made (UTC)") && text(&o).contains("CNY "),
        "a header saying the zone, amounts with their currency: {}",
        text(&o)
    );

    let o = repayd(dir.path(), &["ledger", "trial-balance"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("debits - credits = 0.00"), "{}", text(&o));

    // The simulator state persists between CLI runs: running again changes nothing.
    let o = repayd(
        dir.path(),
        &["run", "--once", "--now", "2027-01-15T08:00:00+08:00"],
    );
    assert!(text(&o).contains("\"attempts\": {}"), "{}", text(&o));
    let notices = std::fs::read_to_string(dir.path().join("repayd-notices.log")).unwrap();
    assert!(
        notices.contains("138****5678") && !notices.contains("13812345678"),
        "{notices}"
    );

    // The outbox from the CLI: headers, masked recipients, filters checked.
    let o = repayd(
        dir.path(),
        &["notices", "list", "--loan", "C1", "--kind", "paid"],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.starts_with("     id loan") && out.contains("sent (UTC)"),
        "{out}"
    );
    assert!(out.contains("paid") && out.contains("138****5678"), "{out}");
    assert!(
        !out.contains("13812345678") && !out.contains("pre_due"),
        "{out}"
    );
    let o = repayd(
        dir.path(),
        &["--json", "notices", "list", "--status", "pending"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for n in v["items"].as_array().unwrap() {
        assert_eq!(n["status"], "pending", "{n}");
    }
    let o = repayd(dir.path(), &["notices", "list", "--kind", "reminder"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--kind `reminder` is not one of pre_due"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_import_names_file_line_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.json"),
        LOANS.replace("\"0.12\"", "\"twelve\""),
    )
    .unwrap();
    init(dir.path());
    let o = repayd(dir.path(), &["loans", "import", "bad.json"]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("bad.json: record 1 (loan C1): terms.annual_rate"),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    let o = repayd(dir.path(), &["loans", "show", "C1"]);
    assert!(!o.status.success());
}

/// A JSON loans file with a missing, unknown or mistyped field gets the record, the loan id
/// and the field's path, like JSONL and CSV; every bad record is named, not only the first.
#[test]
fn json_import_names_the_record_and_field_of_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = LOANS.replace(
        "\"policy\": \"standard\",",
        "\"policy\": \"standard\", \"colour\": 1,",
    );
    let missing = LOANS
        .replace("\"C1\"", "\"C2\"")
        .replace("\"phone\": \"13812345678\", ", "");
    let mistyped = LOANS
        .replace("\"C1\"", "\"C3\"")
        .replace("\"3000.00\"", "true");
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    };
    let file = format!(
        "[{}, {}, {}]",
        strip(&unknown),
        strip(&missing),
        strip(&mistyped)
    );
    std::fs::write(dir.path().join("three.json"), file).unwrap();
    init(dir.path());
    let o = repayd(dir.path(), &["loans", "import", "three.json"]);
    assert!(!o.status.success());
    let out = text(&o);
    for want in [
        "three.json: record 1 (loan C1): colour: unknown field `colour`",
        "three.json: record 2 (loan C2): borrower.phone: missing field `phone`",
        "three.json: record 3 (loan C3): terms.principal: an amount",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    assert!(!out.contains("untagged enum"), "{out}");
    std::fs::write(dir.path().join("cut.json"), "[{\"id\": ").unwrap();
    let out = text(&repayd(dir.path(), &["loans", "import", "cut.json"]));
    assert!(out.contains("cut.json: line 1 column"), "{out}");
}

/// `loans list` with the worklist's filters and `--as-of`: days past due, bucket, next due
/// date and what is overdue, as of the date asked; an overdue loan stands `overdue`.
#[test]
fn loans_list_and_show_as_of_a_date() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loans.json"), LOANS).unwrap();
    init(dir.path());
    assert!(repayd(dir.path(), &["loans", "import", "loans.json"])
        .status
        .success());
    let list = |args: &[&str]| {
        let o = repayd(dir.path(), &[&["--json", "loans", "list"], args].concat());
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["items"].as_array().unwrap().clone()
    };
    let before = list(&["--as-of", "2027-01-10"]);
    assert_eq!(before[0]["standing"], "active", "{before:?}");
    assert_eq!(before[0]["days_past_due"], 0);
    assert_eq!(before[0]["next_due"], "2027-01-15");
    assert_eq!(before[0]["overdue"], "0");
    let after = list(&["--as-of", "2027-01-20"]);
    assert_eq!(after[0]["standing"], "overdue", "{after:?}");
    assert_eq!(after[0]["days_past_due"], 5);
    assert_eq!(after[0]["next_due"], "2027-02-15");
    assert_ne!(after[0]["overdue"], "0");
    assert!(list(&["--as-of", "2027-01-20", "--dpd-min", "6"]).is_empty());
    assert_eq!(list(&["--as-of", "2027-01-20", "--dpd-max", "5"]).len(), 1);
    assert!(list(&["--policy", "gentle"]).is_empty());
    let table = text(&repayd(
        dir.path(),
        &["loans", "list", "--as-of", "2027-01-20"],
    ));
    assert!(
        table.starts_with("loan ") && table.contains("next due"),
        "{table}"
    );
    assert!(table.contains("C1") && table.contains("overdue"), "{table}");
    let show = text(&repayd(
        dir.path(),
        &["loans", "show", "C1", "--as-of", "2027-01-20"],
    ));
    assert!(show.contains("days past due 5"), "{show}");
    let bad = repayd(dir.path(), &["loans", "list", "--status", "late"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--status `late` is not one of"),
        "{}",
        text(&bad)
    );
}

/// The scenario format is documented by the binary itself: `--print-scenario` prints a
/// complete commented file that `channel-sim --scenario` takes back.
#[test]
fn channel_sim_prints_its_scenario_format() {
    let dir = tempfile::tempdir().unwrap();
    let o = repayd(dir.path(), &["channel-sim", "--print-scenario"]);
    assert!(o.status.success(), "{}", text(&o));
    let file = String::from_utf8(o.stdout).unwrap();
    assert!(file.contains("[server]") && file.contains("# "), "{file}");
    repayd::adapters::channel::sim::Scenario::from_toml_str(&file, "printed.toml").unwrap();
}

/// A bad file in the policies folder names itself in a warning and blocks nothing that does
/// not need it; `--json` makes errors JSON too.
#[test]
fn a_bad_policy_file_names_itself_and_json_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/broken.toml"),
        "name = \"broken\"\nversion = \"one\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("loans.json"), LOANS).unwrap();
    init(dir.path());
    let o = repayd(dir.path(), &["loans", "import", "loans.json"]);
    let out = text(&o);
    assert!(
        o.status.success(),
        "the standard loan imports despite broken.toml: {out}"
    );
    assert!(
        out.contains("broken.toml:2") && out.contains("left out"),
        "{out}"
    );
    let o = repayd(dir.path(), &["loans", "show", "C1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = repayd(dir.path(), &["--json", "loans", "show", "NOPE"]);
    assert!(!o.status.success());
    let err: serde_json::Value = serde_json::from_slice(
        o.stderr
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("no loan `NOPE`"),
        "{err}"
    );
}

#[test]
fn policy_check_reports_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let o = repayd(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "policy",
            "check",
            "policies/standard.toml",
            "policies/gentle.toml",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let bad = "name = \"bad\"\nversion = 1\n[ladder]\nsteps = [1, 0.5, 1.5]\nmin_amount = \"10\"\nfavourite = true\n";
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let o = repayd(dir.path(), &["policy", "check", "bad.toml"]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("bad.toml:6"), "unknown key located: {out}");
    assert!(out.contains("favourite"), "{out}");
    let overlap = "name = \"q\"\nversion = 1\n[notices]\nquiet_hours = [{ start = \"22:00\", end = \"08:00\" }, { start = \"07:00\", end = \"09:00\" }]\n[ladder]\nsteps = [1, 0]\n";
    std::fs::write(dir.path().join("q.toml"), overlap).unwrap();
    let out = text(&repayd(dir.path(), &["policy", "check", "q.toml"]));
    assert!(
        out.contains("q.toml:4") && out.contains("quiet_hours"),
        "{out}"
    );
    assert!(
        out.contains("q.toml:6") && out.contains("ladder.steps"),
        "{out}"
    );
}

#[test]
fn run_needs_once_and_a_valid_clock() {
    let dir = tempfile::tempdir().unwrap();
    let out = text(&repayd(dir.path(), &["run"]));
    assert!(out.contains("--once"), "{out}");
    let out = text(&repayd(dir.path(), &["run", "--once", "--now", "tomorrow"]));
    assert!(out.contains("RFC 3339"), "{out}");
}

/// A PostgreSQL server that refuses connections is named at once (host and port), instead
/// of after the pool's 30 s wait. Nothing listens on port 1 of loopback.
#[test]
fn refused_postgres_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = repayd(
        dir.path(),
        &["--database", "postgres://postgres@127.0.0.1:1/none", "init"],
    );
    let waited = started.elapsed();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert_eq!(msg.matches("refused").count(), 1, "the cause once: {msg}");
    // Far below the pool's 30 s: the refusal itself is the answer.
    assert!(
        waited < std::time::Duration::from_secs(20),
        "{waited:?}: {msg}"
    );
}

/// A mistyped SQLite path is an error naming it; nothing is created there. Only `init` (and
/// `demo`) create a database.
#[test]
fn a_mistyped_sqlite_path_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("repayd.bd");
    let db = format!("sqlite://{}", typo.display());
    for args in [
        vec!["loans", "show", "C1"],
        vec!["ledger", "trial-balance"],
        vec!["run", "--once"],
        vec!["verify"],
    ] {
        let o = repayd(
            dir.path(),
            &[&["--database", db.as_str()], args.as_slice()].concat(),
        );
        assert!(!o.status.success(), "{args:?}");
        let msg = text(&o);
        assert!(
            msg.contains("no database at")
                && msg.contains("repayd.bd")
                && msg.contains("repayd init"),
            "{args:?}: {msg}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    assert!(repayd(dir.path(), &["--database", &db, "init"])
        .status
        .success());
    assert!(typo.exists());
    let o = repayd(dir.path(), &["--database", &db, "ledger", "trial-balance"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Logs and errors written to a pipe carry no ANSI colour codes.
#[test]
fn output_to_a_pipe_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    assert!(repayd(dir.path(), &["--database", &db, "init"])
        .status
        .success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repayd"))
        .current_dir(dir.path())
        .args([
            "--database",
            &db,
            "run",
            "--once",
            "--now",
            "2027-01-15T08:00:00Z",
        ])
        .env("REPAYD_LOG", "debug")
        .output()
        .expect("run repayd");
    let all = text(&out);
    assert!(all.contains("DEBUG") || all.contains("INFO"), "{all}");
    assert!(
        !all.contains('\u{1b}'),
        "colour codes in piped output:\n{all}"
    );
}

/// The tester's poison loan, left in the database by an earlier version: `run --once`
/// succeeds again and again, parks it, collects the other loan, and `loans show` says why;
/// `loans unpark` gives it back.
#[test]
fn run_once_parks_a_poison_loan_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let second = r#"{"id": "C2", "borrower": {"id": "B2", "name": "Li Na", "phone": "13812345679", "email": "ln@example.com"},
      "currency": "CNY", "timezone": "Asia/Shanghai", "policy": "standard",
      "mandates": [{"channel": "unionpay", "agreement": "AGR-C2", "account": "6222021234561235"}],
      "installments": [{"due_date": "2027-01-15", "principal": "100.00"}]}"#;
    let two = format!("{}, {second}]", LOANS.trim_end().trim_end_matches(']'));
    std::fs::write(dir.path().join("loans.json"), two).unwrap();
    init(dir.path());
    let o = repayd(dir.path(), &["loans", "import", "loans.json"]);
    assert!(o.status.success(), "{}", text(&o));
    let db = dir.path().join("repayd.db");
    let conn = rusqlite_free_update(&db);
    assert!(conn, "poisoned");
    for _ in 0..2 {
        let o = repayd(
            dir.path(),
            &["run", "--once", "--now", "2027-01-15T08:00:00+08:00"],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = repayd(dir.path(), &["loans", "show", "C2"]);
    assert!(text(&o).contains("PARKED for a person"), "{}", text(&o));
    let o = repayd(dir.path(), &["attempts", "list", "--loan", "C1"]);
    assert!(text(&o).contains("succeeded"), "{}", text(&o));
    let o = repayd(
        dir.path(),
        &["loans", "unpark", "C2", "--reason", "checked"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = repayd(dir.path(), &["loans", "show", "C2"]);
    assert!(!text(&o).contains("PARKED"), "{}", text(&o));
}

/// Poison C2's installment behind repayd's back, as an old import would have stored it.
fn rusqlite_free_update(db: &Path) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", db.display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let r = sqlx::query(
            "UPDATE installments SET principal = 6000000000000000000, interest = 6000000000000000000 WHERE loan_id = 'C2'",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        r.rows_affected() == 1
    })
}
