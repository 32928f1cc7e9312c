//! The upstream phase against real sockets on loopback, in process.

use std::sync::Arc;

use super::*;
use crate::metrics::Metrics;
use crate::objects::ObjectKey;
use crate::proxy::ConnInfo;
use crate::proxy::connector::tests::origin;
use crate::proxy::server::ServerSettings;
use http::{HeaderValue, Request};

fn backend(endpoints: Vec<SocketAddr>) -> ServiceBackend {
    ServiceBackend::new(
        ObjectKey::new("default", "web"),
        "80".into(),
        UpstreamProtocol::Http,
        endpoints,
    )
}

fn get() -> Request<BoxBody> {
    Request::get("/")
        .header("host", "app.test")
        .body(crate::body::empty())
        .unwrap()
}

fn record(req: &Request<BoxBody>) -> Record {
    let conn = Arc::new(ConnInfo::new(
        ([127, 0, 0, 1], 40000).into(),
        "http",
        HeaderValue::from_static("80"),
        &ServerSettings::default(),
    ));
    Record::start(&Arc::new(Metrics::new()), &conn, req, false)
}

#[tokio::test]
async fn an_endpoint_whose_connects_are_all_busy_is_passed_over_but_not_marked_down() {
    let (slow, _guard) = crate::test_util::blackhole::blackhole_addr();
    let (healthy, _) = origin(Duration::ZERO, false).await;
    let upstreams = Arc::new(Upstreams::new(UpstreamSettings {
        connect_timeout: Duration::from_millis(200),
        max_connecting: 1,
        ..UpstreamSettings::default()
    }));
    // One request holds the slow endpoint's only connect slot for a second.
    let holder = {
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let mut out = Outgoing::new(get(), headers::Overrides::default());
            let sent = upstreams
                .connector
                .send_timed(slow, &mut out, Duration::from_secs(1), None, None)
                .await;
            sent.err().map(|(err, _)| err.kind)
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The next request waits its connect timeout for that slot, then goes to the other
    // endpoint: answered, and the slow endpoint is still a candidate for everyone else.
    let both = backend(vec![slow, healthy]);
    let req = get();
    let mut rec = record(&req);
    let answer = send_own(&upstreams, &both, req, &mut rec).await;
    match answer {
        Ok(Answer::Upstream(resp)) => assert_eq!(resp.status(), 200),
        Ok(_) => panic!("not an upstream answer"),
        Err(err) => panic!("failed: {err}"),
    }
    assert_eq!(rec.upstream, Some(healthy));
    assert_eq!((rec.retries, rec.connect_failures), (1, 0));
    assert!(
        !upstreams.is_down(slow),
        "marked down for Gatehouse's own bound"
    );

    // With no other endpoint, the client is told the upstream is busy (503), not failed.
    let only = backend(vec![slow]);
    let req = get();
    let mut rec = record(&req);
    let err = send_own(&upstreams, &only, req, &mut rec)
        .await
        .err()
        .expect("no connect slot came free");
    assert_eq!(err.kind, ErrorKind::ConnectBusy);
    assert_eq!(err.response().status(), 503);
    assert!(!upstreams.is_down(slow));

    // A connect that was tried and failed does mark it down.
    assert_eq!(holder.await.unwrap(), Some(ErrorKind::ConnectFailed));
    let req = get();
    let mut rec = record(&req);
    let err = send_own(&upstreams, &only, req, &mut rec)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::ConnectFailed);
    assert!(upstreams.is_down(slow));
}
