//! Where a run's time goes, per stage, for `repayd bench` and the `/metrics` page. Stages of
//! different batches overlap in the pipeline, so their busy times add up to more than the
//! run's wall time; what matters is which stage dominates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A stage of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Resolve,
    Refresh,
    Claim,
    Hold,
    Load,
    Decide,
    Record,
    Submit,
    Flush,
    Release,
    Dispatch,
}

pub const PHASES: [Phase; 11] = [
    Phase::Resolve,
    Phase::Refresh,
    Phase::Claim,
    Phase::Hold,
    Phase::Load,
    Phase::Decide,
    Phase::Record,
    Phase::Submit,
    Phase::Flush,
    Phase::Release,
    Phase::Dispatch,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Refresh => "refresh",
            Phase::Claim => "claim",
            Phase::Hold => "hold",
            Phase::Load => "load",
            Phase::Decide => "decide",
            Phase::Record => "record",
            Phase::Submit => "submit",
            Phase::Flush => "flush",
            Phase::Release => "release",
            Phase::Dispatch => "dispatch",
        }
    }
}

static BUSY_MICROS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

/// Add `since`'s elapsed time to `phase`.
pub fn add(phase: Phase, since: Instant) {
    let us = since.elapsed().as_micros() as u64;
    BUSY_MICROS[phase as usize].fetch_add(us, Ordering::Relaxed);
}

/// Busy seconds per stage since the process started (or the last `reset`).
pub fn busy_seconds() -> Vec<(&'static str, f64)> {
    PHASES
        .iter()
        .map(|p| {
            let us = BUSY_MICROS[*p as usize].load(Ordering::Relaxed);
            (p.as_str(), us as f64 / 1e6)
        })
        .collect()
}

pub fn reset() {
    for c in &BUSY_MICROS {
        c.store(0, Ordering::Relaxed);
    }
}
