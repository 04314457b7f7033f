//! Wiring: settings (flags, environment, defaults) into a ready [`Engine`].

use crate::adapters::channel::{Scenario, SimError, Simulator};
use crate::adapters::providers::LogSink;
use crate::domain::channel::{builtin_channels, Channel, ChannelConfig};
use crate::domain::policy::{PolicyErrors, PolicySet};
use crate::engine::{Engine, EngineConfig};
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
    Import(#[from] crate::domain::import::ImportError),
    #[error(transparent)]
    StoreLoans(#[from] crate::store::import::StoreLoansError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("configuration: {0}")]
    Config(String),
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

pub use super::policies::load_policies;

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
                crate::domain::channel::Channel::name(s.as_ref())
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
        render: crate::domain::notice::NoticeRender::builtin(&s.lender_name, "en"),
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
    let configs =
        crate::domain::channel::with_statement_zone(builtin_channels(), scenario.timezone);
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

/// Build the engine a daemon runs from its configuration: HTTP channels where configured,
/// simulators otherwise; notices to the log file or through the providers.
pub async fn engine_from_config(
    cfg: &crate::app::config::Config,
) -> Result<(Engine, Option<Sims>), AppError> {
    // The daemon works on a book that exists: a mistyped SQLite path is not a new one.
    crate::store::require_existing(&cfg.database.url)?;
    let db = Db::open(&cfg.database.url).await?;
    let policies = load_policies(&cfg.daemon.policies)?;
    let scenario = match &cfg.daemon.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let sim_rules: Vec<ChannelConfig> = cfg
        .channels
        .iter()
        .filter(|c| c.kind != "http")
        .map(|c| c.rules())
        .collect();
    let sims = Sims::load(scenario, &sim_rules, cfg.daemon.sim_state.as_deref())?;
    let mut channels: HashMap<String, Arc<dyn Channel>> = sim_rules
        .iter()
        .zip(&sims.sims)
        .map(|(c, s)| (c.name.clone(), s.clone() as Arc<dyn Channel>))
        .collect();
    for c in cfg.channels.iter().filter(|c| c.kind == "http") {
        let ch = crate::adapters::channel::HttpChannel::new(
            &c.rules(),
            c.base_url.clone(),
            c.secret.clone(),
        )
        .map_err(|e| AppError::Config(format!("channel {}: {e}", c.name)))?;
        channels.insert(c.name.clone(), Arc::new(ch));
    }
    let render = crate::domain::notice::NoticeRender {
        lender: cfg.daemon.lender_name.clone(),
        locale: cfg.notices.locale.clone(),
        templates: Arc::new(match &cfg.notices.templates {
            Some(dir) => {
                super::templates::load_dir(dir).map_err(|e| AppError::Config(e.to_string()))?
            }
            None => crate::adapters::providers::Templates::builtin(),
        }),
    };
    let engine = Engine {
        db,
        policies: Arc::new(policies),
        channels,
        channel_configs: cfg
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.rules()))
            .collect(),
        sink: notice_sink(&cfg.notices)?,
        cfg: EngineConfig {
            render,
            query_backoff_secs: cfg.daemon.query_backoff_seconds.clone(),
            ..crate::app::daemon::engine_config(cfg)
        },
    };
    let sims = (!sim_rules.is_empty()).then_some(sims);
    Ok((engine, sims))
}

fn notice_sink(
    n: &crate::app::config::NoticesConfig,
) -> Result<Arc<dyn crate::domain::notice::NoticeSink>, AppError> {
    use crate::adapters::providers::{
        GenericJsonSms, ProviderSet, Security, SmtpConfig, SmtpEmail, TwilioConfig, TwilioSms,
    };
    if n.sink == "log" {
        return Ok(Arc::new(LogSink {
            path: n.log_file.clone(),
        }));
    }
    if n.sink != "providers" {
        return Err(AppError::Config(format!(
            "notices.sink `{}`: use \"log\" or \"providers\"",
            n.sink
        )));
    }
    let bad = |e: crate::adapters::providers::ProviderError| AppError::Config(e.to_string());
    let mut set = ProviderSet::new();
    if let Some(sms) = &n.sms {
        let timeout = std::time::Duration::from_millis(sms.timeout_ms);
        set = match sms.kind.as_str() {
            "generic" => set.with(Arc::new(
                GenericJsonSms::new(sms.url.clone(), sms.token.clone(), timeout).map_err(bad)?,
            )),
            "twilio" => {
                let mut t = TwilioConfig::new(&sms.account_sid, sms.token.clone(), &sms.from);
                t.base_url = sms.url.clone();
                t.timeout = timeout;
                set.with(Arc::new(TwilioSms::new(t).map_err(bad)?))
            }
            other => {
                return Err(AppError::Config(format!(
                    "notices.sms.kind `{other}`: use generic or twilio"
                )))
            }
        };
    }
    if let Some(m) = &n.email {
        let security = match m.security.as_str() {
            "starttls" => Security::Starttls,
            "tls" => Security::Tls,
            "plain" => Security::Plain,
            other => {
                return Err(AppError::Config(format!(
                    "notices.email.security `{other}`"
                )))
            }
        };
        let smtp = SmtpConfig {
            host: m.host.clone(),
            port: m.port,
            security,
            username: (!m.username.is_empty()).then(|| m.username.clone()),
            password: (!m.password.is_empty()).then(|| m.password.clone()),
            from: m.from.clone(),
            timeout: std::time::Duration::from_millis(m.timeout_ms),
            root_cert_pem: None,
        };
        set = set.with(Arc::new(SmtpEmail::new(smtp).map_err(bad)?));
    }
    Ok(Arc::new(crate::adapters::providers::ProviderSink {
        providers: set,
        timeout_retries: 2,
    }))
}
