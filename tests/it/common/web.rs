//! The API served for real: the daemon's router on 127.0.0.1:0 over a fresh database (like
//! zero-to-production's `spawn_app`), a token per role, a client that keeps every response
//! body (for the PII scan), and the engine at hand to run with an explicit clock.

use super::{spawn_app, Backend, TestApp};
use chrono::{DateTime, Utc};
use repayd::app::Sims;
use repayd::engine::{Engine, RunSummary};
use repayd::web::auth::{create_token, Role};
use repayd::web::state::ApiState;
use repayd::web::throttle::AuthLimits;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub struct WebApp {
    pub engine: Arc<Engine>,
    pub sims: Sims,
    pub dir: tempfile::TempDir,
    pg_database: super::PgGuard,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub collections: String,
    pub viewer: String,
    /// Every response body seen, with the request that produced it.
    pub bodies: Arc<Mutex<Vec<(String, String)>>>,
}

/// A response: status, headers and the body parsed as JSON (Null when it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

pub async fn spawn_web(backend: Backend, scenario: &str) -> WebApp {
    spawn_web_with(backend, scenario, |e| {
        // Tests fail authentication on purpose, many times in a row from one address.
        ApiState::for_engine(e).with_auth_limits(TEST_AUTH_LIMITS)
    })
    .await
}

/// The limit on failed authentication in tests: on, but far above what they do on purpose.
pub const TEST_AUTH_LIMITS: AuthLimits = AuthLimits {
    burst: 1000,
    per_second: 100,
};

/// [`spawn_web`] with the router's state made by `state` (channel secrets, limits).
pub async fn spawn_web_with(
    backend: Backend,
    scenario: &str,
    state: impl FnOnce(Arc<Engine>) -> ApiState,
) -> WebApp {
    let TestApp {
        engine,
        sims,
        dir,
        pg_database,
    } = spawn_app(backend, scenario).await;
    let engine = Arc::new(engine);
    let router = repayd::web::app(state(engine.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.expect("serve") });
    let mut conn = engine.db.pool.acquire().await.expect("conn");
    let admin = create_token(&mut conn, "alice-admin", Role::Admin, 0)
        .await
        .expect("token")
        .1;
    let collections = create_token(&mut conn, "carol-collections", Role::Collections, 0)
        .await
        .expect("token")
        .1;
    let viewer = create_token(&mut conn, "victor-viewer", Role::Viewer, 0)
        .await
        .expect("token")
        .1;
    drop(conn);
    WebApp {
        engine,
        sims,
        dir,
        pg_database,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        admin,
        collections,
        viewer,
        bodies: Arc::new(Mutex::new(Vec::new())),
    }
}

impl WebApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request; `token` None sends none. The body is kept for the PII scan.
    pub async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        self.bodies
            .lock()
            .unwrap()
            .push((what.to_string(), text.clone()));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req, &format!("GET {path}")).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.post_keyed(path, token, body, None).await
    }

    pub async fn post_keyed(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        key: Option<&str>,
    ) -> Resp {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        self.send(req, &format!("POST {path}")).await
    }

    /// Import loans through the API (admin), asserting success.
    pub async fn import(&self, loans: &Value) -> Resp {
        let r = self.post("/api/v1/loans", Some(&self.admin), loans).await;
        assert_eq!(r.status, StatusCode::CREATED, "import: {}", r.text);
        r
    }

    pub async fn run(&self, now: DateTime<Utc>) -> RunSummary {
        self.engine.run_once(now).await.expect("run")
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.engine.db.pool)
            .await
            .expect(sql)
    }

    pub fn sim_debits(&self) -> usize {
        self.sims.sims.iter().map(|s| s.journal().len()).sum()
    }

    pub async fn trial_balance_difference(&self) -> rust_decimal::Decimal {
        let mut conn = self.engine.db.pool.acquire().await.unwrap();
        repayd::store::ledger::trial_balance(&mut conn)
            .await
            .unwrap()
            .difference()
    }

    /// Drop the PostgreSQL database (the SQLite file goes with the temp dir).
    pub async fn cleanup(mut self) {
        self.engine.db.pool.close().await;
        self.pg_database.drop_now().await;
    }
}

impl WebApp {
    /// Import a statement for the day of `attempts` (as the API shows them) that names each
    /// with the amount given instead of its own: an `amount_differs` case when they differ.
    /// Returns the statement day.
    pub async fn statement_naming(&self, attempts: &[(&Value, &str)]) -> chrono::NaiveDate {
        statement_naming(&self.engine, attempts).await
    }
}

pub async fn statement_naming(engine: &Engine, attempts: &[(&Value, &str)]) -> chrono::NaiveDate {
    let mut lines = Vec::new();
    let mut day = None;
    let mut channel = String::new();
    for (a, amount) in attempts {
        channel = a["channel"].as_str().expect("channel").to_string();
        let at: DateTime<Utc> = a["at"].as_str().expect("at").parse().expect("at");
        let tz = engine.channel_configs[&channel].settlement.tz;
        day = Some(repayd::domain::local_date(at, tz));
        lines.push(repayd::domain::channel::StatementLine {
            order_no: a["order_no"].as_str().expect("order_no").into(),
            channel_ref: format!("REF-{}", a["id"]),
            amount: amount.parse().expect("amount"),
            fee: rust_decimal::Decimal::ZERO,
            status: "success".into(),
            at,
        });
    }
    let date = day.expect("an attempt");
    repayd::recon::import_lines(engine, &channel, date, &lines, "test statement", Utc::now())
        .await
        .expect("statement import");
    date
}
