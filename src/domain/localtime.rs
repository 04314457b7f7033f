//! Local time: instants are stored in UTC, but due dates, attempt slots and quiet hours are
//! the borrower's local wall-clock times. Each conversion is done at the instant concerned,
//! never with an offset frozen earlier, so it stays right across DST changes.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The earliest calendar date repayd accepts anywhere (due dates, statements, `--now`).
pub const MIN_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// The latest calendar date repayd accepts anywhere. Beyond it a schedule is a typo, and
/// far-off dates would make day counts (penalties, days past due) meaningless.
pub const MAX_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2200, 12, 31) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// `d` itself when it lies within [`MIN_DATE`]..=[`MAX_DATE`]; otherwise a message for the
/// field that holds it.
pub fn check_date(d: NaiveDate) -> Result<NaiveDate, String> {
    if (MIN_DATE..=MAX_DATE).contains(&d) {
        Ok(d)
    } else {
        Err(format!("{d} is outside {MIN_DATE}..{MAX_DATE}"))
    }
}

/// The UTC instant of a local wall-clock time.
///
/// A time skipped by a spring-forward gap maps to the first instant after the gap (02:30 →
/// 03:00), so a slot in the gap still runs that day. A time repeated by a fall-back maps to
/// the earlier instant, so a slot runs once, at its first occurrence.
pub fn local_to_utc(date: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local = date.and_time(time);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => gap_end(local, tz),
    }
}

/// The local calendar date of an instant in `tz`.
pub fn local_date(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The start of `d` in UTC, in epoch milliseconds (filters taking a plain date as UTC).
pub fn utc_day_start_ms(d: NaiveDate) -> i64 {
    d.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis()
}

/// The first instant whose local time is at or after `local` (which lies in a gap).
/// Binary search over ±2 days of UTC instants: wide enough for any offset, narrow enough
/// that only the one transition lies between the bounds.
fn gap_end(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    let guess = local.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 2 * DAY_SECS, guess + 2 * DAY_SECS);
    // Invariant: local(lo) < local <= local(hi). Transitions fall on whole seconds.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if at_second(mid).with_timezone(&tz).naive_local() >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    at_second(hi)
}

const DAY_SECS: i64 = 86_400;

fn at_second(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(ts, 0).expect("timestamp within a few days of a valid date")
}

/// A daily window of local time in which no contact is made, `[start, end)`.
/// It wraps midnight when `end < start` (22:00–08:00); `start == end` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietWindow {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// Local date on which this window, containing local time `t` on `date`, ends.
    fn end_date(&self, date: NaiveDate, t: NaiveTime) -> NaiveDate {
        if self.start > self.end && t >= self.start {
            date.succ_opt().unwrap_or(date)
        } else {
            date
        }
    }
}

/// Whether `at` falls inside the quiet window, in `tz` local time.
pub fn in_quiet(at: DateTime<Utc>, tz: Tz, w: &QuietWindow) -> bool {
    w.contains(at.with_timezone(&tz).time())
}

/// The first instant at or after `at` outside every window: `at` itself if it is outside,
/// else the local end of the windows holding it (following chained windows).
///
/// If the windows cover the whole day there is no such instant; then the end reached after
/// going round once is returned, and callers should reject such configurations.
pub fn quiet_release(at: DateTime<Utc>, tz: Tz, windows: &[QuietWindow]) -> DateTime<Utc> {
    let mut now = at;
    for _ in 0..=2 * windows.len() {
        match next_end(now, tz, windows) {
            Some(end) => now = end,
            None => return now,
        }
    }
    now
}

/// The latest end among the windows holding `now`, or None if `now` is outside all of them.
fn next_end(now: DateTime<Utc>, tz: Tz, windows: &[QuietWindow]) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz);
    let (date, t) = (local.date_naive(), local.time());
    windows
        .iter()
        .filter(|w| w.contains(t))
        .map(|w| local_not_before(w.end_date(date, t), w.end, tz, now))
        .max()
}

