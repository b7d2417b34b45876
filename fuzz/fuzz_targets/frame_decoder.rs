//! `frame_decoder`: arbitrary bytes through the pure codec.
//!
//! The input is treated as a stream of frames, consumed the way
//! `Connection::read_frame` consumes its buffer: parse one frame from the
//! front, advance by the length it reports, repeat until "need more bytes"
//! (`Ok(None)`) or an error. Separately, the same bytes go through
//! `check_magic`.
//!
//! Invariants checked, besides "never panics":
//!
//! * a parsed frame used at least the 5-byte minimum and at most the bytes
//!   available and `4 + MAX_FRAME_LEN`;
//! * every parsed frame is within the protocol's limits, and encoding it
//!   again gives exactly the bytes it was parsed from (the encoding is
//!   canonical: one frame, one spelling);
//! * every strict prefix of a frame's bytes is "need more", never an error
//!   or a different frame (so the answer does not depend on how the stream
//!   was split into reads);
//! * `check_magic` answers `Some` exactly when the input starts with the
//!   magic, `None` exactly for a short matching prefix, and an error
//!   otherwise.

#![no_main]

use ferry::protocol::{check_magic, DecodeError, Frame, MAGIC, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_magic_agrees(data);

    let mut rest = data;
    loop {
        match Frame::parse(rest) {
            Ok(Some((frame, used))) => {
                assert!(used >= 5, "{frame:?} used only {used} bytes");
                assert!(used <= rest.len(), "used {used} of {} bytes", rest.len());
                assert!(used <= 4 + MAX_FRAME_LEN, "used {used} bytes");
                let bytes = &rest[..used];
                if let Err(why) = frame.check_limits() {
                    panic!("decoded frame breaks a limit ({why}): {frame:?}");
                }
                let mut again = Vec::new();
                frame.encode(&mut again);
                assert_eq!(again, bytes, "re-encoding {frame:?} changed its bytes");
                // Cheap split-point check: the longest strict prefix (and the
                // 4-byte length alone) must both be "need more".
                assert_eq!(Frame::parse(&bytes[..used - 1]), Ok(None));
                assert_eq!(Frame::parse(&bytes[..4]), Ok(None));
                rest = &rest[used..];
            }
            Ok(None) => {
                // Need more: either not even a length, or a length whose
                // frame is not all here yet.
                if rest.len() >= 4 {
                    let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                    assert!(
                        (1..=MAX_FRAME_LEN).contains(&len),
                        "len {len} gave Ok(None)"
                    );
                    assert!(rest.len() < 4 + len);
                }
                break;
            }
            Err(e) => {
                // Length errors are decided from the 4 length bytes alone.
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap());
                match e {
                    DecodeError::TooLarge(n) => {
                        assert_eq!(n, len);
                        assert!(n as usize > MAX_FRAME_LEN);
                    }
                    DecodeError::Empty => assert_eq!(len, 0),
                    DecodeError::BadMagic => panic!("Frame::parse reported bad magic"),
                    _ => assert!(len >= 1 && len as usize <= MAX_FRAME_LEN),
                }
                // Display must not panic either (it goes into log lines and
                // error frames).
                let _ = e.to_string();
                break;
            }
        }
    }
});

fn check_magic_agrees(data: &[u8]) {
    let n = data.len().min(MAGIC.len());
    let is_prefix = data[..n] == MAGIC[..n];
    match check_magic(data) {
        Ok(Some(())) => assert!(is_prefix && n == MAGIC.len()),
        Ok(None) => assert!(is_prefix && n < MAGIC.len()),
        Err(e) => {
            assert_eq!(e, DecodeError::BadMagic);
            assert!(!is_prefix);
        }
    }
}
