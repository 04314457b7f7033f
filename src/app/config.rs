//! Daemon configuration: defaults, then a TOML file, then `REPAYD_*` environment variables.
//! `repayd config default` prints [`DEFAULT_CONFIG`], a complete commented file. Secrets are
//! wrapped in [`Secret`], which never shows its value in `Debug` or `Display`.

use crate::domain::channel::{builtin_channels, ChannelConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use crate::domain::secret::Secret;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub daemon: DaemonConfig,
    pub notices: NoticesConfig,
    pub channels: Vec<ChannelEntry>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` or `postgres://user:password@host/db` (the password is redacted in logs).
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Seconds between wake-up ticks.
    pub tick_seconds: u64,
    /// Address of the HTTP listener (health, metrics, webhooks).
    pub listen: String,
    pub policies: PathBuf,
    pub lender_name: String,
    /// Actions claimed per batch.
    pub batch_size: usize,
    /// Batches in flight at once; memory is bounded by depth × batch size.
    pub pipeline_depth: usize,
    /// A claim whose owner has not sent a heartbeat for this long is rescued.
    pub lease_seconds: u64,
    pub heartbeat_seconds: u64,
    /// Run as if the clock were this many seconds ahead (demos and tests).
    pub clock_offset_seconds: i64,
    /// Clock seconds per wall-clock second (demos: 3600 plays an hour a second).
    pub clock_speed: u32,
    /// Log lines as JSON.
    pub log_json: bool,
    /// Waits before re-querying an unknown attempt; the last one repeats.
    pub query_backoff_seconds: Vec<i64>,
    /// Scenario of the in-process simulator behind `kind = "sim"` channels.
    pub scenario: Option<PathBuf>,
    /// Where `kind = "sim"` channels keep their state between restarts.
    pub sim_state: Option<PathBuf>,
    /// Failed authentications (bad tokens or cookies, refused logins) a client address may
    /// make at once before it is answered 429 ...
    pub auth_failure_burst: u32,
    /// ... and per second after that.
    pub auth_failures_per_second: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticesConfig {
    /// "log" writes notices to `log_file`; "providers" sends them through `sms` and `email`.
    pub sink: String,
    pub log_file: PathBuf,
    pub locale: String,
    /// Folder with template overrides (`{locale}/{kind}.txt`); the shipped ones otherwise.
    pub templates: Option<PathBuf>,
    pub sms: Option<SmsConfig>,
    pub email: Option<EmailConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// "generic" (JSON with a bearer token) or "twilio".
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub token: Secret,
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub from: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    /// "starttls" or "plain" (local servers only).
    #[serde(default = "default_security")]
    pub security: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    pub from: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// A channel: its rules (order numbers, TPS, concurrency, timeout) and how to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    pub name: String,
    /// "sim" (the in-process simulator) or "http" (repayd's signed JSON protocol).
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub secret: Secret,
    #[serde(default)]
    pub tps: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_channel_timeout_ms")]
    pub timeout_ms: u64,
    pub order_no: crate::domain::channel::OrderNoRule,
    /// Statement day zone, statement fetch time, T+N settlement and fees.
    #[serde(default)]
    pub settlement: crate::domain::channel::SettlementRule,
}

impl ChannelEntry {
    /// The rules every channel implementation enforces.
    pub fn rules(&self) -> ChannelConfig {
        ChannelConfig {
            name: self.name.clone(),
            order_no: self.order_no.clone(),
            tps: self.tps,
            concurrency: self.concurrency,
            timeout_ms: self.timeout_ms,
            settlement: self.settlement.clone(),
        }
    }

    fn from_rules(rules: ChannelConfig) -> Self {
        ChannelEntry {
            name: rules.name,
            kind: default_kind(),
            base_url: String::new(),
            secret: Secret::default(),
            tps: rules.tps,
            concurrency: rules.concurrency,
            timeout_ms: rules.timeout_ms,
            order_no: rules.order_no,
            settlement: rules.settlement,
        }
    }
}

fn default_concurrency() -> usize {
    4
}
fn default_channel_timeout_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_security() -> String {
    "starttls".into()
}
fn default_kind() -> String {
    "sim".into()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: crate::store::DEFAULT_DATABASE_URL.into(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            tick_seconds: 10,
            listen: "127.0.0.1:8080".into(),
            policies: PathBuf::from("policies"),
            lender_name: "repayd demo lender".into(),
            batch_size: 2000,
            pipeline_depth: 3,
            lease_seconds: 60,
            heartbeat_seconds: 5,
            clock_offset_seconds: 0,
            clock_speed: 1,
            log_json: false,
            query_backoff_seconds: vec![60, 300, 3600, 86_400],
            scenario: None,
            sim_state: Some(PathBuf::from("repayd-sim")),
            auth_failure_burst: 20,
            auth_failures_per_second: 5,
        }
    }
}

