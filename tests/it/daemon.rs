//! The real daemon binary against the real channel simulator server, a real SMTP server and a
//! loopback SMS gateway: attempts, ledger and notices end up as expected; a second daemon on
//! the same SQLite file is refused.

use crate::common;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::procs::{daemon_test_policy, free_port, repayd, sim_journal, wait_for_port, Proc};
use sqlx::Connection;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the embedded SMTP server received.
#[derive(Clone, Default)]
struct Inbox {
    messages: Arc<Mutex<Vec<String>>>,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for Inbox {
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        let msg = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        self.messages.lock().unwrap().push(msg);
        mailin_embedded::response::OK
    }
}

fn smtp_server() -> (u16, Inbox) {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("cannot start the test SMTP server");
    let port = listener.local_addr().unwrap().port();
    let inbox = Inbox::default();
    let mut server = mailin_embedded::Server::new(inbox.clone());
    server.with_name("smtp.test").with_tcp_listener(listener);
    std::thread::spawn(move || server.serve().expect("SMTP test server"));
    (port, inbox)
}

type Texts = Arc<Mutex<Vec<serde_json::Value>>>;

async fn sms_gateway() -> (u16, Texts) {
    async fn receive(
        State(seen): State<Texts>,
        Json(body): Json<serde_json::Value>,
    ) -> Json<serde_json::Value> {
        let id = format!("sms-{}", seen.lock().unwrap().len() + 1);
        seen.lock().unwrap().push(body);
        Json(serde_json::json!({ "id": id }))
    }
    let seen: Texts = Arc::default();
    let app = Router::new()
        .route("/sms", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

fn loans_json(n: usize, due: &str) -> String {
    let loans: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("D{i:03}"),
                "borrower": {"id": format!("DB{i:03}"), "name": "Li Lei", "phone": "13812345678",
                             "email": format!("b{i}@example.com")},
                "currency": "CNY", "timezone": "Asia/Shanghai", "policy": "e2e",
                "mandates": [{"channel": "bank", "agreement": format!("AG{i:03}"), "account": "6222021234561234"}],
                "installments": [{"due_date": due, "principal": "1250.00", "interest": "0", "fee": "0"}],
            })
        })
        .collect();
    serde_json::Value::Array(loans).to_string()
}

