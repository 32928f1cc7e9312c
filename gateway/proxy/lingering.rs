//! Upstream work an HTTP/2 connection's reset streams left behind: an exchange (or a connect)
//! that goes on in the background after its client went away, so its connection can be used
//! again ([`super::connector`]).
//!
//! A client that resets a stream frees its place under the stream limit at once, while the
//! stream's upstream exchange goes on. Left at that, a client resetting streams as fast as it
//! opens them has more exchanges going upstream at once than one that waits for its answers,
//! and costs the backends a connection for each (CVE-2023-44487). The HTTP/2 server counts this
//! work against the stream limit until it ends, as Go's server counts a reset stream's handler
//! until it returns: a stream opened past the limit waits to start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use futures_util::task::AtomicWaker;

/// One connection's left-behind work still going on.
#[derive(Debug, Default)]
pub struct Lingering {
    count: AtomicUsize,
    /// The connection's task, while it waits for this count to fall.
    task: AtomicWaker,
}

// === impl Lingering ===

impl Lingering {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Has `waker` woken when a piece of work ends. Called before reading
    /// [`Lingering::count`], so an end between the two is not missed.
    pub fn watch(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// Counts one piece of work until the token is dropped.
    pub fn left_behind(self: &Arc<Self>) -> LeftBehind {
        self.count.fetch_add(1, Ordering::AcqRel);
        LeftBehind(self.clone())
    }
}

/// One piece of left-behind work; dropped when it ends (after its connection went back to the
/// pool, so the stream it lets start finds it there).
#[derive(Debug)]
pub struct LeftBehind(Arc<Lingering>);

impl Drop for LeftBehind {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountWakes;

    #[test]
    fn work_is_counted_while_its_token_lives_and_its_end_wakes_the_watcher() {
        let lingering = Arc::new(Lingering::default());
        let (wakes, waker) = CountWakes::waker();
        let one = lingering.left_behind();
        let two = lingering.left_behind();
        assert_eq!(lingering.count(), 2);
        lingering.watch(&waker);
        drop(one);
        assert_eq!(lingering.count(), 1);
        assert_eq!(wakes.count(), 1);
        // Woken once per watch: unwatched, an end wakes nobody.
        drop(two);
        assert_eq!(lingering.count(), 0);
        assert_eq!(wakes.count(), 1);
    }
}
