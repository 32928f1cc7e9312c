//! Frames written then read back, frames built by hand byte by byte, input arriving in pieces,
//! and every check `parse` makes.

use std::collections::BTreeMap;

use super::*;

const MAX: u32 = DEFAULT_MAX_FRAME_SIZE;

/// A frame built by hand (not with `write_head`, so the writers are checked against it too).
fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 1 << 24);
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// SETTINGS entries, by hand.
fn entries(list: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in list {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// What a writer appends to an empty buffer.
fn written(write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut buf = BytesMut::new();
    write(&mut buf);
    buf
}

/// The one frame `bytes` hold; all of them must be used.
fn one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = parse(&mut buf, MAX).expect("refused").expect("incomplete");
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    frame
}

/// Every frame `bytes` hold, in order; all of them must be used.
fn all(bytes: &[u8], max_frame_size: u32) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = parse(&mut buf, max_frame_size).expect("refused") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    frames
}

/// The connection error `bytes` get; the buffer must be left as it was.
fn conn_error(bytes: &[u8]) -> (Reason, &'static str) {
    let mut buf = BytesMut::from(bytes);
    match parse(&mut buf, MAX) {
        Err(FrameError::Connection(reason, why)) => {
            assert_eq!(&buf[..], bytes, "buffer touched");
            (reason, why)
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

fn conn_reason(bytes: &[u8]) -> Reason {
    conn_error(bytes).0
}

const NEXT_PING: &[u8; 8] = b"nextping";

/// The stream error of the frame in `bytes`: it must be consumed, and a PING after it read.
fn stream_error(bytes: &[u8]) -> (u32, Reason) {
    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&raw(kind::PING, 0, 0, NEXT_PING));
    let (stream, reason) = match parse(&mut buf, MAX) {
        Err(FrameError::Stream(stream, reason, _)) => (stream, reason),
        other => panic!("expected a stream error, got {other:?}"),
    };
    let next = Frame::Ping {
        ack: false,
        payload: *NEXT_PING,
    };
    assert_eq!(parse(&mut buf, MAX), Ok(Some(next)));
    assert!(buf.is_empty());
    (stream, reason)
}

// Writers, read back.

#[test]
fn write_head_lays_out_the_nine_bytes_and_clears_the_reserved_bit() {
    let buf = written(|dst| write_head(dst, 0x01_2345, 0xab, 0xcd, 0x8000_0007));
    assert_eq!(&buf[..], [0x01, 0x23, 0x45, 0xab, 0xcd, 0, 0, 0, 7]);
}

#[test]
#[should_panic(expected = "over 2^24 - 1")]
fn write_head_refuses_a_length_the_field_cannot_hold() {
    written(|dst| write_head(dst, 1 << 24, kind::DATA, 0, 1));
}

#[test]
fn settings_with_every_field_round_trip_in_identifier_order() {
    for (on, off) in [(true, false), (false, true)] {
        let settings = Settings {
            header_table_size: Some(0),
            enable_push: Some(on),
            max_concurrent_streams: Some(100),
            initial_window_size: Some(MAX_WINDOW),
            max_frame_size: Some(MAX_FRAME_SIZE_LIMIT),
            max_header_list_size: Some(u32::MAX),
            enable_connect_protocol: Some(off),
        };
        let buf = written(|dst| write_settings(dst, &settings));
        assert_eq!(&buf[..9], [0, 0, 42, kind::SETTINGS, 0, 0, 0, 0, 0]);
        let ids: Vec<u16> = buf[9..]
            .chunks(6)
            .map(|entry| u16::from_be_bytes([entry[0], entry[1]]))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 8]);
        let ack = false;
        assert_eq!(one(&buf), Frame::Settings { ack, settings });
    }
}

#[test]
fn settings_write_only_the_fields_present() {
    let buf = written(|dst| write_settings(dst, &Settings::default()));
    assert_eq!(&buf[..], raw(kind::SETTINGS, 0, 0, &[]));

    let settings = Settings {
        initial_window_size: Some(1 << 20),
        max_header_list_size: Some(16 << 10),
        ..Settings::default()
    };
    let buf = written(|dst| write_settings(dst, &settings));
    let expected = entries(&[(4, 1 << 20), (6, 16 << 10)]);
    assert_eq!(&buf[..], raw(kind::SETTINGS, 0, 0, &expected));
    let ack = false;
    assert_eq!(one(&buf), Frame::Settings { ack, settings });
}

