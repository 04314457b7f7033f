//! The daemon's clock: the wall clock, optionally shifted and sped up, so a demo can live in
//! the sample portfolio's dates and watch days go by in minutes. Runs, the API and the
//! dashboard all read the same clock ([`now`]); tests pass explicit instants instead.

use chrono::{DateTime, Duration, Utc};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: DateTime<Utc>,
    offset: Duration,
    speed: i32,
}

impl Clock {
    /// `offset_secs` ahead of the wall clock at start; then `speed` seconds pass per second.
    pub fn new(offset_secs: i64, speed: u32) -> Self {
        Clock {
            origin: Utc::now(),
            offset: Duration::seconds(offset_secs),
            speed: speed.clamp(1, 1_000_000) as i32,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = Utc::now() - self.origin;
        self.origin + self.offset + elapsed * self.speed
    }
}

static PROCESS_CLOCK: OnceLock<Clock> = OnceLock::new();

/// Make `clock` the process's clock (once; `repayd serve` does it at start).
pub fn install(clock: Clock) {
    let _ = PROCESS_CLOCK.set(clock);
}

/// The process's clock, or the wall clock if none was installed.
pub fn now() -> DateTime<Utc> {
    PROCESS_CLOCK.get().map_or_else(Utc::now, Clock::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_and_sped_up() {
        let c = Clock::new(86_400, 3600);
        let now = c.now();
        let ahead = now - Utc::now();
        assert!(ahead >= Duration::seconds(86_399), "{ahead}");
        assert!(ahead < Duration::seconds(86_400 + 3600), "{ahead}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // 20 ms of wall time is at least 72 s of clock time at 3600x.
        assert!(c.now() - now >= Duration::seconds(72));
        let plain = Clock::new(0, 1);
        assert!((plain.now() - Utc::now()).num_milliseconds().abs() < 1000);
    }
}
