//! The GLI frame decoder over arbitrary bytes cut into arbitrary chunks: the frames (and the
//! error) do not depend on how the stream was cut, each frame re-encodes to exactly the bytes
//! it came from, and the buffer never holds more than one frame and one read.
#![no_main]

use ivrstate_fuzz::chunks;
use ivrstate_publisher::frame::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fn decode(parts: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
    let mut d = FrameDecoder::new();
    let mut bytes = Vec::new();
    let mut seen = Vec::new();
    for p in parts {
        d.push(p);
        assert!(d.buffered() <= MAX_FRAME_LEN + p.len());
        while let Some(next) = d.next_frame() {
            match next {
                Ok(f) => {
                    let enc = encode_frame(f.kind, &f.body).expect("a decoded frame fits");
                    bytes.extend_from_slice(&enc);
                    seen.push(format!("{:?}", f.kind));
                }
                Err(e) => seen.push(format!("error: {e}")),
            }
        }
    }
    (bytes, seen)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (whole_bytes, whole) = decode(&[stream]);
    let (cut_bytes, cut) = decode(&chunks(seed, stream));
    assert_eq!(whole, cut);
    assert_eq!(whole_bytes, cut_bytes);
    assert!(
        stream.starts_with(&whole_bytes),
        "re-encoded frames differ from the input"
    );
});
