//! How many shards each counter has. A table starts with [`COUNTER_SHARDS`]; `relay count-shards N`
//! raises it by writing N on shard 0 of each counter (`counter_shards`). Raising is safe at any moment:
//! readers sum every shard up to the number they find on shard 0, which they read with the others, so a
//! new shard (starting at zero) never goes uncounted, even by a process that has not heard of it; writers
//! learn the number from the counts they read, and from shard 0 at most every [`REFRESH`], and until then
//! keep adding to the shards they know, which are still summed. An eventually consistent count read
//! may see shard 0 as it was a moment ago and leave out a just-raised shard's first adds: late by the
//! same lag as every such read, never wrong once the lag has passed. Lowering is refused: each dropped
//! shard's value would first have to be folded into a kept one.
//!
//! Must never: let a reader sum fewer shards than shard 0 names.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::schema::{COUNTER_SHARDS, Counter};

/// How often a writer looks for a raised shard count when no count read told it.
pub(super) const REFRESH: Duration = Duration::from_secs(300);

/// The shard counts this process knows (never less than a table has had: they only grow).
pub(super) struct Shards {
    known: [AtomicUsize; 2],
    refreshed: Mutex<Option<Instant>>,
}

impl Default for Shards {
    fn default() -> Self {
        Self {
            known: [
                AtomicUsize::new(COUNTER_SHARDS),
                AtomicUsize::new(COUNTER_SHARDS),
            ],
            refreshed: Mutex::new(None),
        }
    }
}

impl Shards {
    pub(super) fn known(&self, counter: Counter) -> usize {
        self.known[counter.index()].load(Ordering::Relaxed)
    }

    /// Record that `counter` has `shards` (ignored when it is not more than known).
    pub(super) fn learn(&self, counter: Counter, shards: usize) {
        self.known[counter.index()].fetch_max(shards, Ordering::Relaxed);
    }

    /// Whether a writer should read shard 0 again; marks the refresh as started.
    pub(super) fn refresh_due(&self) -> bool {
        let mut refreshed = self
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = refreshed.is_none_or(|at| at.elapsed() >= REFRESH);
        if due {
            *refreshed = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_only_grow_and_a_refresh_is_due_once_per_period() {
        let shards = Shards::default();
        assert_eq!(shards.known(Counter::Messages), COUNTER_SHARDS);
        shards.learn(Counter::Messages, 64);
        shards.learn(Counter::Messages, 32);
        assert_eq!(shards.known(Counter::Messages), 64, "never shrinks");
        assert_eq!(shards.known(Counter::Log), COUNTER_SHARDS, "per counter");
        assert!(shards.refresh_due());
        assert!(!shards.refresh_due(), "not again within the period");
    }
}
