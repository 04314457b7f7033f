//! `repayd plan show ID [--as-of]`: a loan's agenda, each action placed against a moment
//! (now, or `--as-of`) so that a reader sees what is already past due and what comes next.

use super::Ctx;
use anyhow::bail;
use chrono::{DateTime, Utc};
use repayd::store::reports::{self, ActionView};
use serde::Serialize;

/// Where an action stands at the moment asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Still pending, though its time has come: the next run takes it.
    Due,
    /// The first pending action still to come.
    Next,
    /// Pending, later.
    Later,
    /// Done (executed, cancelled or skipped).
    Done,
}

/// Place each action against `now`, in agenda order.
pub fn place(rows: &[ActionView], now: DateTime<Utc>) -> Vec<When> {
    let mut next_given = false;
    rows.iter()
        .map(|a| {
            if a.status != "pending" {
                When::Done
            } else if a.due_at <= now {
                When::Due
            } else if !next_given {
                next_given = true;
                When::Next
            } else {
                When::Later
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Placed<'a> {
    #[serde(flatten)]
    action: &'a ActionView,
    when: When,
}

pub async fn show(ctx: &Ctx, id: &str, as_of: Option<&str>) -> anyhow::Result<()> {
    let now = super::loans::as_of(as_of)?;
    let db = repayd::store::Db::open(&ctx.settings.database_url).await?;
    let mut conn = db.pool.acquire().await?;
    let rows = reports::plan_view(&mut conn, id).await?;
    if rows.is_empty() {
        bail!("no agenda for loan `{id}` in {}", db.display_url);
    }
    let places = place(&rows, now);
    if ctx.json {
        let items: Vec<Placed> = rows
            .iter()
            .zip(&places)
            .map(|(action, when)| Placed {
                action,
                when: *when,
            })
            .collect();
        let page = serde_json::json!({ "loan_id": id, "as_of": now, "items": items });
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_plan(id, &rows, &places, now);
    Ok(())
}

fn print_plan(id: &str, rows: &[ActionView], places: &[When], now: DateTime<Utc>) {
    let due = places.iter().filter(|w| **w == When::Due).count();
    let pending = places.iter().filter(|w| **w != When::Done).count();
    println!(
        "loan {id} as of {} UTC: {pending} pending actions, {due} of them due now",
        now.format("%Y-%m-%d %H:%M")
    );
    println!(
        "{:<4} {:<8} {:<18} {:<22} {:<16} {:<9} {:<5} note",
        "seq", "kind", "slot", "local time (zone)", "UTC", "status", "when"
    );
    for (a, w) in rows.iter().zip(places) {
        let when = match w {
            When::Due => "due",
            When::Next => "next",
            When::Later | When::Done => "",
        };
        println!(
            "#{:<3} {:<8} {:<18} {:<22} {:<16} {:<9} {:<5} {}",
            a.seq,
            a.kind,
            a.slot,
            a.local,
            a.due_at.format("%Y-%m-%d %H:%M"),
            a.status,
            when,
            a.note.as_deref().unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(at: &str, status: &str) -> ActionView {
        let due_at = DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc);
        ActionView {
            seq: 1,
            kind: "due".into(),
            slot: "due:08:00".into(),
            due_at,
            local: String::new(),
            status: status.into(),
            note: None,
        }
    }

    #[test]
    fn actions_are_placed_against_the_moment_asked_about() {
        let rows = [
            action("2027-01-10T00:00:00Z", "done"),
            action("2027-01-15T00:00:00Z", "pending"),
            action("2027-01-16T00:00:00Z", "pending"),
            action("2027-01-17T00:00:00Z", "pending"),
        ];
        let now = DateTime::parse_from_rfc3339("2027-01-15T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            place(&rows, now),
            [When::Done, When::Due, When::Next, When::Later]
        );
        let earlier = now - chrono::Duration::days(30);
        assert_eq!(
            place(&rows, earlier),
            [When::Done, When::Next, When::Later, When::Later],
            "a done action stays done whenever it is looked at"
        );
    }
}
