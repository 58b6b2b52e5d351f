//! What the loop remembers of each family between polls, and when a family
//! is due: its tables moved, a held-back sample came inside the window, its
//! last pass failed, or a read-back is owed.

use std::time::{Duration, Instant};

use crate::model::{Family, FUTURE_WINDOW_MS};
use crate::pass::{Outcome, Unconfirmed};
use crate::source::ChangeTokens;

/// What the loop remembers of a family between polls.
#[derive(Debug, Default, Clone)]
pub(super) struct FamilyClock {
    /// Change tokens read just before the last successful pass.
    pub(super) tokens: Option<ChangeTokens>,
    /// The earliest held-back sample of the last pass.
    pub(super) next_held_back: Option<i64>,
    /// The last pass failed.
    pub(super) failed: bool,
    /// When to run a pass to compare series it could not read back yet
    /// (written too recently by another pass or process).
    pub(super) verify_at: Option<Instant>,
    /// What the last pass wrote, read back at each poll until
    /// VictoriaMetrics shows it.
    pub(super) outstanding: Option<Outstanding>,
    /// Consecutive passes that had to repair what VictoriaMetrics held: the
    /// next read-back waits twice as long after each.
    pub(super) repair_streak: u32,
}

/// Series a pass wrote, and until when VictoriaMetrics may take to show them
/// before a pass compares them one by one and repairs.
#[derive(Debug, Clone)]
pub(super) struct Outstanding {
    pub(super) written: Unconfirmed,
    pub(super) deadline: Instant,
}

/// When to read a family back after a pass: never when the pass proved the
/// family exact; else once VictoriaMetrics shows the pass's writes, waiting
/// longer after each pass that had to repair again, at most `cap` (the full
/// reconciliation's interval).
pub(super) fn follow_up(
    o: &Outcome,
    repair_streak: u32,
    delay: Duration,
    cap: Duration,
) -> Option<Duration> {
    if !(o.wrote() || o.repaired > 0 || o.unverified > 0) {
        return None;
    }
    Some(crate::pass::read_back_wait(delay, repair_streak).min(cap.max(delay)))
}

impl FamilyClock {
    pub(super) fn is_due(&self, family: Family, tokens: &ChangeTokens, now_ms: i64) -> bool {
        if self.failed || self.verify_at.is_some_and(|t| t <= Instant::now()) {
            return true;
        }
        let Some(seen) = &self.tokens else {
            return true;
        };
        if family
            .spec()
            .reads
            .iter()
            .any(|&t| seen[t as usize] != tokens[t as usize])
        {
            return true;
        }
        self.next_held_back
            .is_some_and(|ts| ts <= now_ms.saturating_add(FUTURE_WINDOW_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_due_when_one_of_its_tables_moved() {
        let tokens: ChangeTokens = [
            Some((1, 10)),
            Some((2, 0)),
            Some((3, 5)),
            Some((4, 1)),
            None,
            Some((6, 2)),
            Some((7, 3)),
            None,
        ];
        let clock = FamilyClock {
            tokens: Some(tokens),
            ..Default::default()
        };
        assert!(!clock.is_due(Family::Tempo, &tokens, 0));
        let mut moved = tokens;
        moved[0] = Some((1, 11));
        assert!(clock.is_due(Family::Consumption, &moved, 0));
        assert!(clock.is_due(Family::Tempo, &moved, 0));
        assert!(!clock.is_due(Family::Production, &moved, 0));
        assert!(!clock.is_due(Family::Ecowatt, &moved, 0));
        // A colour or a contract changed: the consumption family's tariff
        // periods read them.
        let mut colour = tokens;
        colour[2] = Some((3, 6));
        assert!(clock.is_due(Family::Consumption, &colour, 0));
        assert!(!clock.is_due(Family::Production, &colour, 0));
        let mut contract = tokens;
        contract[6] = Some((7, 4));
        assert!(clock.is_due(Family::Consumption, &contract, 0));
        assert!(!clock.is_due(Family::Tempo, &contract, 0));
        // The pdls table appeared.
        let mut pdls = tokens;
        pdls[7] = Some((8, 0));
        assert!(clock.is_due(Family::Consumption, &pdls, 0));
    }

    #[test]
    fn a_held_back_sample_makes_its_family_due_once_inside_the_window() {
        let tokens: ChangeTokens = [None; crate::model::TABLES];
        let clock = FamilyClock {
            tokens: Some(tokens),
            next_held_back: Some(FUTURE_WINDOW_MS + 10),
            ..Default::default()
        };
        assert!(!clock.is_due(Family::Ecowatt, &tokens, 9));
        assert!(clock.is_due(Family::Ecowatt, &tokens, 10));
    }

    #[test]
    fn a_failed_or_never_run_family_is_due() {
        let tokens: ChangeTokens = [None; crate::model::TABLES];
        assert!(FamilyClock::default().is_due(Family::Consumption, &tokens, 0));
        let clock = FamilyClock {
            tokens: Some(tokens),
            failed: true,
            ..Default::default()
        };
        assert!(clock.is_due(Family::Consumption, &tokens, 0));
    }

    #[test]
    fn a_family_is_read_back_after_it_wrote_and_later_after_each_repair() {
        let delay = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let quiet = Outcome {
            read_back: true,
            ..Default::default()
        };
        assert_eq!(follow_up(&quiet, 0, delay, cap), None);
        let wrote = Outcome {
            lines: 5,
            ..quiet.clone()
        };
        assert_eq!(
            follow_up(&wrote, 0, delay, cap),
            Some(Duration::from_millis(2500))
        );
        let repaired = Outcome {
            repaired: 1,
            ..quiet.clone()
        };
        assert_eq!(
            follow_up(&repaired, 2, delay, cap),
            Some(Duration::from_secs(10))
        );
        assert_eq!(follow_up(&repaired, 20, delay, cap), Some(cap));
        let clock = FamilyClock {
            tokens: Some([None; crate::model::TABLES]),
            verify_at: Some(Instant::now()),
            ..Default::default()
        };
        assert!(clock.is_due(Family::Ecowatt, &[None; crate::model::TABLES], 0));
    }
}
