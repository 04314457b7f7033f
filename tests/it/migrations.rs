//! The two migration trees build the same schema, and the CHECK constraints on status and
//! kind columns hold exactly the values of their enums in `domain::status`.

use crate::common;

use common::{spawn_app, Backend};
use repayd::domain::status::*;
use std::collections::{BTreeMap, BTreeSet};

/// Tables and their columns, as the database itself describes them.
async fn schema(app: &common::TestApp, backend: Backend) -> BTreeMap<String, BTreeSet<String>> {
    let pool = &app.engine.db.pool;
    let rows: Vec<(String, String)> = match backend {
        Backend::Sqlite => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let mut out = Vec::new();
            for t in tables {
                let cols: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                out.extend(cols.into_iter().map(|c| (t.clone(), c)));
            }
            out
        }
        Backend::Postgres => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (t, c) in rows {
        out.entry(t).or_default().insert(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_trees_define_the_same_tables_and_columns() {
    let sqlite = spawn_app(Backend::Sqlite, "").await;
    let pg = spawn_app(Backend::Postgres, "").await;
    let a = schema(&sqlite, Backend::Sqlite).await;
    let b = schema(&pg, Backend::Postgres).await;
    assert!(a.len() > 20, "{a:?}");
    for t in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        assert_eq!(
            a.get(t),
            b.get(t),
            "table `{t}` differs between SQLite and PostgreSQL"
        );
    }
    sqlite.cleanup().await;
    pg.cleanup().await;
}

/// (table, column, the enum's values) for every constrained column.
fn constrained() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    fn all<T: Copy>(v: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
        v.iter().map(|x| f(*x)).collect()
    }
    vec![
        ("loans", "status", all(LoanStatus::ALL, LoanStatus::as_str)),
        (
            "installments",
            "status",
            all(InstallmentStatus::ALL, InstallmentStatus::as_str),
        ),
        ("actions", "kind", all(ActionKind::ALL, ActionKind::as_str)),
        (
            "actions",
            "status",
            all(ActionStatus::ALL, ActionStatus::as_str),
        ),
        (
            "attempts",
            "kind",
            all(AttemptKind::ALL, AttemptKind::as_str),
        ),
        (
            "attempts",
            "status",
            all(AttemptStatus::ALL, AttemptStatus::as_str),
        ),
        (
            "mandates",
            "status",
            all(MandateStatus::ALL, MandateStatus::as_str),
        ),
        (
            "notices",
            "status",
            all(NoticeStatus::ALL, NoticeStatus::as_str),
        ),
        (
            "recon_items",
            "case_status",
            all(CaseStatus::ALL, CaseStatus::as_str),
        ),
    ]
}

/// The values a migration file's CHECK allows for `table.column`.
fn checked_values(sql: &str, table: &str, column: &str) -> Vec<String> {
    let needle = format!("CHECK ({column} ");
    let table_at = |i: usize| -> bool {
        // The constraint belongs to the last table named before it.
        let before = &sql[..i];
        let last = ["CREATE TABLE ", "ALTER TABLE "]
            .iter()
            .filter_map(|k| before.rfind(k).map(|j| (j, k.len())))
            .max()
            .unwrap();
        let name: String = before[last.0 + last.1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        name == table
    };
    let i = sql
        .match_indices(&needle)
        .map(|(i, _)| i)
        .find(|i| table_at(*i))
        .unwrap_or_else(|| panic!("no CHECK on {table}.{column}"));
    let rest = &sql[i..];
    let list = &rest[rest.find("IN (").unwrap() + 4..];
    list[..list.find(')').unwrap()]
        .split(',')
        .map(|v| v.trim().trim_matches('\'').to_string())
        .collect()
}

#[test]
fn checks_hold_exactly_the_enums_values() {
    for tree in ["sqlite", "postgres"] {
        let sql = std::fs::read_to_string(format!("migrations/{tree}/0008_checks.sql")).unwrap();
        for (table, column, values) in constrained() {
            assert_eq!(
                checked_values(&sql, table, column),
                values,
                "{tree}: {table}.{column}"
            );
        }
    }
}

/// The database itself refuses a status no enum names.
async fn the_database_refuses_unknown_statuses(backend: Backend) {
    let app = spawn_app(backend, "").await;
    let loan = common::loan_json(
        "K1",
        "Asia/Shanghai",
        "test",
        None,
        false,
        &[("bank", "A")],
        &[("2027-01-15", "1.00")],
    );
    app.import_json(&serde_json::json!([loan]).to_string())
        .await;
    for sql in [
        "UPDATE loans SET status = 'bogus'",
        "UPDATE installments SET status = 'bogus'",
        "UPDATE actions SET status = 'bogus'",
        "UPDATE actions SET kind = 'bogus'",
        "UPDATE mandates SET status = 'bogus'",
    ] {
        let r = sqlx::query(sql).execute(&app.engine.db.pool).await;
        assert!(r.is_err(), "{sql} was accepted on {backend:?}");
    }
    app.cleanup().await;
}
both_backends!(the_database_refuses_unknown_statuses);

/// A SQLite database opened while another connection holds the write lock (a daemon's batch
/// committing) waits for it, and every pooled connection is open before work starts: none
/// is set up later under load, where a failed setup used to be retried until the pool's
/// acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_pool_opens_every_connection_at_start_even_while_another_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("repayd.db").display());
    let first = repayd::store::Db::open(&url).await.unwrap();
    let mut writing = first.begin().await.unwrap();
    sqlx::query("UPDATE counters SET next_val = next_val WHERE name = 'none'")
        .execute(&mut *writing)
        .await
        .unwrap();
    let commit = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        writing.commit().await.unwrap();
    });
    let second = repayd::store::Db::open(&url).await.unwrap();
    commit.await.unwrap();
    assert_eq!(second.pool.size(), 4, "every connection is open");
    assert_eq!(second.pool.num_idle(), 4, "and back in the pool");
    let mut tx = second.begin().await.unwrap();
    sqlx::query("UPDATE counters SET next_val = next_val WHERE name = 'none'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
