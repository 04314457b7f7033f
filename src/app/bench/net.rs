//! `repayd bench net`: the daemon's engine against three simulator servers at once, one per
//! channel (`bank`, `unionpay`, `wechat`), over loopback HTTP, each with its own TPS cap
//! (answering 429 above it) and log-normal latency; the loans are spread over the channels
//! in proportion to their caps so all three finish about together.

use super::db::fresh_database;
use super::portfolio::{bench_engine, bench_loan, due_morning, eve, first_due, import_loans};
use super::rss::peak_rss_mb;
use crate::adapters::channel::{
    serve_simulator, HttpChannel, Latency, Scenario, ServerSpec, Simulator,
};
use crate::app::AppError;
use crate::domain::channel::{
    builtin_channels, Channel, ChannelError, DebitOutcome, DebitRequest, QueryOutcome,
    StatementLine,
};
use crate::domain::secret::Secret;
use crate::engine::{plan, Engine};
use crate::store::{backend_of, Backend, Db};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The channels served, in the order of `--tps`.
pub const NET_CHANNELS: [&str; 3] = ["bank", "unionpay", "wechat"];
const SECRET: &str = "bench";

/// Options of the networked benchmark.
#[derive(Debug, Clone)]
pub struct NetBenchOptions {
    pub database_url: String,
    pub installments: usize,
    pub latency_median_ms: u64,
    /// TPS cap per channel, in the order of [`NET_CHANNELS`] (one to three of them).
    pub tps: Vec<u32>,
    /// Daemons sharing the database (only 1 so far).
    pub daemons: usize,
}

/// One channel's figures.
#[derive(Debug, Clone, Serialize)]
pub struct NetChannelReport {
    pub channel: String,
    pub tps_cap: u32,
    pub attempts: u64,
    /// From the first call sent to the last answer received.
    pub active_seconds: f64,
    pub achieved_tps: f64,
    pub fraction_of_cap: f64,
    pub http_429s: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetBenchReport {
    pub channels: Vec<NetChannelReport>,
    /// Totals over all channels.
    pub attempts: u64,
    pub seconds: f64,
    pub achieved_tps: f64,
    pub tps_cap: u32,
    pub fraction_of_cap: f64,
    pub http_429s: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub peak_rss_mb: f64,
    pub daemons: usize,
}

/// What the engines' calls to one server saw: latencies, when they started and ended, and
/// the HTTP clients (their 429 counters). Shared by every engine built over the server.
#[derive(Default)]
pub struct Probe {
    inner: Mutex<ProbeData>,
}

#[derive(Default)]
struct ProbeData {
    latencies_ms: Vec<f64>,
    first: Option<Instant>,
    last: Option<Instant>,
    clients: Vec<Arc<HttpChannel>>,
}

impl Probe {
    fn data(&self) -> std::sync::MutexGuard<'_, ProbeData> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, started: Instant) {
        let end = Instant::now();
        let mut d = self.data();
        d.latencies_ms
            .push(end.duration_since(started).as_secs_f64() * 1000.0);
        d.first = Some(d.first.map_or(started, |f| f.min(started)));
        d.last = Some(d.last.map_or(end, |l| l.max(end)));
    }
}

