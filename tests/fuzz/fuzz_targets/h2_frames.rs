//! HTTP/2 frames read by Gatehouse's own server (`proxy::client_h2::frame`), and written back.
//!
//! Whatever the bytes, `frame::parse` taken again and again over them: "more bytes needed"
//! (Ok(None)) consumes nothing, and only when the frame's head or its announced payload is not
//! all there (and the announced length is within the max frame size); a frame read consumes
//! exactly its 9-byte head and announced length, which is within the max frame size, and is of
//! the type, stream (reserved bit masked) and flags of its head; a stream error consumes its
//! frame too and names the frame's stream (never 0); a connection error consumes nothing and
//! ends the reading. A frame read and written again with the server's writers (SETTINGS, the
//! PING ack, GOAWAY, RST_STREAM, WINDOW_UPDATE, HEADERS, a DATA head with its payload; the
//! generic head for the frames without a writer of their own) reads back as the same frame,
//! but for what the writers never produce (padding, priority fields, a GOAWAY's debug data),
//! and consumes all that was written.
//!
//! Input: the first byte picks the max frame size (16,384 to 16,777,215); the rest is what a
//! client sent after its preface.
#![no_main]

use bytes::BytesMut;
use gatehouse::proxy::client_h2::frame::{
    self, Frame, FrameError, HEADER_LEN, MAX_FRAME_SIZE_LIMIT, flag, kind,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, sent)) = data.split_first() else {
        return;
    };
    let min = frame::DEFAULT_MAX_FRAME_SIZE;
    let max_frame_size = min + ((MAX_FRAME_SIZE_LIMIT - min) / 255) * u32::from(pick);
    let max_frame_size = if pick == 255 {
        MAX_FRAME_SIZE_LIMIT
    } else {
        max_frame_size
    };
    let mut buf = BytesMut::from(sent);
    loop {
        let before = buf.clone();
        let parsed = frame::parse(&mut buf, max_frame_size);
        let consumed = before.len() - buf.len();
        assert_eq!(
            &buf[..],
            &before[consumed..],
            "consumed from the front only"
        );
        // The head as the bytes have it.
        let head = before.first_chunk::<HEADER_LEN>().map(|head| {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            (len, head[3], head[4], stream)
        });
        match parsed {
            Ok(None) => {
                assert_eq!(consumed, 0);
                if let Some((len, ..)) = head {
                    assert!(len <= max_frame_size, "a frame too long is refused");
                    assert!(
                        before.len() < HEADER_LEN + len as usize,
                        "the frame is whole"
                    );
                }
                break;
            }
            Ok(Some(parsed)) => {
                let (len, frame_type, flags, stream) = head.expect("a frame has a head");
                assert!(len <= max_frame_size);
                assert_eq!(consumed, HEADER_LEN + len as usize);
                let payload = &before[HEADER_LEN..consumed];
                check_frame(&parsed, frame_type, flags, stream, payload);
                round_trip(&parsed, max_frame_size);
            }
            Err(FrameError::Stream(id, reason, why)) => {
                let (len, frame_type, _, stream) = head.expect("a frame has a head");
                assert!(len <= max_frame_size);
                assert_eq!(consumed, HEADER_LEN + len as usize, "{why}");
                assert_eq!(id, stream);
                assert_ne!(id, 0, "a stream error on stream 0: {why}");
                assert!(
                    matches!(frame_type, kind::PRIORITY | kind::WINDOW_UPDATE),
                    "type {frame_type}: {why}"
                );
                assert_ne!(reason, frame::Reason::NO_ERROR);
                let _ = FrameError::Stream(id, reason, why).to_string();
            }
            Err(err @ FrameError::Connection(reason, _)) => {
                assert_eq!(consumed, 0, "{err}");
                assert!(head.is_some(), "{err}");
                assert_ne!(reason, frame::Reason::NO_ERROR);
                let _ = err.to_string();
                break;
            }
        }
    }
});