#[test]
fn settings_ack_round_trips() {
    let buf = written(write_settings_ack);
    assert_eq!(&buf[..], raw(kind::SETTINGS, flag::ACK, 0, &[]));
    let settings = Settings::default();
    assert_eq!(
        one(&buf),
        Frame::Settings {
            ack: true,
            settings
        }
    );
}

#[test]
fn ping_ack_round_trips() {
    let payload = *b"\x00\xff\x01\xfe\x02\xfd\x03\xfc";
    let buf = written(|dst| write_ping_ack(dst, payload));
    assert_eq!(&buf[..], raw(kind::PING, flag::ACK, 0, &payload));
    assert_eq!(one(&buf), Frame::Ping { ack: true, payload });
}

#[test]
fn goaway_round_trips() {
    let buf = written(|dst| write_goaway(dst, 0x8000_0b05, Reason::ENHANCE_YOUR_CALM));
    assert_eq!(
        &buf[..],
        raw(kind::GOAWAY, 0, 0, &[0, 0, 0x0b, 0x05, 0, 0, 0, 0x0b])
    );
    let frame = Frame::GoAway {
        last_stream: 0xb05,
        reason: Reason::ENHANCE_YOUR_CALM,
        debug: Bytes::new(),
    };
    assert_eq!(one(&buf), frame);
}

#[test]
fn rst_stream_round_trips_with_known_and_unknown_codes() {
    for reason in [Reason::CANCEL, Reason::REFUSED_STREAM, Reason(0xdead_beef)] {
        let buf = written(|dst| write_rst_stream(dst, 9, reason));
        assert_eq!(buf.len(), HEADER_LEN + 4);
        assert_eq!(one(&buf), Frame::RstStream { stream: 9, reason });
    }
}

#[test]
fn window_update_round_trips_on_the_connection_and_a_stream() {
    for (stream, increment) in [(0, 1), (0, MAX_WINDOW), (7, DEFAULT_WINDOW)] {
        let buf = written(|dst| write_window_update(dst, stream, increment));
        let expected = raw(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes());
        assert_eq!(&buf[..], expected);
        assert_eq!(one(&buf), Frame::WindowUpdate { stream, increment });
    }
}

