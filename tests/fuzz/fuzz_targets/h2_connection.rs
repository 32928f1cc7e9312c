//! One HTTP/2 connection served by Gatehouse's own server (`proxy::client_h2::Connection`),
//! whatever its client sends.
//!
//! The client writes the input, shuts its sending side and reads all the server writes (so the
//! server is never held by its socket). The connection's watch is played as the server runs
//! it: streams held by the client's flow-control windows are reset by the send timeout. Then,
//! without panicking:
//! - the connection ends (Ok, or a protocol error) within 2 s, never with an I/O error (time is
//!   paused: the runtime jumps ahead when everything waits, so a connection that would wait for
//!   ever fails at once, and the same way on every run);
//! - all the server wrote is whole HTTP/2 frames (`frame::parse`), none longer than the
//!   client's largest SETTINGS_MAX_FRAME_SIZE; the first is the server's SETTINGS, with the
//!   limits it was given; later SETTINGS are acknowledgements, fewer than the client's SETTINGS;
//!   PINGs are acknowledgements of the client's PINGs, in order (after a whole connection that
//!   ended Ok, every SETTINGS and PING of the client is answered);
//! - on a stream (odd, opened by the client): one response HEADERS then DATA then, maybe,
//!   trailers, a header block's CONTINUATIONs right after it, nothing after END_STREAM or
//!   RST_STREAM; never PUSH_PROMISE, PRIORITY or an unknown type;
//! - DATA within the flow-control windows: on the connection at most 65,535 plus the client's
//!   WINDOW_UPDATEs on it, on a stream at most the largest initial window plus its updates;
//! - a connection that ended with a protocol error ended with one GOAWAY carrying its reason,
//!   the last frame; one that ended Ok sent no GOAWAY.
//!
//! Input: the first byte picks whether the client preface is put first (bit 0 clear), the
//! handler (bit 1: it reads the request body to its end before answering), the response body
//! (bits 2-3: a few bytes, none, a few bytes and trailers, 2000 bytes), the stream limit
//! (bit 4), the header list limit (bit 5) and the status (bit 6); the rest is what the client
//! sends.
#![no_main]

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gatehouse::body::{BoxBody, BoxError};
use gatehouse::proxy::ConnInfo;
use gatehouse::proxy::client_h2::frame::{self, Frame, FrameError};
use gatehouse::proxy::client_h2::{ConnError, Connection, Limits, RequestBody};
use gatehouse::proxy::client_io::ClientIo;
use gatehouse::proxy::server::ServerSettings;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// How long the connection may take, in the runtime's (paused) time.
const LIMIT: Duration = Duration::from_secs(2);
/// How often the watch looks at streams held by the client's windows.
const SEND_CHECK: Duration = Duration::from_millis(100);

type Handling = Pin<Box<dyn Future<Output = Response<BoxBody>>>>;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut sent = Vec::with_capacity(frame::PREFACE.len() + rest.len());
    if pick & 1 == 0 {
        sent.extend_from_slice(frame::PREFACE);
    }
    sent.extend_from_slice(rest);
    let limits = Limits {
        max_streams: if pick & 0x10 == 0 { 100 } else { 2 },
        max_header_list: if pick & 0x20 == 0 { 16 * 1024 } else { 256 },
    };
    let (result, out) = runtime().block_on(serve(&sent, pick, limits));
    check(&sent, &out, result, limits);
});

