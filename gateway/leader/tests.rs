use std::time::Duration;

use super::{Step, next_step};

const LEASE: Duration = Duration::from_secs(15);

#[test]
fn holder_renews_its_own_lease() {
    let step = next_step(Some("a"), "a", Duration::from_secs(60), LEASE);
    assert_eq!(step, Step::Renew);
}

#[test]
fn free_lease_is_taken_at_once() {
    assert_eq!(next_step(None, "b", Duration::ZERO, LEASE), Step::TakeOver);
    assert_eq!(
        next_step(Some(""), "b", Duration::ZERO, LEASE),
        Step::TakeOver
    );
}

#[test]
fn live_lease_of_another_is_left_alone() {
    let step = next_step(Some("a"), "b", Duration::from_secs(14), LEASE);
    assert_eq!(step, Step::Wait);
}

#[test]
fn lease_unchanged_for_its_duration_is_taken_over() {
    assert_eq!(next_step(Some("a"), "b", LEASE, LEASE), Step::TakeOver);
    let step = next_step(Some("a"), "b", Duration::from_secs(40), LEASE);
    assert_eq!(step, Step::TakeOver);
}
