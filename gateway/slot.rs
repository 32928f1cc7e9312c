//! A place the data plane keeps its own state for an object of the pure core (a route's metric
//! handles, a static route's file server) without the core knowing its type.

use std::any::Any;
use std::fmt;
use std::sync::OnceLock;

/// A place for one value of a type the core does not know, set once.
#[derive(Default)]
pub struct Slot(OnceLock<Box<dyn Any + Send + Sync>>);

// === impl Slot ===

impl Slot {
    /// The value, if one of type `T` was set.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get()?.downcast_ref()
    }

    /// Sets the value unless one is set already; returns whether it was.
    pub fn set<T: Any + Send + Sync>(&self, value: T) -> bool {
        self.0.set(Box::new(value)).is_ok()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Slot(set)"
        } else {
            "Slot(empty)"
        })
    }
}
