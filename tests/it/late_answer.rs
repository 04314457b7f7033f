//! A channel's answer that arrives after its attempt was settled by someone else (a
//! callback, a statement, another instance) writes nothing: no ledger line, no installment
//! update, no notice. On SQLite and PostgreSQL.

use crate::common;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use common::{loan_json, Backend, TestApp};
use repayd::domain::channel::{
    Channel, ChannelError, DebitOutcome, DebitRequest, QueryOutcome, StatementLine,
};
use sqlx::AnyPool;
use std::sync::Arc;

/// The first submit of this agreement times out after debiting: the attempt is `unknown`.
const SCENARIO: &str = r#"
[[accounts]]
agreement = "AGR-LATE"
unknown_first = 1
unknown_applies = true
"#;

/// Wraps the simulator; while a query is in flight, another writer settles the attempt (as a
/// statement import or another instance would), so the engine's answer arrives late.
struct SettledMeanwhile {
    inner: Arc<dyn Channel>,
    pool: AnyPool,
}

#[async_trait]
impl Channel for SettledMeanwhile {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn submit(&self, req: &DebitRequest) -> Result<DebitOutcome, ChannelError> {
        self.inner.submit(req).await
    }
    async fn query(&self, order_no: &str, at: DateTime<Utc>) -> Result<QueryOutcome, ChannelError> {
        let answer = self.inner.query(order_no, at).await;
        sqlx::query(
            "UPDATE attempts SET status = 'succeeded', code = 'SETTLED_ELSEWHERE' \
             WHERE order_no = $1",
        )
        .bind(order_no)
        .execute(&self.pool)
        .await
        .expect("settle elsewhere");
        answer
    }
    async fn statement(&self, date: NaiveDate) -> Result<Vec<StatementLine>, ChannelError> {
        self.inner.statement(date).await
    }
}

/// What the late answer must not change: repayment entries, paid amounts, notices.
async fn footprint(app: &TestApp) -> (i64, i64, i64) {
    let entries = app
        .scalar_i64(
            "SELECT COUNT(*) FROM journal_entries WHERE loan_id = 'L-LATE' AND kind = 'repayment'",
        )
        .await;
    let paid = app
        .scalar_i64(
            "SELECT CAST(COALESCE(SUM(paid_principal + paid_interest + paid_fee + paid_penalty), 0) AS BIGINT) \
             FROM installments WHERE loan_id = 'L-LATE'",
        )
        .await;
    let notices = app
        .scalar_i64("SELECT COUNT(*) FROM notices WHERE loan_id = 'L-LATE'")
        .await;
    (entries, paid, notices)
}

async fn late_query_answer_writes_nothing(backend: Backend) {
    let mut app = common::spawn_app(backend, SCENARIO).await;
    let loan = loan_json(
        "L-LATE",
        "UTC",
        "test",
        None,
        false,
        &[("unionpay", "AGR-LATE")],
        &[("2026-12-19", "100.00")],
    );
    app.import_json(&serde_json::Value::Array(vec![loan]).to_string())
        .await;
    let due = DateTime::parse_from_rfc3339("2026-12-19T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    app.run(due).await;
    let status = app
        .scalar_str("SELECT status FROM attempts WHERE loan_id = 'L-LATE'")
        .await;
    assert_eq!(status, "unknown", "the submit timed out after debiting");
    let before = footprint(&app).await;

    let inner = app.engine.channels["unionpay"].clone();
    let pool = app.engine.db.pool.clone();
    app.engine.channels.insert(
        "unionpay".into(),
        Arc::new(SettledMeanwhile { inner, pool }),
    );
    // The query is due a minute later; its answer (debited) comes after the settlement.
    app.run(due + Duration::minutes(2)).await;

    let (status, code) = (
        app.scalar_str("SELECT status FROM attempts WHERE loan_id = 'L-LATE'")
            .await,
        app.scalar_str("SELECT code FROM attempts WHERE loan_id = 'L-LATE'")
            .await,
    );
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("succeeded", "SETTLED_ELSEWHERE"),
        "the other writer's settlement stands"
    );
    assert_eq!(
        footprint(&app).await,
        before,
        "a late answer posts no entry, pays no installment and queues no notice"
    );
    assert_eq!(
        app.trial_balance_difference().await,
        rust_decimal::Decimal::ZERO
    );
    app.cleanup().await;
}

both_backends!(late_query_answer_writes_nothing);
