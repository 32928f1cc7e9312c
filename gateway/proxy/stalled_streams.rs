//! The send timeout for HTTP/2 streams whose client takes none of their response.
//!
//! A client that stops reading its socket is caught by [`super::client_io::Quiet`]. Over HTTP/2
//! a client can also go on reading the socket while it keeps a stream's flow-control window (or
//! the connection's) shut: h2 then sends nothing more on that stream, hyper stops asking the
//! response body for data, and the stream, its buffers and its upstream connection would be held
//! for ever. nginx applies `send_timeout` to such a stream; so does Gatehouse.
//!
//! How a stream is seen waiting on its client: the response body (see [`super::record`]) notes
//! in a thread-local whether its last poll handed hyper a data frame. hyper asks for the next
//! frame as soon as it has queued the last one in h2 (its `PipeToSendStream`), so a stream that
//! stays pending after its body handed a frame waits for the client's window, not for the
//! backend. Each stream's task runs in [`Watched`], which reads the note after every poll; a
//! stream seen waiting gets a [`Slot`] in its connection's [`Stalls`] (most streams never do),
//! which the connection's watch looks at with its idle timer. A stream that has waited the whole
//! send timeout is dropped: h2 resets it (RST_STREAM CANCEL) and frees what it queued, and its
//! upstream connection is closed.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use super::ConnInfo;
use super::client_io::{waited_for, waiting_mark};

/// What the response body of the stream being polled last did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// Asked for a frame and had none yet, ended, or was not asked at all.
    NotWaiting,
    /// Handed a data frame in an earlier poll of its stream and has not been asked since (its
    /// slot says since when).
    Waiting,
    /// Handed a data frame in this poll of its stream.
    HandedNow,
}

thread_local! {
    static BODY: Cell<BodyState> = const { Cell::new(BodyState::NotWaiting) };
}

/// Notes what a response body's poll gave hyper: `handed` when it was a data frame. Outside an
/// HTTP/2 stream's task (HTTP/1.1) the note is never read.
pub fn note_body_poll(handed: bool) {
    BODY.set(if handed {
        BodyState::HandedNow
    } else {
        BodyState::NotWaiting
    });
}

/// A stream seen waiting on its client.
#[derive(Debug, Default)]
struct Slot {
    /// Since when the stream has waited (a mark of [`waiting_mark`]); 0 while it does not.
    waiting_since: AtomicU64,
    /// Set by the connection's watch: the stream is to end at its next poll.
    reset: AtomicBool,
    waker: AtomicWaker,
}

/// The streams of one HTTP/2 connection that have waited on their client at some point (kept in
/// its [`ConnInfo`]).
#[derive(Debug, Default)]
pub struct Stalls {
    slots: Mutex<Vec<Weak<Slot>>>,
}

// === impl Stalls ===

