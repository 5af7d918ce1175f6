//! The GLI frame codec (docs/protocol.md section 1), sans-IO.
//!
//! A frame is a 6-byte header (`0x00`, type, u16 big-endian length = body + 2, version `2`,
//! application id `0`) followed by the body. [`FrameDecoder`] takes bytes as they arrive, in
//! chunks of any size, and yields whole frames; it checks each header byte as soon as it is
//! available so that garbage is refused at once rather than after 64 KiB have been buffered.

use std::fmt;
use thiserror::Error;

/// Bytes before the body: marker, type, length (2), version, application id.
pub const HEADER_LEN: usize = 6;
/// The largest frame, header included (docs/protocol.md: "a whole frame is at most 64 KiB").
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// The largest body a frame can carry.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;
/// The only GLI version this codec speaks.
pub const GLI_VERSION: u8 = 2;
/// The only application id this codec speaks.
pub const APPLICATION_ID: u8 = 0;

/// The message type (header byte 1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FrameKind {
    KeepAliveRequest,
    KeepAliveResponse,
    Error,
    Data,
}

impl FrameKind {
    pub fn code(self) -> u8 {
        match self {
            FrameKind::KeepAliveRequest => 0,
            FrameKind::KeepAliveResponse => 1,
            FrameKind::Error => 2,
            FrameKind::Data => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => FrameKind::KeepAliveRequest,
            1 => FrameKind::KeepAliveResponse,
            2 => FrameKind::Error,
            3 => FrameKind::Data,
            _ => return None,
        })
    }
}

/// One frame: its type and its body (the XML document of a Data frame, the code of an Error
/// frame, empty for keep-alives).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    pub kind: FrameKind,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, body: Vec<u8>) -> Self {
        Frame { kind, body }
    }
}

/// What was wrong with the input. `at` is the offset of the offending byte in the whole
/// stream fed to the decoder (counting from 0), so a log line can point at it.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum FrameError {
    #[error("frame must start with byte 0x00, got 0x{got:02x} at byte {at}")]
    BadMarker { got: u8, at: u64 },
    #[error("unknown frame type 0x{got:02x} at byte {at}")]
    UnknownType { got: u8, at: u64 },
    #[error("declared length {declared} is less than 2 at byte {at}")]
    LengthTooSmall { declared: u16, at: u64 },
    #[error("declared length {declared} makes a frame of {frame_len} bytes, over the 64 KiB limit, at byte {at}")]
    TooLong {
        declared: u16,
        frame_len: usize,
        at: u64,
    },
    #[error("GLI version {got} is not supported (expected 2) at byte {at}")]
    BadVersion { got: u8, at: u64 },
    #[error("application id {got} is not supported (expected 0) at byte {at}")]
    BadApplicationId { got: u8, at: u64 },
}

/// A body too large to fit a frame (only our own encoder can report this).
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[error("a frame body of {len} bytes exceeds the limit of {MAX_BODY_LEN} bytes")]
pub struct BodyTooLong {
    pub len: usize,
}

/// Encodes one frame. The length field counts the body plus the version and application id
/// bytes, as the protocol says.
pub fn encode_frame(kind: FrameKind, body: &[u8]) -> Result<Vec<u8>, BodyTooLong> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    encode_frame_into(kind, body, &mut out)?;
    Ok(out)
}