fn config(db: &str, listen: u16, sim_port: u16, smtp_port: u16, sms_port: u16) -> String {
    format!(
        r#"
[database]
url = "{db}"
[daemon]
tick_seconds = 1
listen = "127.0.0.1:{listen}"
policies = "policies"
lender_name = "Acme Lending"
lease_seconds = 5
heartbeat_seconds = 1
query_backoff_seconds = [1]
[notices]
sink = "providers"
locale = "en"
[notices.sms]
kind = "generic"
url = "http://127.0.0.1:{sms_port}/sms"
token = "sms-token"
[notices.email]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "collections@acme.example"
[[channels]]
name = "bank"
kind = "http"
base_url = "http://127.0.0.1:{sim_port}"
secret = "e2e-secret"
tps = 200
concurrency = 8
timeout_ms = 2000
order_no = {{ prefix = "BK", charset = "alnum", min_len = 16, max_len = 32 }}
"#
    )
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_collects_over_http_and_sends_email_and_sms() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("policies")).unwrap();
    std::fs::write(
        d.join("policies/e2e.toml"),
        daemon_test_policy("e2e", "\"sms\", \"email\""),
    )
    .unwrap();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    std::fs::write(d.join("loans.json"), loans_json(20, &yesterday)).unwrap();
    // Half the accounts hold 60% of the installment: 100% fails, 50% succeeds.
    let mut scenario = String::from("[server]\ncallback_duplicate_rate = 1.0\n");
    for i in (0..20).step_by(2) {
        scenario.push_str(&format!(
            "[[accounts]]\nagreement = \"AG{i:03}\"\nbalance = \"750.00\"\n"
        ));
    }
    std::fs::write(d.join("scenario.toml"), scenario).unwrap();

    let (smtp_port, inbox) = smtp_server();
    let (sms_port, texts) = sms_gateway().await;
    let (sim_port, listen) = (free_port(), free_port());
    let db = format!("sqlite://{}", d.join("e2e.db").display());
    std::fs::write(
        d.join("repayd.toml"),
        config(&db, listen, sim_port, smtp_port, sms_port),
    )
    .unwrap();

    let callback = format!("http://127.0.0.1:{listen}/webhooks/channels/bank");
    let sim = Proc(
        repayd(
            d,
            &[
                "channel-sim",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--scenario",
                "scenario.toml",
                "--name",
                "bank",
                "--secret",
                "e2e-secret",
                "--callback-url",
                &callback,
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for_port(sim_port, "channel-sim");
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

    // A viewer token for /metrics, made with the CLI (printed once on stdout).
    let out = repayd(
        d,
        &[
            "--database",
            &db,
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "scraper",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("rpd_"), "{token}");

    let daemon = Proc(
        repayd(d, &["serve", "--config", "repayd.toml"])
            // Debug level, so that the PII check below covers every log line we write.
            .env(
                "REPAYD_LOG",
                "debug,hyper=info,h2=info,reqwest=info,rustls=info",
            )
            .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(listen, "repayd serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let paid = scalar(&db, "SELECT COUNT(*) FROM loans WHERE status = 'paid'").await;
        let partial = scalar(
            &db,
            "SELECT COUNT(*) FROM notices WHERE kind IN ('paid','partial') AND status = 'sent'",
        )
        .await;
        if paid == 10 && partial == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {paid} loans paid, {partial} result notices sent\n{}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The channel's journal equals the ledger: ten full and ten half debits, once each.
    let journal = sim_journal(sim_port, "bank", "e2e-secret").await;
    assert_eq!(journal.len(), 20, "{journal:?}");
    let cleared = scalar(
        &db,
        "SELECT CAST(SUM(debit) AS BIGINT) FROM journal_lines WHERE account LIKE '1100.%'",
    )
    .await;
    assert_eq!(cleared, 10 * 125_000 + 10 * 62_500);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM journal_entries WHERE kind = 'repayment'"
        )
        .await,
        20
    );
    // Duplicate callbacks were received and changed nothing.
    assert!(scalar(&db, "SELECT COUNT(*) FROM channel_callbacks").await >= 20);

    // Bodies are quoted-printable: undo its soft line breaks.
    let mails: Vec<String> = inbox
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.replace("=\r\n", ""))
        .collect();
    assert!(
        mails.iter().any(|m| m.contains("6222 **** **** 1234")
            && m.contains("1250.00")
            && m.contains("Acme Lending")),
        "an email states the masked account and amount: {mails:?}"
    );
    assert!(mails.iter().all(|m| !m.contains("6222021234561234")));
    let sms = texts.lock().unwrap().clone();
    assert!(
        sms.iter()
            .any(|t| t["text"].as_str().unwrap_or("").contains("625.00")),
        "{sms:?}"
    );
    assert!(sms.iter().all(|t| t["to"] == "13812345678"));

    // A signed delivery report updates the notice; a bad signature is refused.
    let report = br#"{"message_id": "repayd-1", "status": "delivered"}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = repayd::adapters::channel::protocol::sign(b"sms-token", ts, report);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{listen}/webhooks/sms");
    let ok = client
        .post(&url)
        .header("x-repayd-timestamp", ts.to_string())
        .header("x-repayd-signature", &sig)
        .body(report.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .post(&url)
        .header("x-repayd-timestamp", ts.to_string())
        .header("x-repayd-signature", "00")
        .body(report.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM notices WHERE id = 1 AND delivery_status = 'delivered'"
        )
        .await,
        1
    );

    let health = http_get(listen, "/healthz").await;
    assert!(
        health.contains("\"database\":\"ok\"") && health.contains("last_tick"),
        "{health}"
    );
    let anonymous = reqwest::get(format!("http://127.0.0.1:{listen}/metrics"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "/metrics needs a token");
    let metrics = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{listen}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("repayd_attempts_total{"), "{metrics}");
    for series in [
        "repayd_channel_latency_seconds_bucket{",
        "repayd_build_info{version=",
        "repayd_http_requests_total{",
        "repayd_pending_actions{kind=\"attempt\"}",
        "repayd_recon_cases_open ",
        "repayd_collected_minor_units_total{",
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(series), "no `{series}` in\n{metrics}");
    }
    promtool_check(&metrics);

    // SIGTERM: a clean stop.
    let mut daemon = daemon;
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "daemon exit: {status:?}");
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(log.contains("DEBUG"), "the daemon logged at debug level");
    for secret in ["13812345678", "6222021234561234", "e2e-secret", "sms-token"] {
        let hit = log.lines().find(|l| l.contains(secret));
        assert!(
            hit.is_none(),
            "a log line shows `{secret}` unmasked: {hit:?}"
        );
    }
    drop(sim);
}