impl Default for NoticesConfig {
    fn default() -> Self {
        NoticesConfig {
            sink: "log".into(),
            log_file: PathBuf::from("repayd-notices.log"),
            locale: "zh-CN".into(),
            templates: None,
            sms: None,
            email: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseConfig::default(),
            daemon: DaemonConfig::default(),
            notices: NoticesConfig::default(),
            channels: builtin_channels()
                .into_iter()
                .map(ChannelEntry::from_rules)
                .collect(),
        }
    }
}

/// A complete, commented configuration with the defaults.
pub const DEFAULT_CONFIG: &str = r#"# repayd configuration.
# Every value below is the default. Environment variables override the file:
#   REPAYD_DATABASE_URL, REPAYD_LISTEN, REPAYD_TICK_SECONDS, REPAYD_POLICIES,
#   REPAYD_CLOCK_OFFSET_SECONDS, REPAYD_LOG_JSON, REPAYD_NOTICE_LOG, REPAYD_SCENARIO,
#   REPAYD_CHANNEL_<NAME>_SECRET, REPAYD_CHANNEL_<NAME>_URL, REPAYD_SMS_TOKEN, REPAYD_SMTP_PASSWORD.

[database]
# sqlite://FILE (embedded, one daemon per file) or postgres://user:password@host/db
# (several daemons may share it).
url = "sqlite://repayd.db"

[daemon]
tick_seconds = 10                 # wake-up interval; the database says what is due
listen = "127.0.0.1:8080"         # /healthz, /metrics, channel and SMS webhooks
policies = "policies"             # policy folder (the shipped policies are always available)
lender_name = "repayd demo lender"
batch_size = 2000                 # actions claimed per batch
pipeline_depth = 3                # batches in flight at once (claimed, sending, being written)
lease_seconds = 60                # claims of an instance silent this long are rescued
heartbeat_seconds = 5
clock_offset_seconds = 0          # run as if the clock were ahead (demos, tests)
clock_speed = 1                   # clock seconds per real second (demos: 3600 = an hour a second)
log_json = false
query_backoff_seconds = [60, 300, 3600, 86400]   # re-query unknown results: 1 min, 5 min, 1 h, daily
# scenario = "scenario.toml"      # the in-process simulator's scenario (kind = "sim" channels)
sim_state = "repayd-sim"          # where kind = "sim" channels keep balances between restarts
auth_failure_burst = 20           # failed authentications (bad token or cookie, refused login)
auth_failures_per_second = 5      #   per client address at once, then per second; over: 429

[notices]
sink = "log"                      # "log" (dev: append to log_file) or "providers"
log_file = "repayd-notices.log"
locale = "zh-CN"                  # zh-CN or en
# templates = "templates"         # override folder: {locale}/{kind}.txt

# [notices.sms]
# kind = "generic"                # generic JSON gateway, or "twilio"
# url = "http://127.0.0.1:9200/sms"
# token = "change-me"             # or REPAYD_SMS_TOKEN
# account_sid = ""                # twilio only
# from = ""                       # twilio only
# timeout_ms = 5000

# [notices.email]
# host = "127.0.0.1"
# port = 2525
# security = "starttls"           # or "plain" for a local server
# username = ""
# password = ""                   # or REPAYD_SMTP_PASSWORD
# from = "collections@example.com"
# timeout_ms = 5000

# Channels. kind = "sim" uses the in-process simulator; kind = "http" speaks repayd's signed
# JSON protocol to base_url (for example `repayd channel-sim`). Callbacks are taken only from
# a channel with a secret (the daemon names the others at start).
[[channels]]
name = "unionpay"
kind = "sim"
tps = 1000                        # never exceeded (client-side cap)
concurrency = 4
timeout_ms = 10000
order_no = { prefix = "8", charset = "digits", min_len = 12, max_len = 12 }
# Statement and settlement: statement days are local days in tz; kind = "http" channels
# statements of the previous day are fetched by the daemon after statement_time (local), then
# reconciled; matched successes of day D are paid to the bank on D + days (T+N), net of fees
# taken from the statement's fee column (fees = "statement") or computed per line
# (fees = "rate": fee_rate x amount, at least fee_min).
settlement = { tz = "UTC", days = 1, fees = "statement", fee_rate = "0", fee_min = "0", statement_time = "09:00" }

[[channels]]
name = "wechat"
kind = "sim"
tps = 150
concurrency = 4
timeout_ms = 10000
order_no = { prefix = "WX", charset = "alnum", min_len = 8, max_len = 32 }
settlement = { tz = "UTC", days = 1, fees = "statement", fee_rate = "0", fee_min = "0", statement_time = "09:00" }

