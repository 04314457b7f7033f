//! Helpers for the money tests: statements from the simulator, recon items, policies.

use super::TestApp;
use chrono::NaiveDate;
use repayd::domain::statement::statement_csv;
use sqlx::Row;
use std::path::PathBuf;
use std::sync::Arc;

impl TestApp {
    /// The simulator's statement of `date` for `channel`, written as a CSV file.
    pub async fn statement_file(&self, channel: &str, date: NaiveDate) -> PathBuf {
        use repayd::domain::channel::Channel;
        let lines = self.sim(channel).statement(date).await.expect("statement");
        let path = self.dir.path().join(format!("{channel}-{date}.csv"));
        std::fs::write(&path, statement_csv(&lines)).expect("write statement");
        path
    }

    /// (order_no, outcome, auto_fix, case_status) of a channel-day's recon items.
    pub async fn recon_items(
        &self,
        channel: &str,
        date: &str,
    ) -> Vec<(String, String, Option<String>, Option<String>)> {
        sqlx::query(
            "SELECT order_no, outcome, auto_fix, case_status FROM recon_items \
             WHERE channel = $1 AND recon_date = $2 ORDER BY order_no",
        )
        .bind(channel)
        .bind(date)
        .fetch_all(&self.engine.db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get("order_no"),
                r.get("outcome"),
                r.get("auto_fix"),
                r.get("case_status"),
            )
        })
        .collect()
    }

    /// Rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar_i64(&format!("SELECT COUNT(*) FROM {table}"))
            .await
    }

    /// Debit-positive balance of an account (exact code), in minor units.
    pub async fn balance_minor(&self, account: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COALESCE(SUM(debit - credit), 0) AS BIGINT) FROM journal_lines WHERE account = $1",
        )
        .bind(account)
        .fetch_one(&self.engine.db.pool)
        .await
        .unwrap()
    }

    /// Add (or replace) a policy.
    pub fn add_policy(&mut self, toml: &str) {
        let p = repayd::domain::policy::parse_policy(toml, "test policy").expect("policy");
        Arc::make_mut(&mut self.engine.policies).insert(p);
    }

    /// The id of a loan's n-th attempt (0-based, by id).
    pub async fn attempt_id(&self, loan: &str, n: usize) -> i64 {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM attempts WHERE loan_id = $1 ORDER BY id")
                .bind(loan)
                .fetch_all(&self.engine.db.pool)
                .await
                .unwrap();
        ids[n]
    }
}
