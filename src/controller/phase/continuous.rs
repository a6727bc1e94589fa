//! Succeeded, with `spec.continuous`: when to ask the registry again whether the source moved,
//! and whether a spec change starts a run now. The check itself (one manifest HEAD) and the
//! run it may start are the reconcile's.

use std::time::Duration;

use crate::api::{Continuous, Phase};

/// What a Succeeded workflow does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Not continuous, or suspended: nothing until the spec changes.
    Off,
    /// The spec changed since the last run started: run again now.
    SpecChanged,
    /// Ask the registry now.
    CheckNow,
    /// Ask after this long.
    CheckIn(Duration),
}

/// What the verdict needs to know of the workflow.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    pub continuous: Option<&'a Continuous>,
    /// `metadata.generation`, and the one the last run started with.
    pub generation: Option<i64>,
    pub run_generation: Option<i64>,
    /// Since the last check (or, before the first, since the last run ended).
    pub since_last: Duration,
    /// A stable per-workflow number (from its uid) that spreads the checks of many workflows.
    pub spread: u64,
}

/// The verdict on a Succeeded workflow.
pub fn refresh(s: Schedule) -> Refresh {
    let Some(continuous) = s.continuous.filter(|c| !c.suspend) else {
        return Refresh::Off;
    };
    if let (Some(now), Some(then)) = (s.generation, s.run_generation)
        && now > then
    {
        return Refresh::SpecChanged;
    }
    let interval = continuous
        .check_interval
        .get()
        .unwrap_or(Duration::from_secs(3600));
    let due = interval + spread(interval, s.spread);
    match due.checked_sub(s.since_last).filter(|left| !left.is_zero()) {
        Some(left) => Refresh::CheckIn(left),
        None => Refresh::CheckNow,
    }
}

/// What a failure ends: the workflow, a continuous run, or only the profile-only attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// The first run failed: the workflow is Failed.
    Fail,
    /// A continuous run failed for good: the last good result comes back.
    RollBack,
    /// A continuous run's image, hardened from the stored profile, failed verification: the
    /// new source may use files the profile never saw, so observe it once, then try again.
    ObserveAgain,
}

/// The verdict on a failure in `phase` of a run that replaces a good result (`continuous`) and
/// has or has not already observed again.
pub fn after_failure(phase: Phase, continuous: bool, observed_again: bool) -> AfterFailure {
    match (continuous, phase, observed_again) {
        (false, _, _) => AfterFailure::Fail,
        (true, Phase::Verifying, false) => AfterFailure::ObserveAgain,
        (true, _, _) => AfterFailure::RollBack,
    }
}

/// Up to a tenth of `interval`, chosen by `seed`: many workflows created together do not all
/// ask the registry in the same second.
fn spread(interval: Duration, seed: u64) -> Duration {
    interval / 10 * (seed % 1000) as u32 / 1000
}

/// A stable number from a workflow's uid, for [`Schedule::spread`].
pub fn spread_seed(uid: &str) -> u64 {
    // FNV-1a: stable across releases and platforms, unlike std's hasher.
    uid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DurationString;

    fn continuous(interval: &str, suspend: bool) -> Continuous {
        Continuous {
            check_interval: DurationString::new(interval),
            suspend,
        }
    }

    fn schedule(c: Option<&Continuous>, generations: (i64, i64), since: u64) -> Schedule<'_> {
        Schedule {
            continuous: c,
            generation: Some(generations.0),
            run_generation: Some(generations.1),
            since_last: Duration::from_secs(since),
            spread: 0,
        }
    }

    #[test]
    fn a_continuous_workflow_checks_every_interval_and_runs_again_on_a_spec_change() {
        let on = continuous("60s", false);
        let off = continuous("60s", true);
        let cases = [
            (None, (1, 1), 999, Refresh::Off),
            (Some(&off), (1, 1), 999, Refresh::Off),
            (Some(&off), (2, 1), 999, Refresh::Off),
            (Some(&on), (2, 1), 0, Refresh::SpecChanged),
            (
                Some(&on),
                (1, 1),
                0,
                Refresh::CheckIn(Duration::from_secs(60)),
            ),
            (
                Some(&on),
                (1, 1),
                45,
                Refresh::CheckIn(Duration::from_secs(15)),
            ),
            (Some(&on), (1, 1), 60, Refresh::CheckNow),
            (Some(&on), (1, 1), 600, Refresh::CheckNow),
        ];
        for (i, (c, generations, since, want)) in cases.into_iter().enumerate() {
            assert_eq!(refresh(schedule(c, generations, since)), want, "case {i}");
        }
    }

    #[test]
    fn a_refresh_that_fails_verification_observes_once_then_rolls_back() {
        use AfterFailure::*;
        let cases = [
            (Phase::Verifying, false, false, Fail),
            (Phase::Hardening, false, false, Fail),
            (Phase::Verifying, true, false, ObserveAgain),
            (Phase::Verifying, true, true, RollBack),
            (Phase::Hardening, true, false, RollBack),
            (Phase::Observing, true, true, RollBack),
            (Phase::Collecting, true, true, RollBack),
        ];
        for (phase, continuous, again, want) in cases {
            assert_eq!(
                after_failure(phase, continuous, again),
                want,
                "{phase} {continuous} {again}"
            );
        }
    }

    #[test]
    fn checks_are_spread_by_up_to_a_tenth_of_the_interval() {
        let on = continuous("100s", false);
        let mut s = schedule(Some(&on), (1, 1), 100);
        s.spread = 999;
        assert_eq!(refresh(s), Refresh::CheckIn(Duration::from_millis(9990)));
        let seeds: std::collections::BTreeSet<u64> = ["uid-a", "uid-b", "uid-c"]
            .iter()
            .map(|u| spread_seed(u) % 1000)
            .collect();
        assert_eq!(seeds.len(), 3, "different workflows, different offsets");
        assert_eq!(spread_seed("uid-a"), spread_seed("uid-a"), "stable");
    }
}
