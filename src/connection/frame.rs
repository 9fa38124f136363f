//! Server-to-client WebSocket frames, built once and shared.
//!
//! Frames from a server are not masked (RFC 6455 section 5.1), so the bytes of a
//! frame are the same for every recipient. The reader builds each published
//! message's frame once; the broker hands every member's outbox a reference-counted
//! clone ([`Frame`], no copy); each writer puts a batch of them on the wire with one
//! write. Nothing here can panic: lengths are written with checked
//! conversions and parsed with `get`.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One complete frame, shared by every outbox it is queued in.
///
/// A thin `Arc` (8 bytes) rather than `Bytes` (32) or `Arc<[u8]>` (16): tokio
/// allocates a channel's first block of 32 slots when the channel is created, so
/// the slot size is paid by every connection, idle or not (BENCHMARKS.md, "Idle
/// memory"), and a clone or drop is one inline atomic operation instead of a call
/// through `Bytes`' vtable.
pub(crate) type Frame = Arc<Vec<u8>>;

/// Opcodes used here (RFC 6455 section 5.2).
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A final, unmasked frame with `opcode` and `payload`.
pub(crate) fn build(opcode: u8, payload: &[u8]) -> Frame {
    build_from(opcode, &[], payload)
}

/// A final, unmasked frame with `opcode` whose payload is `head` then `rest`.
fn build_from(opcode: u8, head: &[u8], rest: &[u8]) -> Frame {
    let len = head.len().saturating_add(rest.len());
    let mut frame = Vec::with_capacity(len.saturating_add(10));
    frame.push(0x80 | (opcode & 0x0f));
    if let Ok(short) = u8::try_from(len) {
        if short < 126 {
            frame.push(short);
        } else {
            frame.push(126);
            frame.extend_from_slice(&u16::from(short).to_be_bytes());
        }
    } else if let Ok(medium) = u16::try_from(len) {
        frame.push(126);
        frame.extend_from_slice(&medium.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes());
    }
    frame.extend_from_slice(head);
    frame.extend_from_slice(rest);
    Arc::new(frame)
}

/// The kinds of a `wsbroker.v1` envelope (README, "Delivery contract").
pub(crate) mod kind {
    /// A published text message.
    pub(crate) const TEXT: u8 = 0;
    /// A published binary message.
    pub(crate) const BINARY: u8 = 1;
    /// The first frame after joining: the room's epoch and its last seq.
    pub(crate) const WELCOME: u8 = 2;
    /// A resume that could not be honoured: the room's epoch and its last seq.
    pub(crate) const RESET: u8 = 3;
}

/// Bytes of a `wsbroker.v1` envelope before the payload: kind, epoch, seq.
pub(crate) const ENVELOPE_HEAD: usize = 17;

/// A `wsbroker.v1` frame: one binary frame holding `kind`, `epoch` and `seq` (both
/// big-endian), then `payload`.
pub(crate) fn envelope(kind: u8, epoch: u64, seq: u64, payload: &[u8]) -> Frame {
    let mut head = [0u8; ENVELOPE_HEAD];
    let (k, numbers) = head.split_at_mut(1);
    let (e, s) = numbers.split_at_mut(8);
    k.copy_from_slice(&[kind]);
    e.copy_from_slice(&epoch.to_be_bytes());
    s.copy_from_slice(&seq.to_be_bytes());
    build_from(BINARY, &head, payload)
}

/// The `wsbroker.v1` frame of a published message, from its plain frame (built by
/// [`build`]); `None` if that is not a text or binary frame.
pub(crate) fn sequenced(plain: &[u8], epoch: u64, seq: u64) -> Option<Frame> {
    let (opcode, payload) = parse(plain)?;
    let kind = match opcode {
        TEXT => kind::TEXT,
        BINARY => kind::BINARY,
        _ => return None,
    };
    Some(envelope(kind, epoch, seq, payload))
}

/// The `wsbroker.v1` frames of a run of published messages (see [`joined`]), numbered
/// from `first_seq`; `None` if any of them is not a text or binary frame.
pub(crate) fn sequenced_run(plain: &[Frame], epoch: u64, first_seq: u64) -> Option<Vec<Frame>> {
    let mut seq = first_seq;
    plain
        .iter()
        .map(|frame| {
            let envelope = sequenced(frame, epoch, seq);
            seq = seq.wrapping_add(1);
            envelope
        })
        .collect()
}

