//! `repayd verify`: streams the database and checks every ledger and loan invariant.
//!
//! Every check is one SQL statement whose aggregation runs in the database; the rows stream
//! back through `fetch()` and are checked one at a time, so memory stays bounded however big
//! the database is. Comparisons between two sides (installments against the journal, refunds
//! against attempts, write-offs against installments) are one `UNION ALL` of both sides'
//! `GROUP BY`s ordered by key: the database does the sort, and a streaming merge compares the
//! adjacent rows of each key. All statements run in one read transaction (REPEATABLE READ on
//! PostgreSQL, a WAL snapshot on SQLite), so a daemon writing meanwhile cannot cause drift
//! that is not there.

use crate::domain::ledger::{self};
use crate::domain::status::AttemptStatus;
use crate::domain::{from_minor, to_minor};
use crate::store::ledger::trial_balance;
use crate::store::Db;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::fmt;
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("verify: {0}")]
    Sql(#[from] sqlx::Error),
}

/// One drift: the check that found it, the table and the row's key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub table: &'static str,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} {}: {}",
            self.check, self.table, self.key, self.message
        )
    }
}

/// Rows a check looked at and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckCount {
    pub check: &'static str,
    pub rows: u64,
    pub findings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub checks: Vec<CheckCount>,
    /// The first `limit` findings; `total_findings` counts all of them.
    pub findings: Vec<Finding>,
    pub total_findings: u64,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.total_findings == 0
    }

    pub fn rows_of(&self, check: &str) -> u64 {
        self.checks
            .iter()
            .filter(|c| c.check == check)
            .map(|c| c.rows)
            .sum()
    }

    /// Whether some finding names `table` and contains `needle` in its key.
    pub fn names(&self, table: &str, needle: &str) -> bool {
        self.findings
            .iter()
            .any(|f| f.table == table && f.key.contains(needle))
    }

    /// One line: clean with counts, or the number of findings.
    pub fn summary(&self) -> String {
        let counts = format!(
            "{} journal entries, {} lines, {} installments, {} repayment postings, {} attempts checked for order numbers, {} refunds, {} write-offs, {} settlements",
            self.rows_of(ENTRIES),
            self.rows_of(LINES),
            self.rows_of(INSTALLMENTS),
            self.rows_of(POSTINGS),
            self.rows_of(ORDER_NOS),
            self.rows_of(REFUND_ROWS),
            self.rows_of(WRITE_OFF_ROWS),
            self.rows_of(SETTLEMENTS),
        );
        if self.is_clean() {
            format!("verify: clean ({counts}) in {:.1}s", self.seconds)
        } else {
            format!(
                "verify: {} finding(s){} ({counts}) in {:.1}s",
                self.total_findings,
                if (self.findings.len() as u64) < self.total_findings {
                    format!(", first {} shown", self.findings.len())
                } else {
                    String::new()
                },
                self.seconds
            )
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Findings kept for the report (all are counted).
    pub limit: usize,
    /// Show a progress spinner on stderr (only drawn on a terminal).
    pub progress: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            limit: 100,
            progress: false,
        }
    }
}

const ENTRIES: &str = "ledger.entries";
const LINES: &str = "ledger.lines";
const TRIAL_BALANCE: &str = "ledger.trial_balance";
const COMPONENT_ACCOUNTS: &str = "ledger.component_accounts";
const INSTALLMENTS: &str = "installments.components";
const WRITE_OFFS: &str = "write_offs.per_loan";
const WRITE_OFF_ROWS: &str = "write_offs.entries";
const POSTINGS: &str = "attempts.postings";
const ORDER_NOS: &str = "attempts.order_numbers";
const REFUNDS: &str = "refunds.per_attempt";
const REFUND_ROWS: &str = "refunds.entries";
const SETTLEMENTS: &str = "settlements.entries";

/// Findings collected so far, the rows each check looked at, and the progress display.
struct Findings {
    limit: usize,
    shown: Vec<Finding>,
    total: u64,
    checks: Vec<CheckCount>,
    bar: ProgressBar,
}

impl Findings {
    fn new(opts: &VerifyOptions) -> Self {
        let bar = if opts.progress {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}: {human_pos} rows [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Findings {
            limit: opts.limit,
            shown: Vec::new(),
            total: 0,
            checks: Vec::new(),
            bar,
        }
    }

    fn start(&mut self, check: &'static str) {
        self.checks.push(CheckCount {
            check,
            rows: 0,
            findings: 0,
        });
        self.bar.set_message(check);
        self.bar.set_position(0);
    }

    fn current(&mut self) -> &mut CheckCount {
        self.checks.last_mut().expect("a check was started")
    }

    fn row(&mut self) {
        let c = self.current();
        c.rows += 1;
        if c.rows % 4096 == 0 {
            let rows = c.rows;
            self.bar.set_position(rows);
        }
    }

    fn add(&mut self, table: &'static str, key: impl Into<String>, message: impl Into<String>) {
        let c = self.current();
        c.findings += 1;
        let check = c.check;
        self.total += 1;
        if self.shown.len() < self.limit {
            self.shown.push(Finding {
                check,
                table,
                key: key.into(),
                message: message.into(),
            });
        }
    }
}

fn money(minor: i64) -> String {
    from_minor(minor).to_string()
}

fn int(r: &AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(col)?.unwrap_or(0))
}