/// Like [`encode_frame`], appending to `out` (lets a writer reuse one buffer).
pub fn encode_frame_into(
    kind: FrameKind,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BodyTooLong> {
    write_header(kind, body.len(), out)?;
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a frame header for a body of `body_len` bytes (the body is written by the caller,
/// possibly in several pieces).
pub fn write_header(
    kind: FrameKind,
    body_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), BodyTooLong> {
    if body_len > MAX_BODY_LEN {
        return Err(BodyTooLong { len: body_len });
    }
    // Cannot truncate: MAX_BODY_LEN + 2 < u16::MAX.
    let declared = (body_len + 2) as u16;
    out.extend_from_slice(&[0, kind.code()]);
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(&[GLI_VERSION, APPLICATION_ID]);
    Ok(())
}

/// Decodes frames from a byte stream fed in chunks of any size.
///
/// After an error the stream cannot be resynchronised (there is no frame delimiter), so the
/// decoder stays failed and yields nothing more: the caller answers with an Error frame and
/// closes.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of the stream consumed by frames already returned (for error offsets).
    consumed: u64,
    failed: bool,
}

/// Buffers that grew for a large frame are given back once drained above this size, so an
/// idle client keeps its memory small.
const KEEP_CAPACITY: usize = 4 * 1024;

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Call [`FrameDecoder::next_frame`] until it returns `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, an error, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        if self.failed {
            return None;
        }
        match self.check_header() {
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                Some(Err(e))
            }
            Ok(None) => None,
            Ok(Some(frame_len)) => {
                if self.buf.len() < frame_len {
                    return None;
                }
                // check_header already refused unknown types.
                let kind = FrameKind::from_code(self.buf[1])?;
                let body = self.buf[HEADER_LEN..frame_len].to_vec();
                self.buf.drain(..frame_len);
                self.consumed += frame_len as u64;
                if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
                Some(Ok(Frame { kind, body }))
            }
        }
    }

    /// Validates what is buffered of the current header; returns the whole frame length once
    /// the header is complete.
    fn check_header(&self) -> Result<Option<usize>, FrameError> {
        let b = &self.buf;
        let at = |i: usize| self.consumed + i as u64;
        if let Some(&m) = b.first() {
            if m != 0 {
                return Err(FrameError::BadMarker { got: m, at: at(0) });
            }
        }
        if let Some(&t) = b.get(1) {
            if FrameKind::from_code(t).is_none() {
                return Err(FrameError::UnknownType { got: t, at: at(1) });
            }
        }
        if b.len() < 4 {
            return Ok(None);
        }
        let declared = u16::from_be_bytes([b[2], b[3]]);
        if declared < 2 {
            return Err(FrameError::LengthTooSmall {
                declared,
                at: at(2),
            });
        }
        let frame_len = 4 + declared as usize;
        if frame_len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                declared,
                frame_len,
                at: at(2),
            });
        }
        if let Some(&v) = b.get(4) {
            if v != GLI_VERSION {
                return Err(FrameError::BadVersion { got: v, at: at(4) });
            }
        }
        if let Some(&a) = b.get(5) {
            if a != APPLICATION_ID {
                return Err(FrameError::BadApplicationId { got: a, at: at(5) });
            }
        }
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        Ok(Some(frame_len))
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buf.len())
            .field("consumed", &self.consumed)
            .field("failed", &self.failed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Result<Frame, FrameError>> {
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn encodes_the_documented_header() {
        let f = encode_frame(FrameKind::Data, b"<x/>").unwrap();
        assert_eq!(f, [0, 3, 0, 6, 2, 0, b'<', b'x', b'/', b'>']);
        assert_eq!(
            encode_frame(FrameKind::KeepAliveRequest, b"").unwrap(),
            [0, 0, 0, 2, 2, 0]
        );
        assert_eq!(
            encode_frame(FrameKind::KeepAliveResponse, b"").unwrap()[1],
            1
        );
        assert_eq!(
            encode_frame(FrameKind::Error, &[7]).unwrap(),
            [0, 2, 0, 3, 2, 0, 7]
        );
    }

    #[test]
    fn refuses_to_encode_a_body_over_the_limit() {
        assert!(encode_frame(FrameKind::Data, &vec![b'a'; MAX_BODY_LEN]).is_ok());
        assert_eq!(
            encode_frame(FrameKind::Data, &vec![b'a'; MAX_BODY_LEN + 1]),
            Err(BodyTooLong {
                len: MAX_BODY_LEN + 1
            })
        );
    }

    #[test]
    fn decodes_frames_split_across_reads_byte_by_byte() {
        let a = encode_frame(FrameKind::Data, b"hello").unwrap();
        let b = encode_frame(FrameKind::KeepAliveRequest, b"").unwrap();
        let all: Vec<u8> = [a, b].concat();
        let chunks: Vec<&[u8]> = all.chunks(1).collect();
        let got = decode_all(&chunks);
        assert_eq!(
            got,
            vec![
                Ok(Frame::new(FrameKind::Data, b"hello".to_vec())),
                Ok(Frame::new(FrameKind::KeepAliveRequest, vec![]))
            ]
        );
    }

    #[test]
    fn decodes_several_frames_in_one_read() {
        let mut all = Vec::new();
        for i in 0..5u8 {
            all.extend(encode_frame(FrameKind::Data, &[b'a' + i]).unwrap());
        }
        let got = decode_all(&[&all]);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], Ok(Frame::new(FrameKind::Data, b"e".to_vec())));
    }

    #[test]
    fn accepts_the_largest_frame() {
        let f = encode_frame(FrameKind::Data, &vec![b'z'; MAX_BODY_LEN]).unwrap();
        assert_eq!(f.len(), MAX_FRAME_LEN);
        let got = decode_all(&[&f]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().body.len(), MAX_BODY_LEN);
    }

    #[test]
    fn bad_marker_is_reported_at_its_byte() {
        let ok = encode_frame(FrameKind::KeepAliveRequest, b"").unwrap();
        let got = decode_all(&[&ok, b"G"]);
        assert_eq!(got[1], Err(FrameError::BadMarker { got: b'G', at: 6 }));
    }

    #[test]
    fn unknown_type_is_refused_before_the_rest_arrives() {
        assert_eq!(
            decode_all(&[&[0, 9]]),
            vec![Err(FrameError::UnknownType { got: 9, at: 1 })]
        );
    }

    #[test]
    fn length_below_two_is_refused() {
        assert_eq!(
            decode_all(&[&[0, 3, 0, 1]]),
            vec![Err(FrameError::LengthTooSmall { declared: 1, at: 2 })]
        );
    }

    #[test]
    fn declared_length_over_64k_is_refused_without_waiting_for_the_body() {
        assert_eq!(
            decode_all(&[&[0, 3, 0xff, 0xff]]),
            vec![Err(FrameError::TooLong {
                declared: 0xffff,
                frame_len: 0xffff + 4,
                at: 2
            })]
        );
        // 65533 + 4 = 65537: one byte over.
        let l = (MAX_FRAME_LEN - 3) as u16;
        let [hi, lo] = l.to_be_bytes();
        assert!(matches!(
            decode_all(&[&[0, 3, hi, lo]])[0],
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn wrong_version_and_application_id_are_refused() {
        assert_eq!(
            decode_all(&[&[0, 3, 0, 2, 1, 0]]),
            vec![Err(FrameError::BadVersion { got: 1, at: 4 })]
        );
        assert_eq!(
            decode_all(&[&[0, 3, 0, 2, 2, 5]]),
            vec![Err(FrameError::BadApplicationId { got: 5, at: 5 })]
        );
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let e = FrameError::BadVersion { got: 1, at: 4 };
        assert_eq!(
            e.to_string(),
            "GLI version 1 is not supported (expected 2) at byte 4"
        );
    }

    #[test]
    fn decoder_stays_failed_after_an_error() {
        let mut d = FrameDecoder::new();
        d.push(b"xx");
        assert!(matches!(d.next_frame(), Some(Err(_))));
        d.push(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap());
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn memory_is_given_back_after_a_big_frame() {
        let mut d = FrameDecoder::new();
        d.push(&encode_frame(FrameKind::Data, &vec![b'a'; 60_000]).unwrap());
        assert!(matches!(d.next_frame(), Some(Ok(_))));
        assert_eq!(d.buf.capacity(), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = FrameDecoder::new();
            for c in &chunks {
                d.push(c);
                while let Some(r) = d.next_frame() {
                    if let Ok(f) = r {
                        prop_assert!(f.body.len() <= MAX_BODY_LEN);
                    }
                }
            }
        }

        #[test]
        fn encode_then_decode_is_identity_at_any_split(
            frames in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..300)), 1..6),
            split in 1usize..50,
        ) {
            let frames: Vec<Frame> = frames
                .into_iter()
                .filter_map(|(k, b)| FrameKind::from_code(k).map(|k| Frame::new(k, b)))
                .collect();
            let bytes: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f.kind, &f.body).unwrap()).collect();
            let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
            let got: Vec<Frame> = decode_all(&chunks).into_iter().map(|r| r.unwrap()).collect();
            prop_assert_eq!(got, frames);
        }
    }
}