/// A run of frames back to back, as one buffer: the broker hands a run of messages
/// to one room that reached it together to each member's outbox as one entry, and
/// the writer writes it as it is (a client reads the frames one by one).
pub(crate) fn joined(frames: &[Frame]) -> Frame {
    let len = frames.iter().fold(0usize, |len, frame| len.saturating_add(frame.len()));
    let mut bytes = Vec::with_capacity(len);
    for frame in frames {
        bytes.extend_from_slice(frame);
    }
    Arc::new(bytes)
}

/// The frame for a client's data message; `None` for anything that is not text or
/// binary (control messages are never published).
pub(crate) fn data(message: &Message) -> Option<Frame> {
    match message {
        Message::Text(text) => Some(build(TEXT, text.as_bytes())),
        Message::Binary(bytes) => Some(build(BINARY, bytes)),
        _ => None,
    }
}

/// A Close frame with a code and a short static reason.
pub(crate) fn close(code: CloseCode, reason: &str) -> Frame {
    let mut payload = Vec::with_capacity(reason.len().saturating_add(2));
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    // Control frames carry at most 125 bytes; our reasons are far shorter.
    payload.extend_from_slice(reason.as_bytes().get(..reason.len().min(123)).unwrap_or_default());
    build(CLOSE, &payload)
}

/// An empty Ping frame: final, opcode Ping, unmasked, no payload. A constant, so
/// that a ping holds no buffer while it waits for the socket.
pub(crate) const PING_FRAME: [u8; 2] = [0x80 | PING, 0];

/// The opcode and payload of a frame built by [`build`].
pub(crate) fn parse(frame: &[u8]) -> Option<(u8, &[u8])> {
    let opcode = frame.first()? & 0x0f;
    let start = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(start..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_tungstenites_encoding() {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            let ours = build(BINARY, &payload);
            let mut theirs = Vec::new();
            Frame::message(
                payload.clone(),
                tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Binary,
                ),
                true,
            )
            .format(&mut theirs)
            .unwrap();
            assert_eq!(&ours[..], &theirs[..], "length {len}");
            assert_eq!(parse(&ours), Some((BINARY, &payload[..])));
        }
    }

    #[test]
    fn envelopes_carry_kind_epoch_seq_and_the_payload() {
        let plain = build(TEXT, b"hello");
        let v1 = sequenced(&plain, 0x0102_0304_0506_0708, 42).unwrap();
        let (opcode, payload) = parse(&v1).unwrap();
        assert_eq!(opcode, BINARY);
        assert_eq!(payload[0], kind::TEXT);
        assert_eq!(payload[1..9], 0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(payload[9..17], 42u64.to_be_bytes());
        assert_eq!(&payload[17..], b"hello");
        let big = vec![9u8; 200];
        let v1 = sequenced(&build(BINARY, &big), 1, 2).unwrap();
        let (_, payload) = parse(&v1).unwrap();
        assert_eq!((payload[0], payload.len()), (kind::BINARY, 217));
        assert_eq!(&payload[17..], &big[..]);
        let welcome = envelope(kind::WELCOME, 7, 0, &[]);
        assert_eq!(parse(&welcome).unwrap().1.len(), ENVELOPE_HEAD);
        assert_eq!(sequenced(&close(CloseCode::Away, ""), 1, 1), None);
    }

    #[test]
    fn a_run_is_its_frames_back_to_back_and_numbered_in_order() {
        let run = [build(TEXT, b"a"), build(BINARY, b"bc")];
        assert_eq!(&joined(&run)[..], &[0x81, 1, b'a', 0x82, 2, b'b', b'c'][..]);
        let envelopes = sequenced_run(&run, 7, 41).unwrap();
        assert_eq!(envelopes.len(), 2);
        assert_eq!(envelopes[0], sequenced(&run[0], 7, 41).unwrap());
        assert_eq!(envelopes[1], sequenced(&run[1], 7, 42).unwrap());
        assert_eq!(sequenced_run(&[build(TEXT, b"a"), close(CloseCode::Away, "")], 7, 1), None);
    }

    #[test]
    fn close_frames_carry_the_code() {
        let f = close(CloseCode::Away, "bye");
        assert_eq!(parse(&f), Some((CLOSE, &[0x03, 0xe9, b'b', b'y', b'e'][..])));
        assert_eq!(PING_FRAME, [0x89, 0x00]);
        assert_eq!(&build(PING, &[])[..], &PING_FRAME[..]);
    }
}
