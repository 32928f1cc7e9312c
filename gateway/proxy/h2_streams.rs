//! HTTP/2 streams: run in their connection's task, and given the send timeout when their client
//! takes none of their response.
//!
//! hyper hands each stream of an HTTP/2 connection to an executor. Gatehouse's
//! ([`StreamExec`]) does not spawn it: the connection's task runs it ([`WithStreams`]), so a
//! request's stream is polled where its connection's state was just touched (h2's buffers and
//! stream store, the socket), and a response's data goes to the socket in the same turn of the
//! task, not after a wake-up of another task. At a thousand connections that state is not in the
//! cache when another task gets to it.
//!
//! The send timeout: a client that stops reading its socket is caught by
//! [`super::client_io::Quiet`]. Over HTTP/2 a client can also go on reading the socket while it
//! keeps a stream's flow-control window (or the connection's) shut: h2 then sends nothing more on
//! that stream, hyper stops asking the response body for data, and the stream, its buffers and
//! its upstream connection would be held for ever. nginx applies `send_timeout` to such a stream;
//! so does Gatehouse.
//!
//! How a stream is seen waiting on its client: the response body (see [`super::record`]) notes
//! in a thread-local whether its last poll handed hyper a data frame. hyper asks for the next
//! frame as soon as it has queued the last one in h2 (its `PipeToSendStream`), so a stream that
//! stays pending after its body handed a frame waits for the client's window, not for the
//! backend. Each stream runs in [`Watched`], which reads the note after every poll; a stream seen
//! waiting gets a [`Slot`] in its connection's [`Stalls`] (most streams never do), which the
//! connection's watch looks at with its idle timer. A stream that has waited the whole send
//! timeout is dropped: h2 resets it (RST_STREAM CANCEL) and frees what it queued, and its
//! upstream connection is closed.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;

use super::ConnInfo;
use super::client_io::{waited_for, waiting_mark};
use super::task_wakes::Wakes;

/// A stream's future as hyper hands it over, type-erased: hyper's stream type names its
/// executor, so a queue of them cannot be typed.
type StreamTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What an HTTP/2 connection's streams share with its task (kept in its [`ConnInfo`]).
#[derive(Default)]
pub struct ConnStreams {
    /// Streams hyper has started and the connection's task has not taken yet. Streams are only
    /// started while the connection's task polls (hyper's server or a stream), so nothing waits
    /// on this lock.
    started: Mutex<Vec<StreamTask>>,
    /// Set with every push to `started`: the task looks at the list only when there is something.
    any_started: AtomicBool,
    stalls: Stalls,
}

impl std::fmt::Debug for ConnStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnStreams")
            .field("stalls", &self.stalls)
            .finish_non_exhaustive()
    }
}

// === impl ConnStreams ===

impl ConnStreams {
    /// Resets the streams that have waited on their client for `timeout` at `now`, and says
    /// how many.
    pub fn reset_waiting(&self, now: Instant, timeout: Duration) -> usize {
        self.stalls.reset_waiting(now, timeout)
    }

    fn start(&self, stream: StreamTask) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stream);
        self.any_started.store(true, Ordering::Relaxed);
    }

    /// Moves the streams started since the last call into `into`; whether there were any.
    fn take_started(&self, into: &FuturesUnordered<StreamTask>) -> bool {
        if !self.any_started.swap(false, Ordering::Relaxed) {
            return false;
        }
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        for stream in started.drain(..) {
            into.push(stream);
        }
        true
    }
}

/// An HTTP/2 connection's server and its streams, driven in one task (see the module docs).
/// Ends when the server has ended and its last stream has.
pub struct WithStreams<C: Future> {
    conn: Pin<Box<C>>,
    info: Arc<ConnInfo>,
    streams: FuturesUnordered<StreamTask>,
    /// The server is polled only when it has woken (a stream's wake-up is not one).
    conn_wakes: Wakes,
    ended: Option<C::Output>,
}