/// The frame read is what its head and payload say.
fn check_frame(parsed: &Frame, frame_type: u8, flags: u8, stream: u32, payload: &[u8]) {
    let has = |f: u8| flags & f != 0;
    let expected_type = match parsed {
        Frame::Data {
            stream: s,
            end_stream,
            data,
            flow_len,
        } => {
            assert_eq!(*s, stream);
            assert_ne!(stream, 0);
            assert_eq!(*end_stream, has(flag::END_STREAM));
            assert_eq!(*flow_len as usize, payload.len());
            if has(flag::PADDED) {
                let pad = usize::from(payload[0]);
                assert_eq!(&data[..], &payload[1..payload.len() - pad]);
            } else {
                assert_eq!(&data[..], payload);
            }
            kind::DATA
        }
        Frame::Headers {
            stream: s,
            end_stream,
            end_headers,
            priority,
            block,
        } => {
            assert_eq!(*s, stream);
            assert_ne!(stream, 0);
            assert_eq!(*end_stream, has(flag::END_STREAM));
            assert_eq!(*end_headers, has(flag::END_HEADERS));
            assert_eq!(priority.is_some(), has(flag::PRIORITY));
            let (start, pad) = if has(flag::PADDED) {
                (1, usize::from(payload[0]))
            } else {
                (0, 0)
            };
            let start = start + if priority.is_some() { 5 } else { 0 };
            if let Some(priority) = priority {
                assert_ne!(priority.depends_on, stream);
            }
            assert_eq!(&block[..], &payload[start..payload.len() - pad]);
            kind::HEADERS
        }
        Frame::Priority {
            stream: s,
            priority,
        } => {
            assert_eq!(*s, stream);
            assert_eq!(payload.len(), 5);
            assert_ne!(priority.depends_on, stream);
            kind::PRIORITY
        }
        Frame::RstStream { stream: s, reason } => {
            assert_eq!(*s, stream);
            assert_ne!(stream, 0);
            assert_eq!(reason.0.to_be_bytes(), payload);
            let _ = reason.to_string();
            kind::RST_STREAM
        }
        Frame::Settings { ack, settings } => {
            assert_eq!(stream, 0);
            assert_eq!(*ack, has(flag::ACK));
            assert_eq!(payload.len() % 6, 0);
            if *ack {
                assert!(payload.is_empty());
            }
            if let Some(size) = settings.max_frame_size {
                assert!((frame::DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&size));
            }
            if let Some(window) = settings.initial_window_size {
                assert!(window <= frame::MAX_WINDOW);
            }
            kind::SETTINGS
        }
        Frame::PushPromise { stream: s } => {
            assert_eq!(*s, stream);
            kind::PUSH_PROMISE
        }
        Frame::Ping { ack, payload: p } => {
            assert_eq!(stream, 0);
            assert_eq!(*ack, has(flag::ACK));
            assert_eq!(&p[..], payload);
            kind::PING
        }
        Frame::GoAway {
            last_stream,
            reason,
            debug,
        } => {
            assert_eq!(stream, 0);
            assert_eq!(
                *last_stream,
                u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff
            );
            assert_eq!(reason.0.to_be_bytes(), payload[4..8]);
            assert_eq!(&debug[..], &payload[8..]);
            kind::GOAWAY
        }
        Frame::WindowUpdate {
            stream: s,
            increment,
        } => {
            assert_eq!(*s, stream);
            assert!((1..=frame::MAX_WINDOW).contains(increment));
            kind::WINDOW_UPDATE
        }
        Frame::Continuation {
            stream: s,
            end_headers,
            block,
        } => {
            assert_eq!(*s, stream);
            assert_ne!(stream, 0);
            assert_eq!(*end_headers, has(flag::END_HEADERS));
            assert_eq!(&block[..], payload);
            kind::CONTINUATION
        }
        Frame::Unknown { kind: k, stream: s } => {
            assert_eq!(*s, stream);
            assert!(*k > kind::CONTINUATION);
            *k
        }
    };
    assert_eq!(expected_type, frame_type);
}

