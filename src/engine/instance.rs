//! Instances: every process that claims work (a daemon, or a `repayd run --once`) registers
//! itself and sends heartbeats. Another instance rescues its claims, loan holds and
//! in-flight attempts only once its heartbeat is stale, or at once when it is known dead: it
//! ran on this very host and boot, and its pid is gone.

use crate::store::{instances, Db};
use chrono::Utc;
use std::time::Duration;
use tokio::sync::watch;

/// This host and boot, e.g. `worker-3/8d7c…`. Two processes with the same value share a
/// process table, so one can tell whether the other's pid still runs.
pub fn host_identity() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let host = read("/proc/sys/kernel/hostname")
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    match read("/proc/sys/kernel/random/boot_id") {
        Some(boot) => format!("{host}/{boot}"),
        // Without a boot id a pid cannot be told apart from another machine's or boot's.
        None => host,
    }
}

/// A fresh instance id: host, pid and a random suffix (pids are reused).
pub fn new_instance_id() -> String {
    let host = host_identity();
    let short = host.split('/').next().unwrap_or("host");
    format!(
        "{short}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Register `id` as alive now.
pub async fn register(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let (host, pid) = (host_identity(), std::process::id() as i64);
    let now = Utc::now().timestamp_millis();
    instances::register(&mut conn, id, &host, pid, now).await
}

pub async fn heartbeat(db: &Db, id: &str, last_tick: Option<i64>) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    instances::heartbeat(&mut conn, id, Utc::now().timestamp_millis(), last_tick).await
}

pub async fn mark_stopped(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    instances::mark_stopped(&mut conn, id, Utc::now().timestamp_millis()).await
}

/// Heartbeats every `every` until `stop` changes, for processes without a daemon loop.
pub fn spawn_heartbeat(
    db: Db,
    id: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = heartbeat(&db, &id, None).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    })
}

/// One run of `engine` as a registered instance with heartbeats (`repayd run --once`), so
/// that daemons sharing the database leave its claims alone while it lives.
pub async fn run_registered(
    engine: &super::Engine,
    now: chrono::DateTime<Utc>,
) -> Result<super::RunSummary, super::EngineError> {
    let id = engine.cfg.owner.clone();
    register(&engine.db, &id).await?;
    share_channel_limits(engine).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let beat = spawn_heartbeat(
        engine.db.clone(),
        id.clone(),
        Duration::from_secs(5),
        stop_rx,
    );
    let result = engine.run_once(now).await;
    let _ = stop_tx.send(true);
    let _ = beat.await;
    mark_stopped(&engine.db, &id).await?;
    result
}

/// Share every channel's limits among the live instances, an equal part each, and return
/// how many there are. Called at start and at every heartbeat, so a newcomer's part is taken
/// from the others within one heartbeat, and a dead instance's part returns to the living
/// once its heartbeat is older than one lease (at once when it ran on this host).
pub async fn share_channel_limits(engine: &super::Engine) -> Result<u32, sqlx::Error> {
    reap_dead_local(&engine.db, &engine.cfg.owner).await?;
    let fresh_since = Utc::now().timestamp_millis() - engine.cfg.lease_ms;
    let mut conn = engine.db.pool.acquire().await?;
    let live = instances::live_count(&mut conn, fresh_since).await?.max(1) as u32;
    for ch in engine.channels.values() {
        ch.share_limits(live);
    }
    metrics::gauge!("repayd_instances_live").set(f64::from(live));
    Ok(live)
}

/// Mark as stopped the instances of this host and boot whose process is gone (killed, or
/// crashed): their work is rescued at once instead of after a stale heartbeat. Only this
/// host's pids are checked, and only where the host has a boot id, so a live process
/// elsewhere is never taken for dead. Returns how many were found dead.
pub async fn reap_dead_local(db: &Db, me: &str) -> Result<u64, sqlx::Error> {
    let host = host_identity();
    if !host.contains('/') {
        return Ok(0);
    }
    let mut conn = db.pool.acquire().await?;
    let rows = instances::running_on_host(&mut conn, &host, me).await?;
    drop(conn);
    let mut dead = 0;
    for (id, pid) in rows {
        if !pid_runs(pid) {
            mark_stopped(db, &id).await?;
            tracing::info!(instance = %id, pid, "instance on this host is gone; its work is rescued");
            dead += 1;
        }
    }
    Ok(dead)
}

/// Whether a process with `pid` exists on this host. A zombie (killed, not yet reaped by
/// its parent) runs no code, so it counts as gone.
fn pid_runs(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        // The state follows the parenthesised command name: "1234 (repayd) Z ...".
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_free_pid_does_not() {
        assert!(pid_runs(std::process::id() as i64));
        assert!(!pid_runs(i32::MAX as i64));
    }

    #[test]
    fn instance_ids_name_host_and_pid() {
        let id = new_instance_id();
        assert!(id.contains(&format!(":{}:", std::process::id())), "{id}");
        assert_ne!(id, new_instance_id());
    }
}
