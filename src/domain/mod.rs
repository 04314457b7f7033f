//! The pure core: money, schedules, the ladder, allocation, penalties and delinquency, local
//! time, policies and planning, loan state and pursuit decisions, the ledger's entries,
//! notices, import formats, statements, reconciliation matching, and the ports the engine
//! talks through (channels, notice sinks). No I/O here; everything is deterministic given
//! its inputs (including the clock), and nothing here imports another layer.

pub mod actor;
pub mod allocation;
pub mod channel;
pub mod delinquency;
pub mod import;
pub mod json_field;
pub mod ladder;
pub mod ledger;
pub mod loan;
pub mod localtime;
pub mod matching;
pub mod money;
pub mod notice;
pub mod pii;
pub mod planner;
pub mod policy;
pub mod promise;
pub mod pursuit;
pub mod schedule;
pub mod secret;
pub mod simulation;
pub mod statement;
pub mod status;
pub mod types;

pub use allocation::*;
pub use delinquency::*;
pub use ladder::*;
pub use localtime::*;
pub use money::*;
pub use schedule::*;
pub use types::*;
