//! Futures polled beside a busier one in the same task, polled only when they have woken: a
//! connection's task is woken several times per request, and polling everything it holds at
//! every wake-up would cost more than the wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// A waker of its own for such a future: it notes that the future woke, and wakes the task.
struct WakeFlag {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

/// A [`WakeFlag`] and the waker that sets it.
pub struct Wakes {
    flag: Arc<WakeFlag>,
    waker: Waker,
}

// === impl Wakes ===

impl Wakes {
    /// Counts as woken until its first poll.
    pub fn new() -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: Default::default(),
        });
        let waker = Waker::from(flag.clone());
        Self { flag, waker }
    }

    /// Polls `inner` if it has woken since its last poll here; registers the task's waker.
    pub fn poll_if_woken<F: Future + ?Sized>(
        &self,
        inner: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        inner.poll(&mut Context::from_waker(&self.waker))
    }

    /// Has the future polled at the next poll, though it has not woken.
    pub fn mark_woken(&self) {
        self.flag.woken.store(true, Ordering::Relaxed);
    }

    /// `inner`, polled only when it has woken, and at its first poll.
    pub fn on_wake<'w, F: Future>(&'w self, inner: Pin<&'w mut F>) -> OnWake<'w, F> {
        self.mark_woken();
        OnWake { wakes: self, inner }
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// See [`Wakes::on_wake`].
pub struct OnWake<'w, F> {
    wakes: &'w Wakes,
    inner: Pin<&'w mut F>,
}

impl<F: Future> Future for OnWake<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let wakes = self.wakes;
        wakes.poll_if_woken(self.inner.as_mut(), cx)
    }
}