[[channels]]
name = "bank"
kind = "sim"
concurrency = 4
timeout_ms = 10000
order_no = { prefix = "BK", charset = "alnum", min_len = 16, max_len = 32 }
settlement = { tz = "UTC", days = 1, fees = "statement", fee_rate = "0", fee_min = "0", statement_time = "09:00" }
# base_url = "http://127.0.0.1:9100"
# secret = "change-me"            # or REPAYD_CHANNEL_BANK_SECRET
"#;

impl Config {
    /// Defaults, overridden by `file` (if given), then by the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match file {
            Some(p) => Self::from_file(p)?,
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().replace('\n', " "),
        })
    }

    /// Apply `REPAYD_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let num = |var: &str, v: String| {
            v.parse::<i64>().map_err(|_| ConfigError::Env {
                var: var.into(),
                message: format!("`{v}` is not a whole number"),
            })
        };
        if let Some(v) = get("REPAYD_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("REPAYD_LISTEN") {
            self.daemon.listen = v;
        }
        if let Some(v) = get("REPAYD_TICK_SECONDS") {
            self.daemon.tick_seconds = num("REPAYD_TICK_SECONDS", v)?.max(1) as u64;
        }
        if let Some(v) = get("REPAYD_POLICIES") {
            self.daemon.policies = v.into();
        }
        if let Some(v) = get("REPAYD_CLOCK_OFFSET_SECONDS") {
            self.daemon.clock_offset_seconds = num("REPAYD_CLOCK_OFFSET_SECONDS", v)?;
        }
        if let Some(v) = get("REPAYD_CLOCK_SPEED") {
            let speed = num("REPAYD_CLOCK_SPEED", v)?;
            self.daemon.clock_speed =
                u32::try_from(speed)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| ConfigError::Env {
                        var: "REPAYD_CLOCK_SPEED".into(),
                        message: format!("`{speed}` is not a speed of 1 or more"),
                    })?;
        }
        if let Some(v) = get("REPAYD_LOG_JSON") {
            self.daemon.log_json = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = get("REPAYD_SCENARIO") {
            self.daemon.scenario = Some(v.into());
        }
        if let Some(v) = get("REPAYD_NOTICE_LOG") {
            self.notices.log_file = v.into();
        }
        for c in &mut self.channels {
            let key = c.name.to_uppercase();
            if let Some(v) = get(&format!("REPAYD_CHANNEL_{key}_SECRET")) {
                c.secret = Secret::new(v);
            }
            if let Some(v) = get(&format!("REPAYD_CHANNEL_{key}_URL")) {
                c.base_url = v;
                c.kind = "http".into();
            }
        }
        if let (Some(v), Some(sms)) = (get("REPAYD_SMS_TOKEN"), self.notices.sms.as_mut()) {
            sms.token = Secret::new(v);
        }
        if let (Some(v), Some(mail)) = (get("REPAYD_SMTP_PASSWORD"), self.notices.email.as_mut()) {
            mail.password = Secret::new(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_is_the_default() {
        let parsed = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        let mut expected = Config::default();
        expected.channels[0].tps = Some(1000);
        assert_eq!(parsed, expected);
    }

    #[test]
    fn env_overrides_the_file() {
        let mut c = Config::parse("[database]\nurl = \"sqlite://a.db\"\n", "f").unwrap();
        let env = |k: &str| match k {
            "REPAYD_DATABASE_URL" => Some("postgres://u:pw@h/db".to_string()),
            "REPAYD_TICK_SECONDS" => Some("3".to_string()),
            "REPAYD_CHANNEL_BANK_SECRET" => Some("s3cret".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.database.url, "postgres://u:pw@h/db");
        assert_eq!(c.daemon.tick_seconds, 3);
        let bank = c.channels.iter().find(|c| c.name == "bank").unwrap();
        assert_eq!(bank.secret.expose(), "s3cret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "secrets never in Debug: {shown}");
    }

    #[test]
    fn channel_settlement_reads_from_the_file() {
        let c = Config::parse(
            "[[channels]]\nname = \"wx\"\nkind = \"http\"\nbase_url = \"http://127.0.0.1:9100\"\n\
             order_no = { prefix = \"WX\", charset = \"alnum\", min_len = 8, max_len = 32 }\n\
             settlement = { tz = \"Asia/Shanghai\", days = 2, fees = \"rate\", fee_rate = \"0.006\", statement_time = \"10:30\" }\n",
            "f",
        )
        .unwrap();
        let rules = c.channels[0].rules();
        assert_eq!(rules.settlement.days, 2);
        assert_eq!(rules.settlement.tz, chrono_tz::Asia::Shanghai);
        assert_eq!(rules.settlement.statement_time.to_string(), "10:30:00");
        let e = Config::parse(
            "[[channels]]\nname = \"wx\"\norder_no = { prefix = \"W\" }\nsettlement = { statement_time = \"9am\" }\n",
            "repayd.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("9am"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("[daemon]\ntick = 3\n", "repayd.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repayd.toml") && e.contains("tick"), "{e}");
    }
}
