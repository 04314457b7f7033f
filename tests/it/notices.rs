//! A notice goes out at most once, however many dispatchers share the outbox: a claim is the
//! claimer's until its heartbeat is stale, and a notice is marked `sending` only while still
//! its claimer's.

use crate::common;

use chrono::{TimeZone, Utc};
use common::{spawn_app, Backend, TestApp};
use repayd::domain::notice::{DeliveryError, NoticeKind, NoticeRow, NoticeSink, Outgoing};
use repayd::engine::dispatch::{dispatch, Dispatcher};
use repayd::engine::instance;
use std::collections::HashMap;
use std::sync::Mutex;

/// Counts deliveries per notice, slowly enough for two dispatchers to overlap.
#[derive(Default)]
struct Counting(Mutex<HashMap<i64, u32>>);

#[async_trait::async_trait]
impl NoticeSink for Counting {
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError> {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        *self.0.lock().unwrap().entry(n.id).or_default() += 1;
        Ok(None)
    }
}

async fn queue(app: &TestApp, n: usize) {
    let now = Utc.with_ymd_and_hms(2027, 1, 15, 4, 0, 0).unwrap();
    let rows: Vec<NoticeRow> = (0..n)
        .map(|i| NoticeRow {
            dedupe_key: format!("race:{i}"),
            loan_id: format!("L{i}"),
            seq: Some(1),
            borrower_id: format!("B{i}"),
            kind: NoticeKind::Failed,
            channel: "sms",
            recipient: "13800000000".into(),
            tz: chrono_tz::Asia::Shanghai,
            subject: String::new(),
            body: "debit failed".into(),
            send_after: now,
        })
        .collect();
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    repayd::store::notices::queue_notices(&mut conn, &rows, now)
        .await
        .unwrap();
}

fn no_rules(_: &str) -> Option<(Vec<repayd::domain::QuietWindow>, u32)> {
    None
}

/// Two live dispatchers drain one outbox at the same time: every notice is delivered once.
async fn two_dispatchers_send_each_notice_once(backend: Backend) {
    let app = spawn_app(backend, "").await;
    queue(&app, 300).await;
    for id in ["d1", "d2"] {
        instance::register(&app.engine.db, id).await.unwrap();
    }
    let sink = Counting::default();
    let now = Utc.with_ymd_and_hms(2027, 1, 15, 4, 0, 0).unwrap();
    let run = |owner: &'static str| {
        let db = app.engine.db.clone();
        let sink = &sink;
        async move {
            let mut conn = db.pool.acquire().await.unwrap();
            let d = Dispatcher {
                owner,
                lease_ms: 60_000,
                sink,
                rules: &no_rules,
            };
            dispatch(&mut conn, &d, now).await.unwrap()
        }
    };
    let (a, b) = tokio::join!(run("d1"), run("d2"));
    {
        let sent = sink.0.lock().unwrap();
        assert_eq!(sent.len(), 300, "every notice delivered");
        assert!(sent.values().all(|n| *n == 1), "a notice went out twice");
    }
    assert_eq!(a.sent + b.sent, 300);
    app.cleanup().await;
}
both_backends!(two_dispatchers_send_each_notice_once);

/// A dispatcher whose claim was rescued meanwhile (its heartbeat went stale) sends nothing
/// of it: marking `sending` finds the notices no longer its claim.
async fn a_rescued_claim_is_not_sent_by_its_first_claimer(backend: Backend) {
    let app = spawn_app(backend, "").await;
    queue(&app, 5).await;
    for id in ["slow", "fast"] {
        instance::register(&app.engine.db, id).await.unwrap();
    }
    let now = Utc.with_ymd_and_hms(2027, 1, 15, 4, 0, 0).unwrap();
    let mut conn = app.engine.db.pool.acquire().await.unwrap();
    let wall = Utc::now().timestamp_millis();
    let claimed = repayd::store::notices::claim_due(&mut conn, "slow", wall - 60_000, now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    // While "slow" is alive, "fast" may not take its claims.
    let none = repayd::store::notices::claim_due(&mut conn, "fast", wall - 60_000, now)
        .await
        .unwrap();
    assert!(none.is_empty(), "a live owner keeps its claims");
    sqlx::query("UPDATE instances SET heartbeat_at = 0 WHERE id = 'slow'")
        .execute(&app.engine.db.pool)
        .await
        .unwrap();
    let sink = Counting::default();
    let d = Dispatcher {
        owner: "fast",
        lease_ms: 60_000,
        sink: &sink,
        rules: &no_rules,
    };
    let r = dispatch(&mut conn, &d, now).await.unwrap();
    assert_eq!(r.sent, 5, "the stale owner's claims are rescued and sent");
    let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 15).unwrap();
    let ids: Vec<(i64, chrono::NaiveDate)> = claimed.iter().map(|p| (p.id, day)).collect();
    let late = repayd::store::notices::mark_sending(&mut conn, "slow", &ids)
        .await
        .unwrap();
    assert!(
        late.is_empty(),
        "the first claimer may send none of them: {late:?}"
    );
    drop(conn);
    app.cleanup().await;
}
both_backends!(a_rescued_claim_is_not_sent_by_its_first_claimer);
