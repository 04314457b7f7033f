//! Loan import from JSON, JSON Lines or CSV: parse, validate every field, then write the whole
//! file in one transaction. Re-importing an identical loan changes nothing; a loan id that
//! comes back with different content is an error, never a silent overwrite.

pub mod csv;

use crate::domain::json_field;
use crate::domain::pii::mask_account;
use crate::domain::policy::PolicySet;
use crate::domain::{
    bounded_sum, check_date, generate_schedule, parse_money, Method, PlannedInstallment, Terms,
    MAX_AMOUNT,
};
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;
use thiserror::Error;

/// A validated loan, ready to store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoanInput {
    pub id: String,
    pub borrower: BorrowerInput,
    pub currency: String,
    #[serde(serialize_with = "ser_tz")]
    pub tz: Tz,
    pub policy: String,
    pub allow_early: bool,
    pub mandates: Vec<MandateInput>,
    #[serde(serialize_with = "ser_insts")]
    pub installments: Vec<PlannedInstallment>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BorrowerInput {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub payday: Option<u32>,
    /// Replace the stored contact of this borrower id (see [`BorrowerRecord::update`]).
    /// Not part of the loan's content.
    #[serde(skip)]
    pub update: bool,
}

impl BorrowerInput {
    /// Whether two records describe the same person the same way.
    pub fn same_contact(&self, other: &BorrowerInput) -> bool {
        (&self.name, &self.phone, &self.email, self.payday)
            == (&other.name, &other.phone, &other.email, other.payday)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MandateInput {
    pub channel: String,
    pub agreement: String,
    pub account_masked: String,
    pub per_debit_limit: Option<Decimal>,
    pub daily_limit: Option<Decimal>,
}

fn ser_tz<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

fn ser_insts<S: serde::Serializer>(v: &[PlannedInstallment], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for i in v {
        seq.serialize_element(&(
            i.seq,
            i.due_date.to_string(),
            i.principal.to_string(),
            i.interest.to_string(),
            i.fee.to_string(),
        ))?;
    }
    seq.end()
}

impl LoanInput {
    /// Stable fingerprint of the loan's content, for idempotent re-import.
    pub fn content_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("loan serialises");
        let digest = Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn total_principal(&self) -> Decimal {
        self.installments.iter().map(|i| i.principal).sum()
    }
}

/// One problem in an import file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportProblem {
    pub file: String,
    /// `line 7` (CSV, JSON syntax) or `record 3 (loan L-3)` (JSON).
    pub location: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.file, self.location, self.field, self.message
        )
    }
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{}", display_problems(.0))]
    Invalid(Vec<ImportProblem>),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn display_problems(p: &[ImportProblem]) -> String {
    let mut s = format!(
        "import rejected, nothing was written ({} problem(s)):",
        p.len()
    );
    for x in p {
        s.push_str("\n  ");
        s.push_str(&x.to_string());
    }
    s
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub loans_added: usize,
    pub loans_unchanged: usize,
    pub installments_added: usize,
}

/// Where the record came from, for error messages.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: String,
    pub location: String,
}

/// The raw shape of one loan in JSON (and after CSV rows are grouped).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoanRecord {
    pub id: String,
    pub borrower: BorrowerRecord,
    pub currency: String,
    pub timezone: String,
    pub policy: String,
    #[serde(default)]
    pub allow_early: Option<bool>,
    pub mandates: Vec<MandateRecord>,
    #[serde(default)]
    pub installments: Option<Vec<InstallmentRecord>>,
    #[serde(default)]
    pub terms: Option<TermsRecord>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowerRecord {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    #[serde(default)]
    pub payday: Option<u32>,
    /// The record changes a stored borrower's contact details on purpose. Without it, a
    /// borrower id that comes back with another name, phone or email is refused: notices
    /// would otherwise go to the first person's contact.
    #[serde(default)]
    pub update: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MandateRecord {
    pub channel: String,
    pub agreement: String,
    pub account: String,
    #[serde(default)]
    pub per_debit_limit: Option<Amount>,
    #[serde(default)]
    pub daily_limit: Option<Amount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallmentRecord {
    pub due_date: String,
    pub principal: Amount,
    #[serde(default)]
    pub interest: Option<Amount>,
    #[serde(default)]
    pub fee: Option<Amount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsRecord {
    pub principal: Amount,
    pub annual_rate: Amount,
    pub months: u32,
    pub first_due: String,
    pub method: String,
}

/// An amount as written: a string ("12.50") or a JSON number (12.5), read exactly.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "an amount: a decimal string like \"12.50\" or a number like 12.5"
)]
pub enum Amount {
    Text(String),
    Number(serde_json::Number),
}

impl Default for Amount {
    fn default() -> Self {
        Amount::Text(String::new())
    }
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Text(s) => s.clone(),
            Amount::Number(n) => n.to_string(),
        }
    }
}

