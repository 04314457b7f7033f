//! Multi-row statements with `$N` placeholders that work on SQLite and PostgreSQL alike.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

/// One bound value. Kept to the types both backends decode through `sqlx::Any`.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Text(String),
    OptInt(Option<i64>),
    OptText(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::Int(v as i64)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::OptInt(v)
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::OptText(v)
    }
}

/// Bind one value to a query.
pub fn bind_val<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    v: Val,
) -> Query<'q, Any, AnyArguments<'q>> {
    match v {
        Val::Int(i) => q.bind(i),
        Val::Text(s) => q.bind(s),
        Val::OptInt(i) => q.bind(i),
        Val::OptText(s) => q.bind(s),
    }
}

/// Rows of values for a multi-row statement, executed in chunks that stay under both
/// backends' bind-parameter limits.
pub struct Rows {
    width: usize,
    vals: Vec<Val>,
}

/// Stay well below SQLite's 32,766 and PostgreSQL's 65,535 bind parameters.
const MAX_PARAMS: usize = 30_000;

impl Rows {
    pub fn new(width: usize) -> Self {
        Rows {
            width,
            vals: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Val>) {
        assert_eq!(row.len(), self.width, "row width");
        self.vals.extend(row);
    }

    pub fn len(&self) -> usize {
        self.vals.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    /// Insert the rows: `before SELECT … FROM (the rows) WHERE true after` (the `WHERE`
    /// lets SQLite parse an `ON CONFLICT` in `after`). Returns rows affected.
    pub async fn insert(
        self,
        conn: &mut AnyConnection,
        before: &str,
        after: &str,
    ) -> Result<u64, sqlx::Error> {
        let sqlite = is_sqlite(conn);
        if !json_rows_on(sqlite) {
            return self.insert_values(conn, before, after).await;
        }
        let table = self.json_table(sqlite);
        let sql = format!("{before} SELECT * FROM ({table}) AS v WHERE true {after}");
        self.run_json(conn, &sql).await
    }

    /// Run `before VALUES (...),(...) after` per chunk, every value its own bind parameter:
    /// the plain multi-row insert (the bench's ceiling). Returns rows affected.
    pub async fn insert_values(
        self,
        conn: &mut AnyConnection,
        before: &str,
        after: &str,
    ) -> Result<u64, sqlx::Error> {
        self.run(conn, |values| format!("{before} VALUES {values} {after}"))
            .await
    }

    /// Run `WITH v(cols) AS (the rows) <statement>`; the statement refers to `v`.
    pub async fn with_values(
        self,
        conn: &mut AnyConnection,
        cols: &str,
        statement: &str,
    ) -> Result<u64, sqlx::Error> {
        if !json_rows_on(is_sqlite(conn)) {
            return self
                .run(conn, |values| {
                    format!("WITH v({cols}) AS (VALUES {values}) {statement}")
                })
                .await;
        }
        let table = self.json_table(is_sqlite(conn));
        let sql = format!("WITH v({cols}) AS ({table}) {statement}");
        self.run_json(conn, &sql).await
    }

    /// Like [`Rows::with_values`] for a statement with `RETURNING`: the returned rows.
    pub async fn with_values_returning(
        self,
        conn: &mut AnyConnection,
        cols: &str,
        statement: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let sqlite = is_sqlite(conn);
        if !json_rows_on(sqlite) {
            return self.values_returning(conn, cols, statement).await;
        }
        let table = self.json_table(sqlite);
        let sql = format!("WITH v({cols}) AS ({table}) {statement}");
        let mut out = Vec::new();
        for chunk in self.json_chunks() {
            out.extend(sqlx::query(&sql).bind(chunk).fetch_all(&mut *conn).await?);
        }
        Ok(out)
    }

    async fn values_returning(
        self,
        conn: &mut AnyConnection,
        cols: &str,
        statement: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let mut out = Vec::new();
        for (values, vals) in self.value_chunks(is_sqlite(conn)) {
            let sql = format!("WITH v({cols}) AS (VALUES {values}) {statement}");
            out.extend(bound(&sql, vals).fetch_all(&mut *conn).await?);
        }
        Ok(out)
    }

    /// The rows in chunks under the bind-parameter limits: each chunk's `(…),(…)`
    /// placeholders and its values.
    fn value_chunks(self, sqlite: bool) -> Vec<(String, Vec<Val>)> {
        let per_chunk = (MAX_PARAMS / self.width).max(1) * self.width;
        let width = self.width;
        let mut vals = self.vals;
        let mut out = Vec::new();
        while !vals.is_empty() {
            let rest = vals.split_off(per_chunk.min(vals.len()));
            out.push((placeholders(sqlite, vals.len() / width, width), vals));
            vals = rest;
        }
        out
    }

    /// The rows as a table read from one JSON parameter (an array of rows, each an array):
    /// one bind for the whole batch, and a statement text that stays the same from batch to
    /// batch, so both backends keep it prepared. Column types come from the first row.
    fn json_table(&self, sqlite: bool) -> String {
        let first = &self.vals[..self.width.min(self.vals.len())];
        let cols: Vec<String> = first
            .iter()
            .enumerate()
            .map(|(i, v)| match (sqlite, v) {
                (true, _) => format!("json_extract(value, '$[{i}]') AS c{i}"),
                (false, Val::Int(_) | Val::OptInt(_)) => format!("(e->>{i})::bigint AS c{i}"),
                (false, _) => format!("(e->>{i}) AS c{i}"),
            })
            .collect();
        if sqlite {
            format!("SELECT {} FROM json_each(?)", cols.join(", "))
        } else {
            format!(
                "SELECT {} FROM json_array_elements($1::json) AS e",
                cols.join(", ")
            )
        }
    }

    /// The rows as JSON text, in chunks of at most `JSON_ROWS` rows.
    fn json_chunks(&self) -> Vec<String> {
        let rows: Vec<&[Val]> = self.vals.chunks(self.width).collect();
        rows.chunks(JSON_ROWS).map(|c| json_rows(c)).collect()
    }

    async fn run_json(self, conn: &mut AnyConnection, sql: &str) -> Result<u64, sqlx::Error> {
        let mut affected = 0;
        for chunk in self.json_chunks() {
            affected += sqlx::query(sql)
                .bind(chunk)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        Ok(affected)
    }

    async fn run(
        self,
        conn: &mut AnyConnection,
        sql_for: impl Fn(&str) -> String,
    ) -> Result<u64, sqlx::Error> {
        let mut affected = 0;
        for (values, vals) in self.value_chunks(is_sqlite(conn)) {
            let sql = sql_for(&values);
            affected += bound(&sql, vals).execute(&mut *conn).await?.rows_affected();
        }
        Ok(affected)
    }
}

/// `sql` with `vals` bound in order. Not kept prepared: on SQLite each of these holds a
/// compiled program with thousands of parameters in client memory (megabytes each, per
/// connection and per statement text), while preparing it again costs little next to
/// running it.
fn bound(sql: &str, vals: Vec<Val>) -> Query<'_, Any, AnyArguments<'_>> {
    let mut q = sqlx::query(sql).persistent(false);
    for v in vals {
        q = bind_val(q, v);
    }
    q
}

/// Whether rows travel as one JSON parameter on this backend. On PostgreSQL a statement with
/// thousands of parameters is parsed and planned again for every batch; one JSON parameter
/// keeps the statement text fixed and prepared. On SQLite binding is cheap (in-process,
/// anonymous `?`) and reading a column out of JSON per row costs more than it saves.
fn json_rows_on(sqlite: bool) -> bool {
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| match std::env::var("REPAYD_JSON_ROWS").ok().as_deref() {
        Some("0") => Some(false),
        Some("1") => Some(true),
        _ => None,
    });
    forced.unwrap_or(!sqlite)
}

/// Rows per JSON parameter: bounds one statement's text (a few MB at most).
const JSON_ROWS: usize = 10_000;

/// `[[1,"a",null],[2,"b",3]]`.
fn json_rows(rows: &[&[Val]]) -> String {
    let mut s = String::with_capacity(rows.len() * rows.first().map_or(0, |r| r.len()) * 12);
    s.push('[');
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            s.push(',');
        }
        s.push('[');
        for (c, v) in row.iter().enumerate() {
            if c > 0 {
                s.push(',');
            }
            match v {
                Val::Int(i) | Val::OptInt(Some(i)) => s.push_str(&i.to_string()),
                Val::Text(t) | Val::OptText(Some(t)) => {
                    s.push_str(&serde_json::Value::from(t.as_str()).to_string())
                }
                Val::OptInt(None) | Val::OptText(None) => s.push_str("null"),
            }
        }
        s.push(']');
    }
    s.push(']');
    s
}

