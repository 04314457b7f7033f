//! Importing loans, as a person asks for it (the CLI with a file, the API with a body): the
//! loans and the audit row in one transaction, then the new loans' agenda.

use super::action;
use crate::domain::actor::Actor;
use crate::domain::import::{self, ImportError, ImportReport, LoanInput};
use crate::engine::{plan, Engine, EngineError};
use crate::store::import::{store_loans, StoreLoansError};
use chrono::{DateTime, Utc};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportLoansError {
    #[error(transparent)]
    Store(#[from] StoreLoansError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl ImportLoansError {
    /// The located problems, when the loans were refused (not when the database failed).
    pub fn refused(&self) -> Option<&ImportError> {
        match self {
            ImportLoansError::Store(StoreLoansError::Refused(e)) => Some(e),
            _ => None,
        }
    }
}

/// What an import did, and how many actions planning the new loans wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub report: ImportReport,
    pub actions_planned: u64,
}

/// Read a loan file (.json, .jsonl, .csv by extension) and validate every record.
pub fn read_file(
    path: &Path,
    policies: &crate::domain::policy::PolicySet,
    channels: &[String],
) -> Result<Vec<LoanInput>, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: file.clone(),
        source,
    })?;
    import::parse_text(&text, &file, policies, channels)
}

/// Store validated loans with the audit row of `who`, then plan the new ones.
pub async fn import_loans(
    engine: &Engine,
    who: &Actor,
    loans: &[LoanInput],
    now: DateTime<Utc>,
) -> Result<Imported, ImportLoansError> {
    let mut tx = engine.db.begin().await?;
    let report = store_loans(&mut tx, loans, now.timestamp_millis()).await?;
    let detail = serde_json::json!({ "loans_added": report.loans_added,
        "loans_unchanged": report.loans_unchanged, "installments_added": report.installments_added });
    super::audit(
        &mut tx,
        who,
        action::IMPORT_LOANS,
        None,
        None,
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    let ids: Vec<String> = loans.iter().map(|l| l.id.clone()).collect();
    let actions_planned = plan::plan_new_loans(engine, Some(&ids)).await?;
    Ok(Imported {
        report,
        actions_planned,
    })
}