/// A block whose bytes say where they are (a misplaced fragment shows).
fn block(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn headers_three_times_the_frame_size_go_in_a_headers_and_two_continuations() {
    let max = MAX as usize;
    let block = block(3 * max);
    let buf = written(|dst| write_headers(dst, 5, &block, true, MAX));
    assert_eq!(buf.len(), 3 * HEADER_LEN + block.len());
    // The flags as sent: END_STREAM alone on HEADERS, END_HEADERS alone on the last.
    assert_eq!(buf[4], flag::END_STREAM);
    assert_eq!(buf[HEADER_LEN + max + 4], 0);
    assert_eq!(buf[2 * (HEADER_LEN + max) + 4], flag::END_HEADERS);
    let expected = [
        Frame::Headers {
            stream: 5,
            end_stream: true,
            end_headers: false,
            priority: None,
            block: Bytes::copy_from_slice(&block[..max]),
        },
        Frame::Continuation {
            stream: 5,
            end_headers: false,
            block: Bytes::copy_from_slice(&block[max..2 * max]),
        },
        Frame::Continuation {
            stream: 5,
            end_headers: true,
            block: Bytes::copy_from_slice(&block[2 * max..]),
        },
    ];
    assert_eq!(all(&buf, MAX), expected);
}

#[test]
fn headers_one_byte_past_a_frame_multiple_get_a_last_one_byte_continuation() {
    let max = MAX as usize;
    let block = block(2 * max + 1);
    let buf = written(|dst| write_headers(dst, 3, &block, false, MAX));
    let frames = all(&buf, MAX);
    assert_eq!(frames.len(), 3);
    assert!(matches!(
        &frames[0],
        Frame::Headers { end_stream: false, end_headers: false, block: b, .. } if b.len() == max
    ));
    let last = Frame::Continuation {
        stream: 3,
        end_headers: true,
        block: Bytes::copy_from_slice(&block[2 * max..]),
    };
    assert_eq!(frames[2], last);
}

#[test]
fn headers_that_fit_go_in_one_frame_with_end_headers() {
    let peer_max = 3 * MAX;
    for (len, end_stream) in [(0, true), (10, false), (3 * MAX as usize, true)] {
        let block = block(len);
        let buf = written(|dst| write_headers(dst, 1, &block, end_stream, peer_max));
        let stream_flag = if end_stream { flag::END_STREAM } else { 0 };
        assert_eq!(buf[4], flag::END_HEADERS | stream_flag);
        let expected = Frame::Headers {
            stream: 1,
            end_stream,
            end_headers: true,
            priority: None,
            block: Bytes::from(block),
        };
        assert_eq!(all(&buf, peer_max), [expected]);
    }
}

#[test]
fn headers_written_with_a_frame_size_below_the_minimum_use_the_minimum() {
    let block = block(MAX as usize + 1);
    let buf = written(|dst| write_headers(dst, 1, &block, false, 0));
    let frames = all(&buf, MAX);
    assert_eq!(frames.len(), 2);
    assert!(matches!(&frames[1], Frame::Continuation { block, .. } if block.len() == 1));
}

#[test]
fn data_head_then_payload_round_trips() {
    for (payload, end_stream) in [(&b"hello"[..], false), (b"", true), (b"x", true)] {
        let mut buf = written(|dst| write_data_head(dst, 11, payload.len() as u32, end_stream));
        assert_eq!(buf.len(), HEADER_LEN);
        buf.extend_from_slice(payload);
        let expected = Frame::Data {
            stream: 11,
            end_stream,
            data: Bytes::copy_from_slice(payload),
            flow_len: payload.len() as u32,
        };
        assert_eq!(one(&buf), expected);
    }
}

// Input arriving in pieces.

#[test]
fn every_prefix_of_a_run_of_frames_waits_for_the_rest_without_consuming() {
    let mut whole = BytesMut::new();
    let settings = Settings {
        max_concurrent_streams: Some(10),
        ..Settings::default()
    };
    write_settings(&mut whole, &settings);
    write_settings_ack(&mut whole);
    write_headers(&mut whole, 1, &[0x82; 40], false, MAX);
    write_data_head(&mut whole, 1, 3, true);
    whole.extend_from_slice(b"abc");
    whole.extend_from_slice(&raw(kind::DATA, flag::PADDED, 3, &[2, b'x', 0, 0]));
    whole.extend_from_slice(&raw(kind::PRIORITY, 0, 3, &[0, 0, 0, 1, 7]));
    write_window_update(&mut whole, 0, 1000);
    write_ping_ack(&mut whole, *b"pingpong");
    whole.extend_from_slice(&raw(0xfa, 0, 0, b"??"));
    write_rst_stream(&mut whole, 3, Reason::CANCEL);
    write_goaway(&mut whole, 3, Reason::NO_ERROR);

    // Where each frame ends, read from the whole buffer.
    let mut ends = Vec::new();
    let mut expected = Vec::new();
    let mut buf = whole.clone();
    while let Some(frame) = parse(&mut buf, MAX).unwrap() {
        expected.push(frame);
        ends.push(whole.len() - buf.len());
    }
    assert_eq!(expected.len(), 11);
    assert_eq!(ends.last(), Some(&whole.len()));

    for cut in 0..=whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut frames = Vec::new();
        while let Some(frame) = parse(&mut buf, MAX).unwrap() {
            frames.push(frame);
        }
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(frames[..], expected[..complete], "cut at {cut}");
        let consumed = complete.checked_sub(1).map_or(0, |last| ends[last]);
        assert_eq!(&buf[..], &whole[consumed..cut], "cut at {cut}");
    }
}

#[test]
fn a_head_announcing_16_mib_is_refused_from_the_nine_bytes_alone() {
    for kind in (0..=9).chain([0xbb]) {
        let head = [0xff, 0xff, 0xff, kind, 0, 0, 0, 0, 1];
        let (reason, _) = conn_error(&head);
        assert_eq!(reason, Reason::FRAME_SIZE_ERROR, "kind {kind}");
    }
}

