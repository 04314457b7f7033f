//! The Prometheus recorder behind `/metrics` (served by `health`): every metric's help text
//! in one place, the gauges read from the database at each scrape, and the count of HTTP
//! requests.
//!
//! Why one catalogue: `promtool check metrics` refuses a metric without HELP, and the
//! emitters sit in several layers (engine, recon, adapters) that must not depend on the web.

use crate::engine::gauges;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// A channel call's latency in seconds: from a loopback simulator (a few ms) to the
/// channel timeout (30 s). Fixed buckets, so daemons' histograms add up.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const CHANNEL_LATENCY: &str = "repayd_channel_latency_seconds";
const HTTP_REQUESTS: &str = "repayd_http_requests_total";

const COUNTERS: &[(&str, &str)] = &[
    ("repayd_attempts_total", "Debit attempts with a final answer, by kind, outcome and whether the answer came from the submit or a later query; each attempt is counted once."),
    ("repayd_attempts_unknown_total", "Debit attempts whose submit gave no final answer; they are queried, never resent, and counted in repayd_attempts_total once settled."),
    ("repayd_unknown_escalated_total", "Open attempts handed to a person after querying went on too long."),
    ("repayd_collected_minor_units_total", "Money collected by succeeded debits, in the currency's minor units (fen, pence, cents), by currency and channel."),
    ("repayd_notice_deliveries_total", "Notice deliveries tried, by channel (sms, email) and result."),
    ("repayd_notices_held_total", "Notices held back for later, by reason (quiet_hours, daily_cap)."),
    ("repayd_loans_parked_total", "Loans parked for a person because their data could not be worked."),
    ("repayd_recon_items_total", "Reconciliation items matched from channel statements, by channel and outcome."),
    ("repayd_channel_throttled_total", "Channel requests answered 429 (over the channel's rate)."),
    ("repayd_auth_failures_total", "Requests refused for a missing or bad token or cookie, or a failed login."),
    ("repayd_auth_rate_limited_total", "Requests answered 429 because their address failed authentication too often."),
    (HTTP_REQUESTS, "HTTP requests served, by method, route pattern and status code."),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "repayd_build_info",
        "Always 1; the labels name the running build.",
    ),
    (
        "repayd_due_lag_seconds",
        "How late the oldest pending due action is, by the daemon's clock.",
    ),
    (
        "repayd_pending_actions",
        "Agenda rows waiting to be worked, by kind.",
    ),
    (
        "repayd_loans_parked",
        "Loans waiting for a person to unpark them.",
    ),
    (
        "repayd_recon_cases_open",
        "Reconciliation cases waiting for a person.",
    ),
    (
        "repayd_instances_live",
        "Daemons with a fresh heartbeat on this database.",
    ),
    (
        "repayd_pipeline_batches_in_flight",
        "Batches of the current run between claim and write.",
    ),
];

/// The process-wide recorder, installed once; the first call also describes every metric.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHANNEL_LATENCY.into()), LATENCY_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .expect("one metrics recorder per process, with valid buckets");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    describe_histogram!(
        CHANNEL_LATENCY,
        Unit::Seconds,
        "Time from a debit's submit to the channel's answer, by channel."
    );
    process_collector().describe();
    metrics::gauge!("repayd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Set the gauges read from the database at a scrape.
pub fn set_gauges(g: &gauges::Gauges) {
    metrics::gauge!("repayd_due_lag_seconds").set(g.due_lag_seconds);
    for (kind, n) in &g.pending_actions {
        metrics::gauge!("repayd_pending_actions", "kind" => kind.clone()).set(*n as f64);
    }
    metrics::gauge!("repayd_loans_parked").set(g.loans_parked as f64);
    metrics::gauge!("repayd_recon_cases_open").set(g.recon_cases_open as f64);
}

/// Count every request by its route pattern (`/api/v1/loans/{id}`, never the raw path, so
/// ids do not become series); a path that matched no route counts as `unmatched`.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    res
}