/// Parse a file's text by its name's extension (.json, .jsonl/.ndjson, .csv) and validate it.
/// Reading the file is the caller's (`ops::import::read_file`).
pub fn parse_text(
    text: &str,
    file: &str,
    policies: &PolicySet,
    channels: &[String],
) -> Result<Vec<LoanInput>, ImportError> {
    let ext = std::path::Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let records = match ext {
        "csv" => csv::parse_csv(text, file)?,
        "jsonl" | "ndjson" => parse_jsonl(text, file)?,
        _ => parse_json(text, file)?,
    };
    validate_all(records, policies, channels)
}

/// Validate records; every problem is collected before the file is rejected.
pub fn validate_all(
    records: Vec<(LoanRecord, Origin)>,
    policies: &PolicySet,
    channels: &[String],
) -> Result<Vec<LoanInput>, ImportError> {
    let mut problems = Vec::new();
    let mut loans = Vec::with_capacity(records.len());
    let mut seen = HashSet::new();
    for (rec, origin) in records {
        if !seen.insert(rec.id.clone()) {
            problems.push(problem(
                &origin,
                "id",
                format!("loan `{}` appears twice in the file", rec.id),
            ));
            continue;
        }
        match validate_loan(rec, &origin, policies, channels) {
            Ok(l) => loans.push((l, origin)),
            Err(mut p) => problems.append(&mut p),
        }
    }
    problems.extend(borrower_conflicts(&loans));
    let loans: Vec<LoanInput> = loans.into_iter().map(|(l, _)| l).collect();
    if problems.is_empty() {
        Ok(loans)
    } else {
        Err(ImportError::Invalid(problems))
    }
}

/// Records of one file that give one borrower id two different contacts: both are named.
fn borrower_conflicts(loans: &[(LoanInput, Origin)]) -> Vec<ImportProblem> {
    let mut first: HashMap<&str, &(LoanInput, Origin)> = HashMap::new();
    let mut out = Vec::new();
    for rec in loans {
        let b = &rec.0.borrower;
        let Some((l0, o0)) = first.get(b.id.as_str()).copied() else {
            first.insert(&b.id, rec);
            continue;
        };
        if !l0.borrower.same_contact(b) {
            out.push(problem(
                &rec.1,
                "borrower",
                format!(
                    "borrower `{}` is given other contact details than in {} ({} {}); one \
                     borrower id is one person",
                    b.id,
                    o0.location,
                    l0.borrower.name,
                    crate::domain::pii::mask_phone(&l0.borrower.phone)
                ),
            ));
        }
    }
    out
}