// Nothing in it is pinned in place: the server is boxed, and `ended` is never polled.
impl<C: Future> Unpin for WithStreams<C> {}

impl<C: Future> WithStreams<C> {
    pub fn new(conn: Pin<Box<C>>, info: Arc<ConnInfo>) -> Self {
        Self {
            conn,
            info,
            streams: FuturesUnordered::new(),
            conn_wakes: Wakes::new(),
            ended: None,
        }
    }

    /// The connection's server, for a graceful shutdown: polled at the next poll, as what is
    /// done to it (a GOAWAY to send) wakes nothing.
    pub fn server(&mut self) -> Pin<&mut C> {
        self.conn_wakes.mark_woken();
        self.conn.as_mut()
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        // Twice at most: a stream that answered in this turn has queued data that the server
        // then writes at once; the server waking itself again waits for the task's next turn.
        for _ in 0..2 {
            if this.ended.is_none()
                && let Poll::Ready(ended) = this.conn_wakes.poll_if_woken(this.conn.as_mut(), cx)
            {
                this.ended = Some(ended);
            }
            this.info.h2_streams.take_started(&this.streams);
            loop {
                while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
                // A stream can start another (hyper's task for an upgraded CONNECT stream): it
                // is polled now, as a pushed stream wakes nothing.
                if !this.info.h2_streams.take_started(&this.streams) {
                    break;
                }
            }
            if this.ended.is_some() || !this.conn_wakes.woken() {
                break;
            }
        }
        match this.ended.take() {
            Some(ended) if this.streams.is_empty() => Poll::Ready(ended),
            ended => {
                this.ended = ended;
                Poll::Pending
            }
        }
    }
}

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

/// The streams of one HTTP/2 connection that have waited on their client at some point.
#[derive(Debug, Default)]
struct Stalls {
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

    fn reset_waiting(&self, now: Instant, timeout: Duration) -> usize {
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

/// hyper's executor for one HTTP/2 connection's streams: each is handed to the connection's
/// task ([`WithStreams`]), watched.
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
        self.conn.h2_streams.start(Box::pin(Watched {
            stream,
            conn: self.conn.clone(),
            slot: None,
        }));
    }
}

