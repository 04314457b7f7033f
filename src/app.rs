//! Wiring: settings (flags, environment, defaults) into a ready [`Engine`].

use crate::channel::{builtin_channels, Channel, ChannelConfig, Scenario, SimError, Simulator};
use crate::engine::{Engine, EngineConfig};
use crate::notify::LogSink;
use crate::policy::{PolicyErrors, PolicySet};
use crate::store::{Db, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl AppError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        AppError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Where things are. Defaults suit a fresh working directory.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// Policies folder; the shipped policies are always available, files here add or override.
    pub policies_dir: PathBuf,
    /// Scenario of the built-in channel simulator (balances, income, failures).
    pub scenario: Option<PathBuf>,
    /// Folder where the simulator keeps its state between CLI runs.
    pub sim_state: Option<PathBuf>,
    /// Dev sink: notices are appended here.
    pub notice_log: PathBuf,
    pub lender_name: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: crate::store::DEFAULT_DATABASE_URL.into(),
            policies_dir: PathBuf::from("policies"),
            scenario: None,
            sim_state: None,
            notice_log: PathBuf::from("repayd-notices.log"),
            lender_name: "repayd demo lender".into(),
        }
    }
}

/// Shipped policies plus any in `dir` (which may not exist).
pub fn load_policies(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut set = PolicySet::builtin();
    if dir.is_dir() {
        let local = PolicySet::load_dir(dir)?;
        for name in local.names() {
            set.insert(local.get(name).expect("listed").clone());
        }
    }
    Ok(set)
}

/// The simulators behind the built-in channels, one per channel, sharing one scenario.
pub struct Sims {
    pub sims: Vec<Arc<Simulator>>,
    state_dir: Option<PathBuf>,
}

impl Sims {
    pub fn load(
        scenario: Scenario,
        configs: &[ChannelConfig],
        state_dir: Option<&Path>,
    ) -> Result<Sims, SimError> {
        let mut sims = Vec::new();
        for c in configs {
            let sim = match state_dir {
                Some(dir) => Simulator::load_state(
                    &c.name,
                    scenario.clone(),
                    dir.join(format!("{}.json", c.name)),
                )?,
                None => Simulator::new(&c.name, scenario.clone()),
            };
            sims.push(Arc::new(sim.with_order_no_rule(c.order_no.clone())));
        }
        Ok(Sims {
            sims,
            state_dir: state_dir.map(Path::to_path_buf),
        })
    }

    /// Persist simulator state (balances, journal) for the next CLI run.
    pub fn save(&self) -> Result<(), SimError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for s in &self.sims {
            s.save_state(dir.join(format!(
                "{}.json",
                crate::channel::Channel::name(s.as_ref())
            )))?;
        }
        Ok(())
    }

    pub fn total_debited(&self) -> rust_decimal::Decimal {
        self.sims.iter().map(|s| s.total_debited()).sum()
    }
}

/// Open the database and build an engine whose channels are the built-in simulator.
pub async fn engine_with_sims(s: &Settings, cfg: EngineConfig) -> Result<(Engine, Sims), AppError> {
    let db = Db::open(&s.database_url).await?;
    let policies = load_policies(&s.policies_dir)?;
    let scenario = match &s.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let cfg = EngineConfig {
        render: crate::notify::NoticeRender::builtin(&s.lender_name, "en"),
        ..cfg
    };
    Ok(simulated_engine(
        db,
        policies,
        scenario,
        s.sim_state.as_deref(),
        &s.notice_log,
        cfg,
    )?)
}

/// An engine over `db` whose built-in channels are simulators following `scenario`, with
/// notices going to the log sink at `notice_log`.
pub fn simulated_engine(
    db: Db,
    policies: PolicySet,
    scenario: Scenario,
    state_dir: Option<&Path>,
    notice_log: &Path,
    cfg: EngineConfig,
) -> Result<(Engine, Sims), SimError> {
    let configs = builtin_channels();
    let sims = Sims::load(scenario, &configs, state_dir)?;
    let channels: HashMap<String, Arc<dyn Channel>> = configs
        .iter()
        .zip(&sims.sims)
        .map(|(c, s)| (c.name.clone(), s.clone() as Arc<dyn Channel>))
        .collect();
    let engine = Engine {
        db,
        policies: Arc::new(policies),
        channels,
        channel_configs: configs.into_iter().map(|c| (c.name.clone(), c)).collect(),
        sink: Arc::new(LogSink {
            path: notice_log.to_path_buf(),
        }),
        cfg,
    };
    Ok((engine, sims))
}