/// One simulator server, serving one channel on a loopback port until dropped or stopped.
pub struct NetServer {
    pub channel: String,
    pub tps: u32,
    /// Median latency of the server's answers.
    pub latency_ms: u64,
    pub url: String,
    pub probe: Arc<Probe>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

impl NetServer {
    /// Stop serving and wait for the requests in flight.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Start one server per `(channel, tps)` with log-normal latency (median `latency_ms`,
/// p99 three times that) and the TPS cap.
pub async fn start_servers(
    caps: &[(String, u32)],
    latency_ms: u64,
) -> Result<Vec<NetServer>, AppError> {
    let mut out = Vec::new();
    for (channel, tps) in caps {
        let rule = builtin_channels()
            .into_iter()
            .find(|c| &c.name == channel)
            .ok_or_else(|| AppError::Config(format!("no built-in channel `{channel}`")))?;
        let spec = ServerSpec {
            latency_ms: Latency {
                median: latency_ms,
                p99: Some(latency_ms * 3),
            },
            tps: Some(*tps),
            ..ServerSpec::default()
        };
        let sim = Arc::new(
            Simulator::new(channel, Scenario::default()).with_order_no_rule(rule.order_no),
        );
        let at = std::path::Path::new("127.0.0.1:0");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| AppError::io(at, e))?;
        let addr = listener.local_addr().map_err(|e| AppError::io(at, e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_simulator(
            listener,
            sim,
            Secret::new(SECRET),
            spec,
            async {
                let _ = stopped.await;
            },
        ));
        out.push(NetServer {
            channel: channel.clone(),
            tps: *tps,
            latency_ms,
            url: format!("http://{addr}"),
            probe: Arc::default(),
            stop: Some(stop),
            task: Some(task),
        });
    }
    Ok(out)
}

/// Calls in flight needed to keep `tps` busy at p99 latency, twice over.
fn in_flight(tps: u32, latency_ms: u64) -> usize {
    (tps as u64 * latency_ms * 3 * 2 / 1000).clamp(16, 4096) as usize
}

/// One engine (one daemon's) over `db` whose channels are HTTP clients of `servers`, each
/// with the server's TPS as its own cap, claiming as `owner`. Calling it once per daemon
/// gives engines that share the servers (and their probes).
pub fn net_engine(db: Db, servers: &[NetServer], owner: &str) -> Result<Engine, AppError> {
    let mut engine = bench_engine(db, 0)?;
    let mut total = 0;
    for s in servers {
        let mut rule = builtin_channels()
            .into_iter()
            .find(|c| c.name == s.channel)
            .ok_or_else(|| AppError::Config(format!("no built-in channel `{}`", s.channel)))?;
        rule.tps = Some(s.tps);
        rule.concurrency = in_flight(s.tps, s.latency_ms.max(1));
        rule.timeout_ms = 10_000;
        total += rule.concurrency;
        let http = HttpChannel::new(&rule, s.url.clone(), Secret::new(SECRET))
            .map_err(|e| AppError::Config(e.to_string()))?;
        let http = Arc::new(http);
        s.probe.data().clients.push(http.clone());
        let timed = Timed {
            inner: http,
            probe: s.probe.clone(),
        };
        engine.channels.insert(s.channel.clone(), Arc::new(timed));
        engine.channel_configs.insert(s.channel.clone(), rule);
    }
    engine.cfg.concurrency = total.max(1);
    engine.cfg.owner = owner.to_string();
    Ok(engine)
}

/// An HTTP channel that records each submit's latency in its server's probe.
struct Timed {
    inner: Arc<HttpChannel>,
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl Channel for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn submit(&self, req: &DebitRequest) -> Result<DebitOutcome, ChannelError> {
        let t = Instant::now();
        let r = self.inner.submit(req).await;
        self.probe.record(t);
        r
    }
    async fn query(&self, order_no: &str, at: DateTime<Utc>) -> Result<QueryOutcome, ChannelError> {
        self.inner.query(order_no, at).await
    }
    async fn statement(&self, date: NaiveDate) -> Result<Vec<StatementLine>, ChannelError> {
        self.inner.statement(date).await
    }
    fn share_limits(&self, instances: u32) {
        self.inner.share_limits(instances)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The channel of each of `n` loans, interleaved in proportion to `caps` (smooth weighted
/// round robin): every stretch of loans has each channel's share, so no channel's cap holds
/// the others back and all finish about together.
pub fn spread(n: usize, caps: &[u32]) -> Vec<usize> {
    let total: i64 = caps.iter().map(|&c| c as i64).sum();
    let mut current = vec![0i64; caps.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        for (c, w) in current.iter_mut().zip(caps) {
            *c += *w as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("at least one channel");
        current[best] -= total;
        out.push(best);
    }
    out
}

/// The `(channel, cap)` pairs of the options, checked.
fn channel_caps(opts: &NetBenchOptions) -> Result<Vec<(String, u32)>, AppError> {
    if opts.daemons == 0 || opts.daemons > MAX_DAEMONS {
        return Err(AppError::Config(format!(
            "--daemons takes 1 to {MAX_DAEMONS}"
        )));
    }
    if opts.daemons > 1 && backend_of(&opts.database_url)? != Backend::Postgres {
        return Err(AppError::Config(
            "--daemons above 1 needs a PostgreSQL --bench-database (SQLite allows one daemon)"
                .into(),
        ));
    }
    if opts.tps.is_empty() || opts.tps.len() > NET_CHANNELS.len() || opts.tps.contains(&0) {
        return Err(AppError::Config(format!(
            "--tps takes one to {} positive caps (for {})",
            NET_CHANNELS.len(),
            NET_CHANNELS.join(", ")
        )));
    }
    if opts.installments == 0 {
        return Err(AppError::Config("--installments must be positive".into()));
    }
    Ok(NET_CHANNELS
        .iter()
        .zip(&opts.tps)
        .map(|(c, t)| (c.to_string(), *t))
        .collect())
}

/// Collect `installments` single-installment loans due the same morning through the
/// servers, all channels at once in one run, and report per channel.
pub async fn run_net_bench(
    opts: &NetBenchOptions,
    progress: &dyn Fn(&str),
) -> Result<NetBenchReport, AppError> {
    let caps = channel_caps(opts)?;
    fresh_database(&opts.database_url).await?;
    let db = Db::open(&opts.database_url).await?;
    let mut servers = start_servers(&caps, opts.latency_median_ms).await?;
    let engines = net_engines(&opts.database_url, db, &servers, opts.daemons).await?;
    let engine = &engines[0];
    let weights: Vec<u32> = caps.iter().map(|(_, t)| *t).collect();
    let channels = spread(opts.installments, &weights);
    progress(&format!(
        "importing {} loans over {} channels",
        opts.installments,
        caps.len()
    ));
    let make = |i: usize| {
        let mut l = bench_loan(i, 1, first_due());
        l.mandates[0].channel = caps[channels[i]].0.clone();
        l
    };
    import_loans(engine, opts.installments, &make, progress).await?;
    plan::plan_new_loans(engine, None).await?;
    engine.run_once(eve()).await?;
    progress(&format!(
        "due-date run over HTTP, all channels at once, {} daemon(s)",
        engines.len()
    ));
    let t = Instant::now();
    let runs = engines.iter().map(|e| e.run_once(due_morning()));
    for r in futures::future::join_all(runs).await {
        r?;
    }
    let seconds = t.elapsed().as_secs_f64();
    for e in &engines {
        crate::engine::instance::mark_stopped(&e.db, &e.cfg.owner).await?;
    }
    for s in servers.iter_mut() {
        s.stop().await;
    }
    Ok(net_report(&servers, seconds, opts.daemons))
}

/// Batches of about two seconds of one instance's part of the caps (64 to 5,000 actions).
/// Work goes to whichever instance claims it, and each sends at its part of the cap only, so
/// an instance that claimed big batches would still be sending when the others ran dry; two
/// seconds' worth keeps every channel fed (Little's law wants a tenth of a second's worth in
/// flight at 100 ms) and the tail short.
fn batch_for(servers: &[NetServer], instances: usize) -> usize {
    let part: u64 = servers.iter().map(|s| u64::from(s.tps)).sum::<u64>() / instances.max(1) as u64;
    (part * 2).clamp(64, 5000) as usize
}

/// At most this many daemons in one `bench net`.
const MAX_DAEMONS: usize = 8;

/// `n` engines over the same servers, each its own pool and instance (as `n` daemons on one
/// database would be), registered and sharing each channel's cap: each takes `1/n` of it.
async fn net_engines(
    url: &str,
    first: Db,
    servers: &[NetServer],
    n: usize,
) -> Result<Vec<Engine>, AppError> {
    let mut engines = Vec::with_capacity(n);
    for i in 0..n {
        let db = if i == 0 {
            first.clone()
        } else {
            Db::open(url).await?
        };
        let owner = crate::engine::instance::new_instance_id();
        crate::engine::instance::register(&db, &owner).await?;
        let mut engine = net_engine(db, servers, &owner)?;
        engine.cfg.batch_size = batch_for(servers, n);
        engines.push(engine);
    }
    for e in &engines {
        crate::engine::instance::share_channel_limits(e).await?;
    }
    Ok(engines)
}

/// Figures per channel from the servers' probes, and the totals.
fn net_report(servers: &[NetServer], seconds: f64, daemons: usize) -> NetBenchReport {
    let mut channels = Vec::new();
    let mut all = Vec::new();
    for s in servers {
        let d = s.probe.data();
        let mut lat = d.latencies_ms.clone();
        lat.sort_by(|a, b| a.total_cmp(b));
        all.extend_from_slice(&lat);
        let active = match (d.first, d.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        let attempts = lat.len() as u64;
        let achieved = if active > 0.0 {
            attempts as f64 / active
        } else {
            0.0
        };
        channels.push(NetChannelReport {
            channel: s.channel.clone(),
            tps_cap: s.tps,
            attempts,
            active_seconds: active,
            achieved_tps: achieved,
            fraction_of_cap: achieved / s.tps as f64,
            http_429s: d.clients.iter().map(|c| c.stats().throttled).sum(),
            latency_p50_ms: percentile(&lat, 0.5),
            latency_p99_ms: percentile(&lat, 0.99),
        });
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let attempts = all.len() as u64;
    let cap: u32 = servers.iter().map(|s| s.tps).sum();
    let achieved = attempts as f64 / seconds.max(f64::MIN_POSITIVE);
    NetBenchReport {
        attempts,
        seconds,
        achieved_tps: achieved,
        tps_cap: cap,
        fraction_of_cap: achieved / cap.max(1) as f64,
        http_429s: channels.iter().map(|c| c.http_429s).sum(),
        latency_p50_ms: percentile(&all, 0.5),
        latency_p99_ms: percentile(&all, 0.99),
        channels,
        peak_rss_mb: peak_rss_mb(),
        daemons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loans_are_spread_in_proportion_to_the_caps_and_interleaved() {
        let s = spread(2650, &[150, 500, 2000]);
        let count = |c| s.iter().filter(|&&x| x == c).count();
        assert_eq!((count(0), count(1), count(2)), (150, 500, 2000));
        // Any stretch of 265 loans holds about a tenth of each share.
        for w in s.chunks(265) {
            let n = |c| w.iter().filter(|&&x| x == c).count();
            assert!((14..=16).contains(&n(0)), "{}", n(0));
            assert!((49..=51).contains(&n(1)), "{}", n(1));
        }
        assert_eq!(spread(3, &[7]), vec![0, 0, 0]);
    }

    #[test]
    fn several_daemons_need_postgres_and_caps_are_checked() {
        let opts = NetBenchOptions {
            database_url: "sqlite://x_bench.db".into(),
            installments: 10,
            latency_median_ms: 1,
            tps: vec![150, 500, 2000],
            daemons: 2,
        };
        assert!(
            matches!(channel_caps(&opts), Err(AppError::Config(m)) if m.contains("PostgreSQL"))
        );
        let pg = NetBenchOptions {
            database_url: "postgres://postgres@127.0.0.1/x_bench".into(),
            ..opts.clone()
        };
        assert!(channel_caps(&pg).is_ok());
        let many = NetBenchOptions {
            daemons: MAX_DAEMONS + 1,
            ..pg
        };
        assert!(channel_caps(&many).is_err());
        let opts = NetBenchOptions {
            tps: vec![1, 2, 3, 4],
            daemons: 1,
            ..opts
        };
        assert!(channel_caps(&opts).is_err());
    }
}
