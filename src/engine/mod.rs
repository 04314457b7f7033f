//! The engine: a durable agenda of planned actions, claimed in batches, executed as
//! attempts through channels, with every result, ledger entry and notice written together.
//!
//! A run (`run_once`) is: resolve open attempts → refresh overdue installments (penalties,
//! overdue plans, collections hand-off) → claim and execute due actions → dispatch notices.
//! Everything is keyed in the database, so running twice for the same instant changes
//! nothing and a run after downtime catches up.

pub mod apply;
pub mod callbacks;
pub mod clock;
pub mod dispatch;
pub mod gauges;
pub mod guard;
pub mod instance;
pub mod manual;
pub mod phase;
pub mod pipeline;
pub mod plan;
pub mod pursue;
pub mod refresh;
pub mod resolve;
pub mod writeoff;

use crate::domain::channel::{Channel, ChannelConfig};
use crate::domain::notice::{self, NoticeSink};
use crate::domain::policy::{Policy, PolicySet};
use crate::store::ledger::LedgerError;
use crate::store::Db;
use chrono::{DateTime, Utc};
use dispatch::NotifyError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Money(#[from] crate::domain::MoneyError),
    #[error("loan {loan} follows unknown policy `{policy}`")]
    UnknownPolicy { loan: String, policy: String },
    #[error("no channel `{0}` is configured")]
    UnknownChannel(String),
    #[error("channel {channel}: {message}")]
    OrderNo { channel: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
}

impl EngineError {
    /// Whether the error comes from one loan's own data (an amount out of range, a policy
    /// gone, an entry that would not balance), so the loan is parked and the rest go on.
    /// Anything else (the database, a channel's configuration) stops the run, to be
    /// retried whole on the next tick.
    pub fn is_loan_data(&self) -> bool {
        match self {
            EngineError::Money(_) | EngineError::UnknownPolicy { .. } => true,
            EngineError::Ledger(l) => !matches!(l, LedgerError::Sql(_)),
            _ => false,
        }
    }
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Lender name, templates and locale of notices.
    pub render: crate::domain::notice::NoticeRender,
    /// Actions claimed per batch.
    pub batch_size: usize,
    /// Who holds a claim (host:pid); leases let another instance rescue a dead owner's work.
    pub owner: String,
    pub lease_ms: i64,
    /// Channel calls in flight at once per batch (each channel's adapter limits its own
    /// calls further: concurrency slots and TPS).
    pub concurrency: usize,
    /// Batches in flight at once (claimed, being recorded, waiting on channels, being
    /// written). Bounds memory: at most depth × batch size actions are held.
    pub pipeline_depth: usize,
    /// Set on shutdown: runs stop claiming new work and return after the batch in flight.
    pub stop: Arc<AtomicBool>,
    /// Waits before re-querying an unknown attempt: the n-th query waits the n-th value
    /// (the last one repeats).
    pub query_backoff_secs: Vec<i64>,
    /// An attempt still unknown after this many queries, or this long after it was made,
    /// opens a reconciliation case for a person (it keeps being queried).
    pub unknown_case_after_queries: u32,
    pub unknown_case_after_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            render: crate::domain::notice::NoticeRender::builtin("repayd demo lender", "en"),
            batch_size: 2000,
            owner: format!("pid-{}", std::process::id()),
            lease_ms: 5 * 60 * 1000,
            concurrency: 256,
            pipeline_depth: 3,
            stop: Arc::new(AtomicBool::new(false)),
            query_backoff_secs: vec![60, 300, 3600, 86_400],
            unknown_case_after_queries: 6,
            unknown_case_after_ms: 48 * 3600 * 1000,
        }
    }
}

/// Everything a run needs: the database, policies, channels and where notices go.
pub struct Engine {
    pub db: Db,
    pub policies: Arc<PolicySet>,
    pub channels: HashMap<String, Arc<dyn Channel>>,
    pub channel_configs: HashMap<String, ChannelConfig>,
    pub sink: Arc<dyn NoticeSink>,
    pub cfg: EngineConfig,
}

/// What one run did, for logs, the CLI and tests.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub resolved: u64,
    pub installments_refreshed: u64,
    pub loans_to_collections: u64,
    pub actions_claimed: u64,
    pub actions_skipped: u64,
    /// Actions of loans another instance held: left pending for later.
    pub actions_deferred: u64,
    /// Loans parked for a person after their pursuit failed.
    pub loans_parked: u64,
    pub notices_queued: u64,
    pub notices_sent: u64,
    pub notices_held: u64,
    /// attempts by "kind/outcome", e.g. "due/succeeded".
    pub attempts: BTreeMap<String, u64>,
    /// Money collected, per currency.
    pub collected: BTreeMap<String, rust_decimal::Decimal>,
}

