//! Crash safety and scale-out with the real binaries: a daemon killed with SIGKILL again and
//! again never debits twice, loses no money and sends no notice twice; three daemons on one
//! PostgreSQL database share the work, one is killed, and every due action runs exactly once.

use crate::common;

use common::procs::{
    daemon_test_policy, free_port, repayd, sim_journal, strip_ansi, wait_for_port, Proc,
};
use rand::Rng;
use sqlx::Connection;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SECRET: &str = "crash-secret";

fn write_portfolio(d: &Path, n: usize) {
    std::fs::create_dir_all(d.join("policies")).unwrap();
    std::fs::write(
        d.join("policies/crash.toml"),
        daemon_test_policy("crash", "\"sms\""),
    )
    .unwrap();
    let due = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let loans: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("K{i:05}"),
                "borrower": {"id": format!("KB{i:05}"), "name": "Han Mei", "phone": "13900001111", "email": "k@example.com"},
                "currency": "CNY", "timezone": "Asia/Shanghai", "policy": "crash",
                "mandates": [{"channel": "bank", "agreement": format!("KA{i:05}"), "account": "6222021234561234"}],
                "installments": [{"due_date": due, "principal": "1000.00", "interest": "0", "fee": "0"}],
            })
        })
        .collect();
    std::fs::write(
        d.join("loans.json"),
        serde_json::Value::Array(loans).to_string(),
    )
    .unwrap();
}

/// How a crash run's channel behaves: the simulator's median latency and TPS cap (answered
/// 429), which the daemons' channel config mirrors.
#[derive(Clone, Copy)]
struct Shape {
    latency_ms: u64,
    tps: u32,
}

const FAST: Shape = Shape {
    latency_ms: 2,
    tps: 2000,
};

fn write_scenario(d: &Path, n: usize, short_every: usize, timeouts: f64, shape: Shape) {
    let mut s = format!(
        "seed = 11\n[server]\nlatency_ms = {{ median = {} }}\ntps = {}\ntimeout_after_debit_rate = {timeouts}\n\
         hang_ms = 1500\ncallback_duplicate_rate = 0.5\n",
        shape.latency_ms, shape.tps
    );
    if short_every > 0 {
        for i in (0..n).step_by(short_every) {
            s.push_str(&format!(
                "[[accounts]]\nagreement = \"KA{i:05}\"\nbalance = \"600.00\"\n"
            ));
        }
    }
    std::fs::write(d.join("scenario.toml"), s).unwrap();
}

fn write_config(d: &Path, name: &str, db: &str, listen: u16, sim_port: u16, shape: Shape) {
    let tps = shape.tps;
    let cfg = format!(
        r#"
[database]
url = "{db}"
[daemon]
tick_seconds = 1
listen = "127.0.0.1:{listen}"
policies = "policies"
batch_size = 50
lease_seconds = 2
heartbeat_seconds = 1
query_backoff_seconds = [1]
[notices]
sink = "log"
log_file = "notices-{name}.log"
[[channels]]
name = "bank"
kind = "http"
base_url = "http://127.0.0.1:{sim_port}"
secret = "{SECRET}"
tps = {tps}
concurrency = 16
timeout_ms = 300
order_no = {{ prefix = "BK", charset = "alnum", min_len = 16, max_len = 32 }}
"#
    );
    std::fs::write(d.join(format!("{name}.toml")), cfg).unwrap();
}

