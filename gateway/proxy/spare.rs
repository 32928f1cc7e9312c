//! Boxes for the phases' state of requests in flight, kept per thread for the next request.
//!
//! The state is several KiB (every upstream and policy exchange the phases may await). Boxed,
//! it is not part of every connection's task, parked ones too, nor copied whole on each move.
//! It is moved once, into a box taken here: the one this thread's last request used, still in
//! the cache. A box of each connection's own, with a thousand connections open, is out of the
//! cache by the time its next request comes; one allocated per request is fresh memory.
//! Callgrind's cache simulation (4 MiB last level), 1,024 connections: HTTP/1.1 139 last-level
//! misses per request with a box per connection, 93-100 with boxes from here; h2c (one stream
//! per connection) 352-356 with a `Box::pin` per request, 311-316 with boxes from here.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A box for one request's state; empty between requests.
type InFlight<F> = Box<Pin<Box<Option<F>>>>;

/// Empty boxes kept per thread (a few KiB each), past which returned ones are freed.
const KEPT: usize = 64;

thread_local! {
    // Type-erased so one list serves any state type; a box of another type is never handed out.
    static SPARE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// The empty box this thread returned last, if it kept one of this type.
fn take<F: 'static>() -> Option<InFlight<F>> {
    SPARE
        .with_borrow_mut(Vec::pop)
        .and_then(|spare| spare.downcast().ok())
}

/// Keeps an emptied box for the next request on this thread.
fn give_back<F: 'static>(in_flight: InFlight<F>) {
    debug_assert!(in_flight.is_none(), "a box is given back empty");
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            spare.push(in_flight);
        }
    });
}

/// The future `make` builds, moved into a box from this thread's spares (a new box when it
/// has none of this type). The box goes back to them when the future finishes or is dropped.
pub fn spared<F: Future + 'static>(make: impl FnOnce() -> F) -> Spared<F> {
    let in_flight = match take() {
        Some(mut kept) => {
            kept.set(Some(make()));
            kept
        }
        // A new box made with the future in it: made empty first, the whole (uninitialised)
        // state would be copied into it twice.
        None => Box::new(Box::pin(Some(make()))),
    };
    Spared(Some(in_flight))
}

/// A future in a spare box (see [`spared`]).
pub struct Spared<F: 'static>(Option<InFlight<F>>);

impl<F: Future + 'static> Future for Spared<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let slot = self
            .get_mut()
            .0
            .as_mut()
            .expect("the box is held until drop");
        let running = Pin::as_mut(slot).as_pin_mut();
        let out = ready!(running.expect("not polled after it finished").poll(cx));
        slot.set(None);
        Poll::Ready(out)
    }
}

impl<F: 'static> Drop for Spared<F> {
    fn drop(&mut self) {
        if let Some(mut in_flight) = self.0.take() {
            // A request cut off before it finished: its state goes now.
            in_flight.set(None);
            give_back(in_flight);
        }
    }
}

/// Boxes kept by this thread now.
#[cfg(test)]
pub fn kept() -> usize {
    SPARE.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address<F>(in_flight: &InFlight<F>) -> *const Option<F> {
        let state: &Option<F> = in_flight;
        state
    }

    fn new_box<F>() -> InFlight<F> {
        Box::new(Box::pin(None))
    }

    #[test]
    fn the_box_given_back_last_is_the_next_one_taken() {
        let first = new_box::<[u64; 64]>();
        let second = new_box::<[u64; 64]>();
        let (a, b) = (address(&first), address(&second));
        give_back(first);
        give_back(second);
        assert_eq!(kept(), 2);
        assert_eq!(
            address(&take::<[u64; 64]>().unwrap()),
            b,
            "last in, first out"
        );
        assert_eq!(address(&take::<[u64; 64]>().unwrap()), a);
        assert!(
            take::<[u64; 64]>().is_none(),
            "the boxes taken are out of the list"
        );
    }

    #[test]
    fn a_box_of_another_state_type_is_never_handed_out() {
        give_back(new_box::<u32>());
        assert_eq!(kept(), 1);
        assert!(take::<String>().is_none());
        assert_eq!(kept(), 0, "the mismatched box was dropped, not kept");
    }

    #[tokio::test]
    async fn a_future_runs_in_a_spare_box_which_is_kept_after() {
        let before = kept();
        let answer = spared(|| async { 6 * 7 }).await;
        assert_eq!(answer, 42);
        assert_eq!(kept(), before + 1);
    }

    #[test]
    fn a_future_dropped_unfinished_drops_its_state_and_gives_the_box_back() {
        let state = std::sync::Arc::new(());
        let held = state.clone();
        let waiting = spared(move || async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(waiting);
        assert_eq!(
            std::sync::Arc::strong_count(&state),
            1,
            "its state was dropped"
        );
        assert_eq!(kept(), 1);
    }

    #[test]
    fn at_most_kept_boxes_stay_with_the_thread() {
        let boxes: Vec<InFlight<[u8; 512]>> = (0..KEPT + 10).map(|_| new_box()).collect();
        for in_flight in boxes {
            give_back(in_flight);
        }
        assert_eq!(kept(), KEPT);
    }
}