impl Stalls {
    fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Ended streams' entries go before the list grows.
        if slots.len() == slots.capacity() {
            slots.retain(|slot| slot.strong_count() > 0);
        }
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Resets the streams that have waited on their client for `timeout` at `now`, and says
    /// how many.
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

/// hyper's executor for one HTTP/2 connection's streams: each runs in its own task, watched,
/// with the connection's [`ConnInfo`] (where its [`Stalls`] are kept).
#[derive(Clone, Debug)]
pub struct StreamExec {
    conn: Arc<ConnInfo>,
}

impl StreamExec {
    pub fn new(conn: Arc<ConnInfo>) -> Self {
        Self { conn }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Unpin + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(Watched {
            stream,
            conn: self.conn.clone(),
            slot: None,
        });
    }
}

/// A stream's task: the stream, and whether it waits on its client (see the module docs): it
/// does while its slot has a `waiting_since`.
pub struct Watched<F> {
    stream: F,
    conn: Arc<ConnInfo>,
    slot: Option<Arc<Slot>>,
}

impl<F: Future<Output = ()> + Unpin> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(slot) = &this.slot
            && slot.reset.load(Ordering::Relaxed)
        {
            // Ending the task drops the stream, which resets it.
            return Poll::Ready(());
        }
        let waiting = this
            .slot
            .as_ref()
            .is_some_and(|slot| slot.waiting_since.load(Ordering::Relaxed) != 0);
        BODY.set(if waiting {
            BodyState::Waiting
        } else {
            BodyState::NotWaiting
        });
        if Pin::new(&mut this.stream).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match (BODY.get(), &this.slot) {
            (BodyState::NotWaiting, Some(slot)) => slot.waiting_since.store(0, Ordering::Relaxed),
            (BodyState::NotWaiting, None) => {}
            (BodyState::HandedNow, _) => {
                let slot = this
                    .slot
                    .get_or_insert_with(|| this.conn.stalled_streams.register());
                slot.waker.register(cx.waker());
                slot.waiting_since.store(waiting_mark(), Ordering::Relaxed);
            }
            (BodyState::Waiting, slot) => {
                if let Some(slot) = slot {
                    slot.waker.register(cx.waker());
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose body (`hands_first`) hands a frame at its first poll and then, like hyper
    /// waiting for the client's window, is pending without asking the body again; polls from
    /// `asks_again_from` on ask the body again and find nothing yet (waiting on the backend).
    struct Stream {
        polls: usize,
        hands_first: bool,
        asks_again_from: usize,
    }

    impl Future for Stream {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls == 1 && self.hands_first {
                note_body_poll(true);
            } else if self.polls >= self.asks_again_from {
                note_body_poll(false);
            }
            Poll::Pending
        }
    }

    fn conn() -> Arc<ConnInfo> {
        let settings = crate::proxy::server::ServerSettings::default();
        let port = http::HeaderValue::from_static("80");
        Arc::new(ConnInfo::new(
            "127.0.0.1:40000".parse().unwrap(),
            "http",
            port,
            &settings,
        ))
    }

    fn watched(conn: &Arc<ConnInfo>, hands_first: bool, asks_again_from: usize) -> Watched<Stream> {
        Watched {
            stream: Stream {
                polls: 0,
                hands_first,
                asks_again_from,
            },
            conn: conn.clone(),
            slot: None,
        }
    }

    fn poll(stream: &mut Watched<Stream>) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(stream).poll(&mut cx)
    }

    #[test]
    fn a_stream_waiting_on_its_client_past_the_timeout_ends_and_one_asking_its_body_does_not() {
        let conn = conn();
        let stalls = &conn.stalled_streams;
        let timeout = Duration::from_secs(60);
        let mut waiting = watched(&conn, true, usize::MAX);
        let mut asking = watched(&conn, true, 2);
        for stream in [&mut waiting, &mut asking] {
            assert!(poll(stream).is_pending());
            // Woken for something else (a ping, the connection): still not asked for data.
            assert!(poll(stream).is_pending());
        }
        assert_eq!(stalls.reset_waiting(Instant::now(), timeout), 0, "too soon");
        let later = Instant::now() + timeout;
        assert_eq!(stalls.reset_waiting(later, timeout), 1);
        assert_eq!(poll(&mut waiting), Poll::Ready(()), "reset: the task ends");
        assert!(poll(&mut asking).is_pending(), "its body was asked again");
        assert_eq!(stalls.reset_waiting(later, timeout), 0, "reset once");
        // An ended stream's entry goes.
        drop(waiting);
        drop(asking);
        stalls.reset_waiting(later, timeout);
        assert!(stalls.slots.lock().unwrap().is_empty());
    }

    #[test]
    fn a_stream_never_seen_waiting_takes_no_slot() {
        let conn = conn();
        let stalls = &conn.stalled_streams;
        let mut stream = watched(&conn, false, 1);
        assert!(poll(&mut stream).is_pending());
        assert!(stream.slot.is_none());
        assert!(stalls.slots.lock().unwrap().is_empty());
    }
}
