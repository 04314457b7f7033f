//! Instances: every process that claims work (a daemon, or a `repayd run --once`) registers
//! itself and sends heartbeats. Another instance rescues its claims, loan holds and
//! in-flight attempts only once its heartbeat is stale, or at once when it is known dead: it
//! ran on this very host and boot, and its pid is gone.

use crate::store::Db;
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
    let now = Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(id)
    .bind(host_identity())
    .bind(std::process::id() as i64)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn heartbeat(db: &Db, id: &str, last_tick: Option<i64>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE instances SET heartbeat_at = $1, last_tick_at = COALESCE($2, last_tick_at) WHERE id = $3",
    )
    .bind(Utc::now().timestamp_millis())
    .bind(last_tick)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn mark_stopped(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE instances SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL")
        .bind(Utc::now().timestamp_millis())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
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

/// Mark as stopped the instances of this host and boot whose process is gone (killed, or
/// crashed): their work is rescued at once instead of after a stale heartbeat. Only this
/// host's pids are checked, and only where the host has a boot id, so a live process
/// elsewhere is never taken for dead. Returns how many were found dead.
pub async fn reap_dead_local(db: &Db, me: &str) -> Result<u64, sqlx::Error> {
    let host = host_identity();
    if !host.contains('/') {
        return Ok(0);
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, pid FROM instances WHERE host = $1 AND stopped_at IS NULL AND id <> $2",
    )
    .bind(host.as_str())
    .bind(me)
    .fetch_all(&db.pool)
    .await?;
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