fn start_sim(d: &Path, port: u16, callback_ports: &[u16]) -> Proc {
    // Callbacks go to the first daemon's webhook (possibly down: they are retried, then lost).
    let callback = format!(
        "http://127.0.0.1:{}/webhooks/channels/bank",
        callback_ports[0]
    );
    let p = Proc(
        repayd(
            d,
            &[
                "channel-sim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--scenario",
                "scenario.toml",
                "--name",
                "bank",
                "--secret",
                SECRET,
                "--callback-url",
                &callback,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for_port(port, "channel-sim");
    p
}

fn start_daemon(d: &Path, name: &str) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join(format!("{name}.log")))
        .unwrap();
    Proc(
        repayd(d, &["serve", "--config", &format!("{name}.toml")])
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

async fn scalar(db: &str, sql: &str) -> i64 {
    let mut c = sqlx::AnyConnection::connect(db).await.unwrap();
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Nothing due is left: no action, no open attempt, no notice.
async fn settled(db: &str) -> bool {
    let now = chrono::Utc::now().timestamp_millis();
    let open = scalar(
        db,
        "SELECT COUNT(*) FROM attempts WHERE status IN ('submitted','unknown')",
    )
    .await;
    let due = scalar(db, &format!("SELECT COUNT(*) FROM actions WHERE status IN ('pending','claimed') AND due_at <= {now}")).await;
    // The notices of the run's results go out at the end of the run.
    let unsent = scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM notices WHERE status IN ('pending','claimed') AND send_after <= {now}"
        ),
    )
    .await;
    open == 0 && due == 0 && unsent == 0
}

async fn wait_settled(db: &str, d: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !settled(db).await {
        assert!(
            Instant::now() < deadline,
            "work did not settle; logs in {}",
            d.display()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The channel's truth equals the ledger; nothing was debited beyond what was owed; the
/// trial balance is zero.
async fn check_money(db: &str, d: &Path, journal: &[repayd::adapters::channel::SimDebit]) {
    let mut c = sqlx::AnyConnection::connect(db).await.unwrap();
    let posted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.order_no, COUNT(e.id) FROM attempts a LEFT JOIN journal_entries e ON e.attempt_id = a.id \
         WHERE a.status = 'succeeded' GROUP BY a.order_no",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let posted: HashMap<String, i64> = posted.into_iter().collect();
    let mut per_agreement: HashMap<String, rust_decimal::Decimal> = HashMap::new();
    for debit in journal {
        assert_eq!(
            posted.get(&debit.order_no),
            Some(&1),
            "debit {} must be posted exactly once",
            debit.order_no
        );
        *per_agreement.entry(debit.agreement.clone()).or_default() += debit.amount;
    }
    assert_eq!(
        posted.len(),
        journal.len(),
        "every posted success is a real debit"
    );
    for (agreement, total) in per_agreement {
        assert!(
            total <= rust_decimal::Decimal::new(1000_00, 2),
            "{agreement} debited {total} for 1000.00 owed"
        );
    }
    let total: rust_decimal::Decimal = journal.iter().map(|j| j.amount).sum();
    let cleared = scalar(db, "SELECT CAST(COALESCE(SUM(debit),0) AS BIGINT) FROM journal_lines WHERE account LIKE '1100.%'").await;
    assert_eq!(total, rust_decimal::Decimal::new(cleared, 2));
    let over = scalar(db, "SELECT COUNT(*) FROM installments WHERE paid_principal > principal OR paid_penalty > penalty").await;
    assert_eq!(over, 0);
    let tb = repayd(d, &["--database", db, "ledger", "trial-balance"])
        .output()
        .unwrap();
    assert!(
        tb.status.success(),
        "{}",
        String::from_utf8_lossy(&tb.stdout)
    );
}

/// `repayd verify` (the real binary) finds every invariant intact.
fn check_verify(db: &str, d: &Path) {
    let out = repayd(d, &["--database", db, "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "repayd verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each notice id appears at most once across every daemon's notice log.
fn check_notices_once(d: &Path) -> usize {
    let mut seen = HashSet::new();
    for entry in std::fs::read_dir(d).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("notices-")
        {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let id = line.split('\t').next().unwrap().to_string();
                assert!(seen.insert(id.clone()), "notice {id} was sent twice");
            }
        }
    }
    seen.len()
}

fn log_tail(d: &Path, name: &str) -> String {
    let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Due work survives every crash: nothing due before the last restart is left pending or
/// ended as "pursued by another instance", every loan was attempted, and no hold remains.
async fn check_no_due_work_dropped(db: &str, last_restart_ms: i64) {
    let dropped = scalar(
        db,
        "SELECT COUNT(*) FROM actions WHERE note LIKE '%another instance%'",
    )
    .await;
    assert_eq!(dropped, 0, "actions ended as pursued by another instance");
    let open = scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM actions WHERE due_at <= {last_restart_ms} \
             AND status NOT IN ('done', 'skipped', 'cancelled')"
        ),
    )
    .await;
    assert_eq!(open, 0, "every action due before the last restart ran");
    let never = scalar(
        db,
        "SELECT COUNT(*) FROM loans l WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.loan_id = l.id)",
    )
    .await;
    assert_eq!(never, 0, "every loan was attempted");
    let holds = scalar(
        db,
        "SELECT COUNT(*) FROM loans WHERE busy_owner IS NOT NULL",
    )
    .await;
    assert_eq!(holds, 0, "no loan hold is left behind");
}

/// A viewer token for `/metrics`, made with the CLI (printed once on stdout).
fn viewer_token(d: &Path, db: &str) -> String {
    let args = [
        "--database",
        db,
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "scraper",
    ];
    let out = repayd(d, &args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// How many batches the daemon at `port` has in flight (`None` while it is not up).
async fn batches_in_flight(port: u16, token: &str) -> Option<f64> {
    let body = tokio::time::timeout(Duration::from_millis(500), http_metrics(port, token))
        .await
        .ok()??;
    metric_sum(&body, "repayd_pipeline_batches_in_flight")
}

/// The sum of a metric's samples on a Prometheus page (`None` when it has none).
fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The daemon's `/metrics` page; `None` unless it answered 200.
async fn http_metrics(port: u16, token: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// The start-up and run lines of every life of daemon `name`, for a failure message.
fn lives_summary(d: &Path, name: &str) -> String {
    let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
    strip_ansi(&log)
        .lines()
        .filter(|l| {
            [
                "listening",
                "limits shared",
                "run finished",
                "took over",
                "WARN",
                "ERROR",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(|l| l.chars().take(220).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A crash run: how many kills, on how many loans, through what channel.
struct Crash {
    kills: usize,
    loans: usize,
    shape: Shape,
}

/// SIGKILL at random moments, lives from 0.2 s to 3 s, then a last daemon finishes the
/// work: no debit twice, no money lost, no due work dropped, every notice at most once.
/// Returns how many kills hit a daemon whose pipeline was full (every batch slot taken).
async fn killing_the_daemon_never_debits_twice_or_drops_due_work(
    backend: common::Backend,
    run: Crash,
) -> usize {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = run.loans;
    write_portfolio(d, n);
    write_scenario(d, n, 10, 0.1, run.shape);
    let (sim_port, listen) = (free_port(), free_port());
    let (db, pg) = match backend {
        common::Backend::Sqlite => (format!("sqlite://{}", d.join("crash.db").display()), None),
        common::Backend::Postgres => {
            let (url, name) = common::create_pg_database().await;
            (url, Some(name))
        }
    };
    // Dropped at the end, even when an assertion fails.
    let _pg = common::PgGuard::new(pg.clone());
    write_config(d, "d1", &db, listen, sim_port, run.shape);
    let _sim = start_sim(d, sim_port, &[listen]);
    let init = repayd(d, &["--database", &db, "init"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = repayd(d, &["--database", &db, "loans", "import", "loans.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let token = viewer_token(d, &db);
    let seed: u64 = rand::random();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let kills = run.kills;
    let (mut full_kills, mut lives_with_work) = (0, 0);
    for _ in 0..kills {
        if !settled(&db).await {
            lives_with_work += 1;
        }
        let mut daemon = start_daemon(d, "d1");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..3000))).await;
        // The default pipeline depth is 3.
        if batches_in_flight(listen, &token).await >= Some(3.0) {
            full_kills += 1;
        }
        daemon.kill9();
    }
    let short_lived = scalar(&db, "SELECT COUNT(DISTINCT submitted_by) FROM attempts").await;
    let last_restart = chrono::Utc::now().timestamp_millis();
    let mut daemon = start_daemon(d, "d1");
    // Up (its signal handlers installed) before it can be asked to stop.
    wait_for_port(listen, "daemon");
    wait_settled(&db, d, Duration::from_secs(180)).await;
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(
        status.success(),
        "{status:?}; the log ends:\n{}",
        log_tail(d, "d1")
    );

    let attempts = scalar(&db, "SELECT COUNT(*) FROM attempts").await;
    assert!(
        attempts >= n as i64,
        "at least {n} attempts ran ({attempts}; seed {seed})"
    );
    // Lives that started once everything was done had nothing to attempt.
    assert!(
        short_lived >= lives_with_work / 3,
        "short lives still do work: {short_lived} of the {lives_with_work} killed instances that \
         started with work due made attempts (seed {seed}); \
         their log:\n{}",
        lives_summary(d, "d1")
    );
    let journal = sim_journal(sim_port, "bank", SECRET).await;
    check_money(&db, d, &journal).await;
    check_no_due_work_dropped(&db, last_restart).await;
    check_verify(&db, d);
    assert!(check_notices_once(d) > 0);
    let stuck = scalar(&db, "SELECT COUNT(*) FROM notices WHERE status = 'sending'").await;
    let sent = scalar(&db, "SELECT COUNT(*) FROM notices WHERE status = 'sent'").await;
    // The dispatcher marks 64 notices `sending` at a time before it delivers them.
    assert!(
        sent > 0 && stuck <= 64 * kills as i64,
        "at most one chunk of notices in flight per crash is given up ({stuck})"
    );
    eprintln!(
        "crash figures ({backend:?}, seed {seed}): kills {kills} ({full_kills} with a full pipeline, \
         {lives_with_work} started with work due), attempts {attempts}, debits {}, \
         killed instances that attempted {short_lived}, due actions dropped 0",
        journal.len()
    );
    if let Some(name) = pg {
        common::drop_pg_database(&name).await;
    }
    full_kills
}

const EVERY_MOMENT: Crash = Crash {
    kills: 25,
    loans: 2000,
    shape: FAST,
};

/// Slow answers under a tight cap keep every batch slot taken: the kills land while three
/// batches are in flight, some recording, some waiting on the channel, some writing.
const FULL_PIPELINE: Crash = Crash {
    kills: 12,
    loans: 3000,
    shape: Shape {
        latency_ms: 40,
        tps: 300,
    },
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_on_sqlite() {
    killing_the_daemon_never_debits_twice_or_drops_due_work(common::Backend::Sqlite, EVERY_MOMENT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_on_postgres() {
    killing_the_daemon_never_debits_twice_or_drops_due_work(
        common::Backend::Postgres,
        EVERY_MOMENT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_with_a_full_pipeline_on_sqlite() {
    let full = killing_the_daemon_never_debits_twice_or_drops_due_work(
        common::Backend::Sqlite,
        FULL_PIPELINE,
    )
    .await;
    assert!(full >= 1, "at least one kill hit a full pipeline ({full})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_with_a_full_pipeline_on_postgres() {
    let full = killing_the_daemon_never_debits_twice_or_drops_due_work(
        common::Backend::Postgres,
        FULL_PIPELINE,
    )
    .await;
    assert!(full >= 1, "at least one kill hit a full pipeline ({full})");
}

/// Three daemons' setting on one fresh PostgreSQL database: `n` loans imported, the
/// simulator up, a config per daemon (`{prefix}0` … `{prefix}2`). Keep it alive for the test.
struct ThreeDaemons {
    db: String,
    name: String,
    sim_port: u16,
    ports: [u16; 3],
    _pg: common::PgGuard,
    _sim: Proc,
}

async fn three_daemons(d: &Path, n: usize, shape: Shape, prefix: &str) -> ThreeDaemons {
    write_portfolio(d, n);
    write_scenario(d, n, 0, 0.0, shape);
    let (db, name) = common::create_pg_database().await;
    let pg = common::PgGuard::new(Some(name.clone()));
    let sim_port = free_port();
    let ports = [free_port(), free_port(), free_port()];
    for (i, port) in ports.iter().enumerate() {
        write_config(d, &format!("{prefix}{i}"), &db, *port, sim_port, shape);
    }
    let sim = start_sim(d, sim_port, &ports);
    let init = repayd(d, &["--database", &db, "init"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = repayd(d, &["--database", &db, "loans", "import", "loans.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ThreeDaemons {
        db,
        name,
        sim_port,
        ports,
        _pg: pg,
        _sim: sim,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_one_postgres_and_survive_losing_one() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 1000;
    // Slow enough that the work outlasts the first daemon and the others' start-up (a
    // daemon that finds others alive waits two heartbeats before its first call).
    let shape = Shape {
        latency_ms: 10,
        tps: 400,
    };
    let set = three_daemons(d, n, shape, "m").await;
    let (db, name, sim_port) = (set.db.clone(), set.name.clone(), set.sim_port);

    let mut daemons: Vec<Proc> = (0..3).map(|i| start_daemon(d, &format!("m{i}"))).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    daemons[0].kill9();
    wait_settled(&db, d, Duration::from_secs(120)).await;
    for p in daemons.iter_mut().skip(1) {
        assert!(p.terminate(Duration::from_secs(20)).success());
    }

    // Every loan was collected by exactly one debit: no action ran twice.
    let journal = sim_journal(sim_port, "bank", SECRET).await;
    let paid = scalar(&db, "SELECT COUNT(*) FROM loans WHERE status = 'paid'").await;
    assert_eq!(
        journal.len() as i64,
        paid,
        "one debit per paid loan, none for the others"
    );
    // A loan not paid had its attempt die with the killed daemon before the channel saw it:
    // the rescuer queried, found nothing, and recorded a failure; the overdue cadence goes on.
    let lost = scalar(
        &db,
        "SELECT COUNT(DISTINCT loan_id) FROM attempts WHERE code = 'NOT_FOUND'",
    )
    .await;
    assert_eq!(
        paid + lost,
        n as i64,
        "every loan was attempted ({paid} paid, {lost} lost in flight)"
    );
    let twice = scalar(
        &db,
        "SELECT COUNT(*) FROM (SELECT action_id FROM attempts GROUP BY action_id \
         HAVING COUNT(DISTINCT submitted_by) > 1) AS t",
    )
    .await;
    assert_eq!(twice, 0, "no action was run by two instances");
    let now = chrono::Utc::now().timestamp_millis();
    let sql = format!(
        "SELECT COUNT(*) FROM actions WHERE status IN ('pending','claimed') AND due_at <= {now}"
    );
    assert_eq!(scalar(&db, &sql).await, 0, "every due action ran");
    let merged = scalar(
        &db,
        "SELECT COUNT(*) FROM actions WHERE note LIKE '%another instance%'",
    )
    .await;
    assert_eq!(merged, 0, "no action ended as pursued by another instance");
    let owners = scalar(&db, "SELECT COUNT(DISTINCT submitted_by) FROM attempts").await;
    assert!(
        owners >= 2,
        "the work was shared ({owners} instances submitted)"
    );
    check_money(&db, d, &journal).await;
    check_verify(&db, d);
    check_notices_once(d);
    common::drop_pg_database(&name).await;
}

/// The channel's cap belongs to the channel: three daemons on one PostgreSQL share one
/// 150 TPS channel, each taking a third, and the simulator server (which answers 429 above
/// 150 requests in any sliding second) never has to refuse one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_one_channel_cap_without_a_429() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 1500;
    let shape = Shape {
        latency_ms: 20,
        tps: 150,
    };
    let set = three_daemons(d, n, shape, "s").await;
    let (db, name, sim_port, ports) = (set.db.clone(), set.name.clone(), set.sim_port, set.ports);
    let token = viewer_token(d, &db);
    let mut daemons: Vec<Proc> = Vec::new();
    for i in 0..3 {
        daemons.push(start_daemon(d, &format!("s{i}")));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_settled(&db, d, Duration::from_secs(180)).await;
    let mut throttled = 0.0;
    for port in ports {
        let body = http_metrics(port, &token)
            .await
            .expect("the daemon's /metrics");
        assert!(body.contains("repayd_attempts_total"), "{body}");
        throttled += metric_sum(&body, "repayd_channel_throttled_total").unwrap_or(0.0);
    }
    for p in daemons.iter_mut() {
        assert!(p.terminate(Duration::from_secs(20)).success());
    }
    assert_eq!(throttled, 0.0, "no request was answered 429");
    let shared = (0..3)
        .filter(|i| {
            let log = std::fs::read_to_string(d.join(format!("s{i}.log"))).unwrap_or_default();
            strip_ansi(&log).contains("channel limits shared channel=bank instances=3")
        })
        .count();
    assert!(
        shared >= 2,
        "the daemons took a third of the cap each ({shared} of 3 did); s1's log ends:\n{}",
        log_tail(d, "s1")
    );
    let owners = scalar(&db, "SELECT COUNT(DISTINCT submitted_by) FROM attempts").await;
    assert!(
        owners >= 2,
        "the work was shared ({owners} instances submitted)"
    );
    let journal = sim_journal(sim_port, "bank", SECRET).await;
    check_money(&db, d, &journal).await;
    check_verify(&db, d);
    common::drop_pg_database(&name).await;
}