/// Export one answer to an attempt. A final answer is counted in `repayd_attempts_total`
/// once, by whichever of the submit (`via = "submit"`) or a later query (`"query"`) gave it;
/// an unknown submit is counted only as unknown, so an attempt settled by query is not
/// counted twice.
pub(crate) fn export_answer(
    kind: &str,
    via: &'static str,
    v: &apply::Verdict,
    currency: &str,
    channel: &str,
) {
    if let apply::Verdict::Unknown { .. } = v {
        metrics::counter!("repayd_attempts_unknown_total", "kind" => kind.to_string()).increment(1);
        return;
    }
    metrics::counter!("repayd_attempts_total", "kind" => kind.to_string(),
        "outcome" => v.outcome_name(), "via" => via)
    .increment(1);
    if let apply::Verdict::Succeeded { amount, .. } = v {
        let minor = crate::domain::to_minor(*amount)
            .ok()
            .and_then(|m| u64::try_from(m).ok());
        metrics::counter!("repayd_collected_minor_units_total",
            "currency" => currency.to_string(), "channel" => channel.to_string())
        .increment(minor.unwrap_or(0));
    }
}

impl RunSummary {
    pub fn count_attempt(&mut self, kind: &str, outcome: &str) {
        *self
            .attempts
            .entry(format!("{kind}/{outcome}"))
            .or_default() += 1;
    }

    /// Add a flush's collections, currency by currency.
    pub fn add_collected(&mut self, collected: BTreeMap<String, rust_decimal::Decimal>) {
        for (currency, amount) in collected {
            *self.collected.entry(currency).or_default() += amount;
        }
    }

    /// Add what another batch of the same run did.
    pub fn merge(&mut self, other: RunSummary) {
        self.resolved += other.resolved;
        self.installments_refreshed += other.installments_refreshed;
        self.loans_to_collections += other.loans_to_collections;
        self.actions_claimed += other.actions_claimed;
        self.actions_skipped += other.actions_skipped;
        self.actions_deferred += other.actions_deferred;
        self.loans_parked += other.loans_parked;
        self.notices_queued += other.notices_queued;
        self.notices_sent += other.notices_sent;
        self.notices_held += other.notices_held;
        for (k, v) in other.attempts {
            *self.attempts.entry(k).or_default() += v;
        }
        self.add_collected(other.collected);
    }

    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }
}

impl Engine {
    pub fn policy(&self, name: &str) -> Result<&Policy, EngineError> {
        self.policies
            .get(name)
            .ok_or_else(|| EngineError::UnknownPolicy {
                loan: "-".into(),
                policy: name.into(),
            })
    }

    pub fn channel(&self, name: &str) -> Result<&Arc<dyn Channel>, EngineError> {
        self.channels
            .get(name)
            .ok_or_else(|| EngineError::UnknownChannel(name.into()))
    }

    /// Execute everything due at `now`, then return. The heart of scheduled runs.
    #[tracing::instrument(name = "run", skip(self), fields(now = %now))]
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunSummary, EngineError> {
        let mut summary = RunSummary::default();
        plan::plan_new_loans(self, None).await?;
        let t = std::time::Instant::now();
        resolve::resolve_open_attempts(self, now, &mut summary).await?;
        phase::add(phase::Phase::Resolve, t);
        let t = std::time::Instant::now();
        refresh::refresh_overdue(self, now, &mut summary).await?;
        phase::add(phase::Phase::Refresh, t);
        pipeline::run_due_actions(self, now, &mut summary).await?;
        let t = std::time::Instant::now();
        self.dispatch_notices(now, &mut summary).await?;
        phase::add(phase::Phase::Dispatch, t);
        tracing::info!(
            attempts = summary.total_attempts(),
            collected = ?summary.collected,
            notices_sent = summary.notices_sent,
            "run finished"
        );
        Ok(summary)
    }

    /// Deliver notices due at `now`.
    pub async fn dispatch_notices(
        &self,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), EngineError> {
        let mut conn = self.db.pool.acquire().await?;
        let lookup = |policy: &str| {
            let p = self.policies.get(policy)?;
            Some((notice::quiet_windows(p), p.notices.daily_cap))
        };
        let d = dispatch::Dispatcher {
            owner: &self.cfg.owner,
            lease_ms: self.cfg.lease_ms,
            sink: self.sink.as_ref(),
            rules: &lookup,
        };
        let r = dispatch::dispatch(&mut conn, &d, now).await?;
        summary.notices_sent += r.sent;
        summary.notices_held += r.held_quiet + r.held_cap;
        metrics::counter!("repayd_notices_held_total", "reason" => "quiet_hours")
            .increment(r.held_quiet);
        metrics::counter!("repayd_notices_held_total", "reason" => "daily_cap")
            .increment(r.held_cap);
        Ok(())
    }

    /// The earliest instant at which something is due after `after` (actions, notices or
    /// attempt queries), for simulations that jump from event to event.
    pub async fn next_wakeup(
        &self,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, EngineError> {
        let t = after.timestamp_millis();
        let mut conn = self.db.pool.acquire().await?;
        let next = crate::store::agenda::next_due_after(&mut conn, t).await?;
        Ok(next.and_then(DateTime::from_timestamp_millis))
    }
}
