//! CSV form of a portfolio. One row per loan with terms, or one row per installment for
//! explicit plans (consecutive rows with the same `loan_id`, loan columns repeated).
//!
//! Columns: `loan_id, borrower_id, borrower_name, phone, email, payday, currency, timezone,
//! policy, allow_early, mandates, method, principal, annual_rate, months, first_due,
//! due_date, interest, fee`. `mandates` is `channel:agreement:account[:per_debit[:daily]]`
//! separated by `;`, in priority order. A row with `due_date` is an explicit installment
//! (`principal`, `interest`, `fee` are that installment's); otherwise `method`, `principal`,
//! `annual_rate`, `months` and `first_due` give the terms.

use crate::domain::import::{
    Amount, BorrowerRecord, ImportError, ImportProblem, InstallmentRecord, LoanRecord,
    MandateRecord, Origin, TermsRecord,
};
use crate::domain::pii::mask_account;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct CsvRow {
    loan_id: String,
    borrower_id: String,
    borrower_name: String,
    phone: String,
    email: String,
    #[serde(default)]
    payday: Option<String>,
    currency: String,
    timezone: String,
    policy: String,
    #[serde(default)]
    allow_early: Option<String>,
    mandates: String,
    #[serde(default)]
    method: Option<String>,
    principal: String,
    #[serde(default)]
    annual_rate: Option<String>,
    #[serde(default)]
    months: Option<String>,
    #[serde(default)]
    first_due: Option<String>,
    #[serde(default)]
    due_date: Option<String>,
    #[serde(default)]
    interest: Option<String>,
    #[serde(default)]
    fee: Option<String>,
    /// `true` when the row changes a stored borrower's contact on purpose.
    #[serde(default, deserialize_with = "flag")]
    borrower_update: bool,
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(o) => Err(serde::de::Error::custom(format!("`{o}` is not true/false"))),
    }
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn bad(file: &str, line: u64, field: &str, message: impl Into<String>) -> ImportProblem {
    ImportProblem {
        file: file.to_string(),
        location: format!("line {line}"),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Parse CSV text into loan records (grouping explicit installment rows).
pub fn parse_csv(text: &str, file: &str) -> Result<Vec<(LoanRecord, Origin)>, ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut out: Vec<(LoanRecord, Origin)> = Vec::new();
    let mut problems = Vec::new();
    let headers = rdr
        .headers()
        .map_err(|e| ImportError::Invalid(vec![bad(file, 1, "header", e.to_string())]))?
        .clone();
    for result in rdr.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(bad(file, line, "-", e.to_string()));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let row: CsvRow = match record.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                let field = match e.kind() {
                    csv::ErrorKind::Deserialize { err, .. } => err.field(),
                    _ => None,
                }
                .and_then(|i| headers.get(i as usize))
                .unwrap_or("-")
                .to_string();
                problems.push(bad(file, line, &field, e.to_string()));
                continue;
            }
        };
        if let Err(p) = add_row(&mut out, row, file, line) {
            problems.push(p);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ImportError::Invalid(problems))
    }
}

fn add_row(
    out: &mut Vec<(LoanRecord, Origin)>,
    row: CsvRow,
    file: &str,
    line: u64,
) -> Result<(), ImportProblem> {
    let explicit = nonempty(&row.due_date).is_some();
    if explicit {
        if let Some((last, _)) = out.last_mut() {
            if last.id == row.loan_id && last.installments.is_some() {
                last.installments
                    .as_mut()
                    .expect("checked")
                    .push(installment(&row));
                return Ok(());
            }
        }
    }
    let mut rec = loan_record(&row, file, line)?;
    if explicit {
        rec.installments = Some(vec![installment(&row)]);
    } else {
        rec.terms = Some(terms(&row, file, line)?);
    }
    out.push((
        rec,
        Origin {
            file: file.to_string(),
            location: format!("line {line} (loan {})", row.loan_id),
        },
    ));
    Ok(())
}

fn loan_record(row: &CsvRow, file: &str, line: u64) -> Result<LoanRecord, ImportProblem> {
    let payday = match nonempty(&row.payday) {
        None => None,
        Some(p) => Some(
            p.parse::<u32>()
                .map_err(|_| bad(file, line, "payday", format!("`{p}` is not a day of month")))?,
        ),
    };
    let allow_early = match nonempty(&row.allow_early) {
        None => None,
        Some("true") | Some("1") | Some("yes") => Some(true),
        Some("false") | Some("0") | Some("no") => Some(false),
        Some(o) => {
            return Err(bad(
                file,
                line,
                "allow_early",
                format!("`{o}` is not true/false"),
            ))
        }
    };
    Ok(LoanRecord {
        id: row.loan_id.clone(),
        borrower: BorrowerRecord {
            id: row.borrower_id.clone(),
            name: row.borrower_name.clone(),
            phone: row.phone.clone(),
            email: row.email.clone(),
            payday,
            update: row.borrower_update,
        },
        currency: row.currency.clone(),
        timezone: row.timezone.clone(),
        policy: row.policy.clone(),
        allow_early,
        mandates: mandates(&row.mandates, file, line)?,
        installments: None,
        terms: None,
    })
}

fn mandates(cell: &str, file: &str, line: u64) -> Result<Vec<MandateRecord>, ImportProblem> {
    let mut out = Vec::new();
    for (i, part) in cell
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let f: Vec<&str> = part.split(':').map(str::trim).collect();
        if f.len() < 3 || f.len() > 5 {
            // Every field but the first two may be (part of) an account number: masked.
            let shown: Vec<String> = f
                .iter()
                .enumerate()
                .map(|(k, v)| {
                    if k < 2 {
                        v.to_string()
                    } else {
                        mask_account(v)
                    }
                })
                .collect();
            return Err(bad(
                file,
                line,
                &format!("mandates[{i}]"),
                format!(
                    "`{}` has {} fields; expected channel:agreement:account[:per_debit[:daily]]",
                    shown.join(":"),
                    f.len()
                ),
            ));
        }
        let opt = |k: usize| {
            f.get(k)
                .filter(|s| !s.is_empty())
                .map(|s| Amount::Text(s.to_string()))
        };
        out.push(MandateRecord {
            channel: f[0].to_string(),
            agreement: f[1].to_string(),
            account: f[2].to_string(),
            per_debit_limit: opt(3),
            daily_limit: opt(4),
        });
    }
    Ok(out)
}

fn installment(row: &CsvRow) -> InstallmentRecord {
    InstallmentRecord {
        due_date: row.due_date.clone().unwrap_or_default(),
        principal: Amount::Text(row.principal.clone()),
        interest: nonempty(&row.interest).map(|s| Amount::Text(s.to_string())),
        fee: nonempty(&row.fee).map(|s| Amount::Text(s.to_string())),
    }
}

fn terms(row: &CsvRow, file: &str, line: u64) -> Result<TermsRecord, ImportProblem> {
    let need = |v: &Option<String>, name: &str| {
        nonempty(v)
            .map(str::to_string)
            .ok_or_else(|| bad(file, line, name, "is required for a loan given by terms"))
    };
    let months = need(&row.months, "months")?;
    Ok(TermsRecord {
        principal: Amount::Text(row.principal.clone()),
        annual_rate: Amount::Text(need(&row.annual_rate, "annual_rate")?),
        months: months.parse().map_err(|_| {
            bad(
                file,
                line,
                "months",
                format!("`{months}` is not a whole number"),
            )
        })?,
        first_due: need(&row.first_due, "first_due")?,
        method: need(&row.method, "method")?,
    })
}
