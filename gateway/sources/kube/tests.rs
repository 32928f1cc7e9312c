use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Debounce, Settings};

const TEST: Debounce = Debounce {
    quiet: Duration::from_millis(40),
    cap: Duration::from_millis(200),
};

#[tokio::test]
async fn debounce_returns_after_quiet_time() {
    let changes = Notify::new();
    let start = Instant::now();
    TEST.settle(&changes).await;
    let took = start.elapsed();
    assert!(took >= TEST.quiet && took < TEST.cap, "took {took:?}");
}

#[tokio::test]
async fn debounce_storm_is_cut_at_the_cap() {
    let changes = Arc::new(Notify::new());
    let storm = {
        let changes = changes.clone();
        tokio::spawn(async move {
            loop {
                changes.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let start = Instant::now();
    TEST.settle(&changes).await;
    let took = start.elapsed();
    storm.abort();
    assert!(took >= TEST.cap && took < TEST.cap * 2, "took {took:?}");
}

#[test]
fn lease_renew_must_be_shorter_than_duration() {
    let ok = Settings::default();
    assert!(ok.validate().is_ok());
    let bad = Settings {
        lease_renew: Duration::from_secs(15),
        ..Settings::default()
    };
    assert!(bad.validate().unwrap_err().contains("--lease-renew"));
}

#[test]
fn watch_namespace_must_be_a_name() {
    let bad = Settings {
        watch_namespaces: vec!["Team A".into()],
        ..Settings::default()
    };
    assert!(bad.validate().unwrap_err().contains("--watch-namespace"));
}