/// Writes `parsed` again and reads it back.
fn round_trip(parsed: &Frame, max_frame_size: u32) {
    let mut dst = BytesMut::new();
    let expected = match parsed {
        Frame::Data {
            stream,
            end_stream,
            data,
            ..
        } => {
            frame::write_data_head(&mut dst, *stream, data.len() as u32, *end_stream);
            dst.extend_from_slice(data);
            Frame::Data {
                stream: *stream,
                end_stream: *end_stream,
                data: data.clone(),
                flow_len: data.len() as u32,
            }
        }
        Frame::Headers {
            stream,
            end_stream,
            block,
            ..
        } => {
            frame::write_headers(&mut dst, *stream, block, *end_stream, max_frame_size);
            // Read back below as HEADERS and CONTINUATIONs carrying the block.
            return check_headers(dst, *stream, block, *end_stream, max_frame_size);
        }
        Frame::Priority { stream, priority } => {
            frame::write_head(&mut dst, 5, kind::PRIORITY, 0, *stream);
            let word = priority.depends_on | if priority.exclusive { 1 << 31 } else { 0 };
            dst.extend_from_slice(&word.to_be_bytes());
            dst.extend_from_slice(&[priority.weight]);
            Frame::Priority {
                stream: *stream,
                priority: *priority,
            }
        }
        Frame::RstStream { stream, reason } => {
            frame::write_rst_stream(&mut dst, *stream, *reason);
            Frame::RstStream {
                stream: *stream,
                reason: *reason,
            }
        }
        Frame::Settings { ack: true, .. } => {
            frame::write_settings_ack(&mut dst);
            Frame::Settings {
                ack: true,
                settings: Default::default(),
            }
        }
        Frame::Settings {
            ack: false,
            settings,
        } => {
            frame::write_settings(&mut dst, settings);
            Frame::Settings {
                ack: false,
                settings: *settings,
            }
        }
        Frame::PushPromise { stream } => {
            frame::write_head(&mut dst, 0, kind::PUSH_PROMISE, 0, *stream);
            Frame::PushPromise { stream: *stream }
        }
        Frame::Ping { payload, .. } => {
            frame::write_ping_ack(&mut dst, *payload);
            Frame::Ping {
                ack: true,
                payload: *payload,
            }
        }
        Frame::GoAway {
            last_stream,
            reason,
            ..
        } => {
            frame::write_goaway(&mut dst, *last_stream, *reason);
            Frame::GoAway {
                last_stream: *last_stream,
                reason: *reason,
                debug: Default::default(),
            }
        }
        Frame::WindowUpdate { stream, increment } => {
            frame::write_window_update(&mut dst, *stream, *increment);
            Frame::WindowUpdate {
                stream: *stream,
                increment: *increment,
            }
        }
        Frame::Continuation {
            stream,
            end_headers,
            block,
        } => {
            let flags = if *end_headers { flag::END_HEADERS } else { 0 };
            frame::write_head(&mut dst, block.len(), kind::CONTINUATION, flags, *stream);
            dst.extend_from_slice(block);
            Frame::Continuation {
                stream: *stream,
                end_headers: *end_headers,
                block: block.clone(),
            }
        }
        Frame::Unknown { kind: k, stream } => {
            frame::write_head(&mut dst, 0, *k, 0xff, *stream);
            Frame::Unknown {
                kind: *k,
                stream: *stream,
            }
        }
    };
    let written = dst.clone();
    assert_eq!(
        frame::parse(&mut dst, max_frame_size),
        Ok(Some(expected)),
        "{written:02x?}"
    );
    assert!(dst.is_empty(), "{written:02x?}");
}

/// What `write_headers` wrote: a HEADERS frame then CONTINUATIONs on `stream`, END_STREAM as
/// asked on the first, END_HEADERS on the last only, each within the max frame size, the
/// fragments making up `block`.
fn check_headers(mut dst: BytesMut, stream: u32, block: &[u8], end_stream: bool, max: u32) {
    let written = dst.clone();
    let mut joined = Vec::new();
    let mut first = true;
    loop {
        let parsed = frame::parse(&mut dst, max);
        let (end_headers, fragment) = match parsed {
            Ok(Some(Frame::Headers {
                stream: s,
                end_stream: e,
                end_headers,
                priority: None,
                block,
            })) if first => {
                assert_eq!(s, stream);
                assert_eq!(e, end_stream);
                (end_headers, block)
            }
            Ok(Some(Frame::Continuation {
                stream: s,
                end_headers,
                block,
            })) if !first => {
                assert_eq!(s, stream);
                (end_headers, block)
            }
            other => panic!("{other:?} in {written:02x?}"),
        };
        first = false;
        joined.extend_from_slice(&fragment);
        if end_headers {
            break;
        }
        assert!(!fragment.is_empty(), "an empty fragment before the last");
    }
    assert!(dst.is_empty(), "{written:02x?}");
    assert_eq!(joined, block);
}