fn problem(origin: &Origin, field: &str, message: impl Into<String>) -> ImportProblem {
    ImportProblem {
        file: origin.file.clone(),
        location: origin.location.clone(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// A JSON loans file: an array of loans, or `{"loans": [...]}`. A syntax error names its line
/// and column; a record with a missing, unknown or mistyped field names the record, its loan
/// id and the field's path (`terms.principal`), as JSONL and CSV do. Every record's problem is
/// reported, not only the first.
pub fn parse_json(text: &str, file: &str) -> Result<Vec<(LoanRecord, Origin)>, ImportError> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| json_problem(e, file))?;
    let list = match doc {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(mut top) if top.contains_key("loans") => {
            match top.remove("loans") {
                Some(serde_json::Value::Array(list)) => list,
                _ => return Err(top_problem(file, "loans", "must be an array of loans")),
            }
        }
        _ => {
            let msg = "must be an array of loans, or an object {\"loans\": [...]}";
            return Err(top_problem(file, "-", msg));
        }
    };
    let (mut out, mut problems) = (Vec::with_capacity(list.len()), Vec::new());
    for (i, v) in list.into_iter().enumerate() {
        let id = v
            .get("id")
            .and_then(|id| id.as_str())
            .unwrap_or("?")
            .to_string();
        let origin = Origin {
            file: file.to_string(),
            location: format!("record {} (loan {id})", i + 1),
        };
        match serde_path_to_error::deserialize::<_, LoanRecord>(v) {
            Ok(r) => out.push((r, origin)),
            Err(e) => problems.push(record_problem(&origin, &e)),
        }
    }
    match problems.is_empty() {
        true => Ok(out),
        false => Err(ImportError::Invalid(problems)),
    }
}

fn top_problem(file: &str, field: &str, message: &str) -> ImportError {
    ImportError::Invalid(vec![ImportProblem {
        file: file.to_string(),
        location: "the document".into(),
        field: field.into(),
        message: message.into(),
    }])
}

fn record_problem(
    origin: &Origin,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> ImportProblem {
    let msg = e.inner().to_string();
    ImportProblem {
        file: origin.file.clone(),
        location: origin.location.clone(),
        field: json_field::field_of(&e.path().to_string(), &msg, "-"),
        message: json_field::strip_position(&msg),
    }
}

pub fn parse_jsonl(text: &str, file: &str) -> Result<Vec<(LoanRecord, Origin)>, ImportError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let de = &mut serde_json::Deserializer::from_str(line);
        let rec: LoanRecord = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut p = record_problem(
                &Origin {
                    file: file.to_string(),
                    location: String::new(),
                },
                &e,
            );
            p.location = format!("line {} column {}", i + 1, e.inner().column());
            ImportError::Invalid(vec![p])
        })?;
        out.push((
            rec,
            Origin {
                file: file.to_string(),
                location: format!("line {}", i + 1),
            },
        ));
    }
    Ok(out)
}

/// A document that is not JSON at all: where the syntax breaks.
fn json_problem(e: serde_json::Error, file: &str) -> ImportError {
    let msg = e.to_string();
    ImportError::Invalid(vec![ImportProblem {
        file: file.to_string(),
        location: format!("line {} column {}", e.line(), e.column()),
        field: "-".into(),
        message: json_field::strip_position(&msg),
    }])
}

/// Check one record field by field, collecting every problem.
pub fn validate_loan(
    rec: LoanRecord,
    origin: &Origin,
    policies: &PolicySet,
    channels: &[String],
) -> Result<LoanInput, Vec<ImportProblem>> {
    let mut p = Vec::new();
    let mut bad = |field: &str, msg: String| p.push(problem(origin, field, msg));
    if rec.id.trim().is_empty() {
        bad("id", "is empty".into());
    }
    check_borrower(&rec.borrower, &mut bad);
    if rec.currency.len() != 3 || !rec.currency.chars().all(|c| c.is_ascii_uppercase()) {
        bad(
            "currency",
            format!("`{}` is not an ISO 4217 code like CNY", rec.currency),
        );
    }
    let tz: Option<Tz> = match rec.timezone.parse() {
        Ok(tz) => Some(tz),
        Err(_) => {
            bad(
                "timezone",
                format!("`{}` is not an IANA time zone", rec.timezone),
            );
            None
        }
    };
    if policies.get(&rec.policy).is_none() {
        bad(
            "policy",
            format!(
                "unknown policy `{}` (known: {})",
                rec.policy,
                policies.names().join(", ")
            ),
        );
    }
    let mandates = check_mandates(&rec.mandates, channels, &mut bad);
    let installments = check_installments(&rec, &mut bad);
    drop(bad);
    if !p.is_empty() {
        return Err(p);
    }
    Ok(LoanInput {
        id: rec.id,
        borrower: BorrowerInput {
            id: rec.borrower.id,
            name: rec.borrower.name,
            phone: rec.borrower.phone,
            email: rec.borrower.email,
            payday: rec.borrower.payday,
            update: rec.borrower.update,
        },
        currency: rec.currency,
        tz: tz.expect("checked"),
        policy: rec.policy,
        allow_early: rec.allow_early.unwrap_or(true),
        mandates,
        installments,
    })
}

