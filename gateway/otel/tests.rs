use super::*;

#[test]
fn traceparent_is_read_as_the_w3c_specification_writes_it() {
    let ok = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let (trace, parent, flags) = parse_traceparent(&ok).expect("valid");
    assert_eq!(trace[0], 0x4b);
    assert_eq!(parent[7], 0xb7);
    assert_eq!(flags, 1);
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        "garbage",
    ] {
        assert!(
            parse_traceparent(&HeaderValue::from_static(bad)).is_none(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_request_continues_its_trace_and_the_backend_sees_gatehouses_span() {
    let settings = Settings {
        endpoint: "http://127.0.0.1:9/v1/traces".parse().unwrap(),
        sample_ratio: 0.0,
        extra_roots: Vec::new(),
    };
    let (tracer, _export) = Tracer::new(&settings);
    let mut headers = HeaderMap::new();
    headers.insert(
        &TRACEPARENT,
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    // Sampled by the parent even with a ratio of 0.
    let span = tracer.start(&mut headers).expect("sampled");
    let sent = headers[&TRACEPARENT].to_str().unwrap().to_owned();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
    assert_eq!(span.parent, Some(hex("00f067aa0ba902b7").unwrap()));

    // A new trace at ratio 0: not sampled, but the backend still gets a traceparent.
    let mut headers = HeaderMap::new();
    assert!(tracer.start(&mut headers).is_none());
    assert!(headers[&TRACEPARENT].to_str().unwrap().ends_with("-00"));
}

#[test]
fn the_endpoint_gets_the_standard_path_when_it_has_none() {
    assert_eq!(
        parse_endpoint("http://127.0.0.1:4318").unwrap(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        parse_endpoint("http://c:4318/custom").unwrap(),
        "http://c:4318/custom"
    );
    assert_eq!(
        parse_endpoint("https://c:4318").unwrap(),
        "https://c:4318/v1/traces"
    );
    assert!(parse_endpoint("grpc://c:4317").is_err());
    assert!(parse_endpoint("c:4318").is_err());
}
