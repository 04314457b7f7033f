//! The notice outbox: rows queued with the fact they announce (unique per dedupe key),
//! claimed with a lease by one instance at a time, marked `sending` only while still its
//! claim, then finished. A claim is rescued only when its owner's heartbeat is stale.

use crate::domain::notice::{NoticeRow, Outgoing, Pending};
use crate::store::{alive_owner, in_list, is_sqlite, stored_date, stored_tz, Rows, Val};
use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// Write outbox rows; a dedupe key already present is left alone.
pub async fn queue_notices(
    conn: &mut AnyConnection,
    rows: &[NoticeRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut out = Rows::new(12);
    for n in rows {
        out.push(vec![
            n.dedupe_key.clone().into(),
            n.loan_id.clone().into(),
            n.seq.map(i64::from).into(),
            n.borrower_id.clone().into(),
            n.kind.as_str().into(),
            n.channel.into(),
            n.recipient.clone().into(),
            n.tz.name().into(),
            n.subject.clone().into(),
            n.body.clone().into(),
            Val::Int(now.timestamp_millis()),
            Val::Int(n.send_after.timestamp_millis()),
        ]);
    }
    out.insert(
        conn,
        "INSERT INTO notices (dedupe_key, loan_id, seq, borrower_id, kind, channel, recipient, tz, subject, body, created_at, send_after)",
        "ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .await
}

/// Claim up to 2,000 notices due at `now` for `owner`. Claims of instances whose heartbeat is
/// stale (older than `stale_before`) are given back first; a live owner keeps its claims.
pub async fn claim_due(
    conn: &mut AnyConnection,
    owner: &str,
    stale_before: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Pending>, sqlx::Error> {
    let rescue = format!(
        "UPDATE notices SET status = 'pending', claimed_by = NULL WHERE status = 'claimed' \
         AND (claimed_by IS NULL OR claimed_by <> $1) AND NOT EXISTS ({})",
        alive_owner("notices.claimed_by", "$2")
    );
    sqlx::query(&rescue)
        .bind(owner)
        .bind(stale_before)
        .execute(&mut *conn)
        .await?;
    let lock = if is_sqlite(conn) {
        ""
    } else {
        "FOR UPDATE SKIP LOCKED"
    };
    // Straight off the (status, send_after) index, with no sort over the whole outbox.
    let sql = format!(
        "UPDATE notices SET status = 'claimed', claimed_at = $2, claimed_by = $3 WHERE id IN (\
         SELECT id FROM notices WHERE status = 'pending' AND send_after <= $1 \
         ORDER BY send_after LIMIT 2000 {lock}) \
         RETURNING id, loan_id, borrower_id, kind, channel, recipient, tz, subject, body"
    );
    let mut rows = sqlx::query(&sql)
        .bind(now.timestamp_millis())
        .bind(Utc::now().timestamp_millis())
        .bind(owner)
        .fetch_all(&mut *conn)
        .await?;
    rows.sort_by_key(|r| r.get::<i64, _>("id"));
    let policy_of = loan_policies(conn, &rows).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for r in &rows {
        match pending(r, &policy_of) {
            Ok(p) => out.push(p),
            Err(e) => bad.push(Delivered {
                id: r.get("id"),
                status: "failed",
                provider_id: None,
                error: Some(e.to_string()),
                after: now,
            }),
        }
    }
    // Quiet hours are the borrower's: a notice whose zone does not decode is never sent at a
    // guessed hour. It fails, with the reason on its row.
    finish(conn, &bad, now).await?;
    Ok(out)
}

fn pending(
    r: &sqlx::any::AnyRow,
    policy_of: &HashMap<String, String>,
) -> Result<Pending, crate::store::DecodeError> {
    let tz = stored_tz("tz", &r.get::<String, _>("tz"))?;
    Ok(Pending {
        id: r.get("id"),
        borrower: r.get("borrower_id"),
        tz,
        policy: policy_of
            .get(&r.get::<String, _>("loan_id"))
            .cloned()
            .unwrap_or_default(),
        out: Outgoing {
            id: r.get("id"),
            kind: r.get("kind"),
            channel: r.get("channel"),
            recipient: r.get("recipient"),
            subject: r.get::<Option<String>, _>("subject").unwrap_or_default(),
            body: r.get("body"),
        },
    })
}

/// The policy of each loan with a notice in the batch (whose quiet hours and cap apply).
async fn loan_policies(
    conn: &mut AnyConnection,
    rows: &[sqlx::any::AnyRow],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let mut ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>("loan_id")).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, policy FROM loans WHERE id IN ({})",
        in_list(conn, 1, ids.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for id in &ids {
        q = q.bind(id.as_str());
    }
    let found = q.fetch_all(&mut *conn).await?;
    Ok(found
        .into_iter()
        .map(|r| (r.get("id"), r.get("policy")))
        .collect())
}

/// Notices sent (or being sent) to each borrower of the batch per local date, around `now`.
pub async fn sent_counts(
    conn: &mut AnyConnection,
    batch: &[Pending],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, NaiveDate), i64>, sqlx::Error> {
    let mut borrowers: Vec<String> = batch.iter().map(|p| p.borrower.clone()).collect();
    borrowers.sort();
    borrowers.dedup();
    let utc_day = now.date_naive();
    let days = [utc_day - Days::new(1), utc_day, utc_day + Days::new(1)];
    let mut out = HashMap::new();
    for chunk in borrowers.chunks(5000) {
        let sql = format!(
            "SELECT borrower_id, sent_local_date, COUNT(*) AS n FROM notices \
             WHERE status IN ('sent','sending') AND sent_local_date IN ($1,$2,$3) \
             AND borrower_id IN ({}) GROUP BY borrower_id, sent_local_date",
            in_list(conn, 4, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for d in &days {
            q = q.bind(d.to_string());
        }
        for b in chunk {
            q = q.bind(b.as_str());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let Ok(day) = stored_date("sent_local_date", &r.get::<String, _>("sent_local_date"))
            else {
                continue;
            };
            out.insert((r.get("borrower_id"), day), r.get::<i64, _>("n"));
        }
    }
    Ok(out)
}

/// Give held notices back to the agenda with a later `send_after`.
pub async fn reschedule(conn: &mut AnyConnection, hold: &[(i64, i64)]) -> Result<(), sqlx::Error> {
    if hold.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(2);
    for (id, at) in hold {
        rows.push(vec![Val::Int(*id), Val::Int(*at)]);
    }
    rows.with_values(
        conn,
        "id, send_after",
        "UPDATE notices SET send_after = v.send_after, status = 'pending', claimed_by = NULL \
         FROM v WHERE notices.id = v.id",
    )
    .await?;
    Ok(())
}

/// Mark notices `sending` (with the local date the cap counts) while they are still this
/// owner's claim. Returns the ids that were: only those may be delivered. A notice whose
/// claim was rescued by another instance meanwhile is not among them, so it is never sent
/// twice.
pub async fn mark_sending(
    conn: &mut AnyConnection,
    owner: &str,
    send: &[(i64, NaiveDate)],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut taken = Vec::with_capacity(send.len());
    for chunk in send.chunks(500) {
        let mut rows = Rows::new(2);
        for (id, day) in chunk {
            rows.push(vec![Val::Int(*id), Val::Text(day.to_string())]);
        }
        let sql = format!(
            "UPDATE notices SET status = 'sending', sent_local_date = v.day FROM v \
             WHERE notices.id = v.id AND notices.status || '' = 'claimed' \
             AND notices.claimed_by = '{}' RETURNING notices.id",
            owner.replace('\'', "''")
        );
        for r in rows.with_values_returning(conn, "id, day", &sql).await? {
            taken.push(r.get::<i64, _>("id"));
        }
    }
    Ok(taken)
}

/// How a delivery ended: `sent`, `pending` (retry after `after`) or `failed`.
pub struct Delivered {
    pub id: i64,
    pub status: &'static str,
    pub provider_id: Option<String>,
    pub error: Option<String>,
    pub after: DateTime<Utc>,
}

pub async fn finish(
    conn: &mut AnyConnection,
    done: &[Delivered],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut rows = Rows::new(5);
    for d in done {
        rows.push(vec![
            Val::Int(d.id),
            d.status.into(),
            d.provider_id.clone().into(),
            d.error.clone().into(),
            Val::Int(d.after.timestamp_millis()),
        ]);
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.with_values(
        conn,
        "id, status, provider_id, error, after",
        &format!(
            "UPDATE notices SET status = v.status, provider_id = v.provider_id, error = v.error, \
             send_after = v.after, sent_at = CASE WHEN v.status = 'sent' THEN {} ELSE NULL END, \
             sent_local_date = CASE WHEN v.status = 'pending' THEN NULL ELSE notices.sent_local_date END \
             FROM v WHERE notices.id = v.id",
            now.timestamp_millis()
        ),
    )
    .await?;
    Ok(())
}

/// Record a delivery report's status on the notice it names (by our message id or the
/// provider's). Returns whether a notice matched.
pub async fn record_delivery_status(
    conn: &mut AnyConnection,
    notice_id: Option<i64>,
    provider_id: Option<&str>,
    status: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE notices SET delivery_status = $1 WHERE id = $2 \
         OR (provider_id IS NOT NULL AND provider_id = $3)",
    )
    .bind(status)
    .bind(notice_id.unwrap_or(-1))
    .bind(provider_id.unwrap_or_default())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}
