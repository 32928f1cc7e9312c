//! Coalescing bursts of changes into one rebuild without starving a steady storm.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What the Kubernetes source uses: 30 ms of quiet (the objects of one `kubectl apply` reach
/// the watches within a few milliseconds of each other), at most 1 s after the first change.
pub const DEBOUNCE: Debounce = Debounce {
    quiet: Duration::from_millis(30),
    cap: Duration::from_secs(1),
};

/// Waits for a burst of changes to settle.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// A burst is over once no change came for this long.
    pub quiet: Duration,
    /// Longest wait after the first change, however many keep coming.
    pub cap: Duration,
}

// === impl Debounce ===

impl Debounce {
    /// Call after the first change of a burst: returns once `changes` has been quiet for
    /// `quiet`, or `cap` after the call, whichever comes first.
    pub async fn settle(&self, changes: &Notify) {
        let deadline = Instant::now() + self.cap;
        loop {
            let quiet_until = (Instant::now() + self.quiet).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(quiet_until) => return,
                _ = changes.notified() => {
                    if Instant::now() >= deadline {
                        return;
                    }
                }
            }
        }
    }
}
