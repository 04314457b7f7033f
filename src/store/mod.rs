//! Storage: one interface over SQLite (embedded default) and PostgreSQL, chosen by URL.
//!
//! Everything goes through `sqlx::Any` with portable SQL (`$N` placeholders work on both).
//! Amounts are BIGINT minor units, instants BIGINT epoch milliseconds (UTC), dates TEXT.
//! Bulk work uses multi-row statements built by [`Rows`], so a batch of thousands of
//! attempts costs a handful of round trips, not thousands.

pub mod agenda;
pub mod attempts;
pub mod audit;
mod bulk;
pub mod dashboard;
pub mod decode;
pub mod import;
pub mod installments;
pub mod instances;
pub mod ledger;
pub mod loans;
pub mod notes;
pub mod notices;
pub mod owed;
pub mod recon_report;
pub mod reports;
pub mod simulation;
pub mod verify;

pub use bulk::{bind_val, in_list, is_sqlite, placeholders, Rows, Val};
pub use decode::{stored_date, stored_status, stored_tz, DecodeError};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The default database: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://repayd.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use sqlite://FILE or postgres://…")]
    BadUrl(String),
    #[error("no database at {path}: `repayd init` creates one (`repayd demo` makes a sample)")]
    NoDatabase { path: String },
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A connected, migrated database.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The URL with any password removed, for messages.
    pub display_url: String,
}

impl Db {
    /// Connect to `url`, creating a SQLite file if needed, and apply migrations.
    #[tracing::instrument(skip_all, fields(url = %redact_url(url)))]
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let display_url = redact_url(url);
        let connect_err = |source| StoreError::Connect {
            url: display_url.clone(),
            source,
        };
        let pool = match backend {
            Backend::Sqlite => open_sqlite(url).await.map_err(connect_err)?,
            Backend::Postgres => open_postgres(url).await.map_err(connect_err)?,
        };
        let db = Db {
            pool,
            backend,
            display_url,
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &PG_MIGRATOR,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: self.display_url.clone(),
                source,
            })
    }

    /// Allocate `n` consecutive values of the named counter; returns the first.
    ///
    /// Counters only grow, so ids and order numbers handed out are never reused, even when
    /// the transaction that used them fails later.
    pub async fn alloc(&self, name: &str, n: i64) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        alloc_on(&mut conn, name, n).await
    }

    /// Begin a transaction that writes. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later fails
    /// with "database is locked" when another connection wrote in between, and waiting
    /// (`busy_timeout`) cannot help it. On PostgreSQL it is a plain `BEGIN`.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }
}

/// SQL that finds a live owner: an instance whose heartbeat is newer than `since_param` and
/// that has not stopped. A claim, a loan hold or an attempt in flight is rescued only when its
/// owner is not alive, so a slow but healthy instance keeps its work: expiry is decided by
/// heartbeats, never by elapsed time alone.
pub fn alive_owner(owner_col: &str, since_param: &str) -> String {
    format!(
        "SELECT 1 FROM instances i WHERE i.id = {owner_col} AND i.heartbeat_at >= {since_param} \
         AND i.stopped_at IS NULL"
    )
}

/// Counter allocation on an existing connection (or transaction).
pub async fn alloc_on(conn: &mut AnyConnection, name: &str, n: i64) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO counters (name, next_val) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    let end: i64 = sqlx::query_scalar(
        "UPDATE counters SET next_val = next_val + $1 WHERE name = $2 RETURNING next_val",
    )
    .bind(n)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(end - n)
}

/// The file behind a `sqlite:` URL; `None` for PostgreSQL and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.into())
}

/// For every command but `init` and `demo`: a SQLite database must already be there, so a
/// mistyped path is refused instead of silently becoming a new, empty book.
pub fn require_existing(url: &str) -> Result<(), StoreError> {
    match sqlite_file(url) {
        Some(path) if !path.exists() => Err(StoreError::NoDatabase {
            path: path.display().to_string(),
        }),
        _ => Ok(()),
    }
}

pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}

/// The URL without its password, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connections of a SQLite pool. SQLite has one writer; more connections only let reads
/// (reports, the next claim) overlap a batch's commit.
const SQLITE_CONNECTIONS: u32 = 4;

async fn open_sqlite(url: &str) -> Result<AnyPool, sqlx::Error> {
    let url = if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let opts = AnyConnectOptions::from_str(&url)?
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(1));
    // WAL is a setting of the file, made once here on a lone connection: switching a
    // journal mode takes an exclusive lock that busy_timeout cannot wait for, so a pooled
    // connection opened while a batch commits failed its setup, and sqlx retried it until
    // the pool's acquire timeout (the demo test, under the whole suite).
    let mut first = AnyConnection::connect_with(&opts).await?;
    first.execute("PRAGMA busy_timeout = 30000").await?;
    first.execute("PRAGMA journal_mode = WAL").await?;
    first.close().await?;
    let pool = AnyPoolOptions::new()
        .max_connections(SQLITE_CONNECTIONS)
        .min_connections(SQLITE_CONNECTIONS)
        // Connections are opened once, at start, and kept: none is set up under load.
        .idle_timeout(None)
        .max_lifetime(None)
        // SQLite has one writer and every commit is fsynced (FULL): on a loaded machine a
        // run's batches queue behind slow syncs. A wait is not a failure; five minutes
        // still ends a hang.
        .acquire_timeout(Duration::from_secs(300))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // First, so that the statements after it wait for a lock instead of failing.
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                // FULL: a commit is on disk before it returns (NORMAL in WAL mode may lose
                // the last commits on power loss), and an attempt's record must be durable
                // before its channel is called. The engine commits once per batch, so the
                // extra sync per commit costs little.
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    open_every_connection(&pool).await?;
    Ok(pool)
}

/// Check out every connection of `pool` at once, so that all are open before work starts.
async fn open_every_connection(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut held = Vec::with_capacity(SQLITE_CONNECTIONS as usize);
    for _ in 0..SQLITE_CONNECTIONS {
        held.push(pool.acquire().await?);
    }
    Ok(())
}

async fn open_postgres(url: &str) -> Result<AnyPool, sqlx::Error> {
    let opts = AnyConnectOptions::from_str(url)?
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(1));
    // One plain connection first: a server that refuses connections fails here at once
    // (the URL names its host and port), where the pool would retry until its timeout.
    let first = tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect_with(&opts));
    match first.await {
        Ok(conn) => conn?.close().await?,
        Err(_) => return Err(sqlx::Error::PoolTimedOut),
    }
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Bulk statements join thousands of VALUES rows to big tables by key: on
                // SSD-backed servers index probes are cheap, and with the default cost the
                // planner hashes whole tables instead. JIT only slows these short statements.
                conn.execute("SET random_page_cost = 1.1").await?;
                conn.execute("SET jit = off").await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    // Fail fast with the server's own message if it is unreachable.
    pool.acquire().await?.ping().await?;
    Ok(pool)
}