fn check_borrower(b: &BorrowerRecord, bad: &mut impl FnMut(&str, String)) {
    if b.id.trim().is_empty() {
        bad("borrower.id", "is empty".into());
    }
    if b.name.trim().is_empty() {
        bad("borrower.name", "is empty".into());
    }
    let digits = b.phone.chars().filter(|c| c.is_ascii_digit()).count();
    if digits < 6
        || !b
            .phone
            .chars()
            .all(|c| c.is_ascii_digit() || "+- ".contains(c))
    {
        bad("borrower.phone", "is not a phone number".into());
    }
    if !b.email.contains('@') || b.email.contains(' ') {
        bad(
            "borrower.email",
            format!("`{}` is not an email address", b.email),
        );
    }
    if let Some(d) = b.payday {
        if !(1..=31).contains(&d) {
            bad(
                "borrower.payday",
                format!("{d} is not a day of month (1-31)"),
            );
        }
    }
}

fn check_mandates(
    recs: &[MandateRecord],
    channels: &[String],
    bad: &mut impl FnMut(&str, String),
) -> Vec<MandateInput> {
    if recs.is_empty() {
        bad("mandates", "at least one mandate is required".into());
    }
    let mut out = Vec::new();
    for (i, m) in recs.iter().enumerate() {
        let f = |name: &str| format!("mandates[{i}].{name}");
        if !channels.iter().any(|c| c == &m.channel) {
            bad(
                &f("channel"),
                format!(
                    "unknown channel `{}` (known: {})",
                    m.channel,
                    channels.join(", ")
                ),
            );
        }
        if let Err(e) = crate::domain::pii::check_agreement(&m.agreement) {
            bad(&f("agreement"), e);
        }
        if let Err(e) = crate::domain::pii::check_account(&m.account) {
            bad(&f("account"), e);
        }
        let per_debit = opt_positive(&m.per_debit_limit, &f("per_debit_limit"), bad);
        let daily = opt_positive(&m.daily_limit, &f("daily_limit"), bad);
        out.push(MandateInput {
            channel: m.channel.clone(),
            agreement: m.agreement.clone(),
            account_masked: mask_account(&m.account),
            per_debit_limit: per_debit,
            daily_limit: daily,
        });
    }
    out
}

fn money_field(a: &Amount, field: &str, bad: &mut impl FnMut(&str, String)) -> Option<Decimal> {
    match parse_money(&a.text()) {
        Ok(d) => Some(d),
        Err(e) => {
            bad(field, e.to_string());
            None
        }
    }
}

fn opt_positive(
    a: &Option<Amount>,
    field: &str,
    bad: &mut impl FnMut(&str, String),
) -> Option<Decimal> {
    let d = money_field(a.as_ref()?, field, bad)?;
    if d <= Decimal::ZERO {
        bad(field, "must be greater than 0".into());
    }
    Some(d)
}

fn date_field(s: &str, field: &str, bad: &mut impl FnMut(&str, String)) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        Ok(d) => match check_date(d) {
            Ok(d) => Some(d),
            Err(e) => {
                bad(field, e);
                None
            }
        },
        Err(_) => {
            bad(field, format!("`{s}` is not a date YYYY-MM-DD"));
            None
        }
    }
}

