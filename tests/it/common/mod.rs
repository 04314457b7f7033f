//! Test harness: each test gets a fresh, migrated database (a temp SQLite file, or a new
//! PostgreSQL database on the local server), the built-in channel simulator with the test's
//! scenario, and the engine itself, so runs are driven directly with an explicit clock.
#![allow(dead_code)]

pub mod money;
pub mod procs;
pub mod web;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use repayd::adapters::channel::{Scenario, Simulator};
use repayd::app::{load_policies, simulated_engine, Sims};
use repayd::domain::channel::Channel;
use repayd::domain::import;
use repayd::engine::{plan, Engine, EngineConfig, RunSummary};
use repayd::store::Db;
use rust_decimal::Decimal;
use sqlx::{Connection, Row};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the test PostgreSQL server is (without a database name).
pub fn pg_server() -> String {
    std::env::var("REPAYD_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestApp {
    pub engine: Engine,
    pub sims: Sims,
    pub dir: tempfile::TempDir,
    pg_database: PgGuard,
}

/// Owns a test's PostgreSQL database and drops it when the test ends, however it ends (a
/// failed assertion unwinds through here too), so no test leaves a database behind.
#[derive(Debug, Default)]
pub struct PgGuard(Option<String>);

impl PgGuard {
    pub fn new(name: Option<String>) -> Self {
        PgGuard(name)
    }

    /// Drop the database now (the guard then has nothing left to do).
    pub async fn drop_now(&mut self) {
        if let Some(name) = self.0.take() {
            drop_pg_database(&name).await;
        }
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let Some(name) = self.0.take() else { return };
        // Drop runs outside async code (possibly while unwinding): a thread of its own with
        // its own runtime does the async work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(drop_pg_database(&name));
        })
        .join();
    }
}

pub async fn create_pg_database() -> (String, String) {
    sqlx::any::install_default_drivers();
    let server = pg_server();
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {server} ({e}). The suite needs it: start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
             or point REPAYD_TEST_PG at a server"
            )
        });
    let name = format!("repayd_test_{}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    (format!("{server}/{name}"), name)
}

/// Drop a test database made by [`create_pg_database`].
pub async fn drop_pg_database(name: &str) {
    let mut admin = sqlx::AnyConnection::connect(&format!("{}/postgres", pg_server()))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// A fresh app on `backend` whose simulator follows `scenario` (TOML).
pub async fn spawn_app(backend: Backend, scenario: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg_database) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("test.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, name) = create_pg_database().await;
            (url, Some(name))
        }
    };
    let db = Db::open(&url).await.expect("open database");
    let mut policies = load_policies(std::path::Path::new("policies")).expect("policies");
    policies.insert(
        repayd::domain::policy::parse_policy(TEST_POLICY, "test policy").expect("test policy"),
    );
    let scenario = Scenario::from_toml_str(scenario, "test scenario").expect("scenario");
    let log = dir.path().join("notices.log");
    let (engine, sims) =
        simulated_engine(db, policies, scenario, None, &log, EngineConfig::default())
            .expect("engine");
    TestApp {
        engine,
        sims,
        dir,
        pg_database: PgGuard::new(pg_database),
    }
}

/// A policy for tests: like `standard`, with a 23:00 due slot to exercise quiet hours.
pub const TEST_POLICY: &str = r#"
name = "test"
version = 1
[notices]
before_due = [{ days = 1, at = "10:00" }]
channels = ["sms", "email"]
on_result = true
overdue_every_days = 0
quiet_hours = [{ start = "22:00", end = "08:00" }]
daily_cap = 10
[early]
allowed = false
[due]
at = ["08:00", "23:00"]
[overdue]
at = "09:00"
daily_for_days = 2
then_every_days = 7
[limits]
max_attempts_per_installment = 30
stop_after_days_past_due = 10
[ladder]
steps = [1, 0.75, 0.5, 0.25]
min_amount = "50.00"
on_codes = ["INSUFFICIENT_BALANCE"]
within_slot = true
[penalty]
daily_rate = "0.001"
"#;

impl TestApp {
    /// Import loans from JSON text through the real import path, then plan them.
    pub async fn import_json(&self, json: &str) -> import::ImportReport {
        let path = self.dir.path().join("loans.json");
        std::fs::write(&path, json).expect("write loans");
        let channels: Vec<String> = self.engine.channel_configs.keys().cloned().collect();
        let loans = repayd::ops::import::read_file(&path, &self.engine.policies, &channels)
            .expect("valid loans");
        let mut tx = self.engine.db.pool.begin().await.expect("tx");
        let r = repayd::store::import::store_loans(&mut tx, &loans, 0)
            .await
            .expect("store loans");
        tx.commit().await.expect("commit");
        plan::plan_new_loans(&self.engine, None)
            .await
            .expect("plan");
        r
    }

