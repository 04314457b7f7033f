//! `repayd loans list`: the loan list with the worklist's filters, one page at a time.

use super::Ctx;
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use repayd::domain::status::LoanStatus;
use repayd::store::reports::{self, LoanFilter, LoanSummary};

#[derive(clap::Args)]
pub struct ListArgs {
    /// active, collections, paid or written_off (`overdue` loans are active ones past due).
    #[arg(long)]
    status: Option<String>,
    /// A delinquency bucket of the loan's policy, e.g. M1.
    #[arg(long)]
    bucket: Option<String>,
    #[arg(long)]
    policy: Option<String>,
    /// Loans with a mandate on this channel.
    #[arg(long)]
    channel: Option<String>,
    #[arg(long)]
    dpd_min: Option<u32>,
    #[arg(long)]
    dpd_max: Option<u32>,
    /// Text in the loan id or borrower id.
    #[arg(long)]
    q: Option<String>,
    /// Only parked loans (`--parked`), or only the others (`--parked=false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    parked: Option<bool>,
    /// Only loans with a mandate to re-bind (`--needs-rebinding`), or only the others (`=false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    needs_rebinding: Option<bool>,
    /// Start after this loan id (the `next:` line of the previous page).
    #[arg(long)]
    after: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    limit: u16,
    /// Days past due and buckets as of this date (YYYY-MM-DD, each loan's local date) or
    /// instant (RFC 3339); default now.
    #[arg(long)]
    as_of: Option<String>,
}

/// `--as-of`: an RFC 3339 instant, or a date taken at noon UTC, which is that same date in
/// every zone from UTC−11 to UTC+11.
pub fn as_of(v: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    let Some(v) = v else {
        return Ok(Utc::now());
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").with_context(|| {
        format!("--as-of `{v}` is neither a date (2027-01-15) nor an RFC 3339 instant")
    })?;
    Ok(d.and_hms_opt(12, 0, 0).expect("noon").and_utc())
}

pub async fn list(a: &ListArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let now = as_of(a.as_of.as_deref())?;
    if let Some(s) = a.status.as_deref() {
        let known: Vec<&str> = LoanStatus::ALL.iter().map(|s| s.as_str()).collect();
        if !known.contains(&s) {
            anyhow::bail!("--status `{s}` is not one of {}", known.join(", "));
        }
    }
    let db = repayd::store::Db::open(&ctx.settings.database_url).await?;
    let policies = repayd::app::load_policies(&ctx.settings.policies_dir)?;
    let filter = LoanFilter {
        status: a.status.clone(),
        bucket: a.bucket.clone(),
        policy: a.policy.clone(),
        channel: a.channel.clone(),
        dpd_min: a.dpd_min,
        dpd_max: a.dpd_max,
        q: a.q.clone(),
        parked: a.parked,
        needs_rebinding: a.needs_rebinding,
    };
    let mut conn = db.pool.acquire().await?;
    let limit = usize::from(a.limit);
    let (items, more) = reports::loans_page(
        &mut conn,
        &policies,
        &filter,
        a.after.as_deref(),
        limit,
        now,
    )
    .await?;
    let next = more.then(|| items.last().map(|l| l.id.clone())).flatten();
    if ctx.json {
        let page = serde_json::json!({ "as_of": now, "items": items, "next_after": next });
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_table(&items, now);
    if let Some(id) = next {
        println!("next: --after {id}");
    }
    Ok(())
}

fn print_table(items: &[LoanSummary], now: DateTime<Utc>) {
    if items.is_empty() {
        println!(
            "no loans match (as of {} UTC)",
            now.format("%Y-%m-%d %H:%M")
        );
        return;
    }
    println!(
        "{:<12} {:<10} {:<10} {:<11} {:>4} {:<7} {:<10} {:>14} {:>14}",
        "loan",
        "borrower",
        "policy",
        "standing",
        "dpd",
        "bucket",
        "next due",
        "overdue",
        "outstanding"
    );
    for l in items {
        let flag = match (l.parked, l.paused_until.is_some()) {
            (true, _) => " (parked)",
            (false, true) => " (paused)",
            _ => "",
        };
        println!(
            "{:<12} {:<10} {:<10} {:<11} {:>4} {:<7} {:<10} {:>14} {:>14}{flag}",
            l.id,
            l.borrower_id,
            l.policy,
            l.standing,
            l.days_past_due,
            l.bucket.as_deref().unwrap_or("-"),
            l.next_due.map_or("-".to_string(), |d| d.to_string()),
            format!("{} {:.2}", l.currency, l.overdue),
            format!("{} {:.2}", l.currency, l.outstanding),
        );
    }
    println!(
        "days past due as of {} UTC, in each loan's zone",
        now.format("%Y-%m-%d %H:%M")
    );
}
