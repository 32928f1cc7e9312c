//! HTTP/2 streams held by their client: the send timeout.
//!
//! A client that stops reading its socket is caught by [`super::client_io::Quiet`]. Over
//! HTTP/2 a client can also go on reading the socket while it keeps a stream's flow-control
//! window (or the connection's) shut: nothing more can be sent on that stream, and the stream,
//! its buffers and its upstream connection would be held for ever. nginx applies `send_timeout`
//! to such a stream; so does Gatehouse.
//!
//! The HTTP/2 server ([`super::client_h2`]) knows when a stream has data its client's window
//! does not let out: it gives that stream a [`Slot`] in its connection's [`ConnStreams`] (most
//! streams never need one) and marks it waiting. The connection's watch looks at the slots with
//! its idle timer; a stream that has waited the whole send timeout is marked reset and woken,
//! and the server resets it (RST_STREAM CANCEL), dropping what it queued and its upstream
//! connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use super::client_io::{waited_for, waiting_mark};

/// The streams of one HTTP/2 connection that have waited on their client at some point (kept
/// in its [`super::ConnInfo`]).
#[derive(Debug, Default)]
pub struct ConnStreams {
    slots: Mutex<Vec<Weak<Slot>>>,
}

// === impl ConnStreams ===

impl ConnStreams {
    /// A slot for a stream seen waiting on its client.
    pub fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Ended streams' entries go before the list grows.
        if slots.len() == slots.capacity() {
            slots.retain(|slot| slot.strong_count() > 0);
        }
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Marks reset (and wakes) the streams that have waited on their client for `timeout` at
    /// `now`, and says how many.
    pub fn reset_waiting(&self, now: Instant, timeout: Duration) -> usize {
        let mut reset = 0;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|slot| {
            let Some(slot) = slot.upgrade() else {
                return false;
            };
            let since = slot.waiting_since.load(Ordering::Relaxed);
            if waited_for(since, now).is_some_and(|waited| waited >= timeout)
                && !slot.reset.swap(true, Ordering::Relaxed)
            {
                slot.waker.wake();
                reset += 1;
            }
            true
        });
        reset
    }
}

/// A stream's watch by the send timeout.
#[derive(Debug, Default)]
pub struct Slot {
    /// Since when the stream has waited (a mark of [`waiting_mark`]); 0 while it does not.
    waiting_since: AtomicU64,
    /// Set by the connection's watch: the stream is to be reset.
    reset: AtomicBool,
    waker: AtomicWaker,
}

// === impl Slot ===

impl Slot {
    /// The stream waits on its client (from now, unless it already did); `waker` polls it.
    pub fn wait(&self, waker: &Waker) {
        self.waker.register(waker);
        if self.waiting_since.load(Ordering::Relaxed) == 0 {
            self.waiting_since.store(waiting_mark(), Ordering::Relaxed);
        }
    }

    /// The client took some of the stream's response.
    pub fn stop_waiting(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// The stream has waited the send timeout: it is to be reset.
    pub fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountWakes;

    #[test]
    fn a_stream_waiting_on_its_client_past_the_timeout_is_reset_once_and_one_that_got_going_is_not()
    {
        let streams = ConnStreams::default();
        let timeout = Duration::from_secs(60);
        let (wakes, waker) = CountWakes::waker();
        let waiting = streams.register();
        let going = streams.register();
        waiting.wait(&waker);
        going.wait(&waker);
        // Waiting again does not restart its clock.
        waiting.wait(&waker);
        going.stop_waiting();
        assert_eq!(
            streams.reset_waiting(Instant::now(), timeout),
            0,
            "too soon"
        );
        let later = Instant::now() + timeout;
        assert_eq!(streams.reset_waiting(later, timeout), 1);
        assert!(waiting.is_reset());
        assert!(!going.is_reset());
        assert_eq!(wakes.count(), 1, "the reset stream is woken");
        assert_eq!(streams.reset_waiting(later, timeout), 0, "reset once");
        // Ended streams' entries go.
        drop(waiting);
        drop(going);
        streams.reset_waiting(later, timeout);
        assert!(streams.slots.lock().unwrap().is_empty());
    }
}
