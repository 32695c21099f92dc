//! The shared results of the ops endpoints (`health`): a store check and a metrics text made at most
//! once a second, shared by every caller in that second (a store check is made anew after any store
//! fault).

use std::time::{Duration, Instant};

/// How long a store check or a metrics text is reused.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// A value made at most once per [`REUSE_FOR`]: callers in that time get the same one, and callers
/// while it is being made wait for it rather than make their own. A value made in an earlier `epoch`
/// is reused only if `across_epochs` says it may be.
#[derive(Default)]
pub struct Recent<T> {
    slot: tokio::sync::Mutex<Option<(Instant, u64, T)>>,
}

impl<T: Clone> Recent<T> {
    pub async fn get(
        &self,
        epoch: u64,
        across_epochs: impl Fn(&T) -> bool,
        make: impl std::future::Future<Output = T>,
    ) -> T {
        let arrived = Instant::now();
        let mut slot = self.slot.lock().await;
        if let Some((made, made_in, value)) = slot.as_ref() {
            let made_while_waiting = *made >= arrived;
            let fresh = made.elapsed() < REUSE_FOR && (*made_in == epoch || across_epochs(value));
            if made_while_waiting || fresh {
                return value.clone();
            }
        }
        let value = make.await;
        *slot = Some((Instant::now(), epoch, value.clone()));
        value
    }
}

/// The shared results of the ops endpoints.
#[derive(Default)]
pub struct OpsCache {
    /// The store check: its latency in ms, and why it failed. Its epoch is the store's fault count: a
    /// passed check is never reused after a store failure (readiness sees a fault at the next probe); a
    /// failed one is, for its second (an outage costs the store one check a second, not one a probe).
    pub readiness: Recent<(f64, Option<String>)>,
    pub metrics: Recent<axum::body::Bytes>,
}