async fn http_get(port: u16, path: &str) -> String {
    let client = reqwest::Client::new();
    client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
fn a_second_daemon_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = |port: u16| {
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n",
            d.join("one.db").display()
        )
    };
    std::fs::write(d.join("a.toml"), cfg(free_port())).unwrap();
    std::fs::write(d.join("b.toml"), cfg(free_port())).unwrap();
    // No database there yet: the daemon refuses a path nothing created (a typo, say).
    let missing = repayd(d, &["serve", "--config", "a.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no database at") && err.contains("one.db"),
        "{err}"
    );
    assert!(!d.join("one.db").exists());
    let db = format!("sqlite://{}", d.join("one.db").display());
    assert!(repayd(d, &["--database", &db, "init"])
        .status()
        .unwrap()
        .success());
    let first = Proc(
        repayd(d, &["serve", "--config", "a.toml"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.join("one.db.lock").exists()
        || std::fs::read_to_string(d.join("one.db.lock"))
            .unwrap()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "first daemon did not take the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = repayd(d, &["serve", "--config", "b.toml"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&format!("pid {}", first.0.id())), "{err}");
    assert!(
        err.contains("one.db") && err.contains("one daemon per database file"),
        "{err}"
    );
}

/// A channel without a secret cannot check a callback's signature, so its callbacks are
/// refused; the daemon says so at start, for each such channel.
#[test]
fn channels_without_a_secret_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cfg = format!(
        "[database]\nurl = \"sqlite://{}\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n",
        d.join("w.db").display()
    );
    std::fs::write(d.join("w.toml"), cfg).unwrap();
    let db = format!("sqlite://{}", d.join("w.db").display());
    assert!(repayd(d, &["--database", &db, "init"])
        .status()
        .unwrap()
        .success());
    let _daemon = Proc(
        repayd(d, &["serve", "--config", "w.toml"])
            .env("REPAYD_CHANNEL_WECHAT_SECRET", "wx-secret")
            .stderr(std::fs::File::create(d.join("w.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "the daemon");
    let log = common::procs::strip_ansi(&std::fs::read_to_string(d.join("w.log")).unwrap());
    let warned = |name: &str| {
        log.lines().any(|l| {
            l.contains("WARN") && l.contains("no secret") && l.contains(&format!("channel={name}"))
        })
    };
    assert!(warned("unionpay") && warned("bank"), "{log}");
    assert!(!warned("wechat"), "wechat has a secret: {log}");
}

/// `promtool check metrics` (Debian's `prometheus`, which `.ci/run` installs) passes on the
/// daemon's page: every metric has HELP and TYPE, and names follow Prometheus' rules.
fn promtool_check(page: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
