//! What every handler reads: the engine, the webhook secrets, the daemon's own state (for
//! health), the metrics recorder and the limit on failed authentication.

use crate::domain::secret::Secret;
use crate::engine::Engine;
use crate::web::throttle::{AuthLimits, AuthThrottle};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

/// What the daemon exposes about itself (health, metrics).
#[derive(Debug, Default)]
pub struct DaemonState {
    pub instance: String,
    /// Wall-clock milliseconds of the last finished tick.
    pub last_tick_ms: AtomicI64,
    pub runs: AtomicU64,
    pub busy: AtomicBool,
    pub skipped_ticks: AtomicU64,
}

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// Key of the SMS gateway's signed delivery reports (the gateway token).
    pub sms_secret: Option<Secret>,
    pub daemon: Arc<DaemonState>,
    /// Shared secrets per channel, for callback signatures.
    pub channel_secrets: Arc<HashMap<String, Secret>>,
    pub metrics: PrometheusHandle,
    /// Failed authentications per client address.
    pub auth_throttle: Arc<AuthThrottle>,
}

impl ApiState {
    /// State for the daemon: its webhook secrets (per channel, and the SMS gateway's token)
    /// and its limits on failed authentication (`app::daemon` reads them from the config).
    pub fn new(
        engine: Arc<Engine>,
        daemon: Arc<DaemonState>,
        channel_secrets: HashMap<String, Secret>,
        sms_secret: Option<Secret>,
        limits: AuthLimits,
    ) -> Self {
        ApiState {
            sms_secret,
            engine,
            daemon,
            channel_secrets: Arc::new(channel_secrets),
            metrics: crate::web::metrics::handle(),
            auth_throttle: Arc::new(AuthThrottle::new(limits)),
        }
    }

    /// State for an engine without a daemon around it (tests, tools): no webhook secrets.
    /// The default limits on failed authentication apply.
    pub fn for_engine(engine: Arc<Engine>) -> Self {
        let metrics = crate::web::metrics::handle();
        ApiState {
            engine,
            sms_secret: None,
            daemon: Arc::new(DaemonState::default()),
            channel_secrets: Arc::new(HashMap::new()),
            metrics,
            auth_throttle: Arc::new(AuthThrottle::new(AuthLimits::default())),
        }
    }

    /// Other limits on failed authentication (tests that fail on purpose many times).
    pub fn with_auth_limits(mut self, limits: AuthLimits) -> Self {
        self.auth_throttle = Arc::new(AuthThrottle::new(limits));
        self
    }
}
