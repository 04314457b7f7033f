//! `repayd notices list`: the outbox, newest first, with masked recipients.

use super::Ctx;
use repayd::domain::notice::NoticeKind;
use repayd::domain::status::NoticeStatus;
use repayd::store::reports::{self, NoticeFilter, NoticeView};

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    loan: Option<String>,
    /// pending, claimed, sending, sent or failed.
    #[arg(long)]
    status: Option<String>,
    /// pre_due, overdue, paid, partial, failed or rebind.
    #[arg(long)]
    kind: Option<String>,
    /// Only notices older than this id (the `next:` line of the previous page).
    #[arg(long)]
    before: Option<i64>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    limit: u16,
}

/// `v` when it is one of `known`, else an error naming the flag and what it takes.
fn one_of(flag: &str, v: &Option<String>, known: &[&str]) -> anyhow::Result<Option<String>> {
    match v.as_deref() {
        Some(s) if !known.contains(&s) => {
            anyhow::bail!("--{flag} `{s}` is not one of {}", known.join(", "))
        }
        _ => Ok(v.clone()),
    }
}

pub async fn list(a: &ListArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let statuses: Vec<&str> = NoticeStatus::ALL.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
    let filter = NoticeFilter {
        loan_id: a.loan.clone(),
        status: one_of("status", &a.status, &statuses)?,
        kind: one_of("kind", &a.kind, &kinds)?,
    };
    let db = repayd::store::Db::open(&ctx.settings.database_url).await?;
    let mut conn = db.pool.acquire().await?;
    let limit = i64::from(a.limit);
    let mut items = reports::notices_page(&mut conn, &filter, a.before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = more.then(|| items.last().map(|n| n.id)).flatten();
    if ctx.json {
        let page = serde_json::json!({ "items": items, "next_before": next });
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_table(&items);
    if let Some(id) = next {
        println!("next: --before {id}");
    }
    Ok(())
}

fn print_table(items: &[NoticeView]) {
    if items.is_empty() {
        println!("no notices match");
        return;
    }
    println!(
        "{:>7} {:<12} {:>3} {:<8} {:<6} {:<20} {:<8} {:<20} {:<20}",
        "id", "loan", "seq", "kind", "via", "to", "status", "send after (UTC)", "sent (UTC)"
    );
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    for n in items {
        println!(
            "{:>7} {:<12} {:>3} {:<8} {:<6} {:<20} {:<8} {:<20} {:<20}",
            n.id,
            n.loan_id,
            n.seq.map_or("-".into(), |s| s.to_string()),
            n.kind,
            n.channel,
            n.recipient,
            n.status,
            at(n.send_after),
            n.sent_at.map_or("-".into(), at),
        );
    }
}
