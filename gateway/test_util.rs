//! Helpers shared by the unit tests of several modules.

/// YAML builders for the objects Gatehouse reads, shared with the integration tests.
#[path = "../tests/support/yaml.rs"]
pub mod yaml;

/// A loopback address whose connects hang, shared with the integration tests.
#[path = "../tests/support/blackhole.rs"]
pub mod blackhole;

/// A waker that counts how often it was woken.
#[derive(Default)]
pub struct CountWakes(std::sync::atomic::AtomicUsize);

impl CountWakes {
    /// A counter and a waker that counts into it.
    pub fn waker() -> (std::sync::Arc<Self>, std::task::Waker) {
        let counter = std::sync::Arc::new(Self::default());
        (counter.clone(), std::task::Waker::from(counter))
    }

    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::task::Wake for CountWakes {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