    pub async fn run(&self, now: DateTime<Utc>) -> RunSummary {
        self.engine.run_once(now).await.expect("run")
    }

    /// Run at every instant something is due (and daily), up to `end`, like the daemon would.
    pub async fn run_until(&self, start: DateTime<Utc>, end: DateTime<Utc>) {
        let mut now = start;
        self.run(now).await;
        loop {
            let next_day = (now.date_naive() + chrono::Days::new(1))
                .and_hms_opt(0, 5, 0)
                .unwrap()
                .and_utc();
            let next = self
                .engine
                .next_wakeup(now)
                .await
                .unwrap()
                .map_or(next_day, |t| t.min(next_day));
            if next > end {
                return;
            }
            now = next;
            self.run(now).await;
        }
    }

    pub fn sim(&self, channel: &str) -> &Arc<Simulator> {
        self.sims
            .sims
            .iter()
            .find(|s| s.name() == channel)
            .expect("channel")
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.engine.db.pool)
            .await
            .expect(sql)
    }

    pub async fn scalar_str(&self, sql: &str) -> String {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_one(&self.engine.db.pool)
            .await
            .expect(sql)
    }

    /// (kind, status, amount, ladder_step, channel) of a loan's attempts in order.
    pub async fn attempts(&self, loan: &str) -> Vec<(String, String, Decimal, i64, String)> {
        sqlx::query("SELECT kind, status, amount, ladder_step, channel FROM attempts WHERE loan_id = $1 ORDER BY id")
            .bind(loan)
            .fetch_all(&self.engine.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (r.get("kind"), r.get("status"), Decimal::new(r.get("amount"), 2), r.get("ladder_step"), r.get("channel"))
            })
            .collect()
    }

    /// Debits minus credits over the whole journal; must always be zero.
    pub async fn trial_balance_difference(&self) -> Decimal {
        let mut conn = self.engine.db.pool.acquire().await.unwrap();
        repayd::store::ledger::trial_balance(&mut conn)
            .await
            .unwrap()
            .difference()
    }

    /// The channel's truth equals the ledger: every simulator debit is a succeeded attempt
    /// posted exactly once, and the totals agree.
    pub async fn assert_sim_matches_ledger(&self) {
        let sim_total: Decimal = self.sims.sims.iter().map(|s| s.total_debited()).sum();
        let cleared = self
            .scalar_i64("SELECT CAST(COALESCE(SUM(debit),0) AS BIGINT) FROM journal_lines WHERE account LIKE '1100.%'")
            .await;
        assert_eq!(
            sim_total,
            Decimal::new(cleared, 2),
            "simulator debits vs ledger clearing"
        );
        for s in &self.sims.sims {
            for d in s.journal() {
                let posted = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM attempts a JOIN journal_entries e ON e.attempt_id = a.id \
                     WHERE a.order_no = $1 AND a.channel = $2 AND a.status = 'succeeded'",
                )
                .bind(&d.order_no)
                .bind(s.name())
                .fetch_one(&self.engine.db.pool)
                .await
                .unwrap();
                assert_eq!(
                    posted,
                    1,
                    "debit {} on {} posted {posted} times",
                    d.order_no,
                    s.name()
                );
            }
        }
        assert_eq!(self.trial_balance_difference().await, Decimal::ZERO);
    }

    /// Drop the PostgreSQL database (the SQLite file goes with the temp dir).
    pub async fn cleanup(mut self) {
        self.engine.db.pool.close().await;
        self.pg_database.drop_now().await;
    }
}

/// An instant given in a zone's local time.
pub fn local(tz: &str, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    let tz: chrono_tz::Tz = tz.parse().unwrap();
    tz.with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// One loan as JSON, with explicit installments `(due_date, principal)` and mandates
/// `(channel, agreement)`.
pub fn loan_json(
    id: &str,
    tz: &str,
    policy: &str,
    payday: Option<u32>,
    allow_early: bool,
    mandates: &[(&str, &str)],
    installments: &[(&str, &str)],
) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "borrower": { "id": format!("B-{id}"), "name": "Test Borrower", "phone": "13812345678",
                      "email": "t@example.com", "payday": payday },
        "currency": "CNY",
        "timezone": tz,
        "policy": policy,
        "allow_early": allow_early,
        "mandates": mandates.iter().map(|(c, a)| serde_json::json!({
            "channel": c, "agreement": a, "account": "6222021234567890"
        })).collect::<Vec<_>>(),
        "installments": installments.iter().map(|(d, p)| serde_json::json!({
            "due_date": d, "principal": p, "interest": "0", "fee": "0"
        })).collect::<Vec<_>>(),
    })
}

/// Generate `#[tokio::test]`s of one scenario for SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::common::Backend::Postgres).await
            }
        }
    };
}
