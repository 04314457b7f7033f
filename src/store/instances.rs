//! Instances: registration, heartbeats and stops of the processes that claim work.

use sqlx::AnyConnection;

/// Register instance `id` of `host` and `pid`, alive at `now_ms`.
pub async fn register(
    conn: &mut AnyConnection,
    id: &str,
    host: &str,
    pid: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(id)
    .bind(host)
    .bind(pid)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn heartbeat(
    conn: &mut AnyConnection,
    id: &str,
    now_ms: i64,
    last_tick: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE instances SET heartbeat_at = $1, last_tick_at = COALESCE($2, last_tick_at) WHERE id = $3",
    )
    .bind(now_ms)
    .bind(last_tick)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn mark_stopped(
    conn: &mut AnyConnection,
    id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE instances SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// (id, pid) of the running instances of `host` other than `me`.
pub async fn running_on_host(
    conn: &mut AnyConnection,
    host: &str,
    me: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, pid FROM instances WHERE host = $1 AND stopped_at IS NULL AND id <> $2",
    )
    .bind(host)
    .bind(me)
    .fetch_all(&mut *conn)
    .await
}

/// How many instances are alive: not stopped, with a heartbeat at or after `fresh_since_ms`.
pub async fn live_count(conn: &mut AnyConnection, fresh_since_ms: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM instances WHERE stopped_at IS NULL AND heartbeat_at >= $1",
    )
    .bind(fresh_since_ms)
    .fetch_one(&mut *conn)
    .await
}
