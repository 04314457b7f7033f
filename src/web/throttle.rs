//! A limit on failed authentication per client address: bad bearer tokens, bad dashboard
//! cookies and refused logins. A token is 32 random bytes, so guessing one is hopeless, but
//! an unlimited stream of guesses still costs a token lookup each and fills the logs. Each
//! address may fail a burst of times, then a few times a second (governor's keyed GCRA);
//! over that, every request from it is answered 429 with `Retry-After` before its token is
//! looked at, until the limiter would let a failure through again.
//!
//! The address is the TCP peer (axum's `ConnectInfo`); an IPv6 client counts by its /64,
//! which one host can fill. Behind a reverse proxy every client shares the proxy's address:
//! `X-Forwarded-For` is not trusted, since anybody can write it. Without connection info (a
//! router served without it) all clients share one key, which is stricter, never looser.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FAILURES: &str = "repayd_auth_failures_total";
const LIMITED: &str = "repayd_auth_rate_limited_total";
/// Forget idle addresses every this many failures, so the tables stay small.
const SWEEP_EVERY: u64 = 1024;

/// How many failed authentications an address may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failures allowed at once.
    pub burst: u32,
    /// Failures allowed per second after the burst.
    pub per_second: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            burst: 20,
            per_second: 5,
        }
    }
}

/// Put on a response that refused a credential without being a 401 (the dashboard sends a
/// bad cookie to the login form): it counts as a failure all the same.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailed;

/// Who failed: an address, or everybody when the server does not know addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Addr(IpAddr),
    Unknown,
}

pub struct AuthThrottle {
    limiter: DefaultKeyedRateLimiter<Client>,
    /// Addresses over the limit, and until when they are refused without a token lookup.
    blocked: Mutex<HashMap<Client, Instant>>,
    failures: AtomicU64,
}

impl AuthThrottle {
    pub fn new(limits: AuthLimits) -> Self {
        let one = NonZeroU32::MIN;
        let burst = NonZeroU32::new(limits.burst).unwrap_or(one);
        let rate = NonZeroU32::new(limits.per_second).unwrap_or(one);
        AuthThrottle {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            blocked: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
        }
    }

    /// How long the client must still wait, if it is over its limit.
    fn blocked_for(&self, c: Client) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&c) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(&c);
                None
            }
            None => None,
        }
    }

    /// Count a failure; the wait when it is one too many.
    fn failed(&self, c: Client) -> Option<Duration> {
        if self.failures.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let not_until = self.limiter.check_key(&c).err()?;
        let wait = not_until
            .wait_time_from(self.limiter.clock().now())
            .max(Duration::from_millis(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.insert(c, Instant::now() + wait);
        Some(wait)
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.retain(|_, until| *until > now);
    }
}

/// The middleware over every route that takes a credential.
pub async fn layer(
    State(throttle): State<std::sync::Arc<AuthThrottle>>,
    req: Request,
    next: Next,
) -> Response {
    let client = client_of(&req);
    if let Some(wait) = throttle.blocked_for(client) {
        return too_many(wait);
    }
    let resp = next.run(req).await;
    let failed = resp.status() == StatusCode::UNAUTHORIZED
        || resp.extensions().get::<AuthFailed>().is_some();
    if !failed {
        return resp;
    }
    metrics::counter!(FAILURES).increment(1);
    match throttle.failed(client) {
        None => resp,
        Some(wait) => {
            tracing::warn!(client = ?client, "too many failed authentications; refusing for a while");
            too_many(wait)
        }
    }
}

fn client_of(req: &Request) -> Client {
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => Client::Addr(network_of(addr.ip())),
        None => Client::Unknown,
    }
}

/// An IPv4 address itself; an IPv6 one by its /64 (one host's share).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

fn too_many(wait: Duration) -> Response {
    metrics::counter!(LIMITED).increment(1);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    // The API's error shape (`{error, message}`), written here so that the limit sits below
    // every surface it guards.
    let body = serde_json::json!({
        "error": "rate_limited",
        "message": format!("too many failed authentications from this address; retry in {secs} s"),
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(secs.max(1)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_then_a_wait() {
        let t = AuthThrottle::new(AuthLimits {
            burst: 3,
            per_second: 1,
        });
        let a = Client::Addr("192.0.2.1".parse().unwrap());
        let b = Client::Addr("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(t.failed(a), None);
        }
        let wait = t.failed(a).expect("one too many");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(t.blocked_for(a).is_some(), "refused before any lookup");
        assert_eq!(t.blocked_for(b), None, "another address is not");
        assert_eq!(t.failed(b), None);
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a = network_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = network_of("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped = network_of("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