/// A whole installment and the whole loan stay within [`MAX_AMOUNT`], so every sum the
/// engine and the ledger make of them fits (see `domain::money`).
fn check_totals(list: &[PlannedInstallment], bad: &mut impl FnMut(&str, String)) {
    let mut loan = Decimal::ZERO;
    for (i, inst) in list.iter().enumerate() {
        let Ok(total) = bounded_sum([inst.principal, inst.interest, inst.fee]) else {
            let field = format!("installments[{i}]");
            bad(
                &field,
                format!("principal + interest + fee is more than {MAX_AMOUNT}"),
            );
            return;
        };
        match bounded_sum([loan, total]) {
            Ok(t) => loan = t,
            Err(_) => {
                let field = format!("installments[{i}]");
                bad(&field, format!("the loan's total passes {MAX_AMOUNT} here"));
                return;
            }
        }
        if let Err(e) = check_date(inst.due_date) {
            bad(&format!("installments[{i}].due_date"), e);
            return;
        }
    }
}

fn check_installments(
    rec: &LoanRecord,
    bad: &mut impl FnMut(&str, String),
) -> Vec<PlannedInstallment> {
    match (&rec.installments, &rec.terms) {
        (Some(_), Some(_)) => {
            bad(
                "installments",
                "give either installments or terms, not both".into(),
            );
            vec![]
        }
        (None, None) => {
            bad("installments", "give installments or terms".into());
            vec![]
        }
        (Some(list), None) => {
            let out = explicit_installments(list, bad);
            check_totals(&out, bad);
            out
        }
        (None, Some(t)) => {
            let out = terms_installments(t, bad);
            check_totals(&out, bad);
            out
        }
    }
}

fn explicit_installments(
    list: &[InstallmentRecord],
    bad: &mut impl FnMut(&str, String),
) -> Vec<PlannedInstallment> {
    if list.is_empty() {
        bad("installments", "is empty".into());
    }
    let mut out: Vec<PlannedInstallment> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let f = |name: &str| format!("installments[{i}].{name}");
        let due = date_field(&r.due_date, &f("due_date"), bad);
        let principal = money_field(&r.principal, &f("principal"), bad);
        let zero = Amount::Text("0".into());
        let interest = money_field(r.interest.as_ref().unwrap_or(&zero), &f("interest"), bad);
        let fee = money_field(r.fee.as_ref().unwrap_or(&zero), &f("fee"), bad);
        if let (Some(due), Some(prev)) = (due, out.last()) {
            if due <= prev.due_date {
                bad(
                    &f("due_date"),
                    "due dates must be strictly increasing".into(),
                );
            }
        }
        if let (Some(due_date), Some(principal), Some(interest), Some(fee)) =
            (due, principal, interest, fee)
        {
            if principal + interest + fee <= Decimal::ZERO {
                bad(&f("principal"), "installment owes nothing".into());
            }
            out.push(PlannedInstallment {
                seq: i as u32 + 1,
                due_date,
                principal,
                interest,
                fee,
            });
        }
    }
    out
}

fn terms_installments(
    t: &TermsRecord,
    bad: &mut impl FnMut(&str, String),
) -> Vec<PlannedInstallment> {
    let principal = money_field(&t.principal, "terms.principal", bad);
    let rate: Option<Decimal> = match t.annual_rate.text().trim().parse::<Decimal>() {
        Ok(r) if r >= Decimal::ZERO && r < Decimal::from(10) => Some(r),
        _ => {
            bad(
                "terms.annual_rate",
                format!("`{}` is not a rate like 0.12", t.annual_rate.text()),
            );
            None
        }
    };
    let first_due = date_field(&t.first_due, "terms.first_due", bad);
    let method: Option<Method> = match t.method.parse() {
        Ok(m) => Some(m),
        Err(e) => {
            bad("terms.method", e);
            None
        }
    };
    let (Some(principal), Some(annual_rate), Some(first_due), Some(method)) =
        (principal, rate, first_due, method)
    else {
        return vec![];
    };
    let terms = Terms {
        principal,
        annual_rate,
        months: t.months,
        first_due,
        method,
    };
    generate_schedule(&terms).unwrap_or_else(|e| {
        bad("terms", e.to_string());
        vec![]
    })
}