#[test]
fn the_frame_size_limit_is_the_one_given() {
    let len = MAX as usize + 1;
    let frame = raw(kind::DATA, 0, 1, &vec![7; len]);
    assert_eq!(conn_reason(&frame[..HEADER_LEN]), Reason::FRAME_SIZE_ERROR);
    // With a larger limit the same head waits for its payload, then parses.
    let mut buf = BytesMut::from(&frame[..HEADER_LEN]);
    assert_eq!(parse(&mut buf, MAX + 1), Ok(None));
    assert_eq!(buf.len(), HEADER_LEN);
    assert_eq!(all(&frame, MAX + 1).len(), 1);
    // Exactly the limit is fine.
    let frame = raw(kind::DATA, 0, 1, &vec![7; MAX as usize]);
    assert!(matches!(one(&frame), Frame::Data { flow_len, .. } if flow_len == MAX));
}

// DATA.

#[test]
fn padded_data_keeps_the_data_and_counts_the_whole_payload() {
    let bytes = raw(
        kind::DATA,
        flag::PADDED | flag::END_STREAM,
        1,
        &[3, b'h', b'e', b'l', b'l', b'o', 0, 0, 0],
    );
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let frame = parse(&mut buf, MAX).unwrap().unwrap();
    let Frame::Data { data, .. } = &frame else {
        panic!("{frame:?}");
    };
    // Zero-copy: the data is where it was read, after the head and the pad length.
    assert_eq!(data.as_ptr() as usize, start + HEADER_LEN + 1);
    let expected = Frame::Data {
        stream: 1,
        end_stream: true,
        data: Bytes::from_static(b"hello"),
        flow_len: 9,
    };
    assert_eq!(frame, expected);
    assert!(buf.is_empty());
}

#[test]
fn padding_may_take_all_of_the_data_frame() {
    for payload in [&[0][..], &[4, 0, 0, 0, 0]] {
        let expected = Frame::Data {
            stream: 1,
            end_stream: false,
            data: Bytes::new(),
            flow_len: payload.len() as u32,
        };
        assert_eq!(one(&raw(kind::DATA, flag::PADDED, 1, payload)), expected);
    }
}

#[test]
fn data_flags_it_does_not_define_are_ignored() {
    let frame = one(&raw(
        kind::DATA,
        !(flag::PADDED | flag::END_STREAM),
        1,
        b"ab",
    ));
    let expected = Frame::Data {
        stream: 1,
        end_stream: false,
        data: Bytes::from_static(b"ab"),
        flow_len: 2,
    };
    assert_eq!(frame, expected);
}

#[test]
fn the_reserved_bit_of_the_stream_id_is_ignored() {
    let frame = one(&raw(kind::DATA, 0, 0x8000_0001, b"a"));
    assert!(matches!(frame, Frame::Data { stream: 1, .. }));
    // Masked, 0x8000_0000 is stream 0.
    let bytes = raw(kind::DATA, 0, 0x8000_0000, b"a");
    assert_eq!(conn_reason(&bytes), Reason::PROTOCOL_ERROR);
}

#[test]
fn data_refusals() {
    let on_stream_0 = raw(kind::DATA, 0, 0, b"a");
    assert_eq!(conn_reason(&on_stream_0), Reason::PROTOCOL_ERROR);
    let no_pad_length = raw(kind::DATA, flag::PADDED, 1, &[]);
    assert_eq!(conn_reason(&no_pad_length), Reason::PROTOCOL_ERROR);
    let pad_too_long = raw(kind::DATA, flag::PADDED, 1, &[4, 0, 0, 0]);
    assert_eq!(conn_reason(&pad_too_long), Reason::PROTOCOL_ERROR);
    let pad_max = raw(kind::DATA, flag::PADDED, 1, &[255; 255]);
    assert_eq!(conn_reason(&pad_max), Reason::PROTOCOL_ERROR);
}

// HEADERS.