/// Serves one connection to a client that sends `sent`; its result (None: not over within
/// the limit) and what the client read.
async fn serve(sent: &[u8], pick: u8, limits: Limits) -> (Option<Result<(), ConnError>>, Vec<u8>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let info = Arc::new(ConnInfo::new(
        "127.0.0.1:40000".parse().expect("an address"),
        "http",
        HeaderValue::from_static("80"),
        &ServerSettings::default(),
    ));
    let reads_body = pick & 2 != 0;
    let handler = move |req: Request<Option<RequestBody>>| -> Handling {
        let (true, Some(mut body)) = (reads_body, req.into_body()) else {
            return Box::pin(std::future::ready(respond(pick, 0)));
        };
        Box::pin(async move {
            let mut len = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => len += frame.data_ref().map_or(0, Bytes::len),
                    Err(_) => break,
                }
            }
            respond(pick, len)
        })
    };
    let conn = Connection::new(ClientIo::new(server), info.clone(), limits, handler);
    let serving = async {
        let mut conn = pin!(conn);
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            tokio::select! {
                biased;
                result = &mut conn => return Some(result),
                () = tokio::time::sleep(SEND_CHECK) => {
                    // The send timeout, as the connection's watch applies it (server.rs).
                    let later = std::time::Instant::now() + Duration::from_secs(3600);
                    info.h2_streams.reset_waiting(later, Duration::ZERO);
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
        // The connection is dropped here, which closes the server's end of the pipe.
    };
    let writing = async {
        // The server may close before taking everything: that is its right.
        let _ = to_server.write_all(sent).await;
        let _ = to_server.shutdown().await;
    };
    let reading = async {
        let mut out = Vec::new();
        from_server
            .read_to_end(&mut out)
            .await
            .expect("reading a pipe");
        out
    };
    let (result, (), out) = tokio::join!(serving, writing, reading);
    (result, out)
}

fn respond(pick: u8, len: usize) -> Response<BoxBody> {
    let status = if pick & 0x40 == 0 {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let text = Bytes::from(format!("{len} bytes\n"));
    let body = match (pick >> 2) & 3 {
        0 => gatehouse::body::full(text),
        1 => gatehouse::body::empty(),
        2 => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-length", HeaderValue::from(len));
            Trailed {
                data: Some(text),
                trailers: Some(trailers),
            }
            .boxed_unsync()
        }
        _ => gatehouse::body::full(vec![b'x'; 2000]),
    };
    Response::builder()
        .status(status)
        .header("x-fuzz", "yes")
        .body(body)
        .expect("a valid response")
}

/// A body of one piece of data and trailers.
struct Trailed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Trailed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }
}

/// What the client's frames allow the server (read as the server reads them, up to the first
/// connection error: a bound on what the server saw).
#[derive(Default)]
struct ClientSaid {
    /// The whole preface came first.
    preface: bool,
    settings: usize,
    pings: Vec<[u8; 8]>,
    goaway: bool,
    max_frame: u32,
    max_initial_window: u32,
    conn_credit: u64,
    stream_credit: HashMap<u32, u64>,
    max_stream: u32,
}

fn client_said(sent: &[u8]) -> ClientSaid {
    let mut said = ClientSaid {
        max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
        max_initial_window: frame::DEFAULT_WINDOW,
        ..Default::default()
    };
    let Some(frames) = sent.strip_prefix(frame::PREFACE) else {
        return said;
    };
    said.preface = true;
    let mut buf = BytesMut::from(frames);
    loop {
        match frame::parse(&mut buf, frame::DEFAULT_MAX_FRAME_SIZE) {
            Ok(Some(Frame::Settings {
                ack: false,
                settings,
            })) => {
                said.settings += 1;
                if let Some(size) = settings.max_frame_size {
                    said.max_frame = said.max_frame.max(size);
                }
                if let Some(window) = settings.initial_window_size {
                    said.max_initial_window = said.max_initial_window.max(window);
                }
            }
            Ok(Some(Frame::Ping {
                ack: false,
                payload,
            })) => said.pings.push(payload),
            Ok(Some(Frame::GoAway { .. })) => said.goaway = true,
            Ok(Some(Frame::WindowUpdate {
                stream: 0,
                increment,
            })) => said.conn_credit += u64::from(increment),
            Ok(Some(Frame::WindowUpdate { stream, increment })) => {
                *said.stream_credit.entry(stream).or_default() += u64::from(increment);
            }
            Ok(Some(Frame::Headers { stream, .. })) => {
                said.max_stream = said.max_stream.max(stream);
            }
            Ok(Some(_)) | Err(FrameError::Stream(..)) => {}
            Ok(None) | Err(FrameError::Connection(..)) => break,
        }
    }
    said
}

/// A stream as the server's frames show it.
#[derive(Default)]
struct Seen {
    headers: bool,
    /// END_STREAM or RST_STREAM sent: nothing more on it.
    over: bool,
    data: u64,
}

