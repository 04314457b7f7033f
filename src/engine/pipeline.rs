//! The due-action pipeline: batches overlap instead of running in strict rounds.
//!
//! One claimer takes batches off the agenda and holds their loans, one batch at a time, while
//! up to `pipeline_depth` earlier batches are in flight: loading their loans, recording their
//! attempts, waiting on the channels, writing results. So while batch N's results are
//! written, batch N+1 is loaded and its calls are out, and the channels (each behind its own
//! queue: the adapter's concurrency slots and TPS limiter) are never idle while work is due.
//!
//! Back-pressure: the claimer only claims when fewer than `pipeline_depth` batches are in
//! flight, so memory is bounded by depth × batch size, never by the portfolio. Every batch
//! keeps the invariants of a lone batch: its attempts are committed before their calls, its
//! loans are held by this instance alone (the claim skips held loans, so two batches of one
//! instance never share a loan), and its results are written in one transaction.

use super::phase::{self, Phase};
use super::pursue::FIRST_BATCH;
use super::pursue::{claim_due_actions, hold_batch, process_batch, rescue_dead_claims, HeldBatch};
use super::{Engine, EngineError, RunSummary};
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A run that finds only loans held elsewhere this many batches in a row stops trying; the
/// next tick looks again.
const IDLE_BATCHES: u32 = 3;

/// What the claimer knows between claims.
struct Claimer {
    size: usize,
    max: usize,
    /// The last claim found nothing due: wait for a batch to finish (releasing its loans,
    /// whose later actions may then be claimed) before claiming again.
    drained: bool,
    idle: u32,
}

impl Claimer {
    /// Batches start small and grow, so that a process killed a moment after it starts has
    /// still committed and sent its first attempts.
    fn new(max: usize) -> Self {
        let max = max.max(1);
        Claimer {
            size: FIRST_BATCH.min(max),
            max,
            drained: false,
            idle: 0,
        }
    }

    fn may_claim(&self, in_flight: usize, depth: usize) -> bool {
        !self.drained && self.idle < IDLE_BATCHES && in_flight < depth
    }

    /// A batch ended: count it idle when every action of it was held elsewhere.
    fn batch_ended(&mut self, claimed: u64, deferred: u64) {
        self.idle = if claimed > 0 && deferred == claimed {
            self.idle + 1
        } else {
            0
        };
        self.drained = false;
    }
}

/// One batch's end: what it did, and whether it failed.
struct BatchEnd {
    claimed: u64,
    deferred: u64,
    summary: RunSummary,
    result: Result<(), EngineError>,
}

async fn run_batch(engine: &Engine, held: HeldBatch, now: DateTime<Utc>) -> BatchEnd {
    let (claimed, deferred) = (held.claimed, held.deferred);
    let mut summary = RunSummary {
        actions_claimed: claimed,
        actions_deferred: deferred,
        ..RunSummary::default()
    };
    let result = process_batch(engine, held, now, &mut summary).await;
    BatchEnd {
        claimed,
        deferred,
        summary,
        result,
    }
}

/// Claim a batch and hold its loans; `None` when nothing is due.
async fn claim_batch(
    engine: &Engine,
    now: DateTime<Utc>,
    size: usize,
) -> Result<Option<HeldBatch>, EngineError> {
    let t = Instant::now();
    let claimed = claim_due_actions(engine, now, size).await?;
    phase::add(Phase::Claim, t);
    if claimed.is_empty() {
        return Ok(None);
    }
    let t = Instant::now();
    let held = hold_batch(engine, claimed).await?;
    phase::add(Phase::Hold, t);
    Ok(Some(held))
}

/// Claim and execute every action due at `now`, with up to `pipeline_depth` batches in
/// flight. An error stops the claiming; the batches in flight finish before it is returned.
pub async fn run_due_actions(
    engine: &Engine,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let (actions, holds) = rescue_dead_claims(engine).await?;
    if actions + holds > 0 {
        tracing::warn!(actions, holds, "took over the work of instances that died");
    }
    let depth = engine.cfg.pipeline_depth.max(1);
    let mut claimer = Claimer::new(engine.cfg.batch_size);
    let mut in_flight = FuturesUnordered::new();
    let mut failure: Option<EngineError> = None;
    let mut end = |done: BatchEnd, claimer: &mut Claimer, failure: &mut Option<EngineError>| {
        claimer.batch_ended(done.claimed, done.deferred);
        summary.merge(done.summary);
        if let Err(e) = done.result {
            failure.get_or_insert(e);
        }
    };
    loop {
        let stopping = failure.is_some() || engine.cfg.stop.load(Ordering::SeqCst);
        if !stopping && claimer.may_claim(in_flight.len(), depth) {
            let claim = claim_batch(engine, now, claimer.size);
            tokio::pin!(claim);
            // The batches in flight go on while the next one is claimed.
            let claimed = loop {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.next() => end(done, &mut claimer, &mut failure),
                    r = &mut claim => break r,
                }
            };
            match claimed {
                Err(e) => {
                    failure.get_or_insert(e);
                }
                Ok(None) => claimer.drained = true,
                Ok(Some(held)) => {
                    claimer.size = (claimer.size * 4).min(claimer.max);
                    in_flight.push(run_batch(engine, held, now));
                }
            }
            metrics::gauge!("repayd_pipeline_batches_in_flight").set(in_flight.len() as f64);
            continue;
        }
        match in_flight.next().await {
            Some(done) => end(done, &mut claimer, &mut failure),
            None => break,
        }
        metrics::gauge!("repayd_pipeline_batches_in_flight").set(in_flight.len() as f64);
    }
    metrics::gauge!("repayd_pipeline_batches_in_flight").set(0.0);
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimer_waits_for_room_and_for_a_batch_to_end_after_finding_nothing() {
        let mut c = Claimer::new(5000);
        assert_eq!(c.size, FIRST_BATCH);
        assert!(c.may_claim(0, 3));
        assert!(!c.may_claim(3, 3), "never more than the depth in flight");
        c.drained = true;
        assert!(!c.may_claim(0, 3), "nothing due: wait for a batch to end");
        c.batch_ended(10, 0);
        assert!(
            c.may_claim(0, 3),
            "a batch ended: its loans' later actions may be due"
        );
    }

    #[test]
    fn batches_held_elsewhere_three_times_in_a_row_stop_the_claiming() {
        let mut c = Claimer::new(5000);
        for _ in 0..IDLE_BATCHES {
            assert!(c.may_claim(0, 3));
            c.batch_ended(7, 7);
        }
        assert!(!c.may_claim(0, 3));
        let mut c = Claimer::new(5000);
        c.batch_ended(7, 7);
        c.batch_ended(7, 3);
        assert_eq!(c.idle, 0, "one batch with work of its own resets the count");
    }
}
