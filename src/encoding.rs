//! The one place that knows the binary encoding (bincode 2.x through serde), so the format
//! can change here and nowhere else. Every encoded blob starts with a 4-byte magic, a
//! format version and an xxh3 checksum of the payload, so a truncated or foreign file is
//! reported as such instead of decoding into nonsense.
//!
//! Gossip values are strings, so [`encode_text`] carries the same blob in base64 (standard
//! alphabet, no padding). Decoding never trusts a length inside the bytes: bincode claims
//! are capped ([`MAX_DECODED_BYTES`], [`MAX_TEXT_DECODED_BYTES`]), so a crafted length
//! cannot make the decoder allocate gigabytes; it fails instead.

use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::xxh3_64;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short, or the magic bytes are not ours.
    #[error("not a Starling file (bad magic or too short)")]
    NotOurs,
    /// Written by a different format version.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    Version {
        /// The version in the file.
        found: u16,
        /// The version this build writes and reads.
        supported: u16,
    },
    /// The checksum does not match: the file was truncated or damaged.
    #[error("checksum mismatch: the file is truncated or damaged")]
    Checksum,
    /// The payload did not decode.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// Text that is not base64 (see [`decode_text`]).
    #[error("not base64 text")]
    Text,
    /// Text longer than the caller accepts (see [`decode_text`]).
    #[error("{len} bytes of text, more than the {max} accepted")]
    TooLong {
        /// The text's length.
        len: usize,
        /// The most accepted.
        max: usize,
    },
}

/// Most memory one [`decode`] may claim (bincode's limit): far above any file Starling
/// writes (100,000 fire records claim about 5 MB).
pub const MAX_DECODED_BYTES: usize = 256 << 20;
/// Most memory one [`decode_text`] may claim: gossip values are at most a few KiB.
pub const MAX_TEXT_DECODED_BYTES: usize = 1 << 20;

const MAGIC: &[u8; 4] = b"STRL";
const HEADER: usize = 4 + 2 + 8;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` with the header (magic, `version`, checksum).
pub fn encode<T: Serialize>(value: &T, version: u16) -> Vec<u8> {
    let payload = bincode::serde::encode_to_vec(value, config())
        .expect("encoding plain data into a Vec cannot fail");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes what [`encode`] wrote with the same `version`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], version: u16) -> Result<T, DecodeError> {
    decode_limited::<T, MAX_DECODED_BYTES>(bytes, version)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
    version: u16,
) -> Result<T, DecodeError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(DecodeError::NotOurs);
    }
    let found = u16::from_le_bytes([bytes[4], bytes[5]]);
    if found != version {
        return Err(DecodeError::Version {
            found,
            supported: version,
        });
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[6..HEADER]);
    let payload = &bytes[HEADER..];
    if xxh3_64(payload) != u64::from_le_bytes(sum) {
        return Err(DecodeError::Checksum);
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config().with_limit::<LIMIT>())
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Payload(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// [`encode`], as base64 text (a gossip value).
pub fn encode_text<T: Serialize>(value: &T, version: u16) -> String {
    base64_encode(&encode(value, version))
}

/// Decodes what [`encode_text`] wrote with the same `version`. Text longer than `max_len`
/// is refused before anything is decoded.
pub fn decode_text<T: DeserializeOwned>(
    text: &str,
    version: u16,
    max_len: usize,
) -> Result<T, DecodeError> {
    if text.len() > max_len {
        return Err(DecodeError::TooLong {
            len: text.len(),
            max: max_len,
        });
    }
    let bytes = base64_decode(text).ok_or(DecodeError::Text)?;
    decode_limited::<T, MAX_TEXT_DECODED_BYTES>(&bytes, version)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        // A chunk of k bytes gives k + 1 characters (no padding).
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.as_bytes();
    // k bytes give k + 1 characters, so a group of one character is impossible.
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c)? << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        // Bits below the last byte must be zero, so every byte string has one spelling.
        if n & ((1 << (24 - 8 * bytes)) - 1) != 0 {
            return None;
        }
        for i in 0..bytes {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_matches_the_standard_alphabet_without_padding() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            assert_eq!(base64_encode(bytes), text);
            assert_eq!(base64_decode(text).as_deref(), Some(bytes));
        }
        for bad in ["Z", "Zh", "Zm9v=", "Zm 9", "Zm9vY"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_round_trips_and_long_or_foreign_text_is_refused() {
        let v = (String::from("job"), 7u64);
        let text = encode_text(&v, 3);
        assert_eq!(decode_text::<(String, u64)>(&text, 3, 1024), Ok(v));
        assert_eq!(
            decode_text::<(String, u64)>(&text, 3, 4),
            Err(DecodeError::TooLong {
                len: text.len(),
                max: 4
            })
        );
        assert_eq!(
            decode_text::<(String, u64)>("not base64!", 3, 1024),
            Err(DecodeError::Text)
        );
    }

    #[test]
    fn a_crafted_length_fails_instead_of_allocating() {
        // A valid header and checksum around a payload claiming a string of 2^60 bytes.
        let mut payload = vec![0xfd];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(
            decode::<String>(&bytes, 1),
            Err(DecodeError::Payload(_))
        ));
        assert!(matches!(
            decode_text::<String>(&base64_encode(&bytes), 1, 1024),
            Err(DecodeError::Payload(_))
        ));
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = decode_text::<(String, Vec<u64>)>(&text, 1, 1024);
            let _ = base64_decode(&text);
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let v: Vec<(String, i64)> = vec![("a".into(), -5), ("b".into(), 7)];
        let bytes = encode(&v, 1);
        assert_eq!(decode::<Vec<(String, i64)>>(&bytes, 1).unwrap(), v);
        assert_eq!(
            decode::<Vec<(String, i64)>>(&bytes, 2).unwrap_err(),
            DecodeError::Version {
                found: 1,
                supported: 2
            }
        );
        assert_eq!(
            decode::<Vec<(String, i64)>>(&bytes[..bytes.len() - 1], 1).unwrap_err(),
            DecodeError::Checksum
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            decode::<Vec<(String, i64)>>(&flipped, 1).unwrap_err(),
            DecodeError::Checksum
        );
        assert_eq!(
            decode::<Vec<(String, i64)>>(b"nope", 1).unwrap_err(),
            DecodeError::NotOurs
        );
    }
}