fn check(sent: &[u8], out: &[u8], result: Option<Result<(), ConnError>>, limits: Limits) {
    let said = client_said(sent);
    let Some(result) = result else {
        panic!(
            "the connection did not end within {LIMIT:?}; the server wrote {} bytes",
            out.len()
        );
    };
    let failed = match &result {
        Ok(()) => None,
        Err(ConnError::Protocol(reason, _)) => Some(*reason),
        Err(err @ ConnError::Io(_)) => panic!("an I/O error on a pipe read whole: {err}"),
    };
    let mut buf = BytesMut::from(out);
    let mut frames = Vec::new();
    while !buf.is_empty() {
        match frame::parse(&mut buf, said.max_frame) {
            Ok(Some(parsed)) => frames.push(parsed),
            other => panic!(
                "the server wrote {other:?} after {} frames: {frames:?}, then {:02x?}",
                frames.len(),
                &buf[..]
            ),
        }
    }
    let Some((
        Frame::Settings {
            ack: false,
            settings,
        },
        rest,
    )) = frames.split_first()
    else {
        panic!("the server's first frame is not its SETTINGS: {frames:?}");
    };
    assert_eq!(settings.max_concurrent_streams, Some(limits.max_streams));
    assert_eq!(settings.max_header_list_size, Some(limits.max_header_list));
    let mut acks = 0;
    let mut pongs = Vec::new();
    let mut goaways = Vec::new();
    let mut streams: HashMap<u32, Seen> = HashMap::new();
    let mut continuing = None;
    let mut conn_data = 0u64;
    for (i, parsed) in rest.iter().enumerate() {
        if let Some(id) = continuing {
            assert!(
                matches!(parsed, Frame::Continuation { stream, .. } if *stream == id),
                "{parsed:?} within stream {id}'s header block"
            );
        }
        match parsed {
            Frame::Settings { ack, .. } => {
                assert!(ack, "a second SETTINGS");
                acks += 1;
            }
            Frame::Ping { ack, payload } => {
                assert!(ack, "a PING of the server's own");
                pongs.push(*payload);
            }
            Frame::GoAway {
                last_stream,
                reason,
                ..
            } => {
                assert!(*last_stream <= said.max_stream);
                goaways.push((i, *reason));
            }
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                ..
            } => {
                check_stream(*stream, &said);
                let seen = streams.entry(*stream).or_default();
                assert!(!seen.over, "HEADERS on stream {stream} after its end");
                // A second block is trailers, which end the stream.
                assert!(!seen.headers || *end_stream, "two heads on stream {stream}");
                seen.headers = true;
                seen.over |= *end_stream;
                if !end_headers {
                    continuing = Some(*stream);
                }
            }
            Frame::Continuation {
                stream,
                end_headers,
                ..
            } => {
                assert_eq!(continuing, Some(*stream), "a CONTINUATION out of place");
                if *end_headers {
                    continuing = None;
                }
            }
            Frame::Data {
                stream,
                end_stream,
                flow_len,
                ..
            } => {
                check_stream(*stream, &said);
                let seen = streams.entry(*stream).or_default();
                assert!(seen.headers, "DATA before HEADERS on stream {stream}");
                assert!(!seen.over, "DATA on stream {stream} after its end");
                seen.over |= *end_stream;
                seen.data += u64::from(*flow_len);
                conn_data += u64::from(*flow_len);
                let credit = said.stream_credit.get(stream).copied().unwrap_or(0);
                assert!(
                    seen.data <= u64::from(said.max_initial_window) + credit,
                    "stream {stream}: {} bytes of DATA, window {} + {credit}",
                    seen.data,
                    said.max_initial_window
                );
                assert!(
                    conn_data <= u64::from(frame::DEFAULT_WINDOW) + said.conn_credit,
                    "{conn_data} bytes of DATA on the connection, credit {}",
                    said.conn_credit
                );
            }
            Frame::RstStream { stream, .. } => {
                streams.entry(*stream).or_default().over = true;
            }
            Frame::WindowUpdate { .. } => {}
            other => panic!("the server sent {other:?}"),
        }
    }
    assert!(continuing.is_none(), "a header block left unfinished");
    assert!(acks <= said.settings, "{acks} SETTINGS acks");
    assert!(
        said.pings.starts_with(&pongs),
        "PING acks {pongs:02x?} for PINGs {:02x?}",
        said.pings
    );
    match failed {
        Some(reason) => {
            assert_eq!(
                goaways,
                [(rest.len() - 1, reason)],
                "a connection error: one GOAWAY, last"
            );
        }
        None => {
            assert_eq!(goaways, [], "a GOAWAY on a connection that ended Ok");
            if said.preface && !said.goaway {
                // The client's EOF was read: everything before it was handled.
                assert_eq!(acks, said.settings, "SETTINGS acks");
                assert_eq!(pongs, said.pings, "PING acks");
            }
        }
    }
    let _ = result.map_err(|err| err.to_string());
}

/// A stream the server answers on: the client's (odd), and one it opened.
fn check_stream(stream: u32, said: &ClientSaid) {
    assert_eq!(stream % 2, 1, "the server on stream {stream}");
    assert!(
        stream <= said.max_stream,
        "the server on stream {stream}, never opened"
    );
}
