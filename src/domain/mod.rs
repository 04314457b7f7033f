//! The pure core: money, schedules, ladder, allocation, penalties, delinquency and local time.
//! No I/O here; everything is deterministic given its inputs (including the clock).

pub mod allocation;
pub mod delinquency;
pub mod ladder;
pub mod localtime;
pub mod money;
pub mod schedule;
pub mod types;

pub use allocation::*;
pub use delinquency::*;
pub use ladder::*;
pub use localtime::*;
pub use money::*;
pub use schedule::*;
pub use types::*;
