//! `repayd serve`: the unattended daemon.
//!
//! tokio-cron-scheduler is only a wake-up tick: what is due, and what already ran, lives in
//! the database, so a tick after downtime catches up and DST never shifts anything. Ticks go
//! through a channel of capacity one into a single runner, so runs never overlap: a tick that
//! finds the previous run busy is dropped. Each instance registers itself and sends
//! heartbeats; its claims can be rescued by others only once its heartbeat is stale. On
//! SQLite an exclusive file lock allows one daemon per database file.

use crate::app::config::Config;
use crate::app::{AppError, Sims};
use crate::engine::{instance, Engine, EngineConfig};
use crate::store::Backend;
use crate::web::state::{ApiState, DaemonState};
use chrono::Utc;
use futures::FutureExt;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(
        "another repayd daemon (pid {pid}) already runs on SQLite database {file}; SQLite allows \
         one daemon per database file (use PostgreSQL to run several)"
    )]
    SqliteBusy { file: String, pid: String },
    #[error("lock file {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// The HTTP state of a daemon from its configuration: each channel's callback secret, the
/// SMS gateway's token, and the limits on failed authentication.
pub fn api_state(engine: Arc<Engine>, daemon: Arc<DaemonState>, cfg: &Config) -> ApiState {
    let secrets = cfg
        .channels
        .iter()
        .map(|c| (c.name.clone(), c.secret.clone()))
        .collect();
    let limits = crate::web::throttle::AuthLimits {
        burst: cfg.daemon.auth_failure_burst,
        per_second: cfg.daemon.auth_failures_per_second,
    };
    let sms = cfg.notices.sms.as_ref().map(|s| s.token.clone());
    ApiState::new(engine, daemon, secrets, sms, limits)
}

/// An exclusive lock on `<database file>.lock`, holding our pid, released when dropped.
pub struct SqliteLock {
    _file: File,
}

impl SqliteLock {
    pub fn acquire(db_file: &Path) -> Result<SqliteLock, DaemonError> {
        let path = PathBuf::from(format!("{}.lock", db_file.display()));
        let err = |source| DaemonError::Lock {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(err)?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(DaemonError::SqliteBusy {
                file: db_file.display().to_string(),
                pid: pid.trim().to_string(),
            });
        }
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        write!(file, "{}", std::process::id()).map_err(err)?;
        file.flush().map_err(err)?;
        Ok(SqliteLock { _file: file })
    }
}

async fn heartbeat_loop(
    engine: Arc<Engine>,
    state: Arc<DaemonState>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let last = state.last_tick_ms.load(Ordering::Relaxed);
        if let Err(e) = instance::heartbeat(&engine.db, &state.instance, Some(last)).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        if let Err(e) = instance::share_channel_limits(&engine).await {
            tracing::warn!(error = %e, "sharing channel limits failed");
        }
    }
}

/// Run the daemon until `shutdown` resolves.
pub async fn serve(
    cfg: Config,
    engine: Engine,
    sims: Option<Sims>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let _lock = match engine.db.backend {
        Backend::Sqlite => {
            let file = crate::store::sqlite_file(&cfg.database.url).unwrap_or_default();
            Some(SqliteLock::acquire(&file)?)
        }
        Backend::Postgres => None,
    };
    let state = Arc::new(DaemonState {
        instance: engine.cfg.owner.clone(),
        ..DaemonState::default()
    });
    instance::register(&engine.db, &state.instance).await?;
    let dead = instance::reap_dead_local(&engine.db, &state.instance).await?;
    if dead > 0 {
        tracing::warn!(
            dead,
            "earlier instances on this host died; taking over their work"
        );
    }
    let every = Duration::from_secs(cfg.daemon.heartbeat_seconds.max(1));
    let others_live = instance::share_channel_limits(&engine).await? > 1;
    let engine = Arc::new(engine);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = engine.cfg.stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: no new claims; in-flight work finishes");
        stop_flag.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(true);
    });
    tokio::spawn(heartbeat_loop(
        engine.clone(),
        state.clone(),
        every,
        stop_rx.clone(),
    ));
    if others_live {
        // The others take their smaller parts of the channels' caps at their next
        // heartbeat; until then the caps are theirs, so this one waits two heartbeats
        // (beating meanwhile) before its first call.
        tokio::time::sleep(every * 2).await;
        instance::share_channel_limits(&engine).await?;
    }
    warn_unsigned(&cfg);
    let server = start_http(&cfg, engine.clone(), state.clone(), stop_rx.clone()).await?;
    let (tick_tx, tick_rx) = mpsc::channel::<()>(1);
    let mut sched = start_ticks(cfg.daemon.tick_seconds, tick_tx, state.clone()).await?;
    let clock =
        crate::engine::clock::Clock::new(cfg.daemon.clock_offset_seconds, cfg.daemon.clock_speed);
    crate::engine::clock::install(clock);
    let tick = Tick {
        clock,
        statement_channels: statement_channels(&cfg),
    };
    run_loop(&engine, &state, &tick, sims.as_ref(), tick_rx, stop_rx).await;
    sched
        .shutdown()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    let _ = server.await;
    instance::mark_stopped(&engine.db, &state.instance).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Callbacks and delivery reports are only taken when signed with a secret; say at start
