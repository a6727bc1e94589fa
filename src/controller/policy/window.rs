//! Pure: whether a policy's window is open now, and when it opens next.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;

use crate::api::policy::Window;

/// Where `now` falls in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    Open,
    /// Closed; it opens next at this time.
    Closed(DateTime<Utc>),
}

/// Open when the schedule fired at some time in `[now − duration, now]`: the window that opened
/// then has not yet closed. A schedule that never fires again is closed for good (`Err`).
pub fn opening(window: &Window, now: DateTime<Utc>) -> Result<Opening, String> {
    let cron = schedule(&window.schedule)?;
    let length = window
        .duration
        .get()
        .map_err(|e| format!("spec.window.duration: {e}"))?;
    let length =
        TimeDelta::from_std(length).map_err(|_| "spec.window.duration is too long".to_string())?;
    let earliest = now - length;
    let fired = cron
        .find_next_occurrence(&earliest, true)
        .map_err(|e| format!("spec.window.schedule {:?}: {e}", window.schedule))?;
    if fired <= now {
        return Ok(Opening::Open);
    }
    let next = cron
        .find_next_occurrence(&now, false)
        .map_err(|e| format!("spec.window.schedule {:?}: {e}", window.schedule))?;
    Ok(Opening::Closed(next))
}

/// A five-field cron schedule (minute hour day-of-month month day-of-week), read in UTC.
fn schedule(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "spec.window.schedule {text:?} has {fields} fields; give five: minute hour day-of-month month day-of-week, e.g. \"0 22 * * *\""
        ));
    }
    Cron::from_str(text).map_err(|e| format!("spec.window.schedule {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DurationString;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn window(schedule: &str, duration: &str) -> Window {
        Window {
            schedule: schedule.into(),
            duration: DurationString::new(duration),
        }
    }

    #[test]
    fn a_nightly_window_is_open_from_its_start_for_its_duration() {
        let nightly = window("0 22 * * *", "6h");
        for (now, want) in [
            (
                "2026-12-07T21:59:00Z",
                Opening::Closed(at("2026-12-07T22:00:00Z")),
            ),
            ("2026-12-07T22:00:00Z", Opening::Open),
            ("2026-12-08T03:59:59Z", Opening::Open),
            (
                "2026-12-08T04:00:01Z",
                Opening::Closed(at("2026-12-08T22:00:00Z")),
            ),
        ] {
            assert_eq!(opening(&nightly, at(now)), Ok(want), "{now}");
        }
    }

    #[test]
    fn weekdays_only_and_bad_schedules_say_what_is_wrong() {
        let weekdays = window("0 9 * * 1-5", "1h");
        // 2026-12-05 is a Saturday: the next opening is Monday's.
        assert_eq!(
            opening(&weekdays, at("2026-12-05T09:30:00Z")),
            Ok(Opening::Closed(at("2026-12-07T09:00:00Z")))
        );
        let err = opening(&window("0 0 22 * * *", "1h"), at("2026-12-05T09:30:00Z")).unwrap_err();
        assert!(err.contains("6 fields"), "{err}");
        let err = opening(&window("61 * * * *", "1h"), at("2026-12-05T09:30:00Z")).unwrap_err();
        assert!(err.contains("spec.window.schedule"), "{err}");
    }
}