/// Whether the connection is SQLite, whose placeholders we write as `?`.
///
/// SQLite keeps named and numbered parameters (`$N`, `?N`) in a list that
/// `sqlite3_bind_parameter_name` scans linearly, so binding thousands of them is quadratic.
pub fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name() == "SQLite"
}

/// SQLite gets anonymous `?`, bound to the arguments in order; numbered forms make SQLite's
/// parameter lookups quadratic.
fn param(sqlite: bool, n: usize, out: &mut String) {
    if sqlite {
        out.push('?');
    } else {
        out.push('$');
        out.push_str(&n.to_string());
    }
}

/// `($1,$2),($3,$4)` (PostgreSQL) or `(?,?),(?,?)` (SQLite) for `rows` rows of `width`.
pub fn placeholders(sqlite: bool, rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 7);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push(',');
            }
            param(sqlite, n, &mut s);
            n += 1;
        }
        s.push(')');
    }
    s
}

/// `$start,$start+1,…` for an `IN (…)` list of `n` values.
///
/// On SQLite a list starting at 1 is written as anonymous `?`: sqlx binds anonymous
/// parameters to the arguments in order from the first, so the list's values must be bound
/// first and other parameters numbered after them (`$n+1`…); their place in the text does not
/// matter. A list starting later is written `?NNN` (correct, but binding it is quadratic).
pub fn in_list(conn: &AnyConnection, start: usize, n: usize) -> String {
    let anonymous = is_sqlite(conn) && start == 1;
    let mut s = String::with_capacity(n * 7);
    for i in start..start + n {
        if i > start {
            s.push(',');
        }
        if anonymous {
            s.push('?');
        } else {
            s.push(if is_sqlite(conn) { '?' } else { '$' });
            s.push_str(&i.to_string());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_one_json_array_of_arrays() {
        let a = [Val::Int(1), Val::Text("a\"b".into()), Val::OptInt(None)];
        let b = [Val::Int(-2), Val::OptText(None), Val::OptInt(Some(3))];
        assert_eq!(json_rows(&[&a, &b]), r#"[[1,"a\"b",null],[-2,null,3]]"#);
    }

    #[test]
    fn placeholders_number_across_rows() {
        assert_eq!(placeholders(false, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(placeholders(true, 1, 2), "(?,?)");
    }
}
