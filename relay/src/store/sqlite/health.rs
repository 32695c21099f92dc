//! What the store has learnt of its own health from the work it did, for readiness: whether the last
//! group of writes failed with a fault (a full disk, an I/O error, a lock held elsewhere), and whether
//! any operation found the file corrupt. Readiness means "writes succeed", and a read-only probe
//! cannot tell that.

use std::sync::Mutex;

use crate::store::StoreError;

#[derive(Debug, Default)]
pub(super) struct Health(Mutex<State>);

#[derive(Debug, Default, Clone)]
enum State {
    #[default]
    Healthy,
    /// The last group of writes failed with a fault; the next one that commits clears it.
    WritesFailing,
    /// Corruption was found: never cleared (a corrupt file is not written again by this process).
    Corrupt(String),
}

/// What readiness must do, given the health.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Nothing known against the store: a read proves it answers.
    Read,
    /// Writes were failing: only a write can tell whether they succeed again.
    ProbeWrite,
    /// Not ready, and no probe can change that.
    Failed(StoreError),
}

impl Health {
    fn state(&self) -> State {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, next: impl FnOnce(&State) -> Option<State>) {
        if let Ok(mut state) = self.0.lock()
            && let Some(next) = next(&state)
        {
            *state = next;
        }
    }

    /// A group of writes finished: `Ok` if it committed, else the error that failed it (only faults
    /// count: a precondition that did not hold says nothing of the store).
    pub(super) fn writes(&self, outcome: Result<(), &StoreError>) {
        match outcome {
            Ok(()) => self.set(|s| matches!(s, State::WritesFailing).then_some(State::Healthy)),
            Err(error @ StoreError::Corrupt(_)) => self.read_failed(error),
            Err(error) if error.is_fault() => {
                self.set(|s| (!matches!(s, State::Corrupt(_))).then_some(State::WritesFailing));
            }
            Err(_) => {}
        }
    }

    /// A read failed: corruption is remembered for good; other faults of reads say nothing of writes.
    pub(super) fn read_failed(&self, error: &StoreError) {
        if let StoreError::Corrupt(detail) = error {
            let detail = detail.clone();
            self.set(move |_| Some(State::Corrupt(detail)));
        }
    }

    /// `Corrupt` if corruption was found: writes must not touch the file.
    pub(super) fn refuse_writes(&self) -> Option<StoreError> {
        match self.state() {
            State::Corrupt(detail) => Some(StoreError::Corrupt(detail)),
            _ => None,
        }
    }

    pub(super) fn verdict(&self) -> Verdict {
        match self.state() {
            State::Healthy => Verdict::Read,
            State::WritesFailing => Verdict::ProbeWrite,
            State::Corrupt(detail) => Verdict::Failed(StoreError::Corrupt(detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_fault_asks_for_a_probe_until_a_write_commits_and_corruption_stays() {
        let health = Health::default();
        assert!(matches!(health.verdict(), Verdict::Read));
        health.writes(Err(&StoreError::Unavailable("disk full".into())));
        assert!(matches!(health.verdict(), Verdict::ProbeWrite));
        assert!(health.refuse_writes().is_none());
        health.writes(Ok(()));
        assert!(matches!(health.verdict(), Verdict::Read));

        health.writes(Err(&StoreError::PreconditionFailed));
        health.read_failed(&StoreError::Busy("locked".into()));
        assert!(
            matches!(health.verdict(), Verdict::Read),
            "not a write fault"
        );
        health.read_failed(&StoreError::Corrupt("page 7".into()));
        health.writes(Ok(()));
        health.writes(Err(&StoreError::Busy("locked".into())));
        assert!(matches!(
            health.verdict(),
            Verdict::Failed(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            health.refuse_writes(),
            Some(StoreError::Corrupt(_))
        ));
    }
}
