use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::watches::Retry;
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

#[test]
fn order_secret_names_are_stable_valid_and_distinct() {
    use crate::objects::ObjectKey;
    let a = super::order_secret_name(&ObjectKey::new("default", "web-tls"));
    let b = super::order_secret_name(&ObjectKey::new("default", "api-tls"));
    assert!(
        a.starts_with("gatehouse-acme-order-") && a.len() == 37,
        "{a}"
    );
    assert_eq!(
        a,
        super::order_secret_name(&ObjectKey::new("default", "web-tls"))
    );
    assert_ne!(a, b);
    assert!(
        a.len() <= 63
            && a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    );
}

#[test]
fn challenge_mirror_follows_the_answers_secret() {
    use k8s_openapi::api::core::v1::Secret;

    use crate::objects::{Object, Objects};
    use crate::shared::ChallengeAnswers;

    let challenges = ChallengeAnswers::default();
    let objects = |data: serde_json::Value| {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": super::CHALLENGES_SECRET, "namespace": "gh"},
            "data": data,
        }))
        .expect("secret");
        let mut objects = Objects::default();
        objects.insert(Object::Secret(Arc::new(secret)));
        objects
    };
    let mut mirror = super::ChallengeMirror::default();
    // "YQ==" is base64 of "a".
    mirror.sync(
        &challenges,
        &objects(serde_json::json!({"http01.tok1": "YQ==", "http01.bad/token": "YQ=="})),
        "gh",
    );
    assert_eq!(challenges.http01.http01("tok1").as_deref(), Some("a"));
    assert_eq!(challenges.http01.http01("bad/token"), None);
    // An answer put up by this replica's own order is not the mirror's to take down.
    challenges.http01.add_http01("own", "mine");
    mirror.sync(&challenges, &objects(serde_json::json!({})), "gh");
    assert_eq!(challenges.http01.http01("tok1"), None);
    assert_eq!(challenges.http01.http01("own").as_deref(), Some("mine"));
}

fn gone() -> kube::runtime::watcher::Error {
    let status =
        kube::core::Status::failure("too old resource version: 5 (9)", "Expired").with_code(410);
    kube::runtime::watcher::Error::WatchError(Box::new(status))
}

fn unavailable() -> kube::runtime::watcher::Error {
    let status =
        kube::core::Status::failure("the server is down", "ServiceUnavailable").with_code(503);
    kube::runtime::watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status)))
}

#[test]
fn watch_backoff_grows_while_failing_and_starts_again_once_healthy() {
    let mut retry = Retry::default();
    let now = Instant::now();
    let waits: Vec<Duration> = (0..6).map(|_| retry.after(&unavailable(), now)).collect();
    // 0.8 s doubling, each with up to as much again of jitter.
    for (i, wait) in waits.iter().enumerate() {
        let base = Duration::from_millis(800) * 2u32.pow(i as u32);
        assert!(*wait >= base && *wait <= base * 2, "wait {i}: {wait:?}");
    }
    retry.healthy();
    let first = retry.after(&unavailable(), now);
    assert!(first <= Duration::from_millis(1600), "{first:?}");
}

#[test]
fn watch_lists_again_at_once_after_410_but_not_in_a_loop() {
    let mut retry = Retry::default();
    let now = Instant::now();
    for _ in 0..5 {
        retry.after(&unavailable(), now);
    }
    // However grown the backoff, a 410 re-lists at once...
    assert_eq!(retry.after(&gone(), now), Duration::ZERO);
    // ...but a second one right after waits like any other error.
    assert!(retry.after(&gone(), now + Duration::from_secs(1)) >= Duration::from_secs(12));
    assert_eq!(
        retry.after(&gone(), now + Duration::from_secs(10)),
        Duration::ZERO
    );
}
