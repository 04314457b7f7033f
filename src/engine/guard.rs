//! The loan boundary: a panic while pursuing one loan is caught, logged with the loan's id,
//! and the loan is parked for a person, while every other loan goes on. Nothing that left
//! the process is lost: an attempt recorded as `submitted` whose answer was not written is
//! turned `unknown` and queried, never sent again; claimed actions go back to pending.

use super::{Engine, EngineError};
use crate::store::{agenda, attempts, loans};
use chrono::{DateTime, Utc};
use sqlx::AnyConnection;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message a panic carried.
pub fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".into()
    }
}

/// Run a pure decision for one loan; a panic becomes its message.
///
/// `AssertUnwindSafe` is sound here because a caller that gets `Err` drops everything the
/// closure touched for that loan (its staged writes and its in-memory state) unwritten.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(p.as_ref()))
}

/// Park `loan` for a person: claims (attempts and notice actions) and refreshes skip it
/// until someone unparks it; its open attempts are still queried.
/// Returns whether it was parked now (it may have been parked already).
pub async fn park_loan(
    conn: &mut AnyConnection,
    loan: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, EngineError> {
    tracing::error!(loan, reason, "loan parked for a person; the run goes on");
    metrics::counter!("repayd_loans_parked_total").increment(1);
    let reason: String = reason.chars().take(500).collect();
    Ok(loans::park(conn, loan, &reason, now.timestamp_millis()).await?)
}

/// After a panic: this instance's `submitted` attempts of `loans` whose answers were not
/// written become `unknown`, queried on the next run (the channel may have debited).
pub async fn settle_in_flight(
    engine: &Engine,
    loans: &[String],
    now: DateTime<Utc>,
) -> Result<u64, EngineError> {
    let mut done = 0;
    for chunk in loans.chunks(5000) {
        let mut conn = engine.db.pool.acquire().await?;
        let at = now.timestamp_millis();
        done += attempts::interrupt_in_flight(&mut conn, chunk, &engine.cfg.owner, at).await?;
    }
    Ok(done)
}

/// Give this instance's claimed actions of `loans` back to the agenda (pending, no lease).
pub async fn requeue_claims(engine: &Engine, loans: &[String]) -> Result<u64, EngineError> {
    let mut done = 0;
    for chunk in loans.chunks(5000) {
        let mut conn = engine.db.pool.acquire().await?;
        done += agenda::requeue_claims(&mut conn, chunk, &engine.cfg.owner).await?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let e = catch(|| -> i32 { panic!("amount {} out of range", 5) }).unwrap_err();
        assert_eq!(e, "amount 5 out of range");
        let e = catch(|| -> i32 { panic!("static") }).unwrap_err();
        assert_eq!(e, "static");
    }
}
