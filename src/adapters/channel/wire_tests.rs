//! The HTTP adapter against the simulator server over real loopback sockets: what the
//! engine relies on (idempotency, unknown on timeout, TPS cap, callbacks) must hold on the
//! wire, not only in-process.

use super::http::{HttpChannel, HTTP_5XX};
use super::protocol::{
    now_unix, verify, Callback, Secret, MAX_SKEW_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use super::server::{serve_simulator, Latency, ServerSpec};
use super::sim::{INSUFFICIENT_BALANCE, TIMEOUT};
use super::*;
use crate::domain::channel::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::TimeZone;
use chrono::{NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "test-secret";

const SCENARIO: &str = r#"
seed = 11
[[accounts]]
agreement = "AGR-POOR"
balance = "10.00"
"#;

/// A running simulator server and the way to stop it.
struct Harness {
    sim: Arc<Simulator>,
    base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(spec: ServerSpec) -> Harness {
    let scenario = Scenario::from_toml_str(SCENARIO, "test.toml").unwrap();
    let sim = Arc::new(Simulator::new("sim", scenario));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = serve_simulator(listener, sim.clone(), Secret::new(SECRET), spec, shutdown);
    let task = tokio::spawn(served);
    Harness {
        sim,
        base,
        stop,
        task,
    }
}

impl Harness {
    fn channel(&self, tps: Option<u32>, concurrency: usize, timeout_ms: u64) -> HttpChannel {
        let cfg = ChannelConfig {
            name: "sim".into(),
            order_no: OrderNoRule::default(),
            tps,
            concurrency,
            timeout_ms,
            settlement: Default::default(),
        };
        HttpChannel::new(&cfg, self.base.clone(), Secret::new(SECRET)).unwrap()
    }

    /// Stop the server; it must wind down promptly even with answers held back.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        ended.expect("server stops").unwrap().unwrap();
    }
}

fn day() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 19, 2, 0, 0).unwrap()
}

fn req(order_no: &str, agreement: &str, amount: rust_decimal::Decimal) -> DebitRequest {
    DebitRequest {
        order_no: order_no.into(),
        agreement: agreement.into(),
        amount,
        currency: "CNY".into(),
        at: day(),
    }
}

fn succeeded(o: &DebitOutcome) -> bool {
    matches!(o, DebitOutcome::Succeeded { .. })
}

