//! Confluent Schema Registry framing: the bytes a registry-aware producer
//! puts in front of the body.
//!
//! ```text
//! 0x00 | schema id (4 bytes, big-endian) | [protobuf only: message indexes] | body
//! ```
//!
//! The protobuf message-index list is a zigzag varint count followed by that
//! many zigzag varints (the path of the message type in its `.proto` file);
//! the common case, the first message, is written as the single byte 0.
//! leadscore reads one message type per format, so the indexes are checked
//! for shape and skipped.

use super::DecodeError;

/// The body after the framing, and the schema id.
pub fn strip(bytes: &[u8], protobuf: bool) -> Result<(u32, &[u8]), DecodeError> {
    let bad = |why: &str| DecodeError::BadFraming(why.to_string());
    let (&magic, rest) = bytes
        .split_first()
        .ok_or_else(|| bad("empty message, no magic byte"))?;
    if magic != 0 {
        return Err(DecodeError::BadFraming(format!(
            "magic byte is {magic:#04x}, not 0x00"
        )));
    }
    if rest.len() < 4 {
        return Err(bad("shorter than the 4-byte schema id"));
    }
    let (id, mut rest) = rest.split_at(4);
    let schema_id = u32::from_be_bytes(id.try_into().expect("4 bytes"));
    if protobuf {
        let count = zigzag(&mut rest).ok_or_else(|| bad("message-index count is cut short"))?;
        if count < 0 {
            return Err(bad("message-index count is negative"));
        }
        for _ in 0..count {
            // Each index is at least one byte, so a huge count ends here.
            let i = zigzag(&mut rest).ok_or_else(|| bad("message-index list is cut short"))?;
            if i < 0 {
                return Err(bad("a message index is negative"));
            }
        }
    }
    Ok((schema_id, rest))
}

/// A zigzag-encoded varint (at most 10 bytes), advancing `b`.
fn zigzag(b: &mut &[u8]) -> Option<i64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_magic_byte_and_schema_id() {
        let (id, body) = strip(b"\x00\x00\x00\x01\x02{}", false).unwrap();
        assert_eq!(id, 258);
        assert_eq!(body, b"{}");
        // JSON bodies have no message-index list: a 0 byte stays in the body.
        assert_eq!(
            strip(b"\x00\xff\xff\xff\xff\x00", false).unwrap(),
            (u32::MAX, &b"\x00"[..])
        );
    }

    #[test]
    fn skips_the_protobuf_message_indexes() {
        // The single 0 byte: message [0].
        assert_eq!(
            strip(b"\x00\x00\x00\x00\x07\x00\x0a\x01e", true).unwrap(),
            (7, &b"\x0a\x01e"[..])
        );
        // Count 2 (zigzag 4), indexes 1 and 3 (zigzag 2 and 6).
        assert_eq!(
            strip(b"\x00\x00\x00\x00\x07\x04\x02\x06\x0a", true).unwrap(),
            (7, &b"\x0a"[..])
        );
        // A multi-byte index: 300 (zigzag 600 = 0xd8 0x04).
        assert_eq!(
            strip(b"\x00\x00\x00\x00\x07\x02\xd8\x04", true).unwrap(),
            (7, &b""[..])
        );
    }

    #[test]
    fn bad_framing_has_its_code() {
        let cases: [(&[u8], bool); 8] = [
            (b"", false),
            (b"{\"a\":1}", false),
            (b"\x01\x00\x00\x00\x01{}", false),
            (b"\x00\x00\x00", false),
            (b"\x00\x00\x00\x00\x01", true),
            (b"\x00\x00\x00\x00\x01\x01", true),
            (b"\x00\x00\x00\x00\x01\x04\x02", true),
            (b"\x00\x00\x00\x00\x01\x02\x80\x80", true),
        ];
        for (bytes, protobuf) in cases {
            let e = strip(bytes, protobuf).unwrap_err();
            assert_eq!(e.code(), "bad_framing", "{bytes:?}: {e}");
        }
    }
}
