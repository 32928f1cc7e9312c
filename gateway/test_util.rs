//! Helpers shared by the unit tests of several modules.

/// YAML builders for the objects Gatehouse reads, shared with the integration tests.
#[path = "../tests/support/yaml.rs"]
pub mod yaml;

/// A loopback address whose connects hang, shared with the integration tests.
#[path = "../tests/support/blackhole.rs"]
pub mod blackhole;