/// A stream as its connection's task runs it: the stream, and whether it waits on its client (see the module docs): it
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
        // A stream that panics ends alone (dropped, so h2 resets it), as it would in a task of its
        // own: its connection's other streams go on.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pin::new(&mut this.stream).poll(cx)
        }));
        match polled {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => return Poll::Ready(()),
            Err(_) => {
                tracing::error!(client = %this.conn.remote, "an HTTP/2 stream's handler panicked; stream reset");
                return Poll::Ready(());
            }
        }
        match (BODY.get(), &this.slot) {
            (BodyState::NotWaiting, Some(slot)) => slot.waiting_since.store(0, Ordering::Relaxed),
            (BodyState::NotWaiting, None) => {}
            (BodyState::HandedNow, _) => {
                let slot = this
                    .slot
                    .get_or_insert_with(|| this.conn.h2_streams.stalls.register());
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
        let stalls = &conn.h2_streams.stalls;
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
        let stalls = &conn.h2_streams.stalls;
        let mut stream = watched(&conn, false, 1);
        assert!(poll(&mut stream).is_pending());
        assert!(stream.slot.is_none());
        assert!(stalls.slots.lock().unwrap().is_empty());
    }

    /// A server that starts `starts` streams at its first poll, counts its polls, keeps the
    /// waker of its last poll, and ends at the poll numbered `ends_at` (if any).
    fn server(
        exec: StreamExec,
        mut starts: Vec<StreamTask>,
        polls: Arc<std::sync::atomic::AtomicUsize>,
        waker: Arc<Mutex<Option<std::task::Waker>>>,
        ends_at: Option<usize>,
    ) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
            for stream in starts.drain(..) {
                hyper::rt::Executor::execute(&exec, stream);
            }
            *waker.lock().unwrap() = Some(cx.waker().clone());
            if ends_at == Some(n) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn poll_with<C: Future>(with: &mut WithStreams<C>) -> Poll<C::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(with).poll(&mut cx)
    }

    #[test]
    fn streams_run_in_the_connection_task_which_ends_after_its_last_stream() {
        let conn = conn();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let stream: StreamTask = Box::pin({
            let done = done.clone();
            async move {
                let _ = rx.await;
                done.store(true, Ordering::Relaxed);
            }
        });
        let exec = StreamExec::new(conn.clone());
        let server = server(
            exec,
            vec![stream],
            polls.clone(),
            Default::default(),
            Some(1),
        );
        let mut with = WithStreams::new(Box::pin(server), conn.clone());
        assert!(
            poll_with(&mut with).is_pending(),
            "the server ended, its stream has not"
        );
        tx.send(()).unwrap();
        assert!(poll_with(&mut with).is_ready(), "its stream has ended too");
        assert!(done.load(Ordering::Relaxed));
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "an ended server is not polled again"
        );
    }

    #[test]
    fn a_stream_waking_is_not_the_server_waking_unless_the_stream_wakes_it() {
        let conn = conn();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server_waker: Arc<Mutex<Option<std::task::Waker>>> = Default::default();
        let (quiet_tx, quiet_rx) = tokio::sync::oneshot::channel::<()>();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
        let quiet: StreamTask = Box::pin(async move {
            let _ = quiet_rx.await;
            std::future::pending::<()>().await;
        });
        // Like a stream handing its response to h2, which wakes the connection to write it.
        let answers: StreamTask = Box::pin({
            let server_waker = server_waker.clone();
            async move {
                let _ = answer_rx.await;
                server_waker.lock().unwrap().take().unwrap().wake();
            }
        });
        let exec = StreamExec::new(conn.clone());
        let server = server(
            exec,
            vec![quiet, answers],
            polls.clone(),
            server_waker,
            None,
        );
        let mut with = WithStreams::new(Box::pin(server), conn.clone());
        assert!(poll_with(&mut with).is_pending());
        assert_eq!((polls.load(Ordering::Relaxed), with.streams.len()), (1, 2));
        quiet_tx.send(()).unwrap();
        assert!(poll_with(&mut with).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1, "only the stream woke");
        answer_tx.send(()).unwrap();
        assert!(poll_with(&mut with).is_pending());
        assert_eq!(
            (polls.load(Ordering::Relaxed), with.streams.len()),
            (2, 1),
            "the server, woken by the stream, is polled in the same turn"
        );
    }

    #[test]
    fn a_stream_that_panics_ends_alone() {
        let conn = conn();
        let panics: StreamTask = Box::pin(async { panic!("a handler's bug") });
        let goes_on: StreamTask = Box::pin(std::future::pending());
        let exec = StreamExec::new(conn.clone());
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = server(exec, vec![panics, goes_on], polls, Default::default(), None);
        let mut with = WithStreams::new(Box::pin(server), conn.clone());
        assert!(poll_with(&mut with).is_pending());
        assert_eq!(
            with.streams.len(),
            1,
            "the panicking stream ended, the other goes on"
        );
    }

    #[test]
    fn a_stream_started_by_a_stream_is_polled_in_the_same_turn() {
        let conn = conn();
        let exec = StreamExec::new(conn.clone());
        let polled = Arc::new(AtomicBool::new(false));
        let second: StreamTask = Box::pin({
            let polled = polled.clone();
            async move {
                polled.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
        });
        let first: StreamTask = Box::pin({
            let exec = exec.clone();
            async move {
                hyper::rt::Executor::execute(&exec, second);
                std::future::pending::<()>().await;
            }
        });
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = server(exec, vec![first], polls, Default::default(), None);
        let mut with = WithStreams::new(Box::pin(server), conn.clone());
        assert!(poll_with(&mut with).is_pending());
        assert!(
            polled.load(Ordering::Relaxed),
            "started and polled in the same turn"
        );
        assert_eq!(with.streams.len(), 2);
    }
}