/// Like [`local_to_utc`], but of a repeated (fall-back) time take the earliest occurrence
/// that is not before `floor`: a window entered during the repeated hour ends at its second
/// occurrence, not at one already in the past.
fn local_not_before(
    date: NaiveDate,
    time: NaiveTime,
    tz: Tz,
    floor: DateTime<Utc>,
) -> DateTime<Utc> {
    match tz.from_local_datetime(&date.and_time(time)) {
        LocalResult::Ambiguous(a, b) => {
            let (early, late) = (a.min(b).with_timezone(&Utc), a.max(b).with_timezone(&Utc));
            if early >= floor {
                early
            } else {
                late
            }
        }
        _ => local_to_utc(date, time, tz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use chrono_tz::{America::New_York, Asia::Shanghai, Europe::London};
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(y: i32, mo: u32, day: u32, h: u32, mi: u32) -> DateTime<Utc> {
        d(y, mo, day).and_time(t(h, mi)).and_utc()
    }

    fn night() -> QuietWindow {
        QuietWindow {
            start: t(22, 0),
            end: t(8, 0),
        }
    }

    #[test]
    fn new_york_spring_forward() {
        assert_eq!(
            local_to_utc(d(2026, 3, 7), t(8, 0), New_York),
            utc(2026, 3, 7, 13, 0)
        );
        assert_eq!(
            local_to_utc(d(2026, 3, 8), t(8, 0), New_York),
            utc(2026, 3, 8, 12, 0)
        );
        // 02:30 does not exist that day: the first valid instant is 03:00 EDT = 07:00 UTC.
        assert_eq!(
            local_to_utc(d(2026, 3, 8), t(2, 30), New_York),
            utc(2026, 3, 8, 7, 0)
        );
        assert_eq!(
            local_to_utc(d(2026, 3, 8), t(2, 0), New_York),
            utc(2026, 3, 8, 7, 0)
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 01:30 happens twice on 2026-11-01: EDT (05:30 UTC) then EST (06:30 UTC).
        assert_eq!(
            local_to_utc(d(2026, 11, 1), t(1, 30), New_York),
            utc(2026, 11, 1, 5, 30)
        );
        assert_eq!(
            local_to_utc(d(2026, 11, 1), t(8, 0), New_York),
            utc(2026, 11, 1, 13, 0)
        );
        assert_eq!(
            local_date(utc(2026, 11, 1, 3, 59), New_York),
            d(2026, 10, 31)
        );
        assert_eq!(local_date(utc(2026, 11, 1, 4, 0), New_York), d(2026, 11, 1));
    }

    #[test]
    fn london() {
        assert_eq!(
            local_to_utc(d(2026, 1, 15), t(9, 0), London),
            utc(2026, 1, 15, 9, 0)
        );
        assert_eq!(
            local_to_utc(d(2026, 7, 15), t(9, 0), London),
            utc(2026, 7, 15, 8, 0)
        );
        // Spring forward 2026-03-29 01:00 GMT -> 02:00 BST.
        assert_eq!(
            local_to_utc(d(2026, 3, 29), t(1, 30), London),
            utc(2026, 3, 29, 1, 0)
        );
        // Fall back 2026-10-25: 01:30 BST (00:30 UTC) comes first.
        assert_eq!(
            local_to_utc(d(2026, 10, 25), t(1, 30), London),
            utc(2026, 10, 25, 0, 30)
        );
        assert_eq!(local_date(utc(2026, 7, 15, 23, 30), London), d(2026, 7, 16));
    }

    #[test]
    fn shanghai_night_is_held_to_morning() {
        let at = local_to_utc(d(2026, 5, 1), t(23, 0), Shanghai);
        assert_eq!(at, utc(2026, 5, 1, 15, 0));
        assert!(in_quiet(at, Shanghai, &night()));
        assert_eq!(
            quiet_release(at, Shanghai, &[night()]),
            utc(2026, 5, 2, 0, 0)
        );
        let early = local_to_utc(d(2026, 5, 2), t(7, 59), Shanghai);
        assert_eq!(
            quiet_release(early, Shanghai, &[night()]),
            utc(2026, 5, 2, 0, 0)
        );
        let day = local_to_utc(d(2026, 5, 2), t(8, 0), Shanghai);
        assert!(!in_quiet(day, Shanghai, &night()));
        assert_eq!(quiet_release(day, Shanghai, &[night()]), day);
    }

    #[test]
    fn windows_edge_cases() {
        let empty = QuietWindow {
            start: t(9, 0),
            end: t(9, 0),
        };
        let at = utc(2026, 5, 1, 1, 0);
        assert!(!in_quiet(at, Shanghai, &empty));
        assert_eq!(quiet_release(at, Shanghai, &[empty]), at);
        assert_eq!(quiet_release(at, Shanghai, &[]), at);
        let lunch = QuietWindow {
            start: t(12, 0),
            end: t(13, 0),
        };
        assert!(in_quiet(
            local_to_utc(d(2026, 5, 1), t(12, 0), Shanghai),
            Shanghai,
            &lunch
        ));
        assert!(!in_quiet(
            local_to_utc(d(2026, 5, 1), t(13, 0), Shanghai),
            Shanghai,
            &lunch
        ));
    }

    #[test]
    fn chained_windows() {
        let morning = QuietWindow {
            start: t(7, 30),
            end: t(9, 0),
        };
        let at = local_to_utc(d(2026, 5, 1), t(23, 0), Shanghai);
        let got = quiet_release(at, Shanghai, &[night(), morning]);
        assert_eq!(got, local_to_utc(d(2026, 5, 2), t(9, 0), Shanghai));
    }

    #[test]
    fn release_across_dst() {
        // Quiet until 08:00 local on the spring-forward day: 08:00 EDT = 12:00 UTC.
        let at = utc(2026, 3, 8, 3, 0); // 22:00 EST on Mar 7
        assert_eq!(
            quiet_release(at, New_York, &[night()]),
            utc(2026, 3, 8, 12, 0)
        );
        // A window ending in the gap releases at the gap's end.
        let w = QuietWindow {
            start: t(1, 0),
            end: t(2, 30),
        };
        assert_eq!(
            quiet_release(utc(2026, 3, 8, 6, 30), New_York, &[w]),
            utc(2026, 3, 8, 7, 0)
        );
        // Entered during the repeated hour (01:10 EST): ends at the second 01:30, not the first.
        let w = QuietWindow {
            start: t(1, 0),
            end: t(1, 30),
        };
        assert_eq!(
            quiet_release(utc(2026, 11, 1, 6, 10), New_York, &[w]),
            utc(2026, 11, 1, 6, 30)
        );
        assert_eq!(
            quiet_release(utc(2026, 11, 1, 5, 10), New_York, &[w]),
            utc(2026, 11, 1, 5, 30)
        );
    }

    #[test]
    fn whole_day_cover_terminates() {
        let a = QuietWindow {
            start: t(0, 0),
            end: t(12, 0),
        };
        let b = QuietWindow {
            start: t(12, 0),
            end: t(0, 0),
        };
        let at = utc(2026, 5, 1, 1, 0);
        assert!(quiet_release(at, Shanghai, &[a, b]) > at);
    }

    fn zone() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(New_York),
            Just(Shanghai),
            Just(London),
            Just(chrono_tz::Australia::Lord_Howe)
        ]
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2024-01-01 .. 2029-01-01, minute resolution.
        (0i64..(5 * 366 * 24 * 60)).prop_map(|m| utc(2024, 1, 1, 0, 0) + Duration::minutes(m))
    }

    fn window() -> impl Strategy<Value = QuietWindow> {
        (0u32..24, 0u32..60, 0u32..24, 0u32..60).prop_map(|(a, b, c, e)| QuietWindow {
            start: t(a, b),
            end: t(c, e),
        })
    }

    proptest! {
        #[test]
        fn local_round_trip(at in instant(), tz in zone()) {
            let local = at.with_timezone(&tz);
            let back = local_to_utc(local.date_naive(), local.time(), tz);
            // Equal, or the earlier occurrence of a repeated local time.
            prop_assert!(back <= at && at - back <= Duration::hours(1));
            prop_assert_eq!(back.with_timezone(&tz).naive_local(), local.naive_local());
        }

        #[test]
        fn gap_times_land_just_after(date_off in 0i64..1800, h in 0u32..24, m in 0u32..60, tz in zone()) {
            let date = d(2024, 1, 1) + Duration::days(date_off);
            let got = local_to_utc(date, t(h, m), tz);
            // Never before the requested wall time, and at most the gap (≤ 1h) after it.
            let local = got.with_timezone(&tz).naive_local();
            let wanted = date.and_time(t(h, m));
            prop_assert!(local >= wanted && local - wanted <= Duration::hours(1));
        }

        #[test]
        fn release_is_outside_and_not_earlier(
            at in instant(), tz in zone(),
            ws in proptest::collection::vec(window(), 0..3),
        ) {
            let got = quiet_release(at, tz, &ws);
            prop_assert!(got >= at);
            let covered = ws.iter().any(|w| in_quiet(got, tz, w));
            // Only a set of windows covering the whole day may leave it inside.
            if covered {
                prop_assert!(ws.len() >= 2);
            }
            if !ws.iter().any(|w| in_quiet(at, tz, w)) {
                prop_assert_eq!(got, at);
            }
        }
    }
}