#[test]
fn padded_headers_with_priority_keep_only_the_block() {
    let payload = [2, 0x80, 0, 0, 3, 200, b'a', b'b', b'c', 0, 0];
    let flags = flag::PADDED | flag::PRIORITY | flag::END_HEADERS | flag::END_STREAM;
    let mut buf = BytesMut::from(&raw(kind::HEADERS, flags, 5, &payload)[..]);
    let start = buf.as_ptr() as usize;
    let frame = parse(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    let Frame::Headers { block, .. } = &frame else {
        panic!("{frame:?}");
    };
    assert_eq!(block.as_ptr() as usize, start + HEADER_LEN + 6);
    let expected = Frame::Headers {
        stream: 5,
        end_stream: true,
        end_headers: true,
        priority: Some(Priority {
            exclusive: true,
            depends_on: 3,
            weight: 200,
        }),
        block: Bytes::from_static(b"abc"),
    };
    assert_eq!(frame, expected);
}

#[test]
fn headers_with_priority_alone_or_padding_alone() {
    let frame = one(&raw(
        kind::HEADERS,
        flag::PRIORITY,
        1,
        &[0, 0, 0, 0, 15, b'x'],
    ));
    let expected = Frame::Headers {
        stream: 1,
        end_stream: false,
        end_headers: false,
        priority: Some(Priority {
            exclusive: false,
            depends_on: 0,
            weight: 15,
        }),
        block: Bytes::from_static(b"x"),
    };
    assert_eq!(frame, expected);

    let frame = one(&raw(kind::HEADERS, flag::PADDED, 1, &[1, b'x', b'y', 0]));
    assert!(matches!(frame, Frame::Headers { priority: None, block, .. } if block == "xy"[..]));
    // Priority and padding leaving an empty block.
    let payload = [0, 0, 0, 0, 1, 16];
    let frame = one(&raw(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY,
        3,
        &payload,
    ));
    assert!(matches!(frame, Frame::Headers { priority: Some(_), block, .. } if block.is_empty()));
}

#[test]
fn headers_refusals() {
    let cases: [(&str, u8, u32, &[u8], Reason); 7] = [
        ("stream 0", 0, 0, b"x", Reason::PROTOCOL_ERROR),
        (
            "no pad length",
            flag::PADDED,
            1,
            b"",
            Reason::PROTOCOL_ERROR,
        ),
        (
            "padding too long",
            flag::PADDED,
            1,
            &[5, 1, 2, 3, 0],
            Reason::PROTOCOL_ERROR,
        ),
        (
            "priority cut",
            flag::PRIORITY,
            1,
            &[0, 0, 0, 3],
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "padded, priority cut",
            flag::PADDED | flag::PRIORITY,
            1,
            &[0, 0, 0, 0, 3],
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "padding over the priority",
            flag::PADDED | flag::PRIORITY,
            1,
            &[1, 0, 0, 0, 3, 16],
            Reason::PROTOCOL_ERROR,
        ),
        (
            "pad length and a cut priority",
            flag::PADDED | flag::PRIORITY,
            1,
            &[1, 0, 0, 0, 3],
            Reason::FRAME_SIZE_ERROR,
        ),
    ];
    for (case, flags, stream, payload, reason) in cases {
        let bytes = raw(kind::HEADERS, flags, stream, payload);
        assert_eq!(conn_reason(&bytes), reason, "{case}");
    }
}

#[test]
fn headers_depending_on_their_own_stream_end_the_connection() {
    // Exclusive or not: the E bit is not part of the dependency.
    for first in [0, 0x80] {
        let payload = [first, 0, 0, 3, 16, 0x82];
        let bytes = raw(
            kind::HEADERS,
            flag::PRIORITY | flag::END_HEADERS,
            3,
            &payload,
        );
        assert_eq!(conn_reason(&bytes), Reason::PROTOCOL_ERROR);
    }
}

// PRIORITY.

#[test]
fn priority_parses() {
    let frame = one(&raw(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 1, 15]));
    let priority = Priority {
        exclusive: true,
        depends_on: 1,
        weight: 15,
    };
    assert_eq!(
        frame,
        Frame::Priority {
            stream: 3,
            priority
        }
    );
}

#[test]
fn priority_refusals() {
    let on_stream_0 = raw(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 15]);
    assert_eq!(conn_reason(&on_stream_0), Reason::PROTOCOL_ERROR);
    for payload in [&[0, 0, 0, 1][..], &[0, 0, 0, 1, 15, 0], &[]] {
        let bytes = raw(kind::PRIORITY, 0, 3, payload);
        assert_eq!(stream_error(&bytes), (3, Reason::FRAME_SIZE_ERROR));
    }
    let on_itself = raw(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 3, 15]);
    assert_eq!(stream_error(&on_itself), (3, Reason::PROTOCOL_ERROR));
}

// RST_STREAM.