/// which senders have none, so a missing secret is found before callbacks go missing.
fn warn_unsigned(cfg: &Config) {
    for c in cfg.channels.iter().filter(|c| c.secret.is_empty()) {
        tracing::warn!(
            channel = %c.name,
            "channel has no secret: its callbacks will be refused (set `secret` or \
             REPAYD_CHANNEL_{}_SECRET)",
            c.name.to_uppercase()
        );
    }
    if cfg.notices.sms.as_ref().is_some_and(|s| s.token.is_empty()) {
        tracing::warn!("the SMS gateway has no token: its delivery reports will be refused");
    }
}

async fn start_http(
    cfg: &Config,
    engine: Arc<Engine>,
    state: Arc<DaemonState>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let addr = cfg.daemon.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or(addr), "listening");
    let app = crate::web::app(api_state(engine, state, cfg));
    Ok(tokio::spawn(async move {
        let graceful = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // Client addresses, for the limit on failed authentication per address.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!(error = %e, "http server failed");
        }
    }))
}

async fn start_ticks(
    every: u64,
    tx: mpsc::Sender<()>,
    state: Arc<DaemonState>,
) -> Result<JobScheduler, DaemonError> {
    let err = |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler(e.to_string());
    let sched = JobScheduler::new().await.map_err(err)?;
    let job = Job::new_repeated_async(Duration::from_secs(every.max(1)), move |_id, _sched| {
        let tx = tx.clone();
        let state = state.clone();
        Box::pin(async move {
            if tx.try_send(()).is_err() {
                state.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("previous run still busy; tick skipped");
            }
        })
    })
    .map_err(err)?;
    sched.add(job).await.map_err(err)?;
    sched.start().await.map_err(err)?;
    Ok(sched)
}

/// What every tick does besides the run.
struct Tick {
    clock: crate::engine::clock::Clock,
    /// Channels whose previous-day statement the daemon fetches and reconciles.
    statement_channels: Vec<String>,
}

/// Statements are fetched from the `kind = "http"` channels (real channels send one daily);
/// the in-process simulators are reconciled by hand (`repayd recon import`).
fn statement_channels(cfg: &Config) -> Vec<String> {
    cfg.channels
        .iter()
        .filter(|c| c.kind == "http")
        .map(|c| c.name.clone())
        .collect()
}

/// The single runner: one run at a time, the first one immediately (catch-up).
async fn run_loop(
    engine: &Engine,
    state: &DaemonState,
    tick: &Tick,
    sims: Option<&Sims>,
    mut ticks: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        run_tick(engine, state, tick, sims).await;
        tokio::select! {
            t = ticks.recv() => if t.is_none() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[tracing::instrument(name = "tick", skip_all, fields(instance = %state.instance))]
async fn run_tick(engine: &Engine, state: &DaemonState, tick: &Tick, sims: Option<&Sims>) {
    state.busy.store(true, Ordering::SeqCst);
    let now = tick.clock.now();
    // Loans are isolated inside the run; this is the last line: whatever escapes is logged
    // and the daemon lives on to the next tick.
    let run = std::panic::AssertUnwindSafe(engine.run_once(now)).catch_unwind();
    match run.await {
        Ok(Ok(s)) => tracing::debug!(attempts = s.total_attempts(), "tick done"),
        Ok(Err(e)) => tracing::error!(error = %e, "run failed; the next tick retries"),
        Err(p) => tracing::error!(
            panic = %crate::engine::guard::panic_text(p.as_ref()),
            "run panicked; the next tick retries"
        ),
    }
    match crate::recon::fetch_due(engine, &tick.statement_channels, now).await {
        Ok(done) if !done.is_empty() => {
            tracing::info!(statements = done.len(), "statements fetched and reconciled")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "statement fetch or settlement failed; the next tick retries")
        }
    }
    if let Some(sims) = sims {
        if let Err(e) = sims.save() {
            tracing::warn!(error = %e, "saving simulator state failed");
        }
    }
    state.runs.fetch_add(1, Ordering::Relaxed);
    state
        .last_tick_ms
        .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    state.busy.store(false, Ordering::SeqCst);
}

/// Engine settings from the daemon config.
pub fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        batch_size: cfg.daemon.batch_size,
        pipeline_depth: cfg.daemon.pipeline_depth,
        owner: instance::new_instance_id(),
        lease_ms: cfg.daemon.lease_seconds as i64 * 1000,
        ..EngineConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_fetched_from_http_channels_only() {
        let mut cfg = Config::default();
        assert!(statement_channels(&cfg).is_empty());
        cfg.channels[1].kind = "http".into();
        assert_eq!(statement_channels(&cfg), vec!["wechat".to_string()]);
    }
}
