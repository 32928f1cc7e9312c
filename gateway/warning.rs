//! Warnings about objects that could not be used: made by translate() and the sources, shown
//! in logs, metrics, `/routes` and (in a cluster) as Events.

use std::fmt;

use serde::Serialize;

use crate::objects::ObjectKey;

/// A problem with one object, shown in logs, metrics, `/routes`, and (in a cluster) as an Event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Warning {
    /// Kind of the object, e.g. `Ingress`.
    pub kind: &'static str,
    pub object: ObjectKey,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.reason)
    }
}