#[test]
fn rst_stream_refusals() {
    let on_stream_0 = raw(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8]);
    assert_eq!(conn_reason(&on_stream_0), Reason::PROTOCOL_ERROR);
    for payload in [&[0, 0, 8][..], &[0, 0, 0, 8, 0], &[]] {
        let bytes = raw(kind::RST_STREAM, 0, 1, payload);
        assert_eq!(conn_reason(&bytes), Reason::FRAME_SIZE_ERROR);
    }
}

// SETTINGS.

fn settings_frame(list: &[(u16, u32)]) -> Vec<u8> {
    raw(kind::SETTINGS, 0, 0, &entries(list))
}

fn parsed_settings(list: &[(u16, u32)]) -> Settings {
    match one(&settings_frame(list)) {
        Frame::Settings {
            ack: false,
            settings,
        } => settings,
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_ignore_unknown_identifiers_and_the_last_value_wins() {
    let settings = parsed_settings(&[
        (0, 1),
        (1, 4096),
        (7, 9),
        (9, 1),
        (0xffff, 0xffff_ffff),
        (1, 0),
        (3, 5),
        (3, 0),
    ]);
    let expected = Settings {
        header_table_size: Some(0),
        max_concurrent_streams: Some(0),
        ..Settings::default()
    };
    assert_eq!(settings, expected);
}

#[test]
fn settings_values_at_their_bounds_are_taken() {
    let settings = parsed_settings(&[(2, 0), (4, MAX_WINDOW), (5, MAX), (8, 1)]);
    assert_eq!(settings.enable_push, Some(false));
    assert_eq!(settings.initial_window_size, Some(MAX_WINDOW));
    assert_eq!(settings.max_frame_size, Some(MAX));
    assert_eq!(settings.enable_connect_protocol, Some(true));
    let settings = parsed_settings(&[(2, 1), (4, 0), (5, MAX_FRAME_SIZE_LIMIT), (8, 0)]);
    assert_eq!(settings.enable_push, Some(true));
    assert_eq!(settings.initial_window_size, Some(0));
    assert_eq!(settings.max_frame_size, Some(MAX_FRAME_SIZE_LIMIT));
    assert_eq!(settings.enable_connect_protocol, Some(false));
}

#[test]
fn settings_refusals() {
    let cases = [
        (raw(kind::SETTINGS, 0, 1, &[]), Reason::PROTOCOL_ERROR),
        (
            raw(kind::SETTINGS, flag::ACK, 0, &entries(&[(1, 0)])),
            Reason::FRAME_SIZE_ERROR,
        ),
        (raw(kind::SETTINGS, 0, 0, &[0; 5]), Reason::FRAME_SIZE_ERROR),
        (raw(kind::SETTINGS, 0, 0, &[0; 7]), Reason::FRAME_SIZE_ERROR),
        (settings_frame(&[(2, 2)]), Reason::PROTOCOL_ERROR),
        (settings_frame(&[(4, 1 << 31)]), Reason::FLOW_CONTROL_ERROR),
        (settings_frame(&[(4, u32::MAX)]), Reason::FLOW_CONTROL_ERROR),
        (settings_frame(&[(5, MAX - 1)]), Reason::PROTOCOL_ERROR),
        (settings_frame(&[(5, 1 << 24)]), Reason::PROTOCOL_ERROR),
        (settings_frame(&[(5, 0)]), Reason::PROTOCOL_ERROR),
        (settings_frame(&[(8, 2)]), Reason::PROTOCOL_ERROR),
        // A bad value after good ones still refuses the frame.
        (
            settings_frame(&[(1, 0), (8, 1), (2, 7)]),
            Reason::PROTOCOL_ERROR,
        ),
    ];
    for (i, (bytes, reason)) in cases.iter().enumerate() {
        assert_eq!(conn_reason(bytes), *reason, "case {i}");
    }
}

// PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION, unknown types.

#[test]
fn push_promise_is_consumed_and_named() {
    let mut bytes = raw(
        kind::PUSH_PROMISE,
        flag::END_HEADERS,
        1,
        &[0, 0, 0, 2, 0x82],
    );
    bytes.extend_from_slice(&raw(kind::PING, 0, 0, NEXT_PING));
    let ping = Frame::Ping {
        ack: false,
        payload: *NEXT_PING,
    };
    assert_eq!(all(&bytes, MAX), [Frame::PushPromise { stream: 1 }, ping]);
}

#[test]
fn ping_parses_and_refusals() {
    let frame = one(&raw(kind::PING, !flag::ACK, 0, b"12345678"));
    let expected = Frame::Ping {
        ack: false,
        payload: *b"12345678",
    };
    assert_eq!(frame, expected);
    let on_a_stream = raw(kind::PING, 0, 1, b"12345678");
    assert_eq!(conn_reason(&on_a_stream), Reason::PROTOCOL_ERROR);
    for len in [0, 7, 9] {
        let bytes = raw(kind::PING, 0, 0, &vec![1; len]);
        assert_eq!(
            conn_reason(&bytes),
            Reason::FRAME_SIZE_ERROR,
            "length {len}"
        );
    }
}

#[test]
fn goaway_keeps_debug_data_and_unknown_codes() {
    let payload = [0x80, 0, 0, 5, 0, 0, 0xbe, 0xef, b'b', b'y', b'e'];
    let frame = one(&raw(kind::GOAWAY, 0, 0, &payload));
    let expected = Frame::GoAway {
        last_stream: 5,
        reason: Reason(0xbeef),
        debug: Bytes::from_static(b"bye"),
    };
    assert_eq!(frame, expected);
}

#[test]
fn goaway_refusals() {
    let on_a_stream = raw(kind::GOAWAY, 0, 1, &[0; 8]);
    assert_eq!(conn_reason(&on_a_stream), Reason::PROTOCOL_ERROR);
    for len in [0, 4, 7] {
        let bytes = raw(kind::GOAWAY, 0, 0, &vec![0; len]);
        assert_eq!(
            conn_reason(&bytes),
            Reason::FRAME_SIZE_ERROR,
            "length {len}"
        );
    }
}

#[test]
fn window_update_masks_the_reserved_bit() {
    let frame = one(&raw(kind::WINDOW_UPDATE, 0, 1, &[0x80, 0, 0, 1]));
    assert_eq!(
        frame,
        Frame::WindowUpdate {
            stream: 1,
            increment: 1
        }
    );
    // Masked, the increment is 0.
    let bytes = raw(kind::WINDOW_UPDATE, 0, 0, &[0x80, 0, 0, 0]);
    assert_eq!(conn_reason(&bytes), Reason::PROTOCOL_ERROR);
}

#[test]
fn window_update_refusals() {
    for (stream, len) in [(0, 3), (0, 5), (1, 0), (1, 8)] {
        let bytes = raw(kind::WINDOW_UPDATE, 0, stream, &vec![1; len]);
        assert_eq!(
            conn_reason(&bytes),
            Reason::FRAME_SIZE_ERROR,
            "{stream}/{len}"
        );
    }
    let zero_on_connection = raw(kind::WINDOW_UPDATE, 0, 0, &[0; 4]);
    assert_eq!(conn_reason(&zero_on_connection), Reason::PROTOCOL_ERROR);
    let zero_on_stream = raw(kind::WINDOW_UPDATE, 0, 7, &[0; 4]);
    assert_eq!(stream_error(&zero_on_stream), (7, Reason::PROTOCOL_ERROR));
}

#[test]
fn continuation_parses_and_is_refused_on_stream_0() {
    for (flags, end_headers) in [(flag::END_HEADERS, true), (!flag::END_HEADERS, false)] {
        let frame = one(&raw(kind::CONTINUATION, flags, 1, b"abc"));
        let expected = Frame::Continuation {
            stream: 1,
            end_headers,
            block: Bytes::from_static(b"abc"),
        };
        assert_eq!(frame, expected);
    }
    let on_stream_0 = raw(kind::CONTINUATION, flag::END_HEADERS, 0, b"abc");
    assert_eq!(conn_reason(&on_stream_0), Reason::PROTOCOL_ERROR);
}

#[test]
fn unknown_types_are_consumed_and_skipped() {
    let mut bytes = raw(0x0a, 0xff, 1, b"h2=\":443\"");
    bytes.extend_from_slice(&raw(0xff, 0, 0, &[]));
    bytes.extend_from_slice(&raw(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 9]));
    let expected = [
        Frame::Unknown {
            kind: 0x0a,
            stream: 1,
        },
        Frame::Unknown {
            kind: 0xff,
            stream: 0,
        },
        Frame::WindowUpdate {
            stream: 0,
            increment: 9,
        },
    ];
    assert_eq!(all(&bytes, MAX), expected);
}

// Messages.

#[test]
fn each_rule_has_its_own_reason_string() {
    let by_rule = [
        ("size", raw(kind::DATA, 0, 1, &[0; MAX as usize + 1])),
        ("data 0", raw(kind::DATA, 0, 0, b"a")),
        ("pad length", raw(kind::DATA, flag::PADDED, 1, &[])),
        ("padding", raw(kind::DATA, flag::PADDED, 1, &[1])),
        ("headers 0", raw(kind::HEADERS, 0, 0, b"a")),
        ("priority cut", raw(kind::HEADERS, flag::PRIORITY, 1, &[0])),
        (
            "headers on itself",
            raw(kind::HEADERS, flag::PRIORITY, 1, &[0, 0, 0, 1, 0]),
        ),
        ("priority 0", raw(kind::PRIORITY, 0, 0, &[0; 5])),
        ("rst 0", raw(kind::RST_STREAM, 0, 0, &[0; 4])),
        ("rst length", raw(kind::RST_STREAM, 0, 1, &[0; 5])),
        ("settings stream", raw(kind::SETTINGS, 0, 1, &[])),
        ("settings ack", raw(kind::SETTINGS, flag::ACK, 0, &[0; 6])),
        ("settings length", raw(kind::SETTINGS, 0, 0, &[0; 5])),
        ("push", settings_frame(&[(2, 2)])),
        ("window", settings_frame(&[(4, 1 << 31)])),
        ("frame size", settings_frame(&[(5, 0)])),
        ("connect", settings_frame(&[(8, 2)])),
        ("ping stream", raw(kind::PING, 0, 1, &[0; 8])),
        ("ping length", raw(kind::PING, 0, 0, &[0; 7])),
        ("goaway stream", raw(kind::GOAWAY, 0, 1, &[0; 8])),
        ("goaway length", raw(kind::GOAWAY, 0, 0, &[0; 7])),
        ("window length", raw(kind::WINDOW_UPDATE, 0, 1, &[0; 3])),
        ("window 0", raw(kind::WINDOW_UPDATE, 0, 0, &[0; 4])),
        ("continuation 0", raw(kind::CONTINUATION, 0, 0, b"a")),
    ];
    let mut rules = BTreeMap::new();
    let mut buf = BytesMut::new();
    for (rule, bytes) in &by_rule {
        buf.clear();
        buf.extend_from_slice(bytes);
        let Err(FrameError::Connection(_, why)) = parse(&mut buf, MAX) else {
            panic!("{rule}: not refused");
        };
        assert!(!why.is_empty());
        if let Some(other) = rules.insert(why, rule) {
            panic!("{rule} and {other} both say {why:?}");
        }
    }
    // The stream errors' strings differ from each other and from the above.
    for bytes in [
        raw(kind::PRIORITY, 0, 1, &[0; 4]),
        raw(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 0]),
        raw(kind::WINDOW_UPDATE, 0, 1, &[0; 4]),
    ] {
        buf.clear();
        buf.extend_from_slice(&bytes);
        let Err(FrameError::Stream(_, _, why)) = parse(&mut buf, MAX) else {
            panic!("not a stream error: {bytes:?}");
        };
        assert!(rules.insert(why, &"stream").is_none(), "{why:?} twice");
    }
}

#[test]
fn reasons_and_errors_display() {
    assert_eq!(Reason::NO_ERROR.to_string(), "NO_ERROR");
    assert_eq!(Reason::PROTOCOL_ERROR.to_string(), "PROTOCOL_ERROR");
    assert_eq!(Reason::HTTP_1_1_REQUIRED.to_string(), "HTTP_1_1_REQUIRED");
    assert_eq!(Reason(0xd).to_string(), "HTTP_1_1_REQUIRED");
    assert_eq!(Reason(0xe).to_string(), "unknown error code 0xe");
    assert_eq!(
        Reason(0xdead_beef).to_string(),
        "unknown error code 0xdeadbeef"
    );
    let error = FrameError::Connection(Reason::FRAME_SIZE_ERROR, "PING length not 8");
    assert_eq!(
        error.to_string(),
        "connection error FRAME_SIZE_ERROR: PING length not 8"
    );
    let error = FrameError::Stream(3, Reason::PROTOCOL_ERROR, "why");
    assert_eq!(error.to_string(), "stream 3 error PROTOCOL_ERROR: why");
}