#[tokio::test]
async fn debits_fail_and_replay_over_http() {
    let h = start(ServerSpec::default()).await;
    let ch = h.channel(None, 4, 2000);
    let first = ch
        .submit(&req("1001", "AGR-A", dec!(100.00)))
        .await
        .unwrap();
    assert!(succeeded(&first), "{first:?}");
    let again = ch
        .submit(&req("1001", "AGR-A", dec!(100.00)))
        .await
        .unwrap();
    assert_eq!(again, first, "resubmit answers the stored outcome");
    assert_eq!(h.sim.journal().len(), 1, "and does not debit twice");
    assert_eq!(ch.journal().await.unwrap(), h.sim.journal());

    let poor = ch
        .submit(&req("1002", "AGR-POOR", dec!(100.00)))
        .await
        .unwrap();
    assert_eq!(poor.code(), Some(INSUFFICIENT_BALANCE));
    let other = ch.submit(&req("1001", "AGR-A", dec!(5.00))).await;
    assert!(matches!(other, Err(ChannelError::Rejected(_))), "{other:?}");

    assert_eq!(
        ch.query("1001", day()).await.unwrap(),
        QueryOutcome::Found(first)
    );
    assert_eq!(
        ch.query("9999", day()).await.unwrap(),
        QueryOutcome::NotFound
    );
    assert_eq!(h.sim.journal().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn timeout_after_debit_is_unknown_and_query_finds_success() {
    let spec = ServerSpec {
        timeout_after_debit_rate: 1.0,
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 4, 300);
    let started = Instant::now();
    let answer = ch.submit(&req("2001", "AGR-A", dec!(50.00))).await.unwrap();
    assert_eq!(
        answer,
        DebitOutcome::Unknown {
            code: TIMEOUT.into()
        }
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let found = ch.query("2001", day()).await.unwrap();
    assert!(
        matches!(found, QueryOutcome::Found(DebitOutcome::Succeeded { .. })),
        "{found:?}"
    );
    assert_eq!(h.sim.journal().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn server_errors_on_submit_are_unknown() {
    let spec = ServerSpec {
        error_5xx_rate: 1.0,
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 4, 2000);
    let mut applied = 0;
    for i in 0..12 {
        let no = format!("{}", 3000 + i);
        let answer = ch.submit(&req(&no, "AGR-A", dec!(1.00))).await.unwrap();
        assert_eq!(
            answer,
            DebitOutcome::Unknown {
                code: HTTP_5XX.into()
            }
        );
        match ch.query(&no, day()).await.unwrap() {
            QueryOutcome::Found(o) => applied += usize::from(succeeded(&o)),
            QueryOutcome::NotFound => {}
        }
    }
    assert_eq!(h.sim.journal().len(), applied);
    assert!(
        (1..12).contains(&applied),
        "5xx both before and after the debit: {applied}"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_signatures_are_refused_both_ways() {
    let h = start(ServerSpec::default()).await;
    let cfg = ChannelConfig {
        name: "sim".into(),
        order_no: OrderNoRule::default(),
        tps: None,
        concurrency: 1,
        timeout_ms: 2000,
        settlement: Default::default(),
    };
    let wrong = HttpChannel::new(&cfg, h.base.clone(), Secret::new("wrong")).unwrap();
    let refused = wrong.submit(&req("4001", "AGR-A", dec!(1.00))).await;
    assert!(
        matches!(&refused, Err(ChannelError::Rejected(m)) if m.contains("401")),
        "{refused:?}"
    );
    let unsigned = reqwest::get(format!("{}/v1/journal", h.base))
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert!(h.sim.journal().is_empty());
    h.stop().await;

    let impostor = Router::new().route(
        "/v1/debits",
        post(|| async { r#"{"status":"succeeded","channel_ref":"X","amount":"1.00"}"# }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, impostor).await });
    let ch = HttpChannel::new(&cfg, base, Secret::new(SECRET)).unwrap();
    let answer = ch.submit(&req("4002", "AGR-A", dec!(1.00))).await;
    assert!(
        matches!(&answer, Err(ChannelError::Protocol(_))),
        "{answer:?}"
    );
    assert!(answer.unwrap_err().may_have_debited());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_are_backed_off_and_retried() {
    let spec = ServerSpec {
        tps: Some(20),
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 8, 2000);
    let reqs: Vec<DebitRequest> = (0..40)
        .map(|i| req(&format!("{}", 5000 + i), "AGR-A", dec!(1.00)))
        .collect();
    let answers = futures::future::join_all(reqs.iter().map(|r| ch.submit(r))).await;
    assert!(
        answers.iter().all(|a| a.as_ref().is_ok_and(succeeded)),
        "{answers:?}"
    );
    assert!(ch.stats().throttled > 0, "{:?}", ch.stats());
    assert_eq!(h.sim.journal().len(), 40, "each order debited once");

    let impatient = h.channel(None, 8, 2000).with_max_retries(0);
    let mut refused = 0;
    for i in 0..30 {
        match impatient
            .submit(&req(&format!("{}", 5100 + i), "AGR-A", dec!(1.00)))
            .await
        {
            Err(ChannelError::RateLimited) => refused += 1,
            other => assert!(other.is_ok_and(|o| succeeded(&o))),
        }
    }
    assert!(refused > 0);
    assert_eq!(h.sim.journal().len(), 40 + 30 - refused);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tps_cap_keeps_the_server_from_refusing() {
    let spec = ServerSpec {
        tps: Some(250),
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(Some(200), 32, 5000).with_max_retries(0);
    let reqs: Vec<DebitRequest> = (0..300)
        .map(|i| req(&format!("{}", 6000 + i), "AGR-A", dec!(1.00)))
        .collect();
    let started = Instant::now();
    let answers = futures::future::join_all(reqs.iter().map(|r| ch.submit(r))).await;
    let elapsed = started.elapsed();
    let refused = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!((refused, ch.stats().throttled), (0, 0), "no 429 at all");
    assert_eq!(h.sim.journal().len(), 300);
    assert!(
        elapsed >= Duration::from_millis(1450),
        "300 at 200/s took {elapsed:?}"
    );
    h.stop().await;
}

type Received = Arc<Mutex<Vec<Callback>>>;

/// A merchant webhook that keeps the callbacks whose signature checks out.
async fn webhook() -> (String, Received) {
    let got = Received::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(got.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn receive(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let ts = header(TIMESTAMP_HEADER);
    if verify(
        SECRET.as_bytes(),
        ts,
        header(SIGNATURE_HEADER),
        &body,
        now_unix(),
        MAX_SKEW_SECS,
    )
    .is_err()
    {
        return StatusCode::UNAUTHORIZED;
    }
    got.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

/// Wait until `want` callbacks arrived (or 5 s), then a little more to catch extras.
async fn callbacks_by_order(got: &Received, want: usize) -> BTreeMap<String, Vec<DebitOutcome>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut by_order: BTreeMap<String, Vec<DebitOutcome>> = BTreeMap::new();
    for cb in got.lock().unwrap().iter() {
        by_order
            .entry(cb.order_no.clone())
            .or_default()
            .push(cb.outcome.clone());
    }
    by_order
}

#[tokio::test]
async fn callbacks_arrive_signed_late_and_twice() {
    let (url, got) = webhook().await;
    let spec = ServerSpec {
        callback_url: Some(url),
        callback_delay_ms: 50,
        callback_duplicate_rate: 1.0,
        callback_missing_rate: 1.0,
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 4, 2000);
    for i in 0..4 {
        ch.submit(&req(&format!("{}", 7000 + i), "AGR-A", dec!(1.00)))
            .await
            .unwrap();
    }
    ch.submit(&req("7100", "AGR-POOR", dec!(99.00)))
        .await
        .unwrap();
    ch.submit(&req("7000", "AGR-A", dec!(1.00))).await.unwrap(); // replay: no new callback
    let by_order = callbacks_by_order(&got, 8).await;
    let orders: Vec<&str> = by_order.keys().map(String::as_str).collect();
    assert_eq!(
        orders,
        ["7000", "7001", "7002", "7003"],
        "failure's callback went missing"
    );
    for outcomes in by_order.values() {
        assert_eq!(outcomes.len(), 2, "every callback sent twice");
        assert!(succeeded(&outcomes[0]) && outcomes[0] == outcomes[1]);
    }
    h.stop().await;
}

#[tokio::test]
async fn failure_callbacks_arrive_when_not_dropped() {
    let (url, got) = webhook().await;
    let spec = ServerSpec {
        callback_url: Some(url),
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 4, 2000);
    ch.submit(&req("7200", "AGR-POOR", dec!(99.00)))
        .await
        .unwrap();
    let by_order = callbacks_by_order(&got, 1).await;
    let outcomes = &by_order["7200"];
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].code(), Some(INSUFFICIENT_BALANCE));
    h.stop().await;
}

#[tokio::test]
async fn statement_round_trips_over_http_with_latency() {
    let spec = ServerSpec {
        latency_ms: Latency {
            median: 40,
            p99: None,
        },
        ..ServerSpec::default()
    };
    let h = start(spec).await;
    let ch = h.channel(None, 4, 2000);
    ch.submit(&req("8001", "AGR-A", dec!(12.34))).await.unwrap();
    ch.submit(&req("8002", "AGR-POOR", dec!(99.00)))
        .await
        .unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 12, 19).unwrap();
    let started = Instant::now();
    let lines = ch.statement(date).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "latency applied"
    );
    assert_eq!(lines, h.sim.statement(date).await.unwrap());
    let statuses: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
    assert_eq!(statuses, ["success", "failed"]);
    let empty = ch.statement(date.succ_opt().unwrap()).await.unwrap();
    assert!(empty.is_empty());
    h.stop().await;
}

#[test]
fn latency_is_log_normal_with_the_given_median_and_p99() {
    let latency = Latency {
        median: 100,
        p99: Some(400),
    };
    let mut rng = StdRng::seed_from_u64(5);
    let mut ms: Vec<f64> = (0..20_000)
        .map(|_| latency.sample(rng.gen(), rng.gen()).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let (median, p99) = (ms[10_000], ms[19_800]);
    assert!((90.0..110.0).contains(&median), "median {median}");
    assert!((340.0..460.0).contains(&p99), "p99 {p99}");
    let fixed = Latency {
        median: 7,
        p99: None,
    };
    assert_eq!(fixed.sample(0.3, 0.9), Duration::from_millis(7));
    assert_eq!(Latency::default().sample(0.5, 0.5), Duration::ZERO);
}

#[test]
fn server_table_reads_from_the_scenario() {
    let src = "seed = 3\n[server]\nlatency_ms = { median = 100, p99 = 400 }\ntps = 500\n\
               timeout_after_debit_rate = 0.1\ncallback_url = \"http://127.0.0.1:9/hook\"\n";
    let s = Scenario::from_toml_str(src, "s.toml").unwrap();
    assert_eq!(s.server.tps, Some(500));
    assert_eq!(s.server.latency_ms.p99, Some(400));
    assert_eq!(s.server.hang_ms, 60_000, "defaults fill the rest");
    assert_eq!(
        Scenario::from_toml_str("seed = 1", "s.toml")
            .unwrap()
            .server,
        ServerSpec::default()
    );
    let bad = [
        ("seed = 1\n[server]\nerror_5xx_rate = 2.0\n", 3),
        (
            "seed = 1\n[server]\nlatency_ms = { median = 100, p99 = 50 }\n",
            2,
        ),
        ("seed = 1\n[server]\ntps = 0\n", 2),
        ("[server]\nretries = 3\n", 2),
    ];
    for (src, line) in bad {
        match Scenario::from_toml_str(src, "s.toml") {
            Err(SimError::Scenario { line: got, .. }) => assert_eq!(got, line, "{src}"),
            other => panic!("{src}: {other:?}"),
        }
    }
}
