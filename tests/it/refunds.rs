//! Refunds of one repayment racing each other: the refundable check and the insert are one
//! step per attempt, on SQLite and PostgreSQL.

use crate::common;

use chrono::{DateTime, Utc};
use common::{loan_json, Backend};
use repayd::recon::{self, ReconError, RefundKind, RefundRequest};
use rust_decimal_macros::dec;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// 20 concurrent refunds of 10 % each against one repayment: exactly 10 pass, the other 10
/// are refused as exceeding what is refundable, and the ledger still balances.
async fn concurrent_refunds_never_exceed_the_repayment(backend: Backend) {
    let app = common::spawn_app(backend, "").await;
    let loan = loan_json(
        "L-RACE",
        "UTC",
        "test",
        None,
        false,
        &[("unionpay", "AGR-A")],
        &[("2026-12-19", "100.00")],
    );
    app.import_json(&serde_json::Value::Array(vec![loan]).to_string())
        .await;
    app.run(at("2026-12-19T08:00:00Z")).await;
    let attempt = app.attempt_id("L-RACE", 0).await;
    let t = at("2026-12-19T10:00:00Z");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let db = app.engine.db.clone();
            tokio::spawn(async move {
                let req = RefundRequest {
                    attempt_id: attempt,
                    amount: dec!(10),
                    kind: RefundKind::Erroneous,
                    reason: format!("race {i}"),
                    actor: "tester".into(),
                };
                let mut tx = db.begin().await.unwrap();
                let done = recon::refund_in(&mut tx, &req, t).await?;
                tx.commit().await.unwrap();
                Ok::<_, ReconError>(done)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ReconError::ExceedsRefundable { .. }) => refused += 1,
            Err(e) => panic!("unexpected refund error: {e:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 10));
    assert_eq!(app.count("refunds").await, 10);
    assert_eq!(
        app.scalar_i64("SELECT CAST(SUM(amount) AS BIGINT) FROM refunds")
            .await,
        10000
    );
    assert_eq!(app.trial_balance_difference().await, dec!(0));
    app.cleanup().await;
}
both_backends!(concurrent_refunds_never_exceed_the_repayment);