fn opt_int(r: &AnyRow, col: &str) -> Result<Option<i64>, sqlx::Error> {
    r.try_get::<Option<i64>, _>(col)
}

fn text(r: &AnyRow, col: &str) -> Result<Option<String>, sqlx::Error> {
    r.try_get::<Option<String>, _>(col)
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("NULL")
}

/// Stream `sql`'s rows through `f`, counting them for the current check.
async fn each_row(
    conn: &mut AnyConnection,
    sql: &str,
    out: &mut Findings,
    mut f: impl FnMut(&AnyRow, &mut Findings) -> Result<(), sqlx::Error>,
) -> Result<(), sqlx::Error> {
    let mut rows = sqlx::query(sql).persistent(false).fetch(&mut *conn);
    while let Some(r) = rows.try_next().await? {
        out.row();
        f(&r, out)?;
    }
    Ok(())
}

/// Check every invariant in one read snapshot of `db`.
#[tracing::instrument(skip_all)]
pub async fn verify(db: &Db, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let mut tx = db.pool.begin().await?;
    if db.is_postgres() {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let mut out = Findings::new(opts);
    let conn: &mut AnyConnection = &mut tx;
    entries(conn, &mut out).await?;
    lines(conn, &mut out).await?;
    trial_balance_rollup(conn, &mut out).await?;
    component_accounts(conn, &mut out).await?;
    installments(conn, &mut out).await?;
    write_offs_per_loan(conn, &mut out).await?;
    write_off_entries(conn, &mut out).await?;
    postings(conn, &mut out).await?;
    order_numbers(conn, &mut out).await?;
    refunds_per_attempt(conn, &mut out).await?;
    refund_entries(conn, &mut out).await?;
    settlements(conn, &mut out).await?;
    tx.rollback().await?;
    out.bar.finish_and_clear();
    Ok(VerifyReport {
        checks: out.checks,
        findings: out.shown,
        total_findings: out.total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every entry has lines and balances on its own.
async fn entries(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(ENTRIES);
    let sql = "SELECT e.id, e.kind, e.currency, COUNT(l.entry_id) AS n, \
         CAST(COALESCE(SUM(l.debit),0) AS BIGINT) AS d, CAST(COALESCE(SUM(l.credit),0) AS BIGINT) AS c \
         FROM journal_entries e LEFT JOIN journal_lines l ON l.entry_id = e.id \
         GROUP BY e.id, e.kind, e.currency";
    each_row(conn, sql, out, |r, out| {
        let (id, n, d, c) = (int(r, "id")?, int(r, "n")?, int(r, "d")?, int(r, "c")?);
        let kind = text(r, "kind")?;
        if text(r, "currency")?.is_none_or(|c| c.is_empty()) {
            out.add(
                "journal_entries",
                format!("id={id}"),
                format!(
                    "{} entry has no currency, so no currency's trial balance holds it \
                     (a settlement made before entries had a currency has none when it \
                     summed several)",
                    show(&kind)
                ),
            );
        }
        if n == 0 {
            out.add(
                "journal_entries",
                format!("id={id}"),
                format!("{} entry has no lines", show(&kind)),
            );
        } else if d != c {
            out.add(
                "journal_entries",
                format!("id={id}"),
                format!(
                    "{} entry is unbalanced: debits {} != credits {}",
                    show(&kind),
                    money(d),
                    money(c)
                ),
            );
        }
        Ok(())
    })
    .await
}

/// Every line belongs to an entry, names an existing account and is one-sided and positive.
async fn lines(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(LINES);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal_lines")
        .fetch_one(&mut *conn)
        .await?;
    out.current().rows = n as u64;
    let sql = "SELECT l.entry_id, l.line_no, l.account, l.debit, l.credit, \
         CASE WHEN e.id IS NULL THEN 1 ELSE 0 END AS no_entry, \
         CASE WHEN a.code IS NULL THEN 1 ELSE 0 END AS no_account \
         FROM journal_lines l LEFT JOIN journal_entries e ON e.id = l.entry_id \
         LEFT JOIN accounts a ON a.code = l.account \
         WHERE e.id IS NULL OR a.code IS NULL OR l.debit < 0 OR l.credit < 0 \
         OR (l.debit <> 0 AND l.credit <> 0)";
    let mut shown = 0u64;
    each_row(conn, sql, out, |r, out| {
        shown += 1;
        let key = format!(
            "entry_id={} line_no={}",
            int(r, "entry_id")?,
            int(r, "line_no")?
        );
        let account = text(r, "account")?;
        if int(r, "no_entry")? == 1 {
            out.add("journal_lines", key.clone(), "line of a missing entry");
        }
        if int(r, "no_account")? == 1 {
            out.add(
                "journal_lines",
                key.clone(),
                format!("account {} does not exist", show(&account)),
            );
        }
        let (d, c) = (int(r, "debit")?, int(r, "credit")?);
        if d < 0 || c < 0 || (d != 0 && c != 0) {
            out.add(
                "journal_lines",
                key,
                format!(
                    "debit {} and credit {} on {}: a line is one positive side",
                    money(d),
                    money(c),
                    show(&account)
                ),
            );
        }
        Ok(())
    })
    .await?;
    // each_row counted the offending rows again; keep the count of lines.
    out.current().rows -= shown;
    Ok(())
}

/// The trial balance is zero in every currency, and its rolled-up balances (computed in
/// Rust by `crate::store::ledger::trial_balance`) equal direct sums over each account's
/// subtree in SQL, currency by currency.
async fn trial_balance_rollup(
    conn: &mut AnyConnection,
    out: &mut Findings,
) -> Result<(), sqlx::Error> {
    out.start(TRIAL_BALANCE);
    let tb = trial_balance(conn).await?;
    let sql = "WITH RECURSIVE tree(root, code) AS ( \
           SELECT code, code FROM accounts \
           UNION SELECT t.root, a.code FROM tree t JOIN accounts a ON a.parent = t.code) \
         SELECT s.currency, t.root AS code, CAST(COALESCE(SUM(s.d),0) AS BIGINT) AS d, \
         CAST(COALESCE(SUM(s.c),0) AS BIGINT) AS c \
         FROM tree t JOIN (SELECT COALESCE(e.currency, '') AS currency, l.account, \
           SUM(l.debit) AS d, SUM(l.credit) AS c FROM journal_lines l \
           JOIN journal_entries e ON e.id = l.entry_id GROUP BY COALESCE(e.currency, ''), l.account) s \
         ON s.account = t.code GROUP BY s.currency, t.root";
    // The chart of accounts is small (one clearing account per channel), so held in memory.
    let mut direct: HashMap<(String, String), (i64, i64)> = HashMap::new();
    each_row(conn, sql, out, |r, _| {
        let key = (
            text(r, "currency")?.unwrap_or_default(),
            text(r, "code")?.unwrap_or_default(),
        );
        direct.insert(key, (int(r, "d")?, int(r, "c")?));
        Ok(())
    })
    .await?;
    for book in &tb.currencies {
        balance_of(book, &mut direct, out);
    }
    // Sums of accounts the tree walk in Rust never reached.
    let mut orphans: Vec<_> = direct.into_iter().filter(|(_, v)| *v != (0, 0)).collect();
    orphans.sort();
    for ((currency, code), (d, c)) in orphans {
        out.add(
            "accounts",
            format!("code={code}"),
            format!(
                "not under any root account (its parent is missing or a cycle), so {currency} Dr {} Cr {} are left out of the trial balance",
                money(d),
                money(c)
            ),
        );
    }
    Ok(())
}

/// One currency's trial balance: zero, and each row equal to its subtree's direct sums
/// (which are taken out of `direct`).
fn balance_of(
    book: &crate::store::ledger::CurrencyBalance,
    direct: &mut HashMap<(String, String), (i64, i64)>,
    out: &mut Findings,
) {
    let cur = &book.currency;
    if book.difference() != rust_decimal::Decimal::ZERO {
        out.add(
            "journal_lines",
            format!("currency={cur}"),
            format!(
                "trial balance is off: debits {} != credits {}",
                book.total_debit, book.total_credit
            ),
        );
    }
    for row in &book.rows {
        let (d, c) = direct
            .remove(&(cur.clone(), row.code.clone()))
            .unwrap_or((0, 0));
        if to_minor(row.debit).ok() != Some(d) || to_minor(row.credit).ok() != Some(c) {
            out.add(
                "accounts",
                format!("code={} currency={cur}", row.code),
                format!(
                    "rolled-up balance Dr {} Cr {} but its subtree's lines sum to Dr {} Cr {}",
                    row.debit,
                    row.credit,
                    money(d),
                    money(c)
                ),
            );
        }
    }
}

/// Component lines of repayments and reversals sit on the component's own account.
async fn component_accounts(
    conn: &mut AnyConnection,
    out: &mut Findings,
) -> Result<(), sqlx::Error> {
    out.start(COMPONENT_ACCOUNTS);
    let sql = "SELECT l.entry_id, l.line_no, l.account, l.component, l.loan_id, l.seq \
         FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id \
         WHERE e.kind IN ('repayment','reversal') AND l.component IS NOT NULL AND NOT ( \
           (l.component = 'principal' AND l.account = '1310') OR (l.component = 'interest' AND l.account = '4100') \
           OR (l.component = 'fee' AND l.account = '4200') OR (l.component = 'penalty' AND l.account = '4300'))";
    each_row(conn, sql, out, |r, out| {
        out.add(
            "journal_lines",
            format!(
                "entry_id={} line_no={}",
                int(r, "entry_id")?,
                int(r, "line_no")?
            ),
            format!(
                "{} of loan {} seq {} posted to account {}",
                show(&text(r, "component")?),
                show(&text(r, "loan_id")?),
                int(r, "seq")?,
                show(&text(r, "account")?)
            ),
        );
        Ok(())
    })
    .await
}

const COMPONENTS: [&str; 4] = ["principal", "interest", "fee", "penalty"];

/// One installment and the journal's view of it, merged by (loan, seq).
#[derive(Default)]
struct InstallmentGroup {
    key: Option<(Option<String>, i64)>,
    /// principal, interest, fee, penalty, paid ×4, written off ×4, status.
    stored: Option<([i64; 12], String)>,
    /// Paid per component (repayments − reversals) and principal written off, per the journal.
    journal: Option<[i64; 5]>,
}

fn ledger_paid_sql() -> String {
    let comp = |c: &str, acct: &str, kinds: &str| {
        format!(
            "CAST(SUM(CASE WHEN e.kind IN ({kinds}) AND l.component = '{c}' AND l.account = '{acct}' \
             THEN l.credit - l.debit ELSE 0 END) AS BIGINT)"
        )
    };
    let paid = "'repayment','reversal'";
    format!(
        "SELECT loan_id AS k, seq AS s, 0 AS side, principal AS v1, interest AS v2, fee AS v3, penalty AS v4, \
           paid_principal AS v5, paid_interest AS v6, paid_fee AS v7, paid_penalty AS v8, \
           wo_principal AS v9, wo_interest AS v10, wo_fee AS v11, wo_penalty AS v12, status AS st \
         FROM installments \
         UNION ALL \
         SELECT l.loan_id, l.seq, 1, {}, {}, {}, {}, {}, \
           CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), \
           CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(NULL AS TEXT) \
         FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id \
         WHERE l.seq IS NOT NULL GROUP BY l.loan_id, l.seq \
         ORDER BY 1, 2, 3",
        comp("principal", ledger::PRINCIPAL_RECEIVABLE, paid),
        comp("interest", ledger::INTEREST_INCOME, paid),
        comp("fee", ledger::FEE_INCOME, paid),
        comp("penalty", ledger::PENALTY_INCOME, paid),
        comp("principal", ledger::PRINCIPAL_RECEIVABLE, "'write_off'"),
    )
}

/// Paid and written-off amounts of every installment agree with the journal; nothing is
/// overpaid; the status says paid exactly when nothing is outstanding.
async fn installments(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(INSTALLMENTS);
    let mut g = InstallmentGroup::default();
    each_row(conn, &ledger_paid_sql(), out, |r, out| {
        let key = (text(r, "k")?, int(r, "s")?);
        if g.key.as_ref() != Some(&key) {
            check_installment(&std::mem::take(&mut g), out);
            g.key = Some(key);
        }
        let mut v = [0i64; 12];
        for (i, x) in v.iter_mut().enumerate() {
            *x = int(r, &format!("v{}", i + 1))?;
        }
        if int(r, "side")? == 0 {
            g.stored = Some((v, text(r, "st")?.unwrap_or_default()));
        } else {
            g.journal = Some([v[0], v[1], v[2], v[3], v[4]]);
        }
        Ok(())
    })
    .await?;
    check_installment(&g, out);
    // Rows counted include the journal's side; count installments only.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM installments")
        .fetch_one(&mut *conn)
        .await?;
    out.current().rows = n as u64;
    Ok(())
}

fn check_installment(g: &InstallmentGroup, out: &mut Findings) {
    let Some((loan, seq)) = &g.key else { return };
    let loan = show(loan);
    let journal = g.journal.unwrap_or_default();
    let Some((v, status)) = &g.stored else {
        out.add(
            "journal_lines",
            format!("loan_id={loan} seq={seq}"),
            format!(
                "journal pays principal {} interest {} fee {} penalty {} of an installment that does not exist",
                money(journal[0]), money(journal[1]), money(journal[2]), money(journal[3])
            ),
        );
        return;
    };
    let key = |c: &str| format!("loan_id={loan} seq={seq} component={c}");
    let mut outstanding = 0;
    for (i, c) in COMPONENTS.iter().enumerate() {
        let (due, paid, wo) = (v[i], v[4 + i], v[8 + i]);
        if paid != journal[i] {
            out.add(
                "installments",
                key(c),
                format!(
                    "paid_{c} is {} but the journal's repayments and reversals credit {}",
                    money(paid),
                    money(journal[i])
                ),
            );
        }
        if i == 0 && wo != journal[4] {
            out.add(
                "installments",
                key(c),
                format!(
                    "wo_principal is {} but write-off entries credit {}",
                    money(wo),
                    money(journal[4])
                ),
            );
        }
        let left = due - paid - wo;
        if paid < 0 || wo < 0 || left < 0 {
            out.add(
                "installments",
                key(c),
                format!(
                    "due {} − paid {} − written off {} = {} outstanding",
                    money(due),
                    money(paid),
                    money(wo),
                    money(left)
                ),
            );
        }
        outstanding += left;
    }
    let settled = matches!(status.as_str(), "paid" | "written_off");
    if settled != (outstanding == 0) {
        out.add(
            "installments",
            format!("loan_id={loan} seq={seq}"),
            format!("status {status} with {} outstanding", money(outstanding)),
        );
    }
}

/// Per loan, the components written off on its installments sum to its write-offs.
async fn write_offs_per_loan(
    conn: &mut AnyConnection,
    out: &mut Findings,
) -> Result<(), sqlx::Error> {
    out.start(WRITE_OFFS);
    let sql = "SELECT loan_id AS k, 0 AS side, \
           CAST(SUM(wo_principal + wo_interest + wo_fee + wo_penalty) AS BIGINT) AS v \
         FROM installments GROUP BY loan_id \
         HAVING SUM(wo_principal + wo_interest + wo_fee + wo_penalty) <> 0 \
         UNION ALL SELECT loan_id, 1, CAST(SUM(amount) AS BIGINT) FROM write_offs GROUP BY loan_id \
         ORDER BY 1, 2";
    let mut cur: Option<(String, i64, i64)> = None;
    let finish = |c: &Option<(String, i64, i64)>, out: &mut Findings| {
        if let Some((loan, inst, wo)) = c {
            if inst != wo {
                out.add(
                    "write_offs",
                    format!("loan_id={loan}"),
                    format!(
                        "installments' wo_* sum to {} but write_offs.amount sums to {}",
                        money(*inst),
                        money(*wo)
                    ),
                );
            }
        }
    };
    each_row(conn, sql, out, |r, out| {
        let loan = text(r, "k")?.unwrap_or_default();
        if cur.as_ref().map(|c| &c.0) != Some(&loan) {
            finish(&cur, out);
            cur = Some((loan, 0, 0));
        }
        let c = cur.as_mut().expect("set above");
        if int(r, "side")? == 0 {
            c.1 = int(r, "v")?;
        } else {
            c.2 = int(r, "v")?;
        }
        Ok(())
    })
    .await?;
    finish(&cur, out);
    Ok(())
}

/// Every write-off row has its `write_off` entry for the same loan, crediting principal no
/// more than the amount; every `write_off` entry has its row.
async fn write_off_entries(
    conn: &mut AnyConnection,
    out: &mut Findings,
) -> Result<(), sqlx::Error> {
    out.start(WRITE_OFF_ROWS);
    let sql = "SELECT w.id, w.loan_id, w.amount, w.entry_id AS weid, e.id AS eid, e.kind, e.loan_id AS eloan, \
           (SELECT CAST(COALESCE(SUM(l.credit),0) AS BIGINT) FROM journal_lines l \
            WHERE l.entry_id = w.entry_id AND l.account = '1310') AS principal \
         FROM write_offs w LEFT JOIN journal_entries e ON e.id = w.entry_id ORDER BY w.id";
    each_row(conn, sql, out, |r, out| {
        let key = format!("id={}", int(r, "id")?);
        let (loan, amount) = (text(r, "loan_id")?, int(r, "amount")?);
        // No entry: nothing but interest, fee or penalty was written off (never booked as
        // receivable); the per-installment check holds the principal to the ledger.
        if opt_int(r, "weid")?.is_none() {
            if amount <= 0 {
                out.add("write_offs", key, format!("amount {}", money(amount)));
            }
            return Ok(());
        }
        if opt_int(r, "eid")?.is_none() {
            out.add("write_offs", key, "its journal entry does not exist");
            return Ok(());
        }
        let kind = text(r, "kind")?;
        if kind.as_deref() != Some("write_off") || text(r, "eloan")? != loan {
            out.add(
                "write_offs",
                key.clone(),
                format!(
                    "entry is a {} entry of loan {}, not a write_off of loan {}",
                    show(&kind),
                    show(&text(r, "eloan")?),
                    show(&loan)
                ),
            );
        }
        let principal = int(r, "principal")?;
        if amount <= 0 || principal > amount {
            out.add(
                "write_offs",
                key,
                format!(
                    "amount {} with {} of principal credited",
                    money(amount),
                    money(principal)
                ),
            );
        }
        Ok(())
    })
    .await?;
    let rows = out.current().rows;
    orphan_entries(conn, out, "write_off", "write_offs").await?;
    out.current().rows = rows;
    Ok(())
}

/// Entries of `kind` that no row of `table` (by `entry_id`) accounts for.
async fn orphan_entries(
    conn: &mut AnyConnection,
    out: &mut Findings,
    kind: &'static str,
    table: &'static str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT e.id FROM journal_entries e WHERE e.kind = '{kind}' \
         AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.entry_id = e.id) ORDER BY e.id"
    );
    each_row(conn, &sql, out, |r, out| {
        out.add(
            "journal_entries",
            format!("id={}", int(r, "id")?),
            format!("{kind} entry without a row in {table}"),
        );
        Ok(())
    })
    .await
}

/// Every succeeded attempt has exactly one repayment entry whose clearing debit is its amount;
/// every repayment entry has its attempt, succeeded.
async fn postings(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(POSTINGS);
    // One join and GROUP BY rather than subqueries per entry: on PostgreSQL those probe
    // the account index once per entry, which is quadratic on a big journal.
    let sql = "SELECT e.id, e.attempt_id, e.loan_id AS eloan, a.id AS aid, a.status, a.amount, \
           a.channel, a.order_no, a.loan_id AS aloan, \
           CAST(COALESCE(SUM(CASE WHEN l.account = '1100.' || a.channel THEN l.debit ELSE 0 END),0) AS BIGINT) AS cleared, \
           CAST(COALESCE(SUM(l.debit),0) AS BIGINT) AS debits \
         FROM journal_entries e LEFT JOIN attempts a ON a.id = e.attempt_id \
         LEFT JOIN journal_lines l ON l.entry_id = e.id \
         WHERE e.kind = 'repayment' \
         GROUP BY e.id, e.attempt_id, e.loan_id, a.id, a.status, a.amount, a.channel, a.order_no, a.loan_id";
    each_row(conn, sql, out, |r, out| check_posting(r, out)).await?;
    let rows = out.current().rows;
    let missing = "SELECT a.id, a.channel, a.order_no, a.amount, a.loan_id FROM attempts a \
         WHERE a.status = 'succeeded' AND NOT EXISTS \
         (SELECT 1 FROM journal_entries e WHERE e.attempt_id = a.id AND e.kind = 'repayment') ORDER BY a.id";
    each_row(conn, missing, out, |r, out| {
        out.add(
            "attempts",
            format!(
                "id={} channel={} order_no={}",
                int(r, "id")?,
                show(&text(r, "channel")?),
                show(&text(r, "order_no")?)
            ),
            format!(
                "succeeded for {} (loan {}) but has no repayment entry",
                money(int(r, "amount")?),
                show(&text(r, "loan_id")?)
            ),
        );
        Ok(())
    })
    .await?;
    let twice = "SELECT attempt_id, COUNT(*) AS n, MIN(id) AS first, MAX(id) AS last \
         FROM journal_entries WHERE kind = 'repayment' AND attempt_id IS NOT NULL \
         GROUP BY attempt_id HAVING COUNT(*) > 1";
    each_row(conn, twice, out, |r, out| {
        out.add(
            "attempts",
            format!("id={}", int(r, "attempt_id")?),
            format!(
                "posted {} times (journal entries {} … {})",
                int(r, "n")?,
                int(r, "first")?,
                int(r, "last")?
            ),
        );
        Ok(())
    })
    .await?;
    out.current().rows = rows;
    Ok(())
}

fn check_posting(r: &AnyRow, out: &mut Findings) -> Result<(), sqlx::Error> {
    let id = int(r, "id")?;
    let Some(attempt) = opt_int(r, "attempt_id")? else {
        out.add(
            "journal_entries",
            format!("id={id}"),
            "repayment entry without an attempt",
        );
        return Ok(());
    };
    let key = format!("id={id} attempt_id={attempt}");
    if opt_int(r, "aid")?.is_none() {
        out.add(
            "journal_entries",
            key,
            "repayment entry of an attempt that does not exist",
        );
        return Ok(());
    }
    let (status, amount) = (text(r, "status")?, int(r, "amount")?);
    let order = format!("{} order_no={}", key, show(&text(r, "order_no")?));
    if status.as_deref() != Some("succeeded") {
        out.add(
            "journal_entries",
            order.clone(),
            format!("repayment posted for an attempt that is {}", show(&status)),
        );
    }
    let (cleared, debits) = (int(r, "cleared")?, int(r, "debits")?);
    if cleared != amount || debits != amount {
        out.add(
            "journal_entries",
            order.clone(),
            format!(
                "debits 1100.{} with {} (all debits {}) but the attempt is for {}",
                show(&text(r, "channel")?),
                money(cleared),
                money(debits),
                money(amount)
            ),
        );
    }
    if text(r, "eloan")? != text(r, "aloan")? {
        out.add(
            "journal_entries",
            order,
            format!(
                "entry is for loan {} but the attempt for loan {}",
                show(&text(r, "eloan")?),
                show(&text(r, "aloan")?)
            ),
        );
    }
    Ok(())
}

/// An order number belongs to one attempt per channel, an attempt has one order number, and
/// reconciliation items name their attempt's order number.
async fn order_numbers(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(ORDER_NOS);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&mut *conn)
        .await?;
    let shared = "SELECT channel, order_no, COUNT(*) AS n, MIN(id) AS first, MAX(id) AS last \
         FROM attempts GROUP BY channel, order_no HAVING COUNT(*) > 1";
    each_row(conn, shared, out, |r, out| {
        out.add(
            "attempts",
            format!(
                "channel={} order_no={}",
                show(&text(r, "channel")?),
                show(&text(r, "order_no")?)
            ),
            format!(
                "order number used by {} attempts (ids {} … {})",
                int(r, "n")?,
                int(r, "first")?,
                int(r, "last")?
            ),
        );
        Ok(())
    })
    .await?;
    let two = "SELECT id, COUNT(*) AS n, MIN(order_no) AS first, MAX(order_no) AS last \
         FROM attempts GROUP BY id HAVING COUNT(*) > 1";
    each_row(conn, two, out, |r, out| {
        out.add(
            "attempts",
            format!("id={}", int(r, "id")?),
            format!(
                "attempt id on {} rows with order numbers {} … {}",
                int(r, "n")?,
                show(&text(r, "first")?),
                show(&text(r, "last")?)
            ),
        );
        Ok(())
    })
    .await?;
    let recon =
        "SELECT r.id, r.channel, r.order_no, r.attempt_id, a.channel AS ach, a.order_no AS aon \
         FROM recon_items r JOIN attempts a ON a.id = r.attempt_id \
         WHERE a.channel <> r.channel OR a.order_no <> r.order_no";
    each_row(conn, recon, out, |r, out| {
        out.add(
            "recon_items",
            format!(
                "id={} channel={} order_no={}",
                int(r, "id")?,
                show(&text(r, "channel")?),
                show(&text(r, "order_no")?)
            ),
            format!(
                "matched to attempt {} whose order number is {} on {}",
                int(r, "attempt_id")?,
                show(&text(r, "aon")?),
                show(&text(r, "ach")?)
            ),
        );
        Ok(())
    })
    .await?;
    out.current().rows = n as u64;
    Ok(())
}

/// Refunds and reversals of an attempt never exceed its amount, and overpayment refunds never
/// exceed the overpayment its repayment credited.
async fn refunds_per_attempt(
    conn: &mut AnyConnection,
    out: &mut Findings,
) -> Result<(), sqlx::Error> {
    out.start(REFUNDS);
    let sql = "SELECT r.attempt_id AS k, 0 AS side, CAST(SUM(r.amount) AS BIGINT) AS v1, \
           CAST(SUM(CASE WHEN r.kind = 'overpayment' THEN r.amount ELSE 0 END) AS BIGINT) AS v2, \
           CAST(COUNT(*) AS BIGINT) AS v3, CAST(NULL AS TEXT) AS st \
         FROM refunds r GROUP BY r.attempt_id \
         UNION ALL \
         SELECT a.id, 1, a.amount, \
           (SELECT CAST(COALESCE(SUM(l.credit),0) AS BIGINT) FROM journal_entries e \
            JOIN journal_lines l ON l.entry_id = e.id \
            WHERE e.attempt_id = a.id AND e.kind = 'repayment' AND l.account = '2100'), \
           CAST(0 AS BIGINT), a.status \
         FROM attempts a WHERE a.id IN (SELECT attempt_id FROM refunds) \
         ORDER BY 1, 2";
    // (attempt, refunded, overpayment refunded, refund rows, attempt: (amount, overpaid, status))
    type Group = (i64, i64, i64, i64, Option<(i64, i64, String)>);
    let mut cur: Option<Group> = None;
    let finish = |g: &Option<Group>, out: &mut Findings| {
        let Some((attempt, refunded, over, n, a)) = g else {
            return;
        };
        let key = format!("attempt_id={attempt}");
        let Some((amount, overpaid, status)) = a else {
            out.add(
                "refunds",
                key,
                format!("{n} refund(s) of an attempt that does not exist"),
            );
            return;
        };
        if status != AttemptStatus::Succeeded.as_str() {
            out.add(
                "refunds",
                key.clone(),
                format!("refunds of an attempt that is {status}"),
            );
        }
        if refunded > amount {
            out.add(
                "refunds",
                key.clone(),
                format!(
                    "{n} refund(s) total {} but the attempt collected {}",
                    money(*refunded),
                    money(*amount)
                ),
            );
        }
        if over > overpaid {
            out.add(
                "refunds",
                key,
                format!(
                    "overpayment refunds total {} but the repayment credited {} of overpayment",
                    money(*over),
                    money(*overpaid)
                ),
            );
        }
    };
    each_row(conn, sql, out, |r, out| {
        let attempt = int(r, "k")?;
        if cur.as_ref().map(|c| c.0) != Some(attempt) {
            finish(&cur, out);
            cur = Some((attempt, 0, 0, 0, None));
        }
        let c = cur.as_mut().expect("set above");
        let (v1, v2, v3) = (int(r, "v1")?, int(r, "v2")?, int(r, "v3")?);
        if int(r, "side")? == 0 {
            (c.1, c.2, c.3) = (v1, v2, v3);
        } else {
            c.4 = Some((v1, v2, text(r, "st")?.unwrap_or_default()));
        }
        Ok(())
    })
    .await?;
    finish(&cur, out);
    Ok(())
}

/// Each refund row has its entry: the right kind and amount, for the same loan, correcting
/// the attempt's repayment entry; every refund or reversal entry has its row.
async fn refund_entries(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(REFUND_ROWS);
    let sql = "SELECT r.id, r.attempt_id, r.loan_id, r.kind, r.amount, e.id AS eid, \
           e.kind AS ekind, e.loan_id AS eloan, e.corrects_entry, \
           (SELECT CAST(COALESCE(SUM(l.debit),0) AS BIGINT) FROM journal_lines l WHERE l.entry_id = r.entry_id) AS debits, \
           (SELECT MIN(o.id) FROM journal_entries o WHERE o.attempt_id = r.attempt_id AND o.kind = 'repayment') AS original \
         FROM refunds r LEFT JOIN journal_entries e ON e.id = r.entry_id ORDER BY r.id";
    each_row(conn, sql, out, |r, out| check_refund(r, out)).await?;
    let rows = out.current().rows;
    orphan_entries(conn, out, "refund", "refunds").await?;
    orphan_entries(conn, out, "reversal", "refunds").await?;
    out.current().rows = rows;
    Ok(())
}

fn check_refund(r: &AnyRow, out: &mut Findings) -> Result<(), sqlx::Error> {
    let key = format!("id={} attempt_id={}", int(r, "id")?, int(r, "attempt_id")?);
    if opt_int(r, "eid")?.is_none() {
        out.add("refunds", key, "its journal entry does not exist");
        return Ok(());
    }
    let kind = text(r, "kind")?;
    let expected = match kind.as_deref() {
        Some("overpayment") => "refund",
        Some("erroneous") => "reversal",
        _ => {
            out.add(
                "refunds",
                key,
                format!("unknown refund kind {}", show(&kind)),
            );
            return Ok(());
        }
    };
    let ekind = text(r, "ekind")?;
    if ekind.as_deref() != Some(expected) {
        out.add(
            "refunds",
            key.clone(),
            format!(
                "{} refund posted as a {} entry, not {expected}",
                show(&kind),
                show(&ekind)
            ),
        );
    }
    let (amount, debits) = (int(r, "amount")?, int(r, "debits")?);
    if amount <= 0 || debits != amount {
        out.add(
            "refunds",
            key.clone(),
            format!(
                "amount {} but its entry moves {}",
                money(amount),
                money(debits)
            ),
        );
    }
    let (corrects, original) = (opt_int(r, "corrects_entry")?, opt_int(r, "original")?);
    if original.is_none() || corrects != original {
        out.add(
            "refunds",
            key.clone(),
            format!(
                "entry corrects entry {:?} but the attempt's repayment entry is {:?}",
                corrects, original
            ),
        );
    }
    if text(r, "eloan")? != text(r, "loan_id")? {
        out.add(
            "refunds",
            key,
            format!(
                "refund of loan {} posted to loan {}",
                show(&text(r, "loan_id")?),
                show(&text(r, "eloan")?)
            ),
        );
    }
    Ok(())
}

/// Each settlement moves its gross out of the channel's clearing into the bank (net) and
/// fees; every settlement entry has its row.
async fn settlements(conn: &mut AnyConnection, out: &mut Findings) -> Result<(), sqlx::Error> {
    out.start(SETTLEMENTS);
    let sum = |side: &str, acct: &str| {
        format!(
            "(SELECT CAST(COALESCE(SUM(l.{side}),0) AS BIGINT) FROM journal_lines l \
             WHERE l.entry_id = s.entry_id AND l.account = {acct})"
        )
    };
    let sql = format!(
        "SELECT s.id, s.channel, s.stmt_date, s.currency, s.gross, s.fees, s.net, s.entry_id AS seid, \
           e.id AS eid, e.kind, e.currency AS entry_currency, \
           {} AS bank, {} AS fee_d, {} AS cleared \
         FROM settlements s LEFT JOIN journal_entries e ON e.id = s.entry_id ORDER BY s.id",
        sum("debit", "'1200'"),
        sum("debit", "'5100'"),
        sum("credit", "'1100.' || s.channel"),
    );
    each_row(conn, &sql, out, |r, out| {
        let key = format!(
            "id={} channel={} stmt_date={}",
            int(r, "id")?,
            show(&text(r, "channel")?),
            show(&text(r, "stmt_date")?)
        );
        let (gross, fees, net) = (int(r, "gross")?, int(r, "fees")?, int(r, "net")?);
        if gross != net + fees {
            out.add(
                "settlements",
                key.clone(),
                format!(
                    "gross {} != net {} + fees {}",
                    money(gross),
                    money(net),
                    money(fees)
                ),
            );
        }
        if opt_int(r, "seid")?.is_none() {
            // A day with nothing to settle has its row but no entry.
            if gross != 0 {
                out.add(
                    "settlements",
                    key,
                    format!("{} settled without a journal entry", money(gross)),
                );
            }
            return Ok(());
        }
        if opt_int(r, "eid")?.is_none() || text(r, "kind")?.as_deref() != Some("settlement") {
            out.add(
                "settlements",
                key,
                "its settlement journal entry does not exist",
            );
            return Ok(());
        }
        let (ours, theirs) = (text(r, "currency")?, text(r, "entry_currency")?);
        if ours != theirs {
            out.add(
                "settlements",
                key.clone(),
                format!(
                    "the row is in {} but its entry in {}",
                    show(&ours),
                    show(&theirs)
                ),
            );
        }
        let (bank, fee_d, cleared) = (int(r, "bank")?, int(r, "fee_d")?, int(r, "cleared")?);
        if bank != net || fee_d != fees || cleared != gross {
            out.add(
                "settlements",
                key,
                format!(
                    "entry moves bank {} fees {} clearing {}; the row says net {} fees {} gross {}",
                    money(bank),
                    money(fee_d),
                    money(cleared),
                    money(net),
                    money(fees),
                    money(gross)
                ),
            );
        }
        Ok(())
    })
    .await?;
    let rows = out.current().rows;
    orphan_entries(conn, out, "settlement", "settlements").await?;
    out.current().rows = rows;
    Ok(())
}
