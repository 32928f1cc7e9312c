//! HTTP/2 served by Gatehouse itself (work in progress on this branch).

pub mod frame;
pub mod hpack;
