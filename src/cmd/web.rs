//! `repayd token …` and `repayd attempts watch`.

use super::Ctx;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use repayd::ops::{self, action};
use repayd::web::api::attempts::AttemptEvent;
use repayd::web::auth::{self, Role};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token; it is printed once and stored hashed.
    Create {
        /// admin, collections or viewer
        #[arg(long)]
        role: String,
        /// Shown in the audit log as the actor.
        #[arg(long)]
        name: String,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke the active token(s) with this name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Args)]
pub struct WatchArgs {
    /// The daemon's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API token (viewer or above).
    #[arg(long, env = "REPAYD_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long)]
    pub channel: Option<String>,
    /// early, due, overdue, payday, manual
    #[arg(long)]
    pub kind: Option<String>,
    /// submitted, succeeded, failed, unknown
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub loan: Option<String>,
}

pub async fn token(cmd: &TokenCmd, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let db = repayd::store::Db::open(&ctx.settings.database_url).await?;
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        TokenCmd::Create { role, name } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let name = name.trim();
            if name.is_empty() {
                bail!("--name must not be empty");
            }
            let mut tx = db.begin().await?;
            let (id, token) = repayd::web::api::admin::create_named(&mut tx, name, role, now)
                .await
                .map_err(|e| anyhow::anyhow!(e.body.message))?;
            let cli = repayd::domain::actor::Actor::cli();
            let detail = serde_json::json!({ "token_id": id, "name": name, "role": role.as_str() });
            ops::audit(
                &mut tx,
                &cli,
                action::CREATE_TOKEN,
                None,
                None,
                &detail,
                now,
            )
            .await?;
            tx.commit().await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "name": name, "role": role.as_str(), "token": token })
                );
            } else {
                eprintln!("token `{name}` ({role}) created; it is shown once:");
                println!("{token}");
            }
        }
        TokenCmd::List => {
            let mut conn = db.pool.acquire().await?;
            let rows: Vec<(i64, String, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id",
            )
            .fetch_all(&mut *conn)
            .await?;
            let when = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default()
            };
            println!(
                "{:>4}  {:<24} {:<12} {:<17} revoked",
                "id", "name", "role", "created"
            );
            for (id, name, role, created, revoked) in rows {
                let r = revoked.map(when).unwrap_or_else(|| "-".into());
                println!("{id:>4}  {name:<24} {role:<12} {:<17} {r}", when(created));
            }
        }
        TokenCmd::Revoke { name } => {
            let mut conn = db.pool.acquire().await?;
            let n = auth::revoke_token(&mut conn, name, now).await?;
            if n == 0 {
                eprintln!("no active token named `{name}`");
                return Ok(ExitCode::FAILURE);
            }
            println!("revoked {n} token(s) named `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follow the daemon's attempt feed and print one row per attempt change, reconnecting
/// (with `Last-Event-ID`) when the connection drops.
pub async fn watch(args: &WatchArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut url = reqwest::Url::parse(&args.url)
        .with_context(|| format!("--url `{}` is not a URL", args.url))?
        .join("/api/v1/attempts/stream")?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("channel", &args.channel),
            ("kind", &args.kind),
            ("status", &args.status),
            ("loan_id", &args.loan),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let mut last_id: Option<String> = None;
    println!(
        "{:<20} {:<14} {:>3} {:<8} {:<20} {:<8} {:>2} {:>12} {:<10} {:<22} order",
        "at (UTC)", "loan", "seq", "channel", "account", "kind", "st", "amount", "status", "code"
    );
    loop {
        match follow(&client, &url, &args.token, &mut last_id).await {
            Ok(()) => eprintln!("feed closed; reconnecting"),
            Err(Fatal(e)) => bail!(e),
            Err(Retry(e)) => eprintln!("feed: {e}; reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

enum FollowError {
    Fatal(String),
    Retry(String),
}
use FollowError::{Fatal, Retry};

async fn follow(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
    last_id: &mut Option<String>,
) -> Result<(), FollowError> {
    let mut req = client
        .get(url.clone())
        .bearer_auth(token)
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.as_str());
    }
    let mut resp = req.send().await.map_err(|e| Retry(e.to_string()))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = resp.text().await.unwrap_or_default();
        return Err(Fatal(format!("{status}: {body}")));
    }
    if !status.is_success() {
        return Err(Retry(format!("HTTP {status}")));
    }
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Retry(e.to_string()))? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            handle_block(&block, last_id);
        }
    }
    Ok(())
}

/// One SSE event block: remember its id; print `attempt` events as a table row.
fn handle_block(block: &str, last_id: &mut Option<String>) {
    let (mut event, mut data, mut id) = ("message", String::new(), None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = if v.trim() == "attempt" {
                "attempt"
            } else {
                "other"
            };
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_string());
        }
    }
    if let Some(id) = id {
        *last_id = Some(id);
    }
    if event != "attempt" {
        return;
    }
    match serde_json::from_str::<AttemptEvent>(&data) {
        Ok(a) => {
            println!("{}", row(&a));
            let _ = std::io::stdout().flush();
        }
        Err(e) => eprintln!("unreadable event ({e}): {data}"),
    }
}

fn row(a: &AttemptEvent) -> String {
    format!(
        "{:<20} {:<14} {:>3} {:<8} {:<20} {:<8} {:>2} {:>12} {:<10} {:<22} {}",
        a.at.format("%Y-%m-%d %H:%M:%S"),
        a.loan_id,
        a.seq,
        a.channel,
        a.account,
        a.kind,
        a.ladder_step,
        a.amount,
        a.status,
        a.code.as_deref().unwrap_or("-"),
        a.order_no
    )
}
