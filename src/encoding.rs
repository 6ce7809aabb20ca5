//! The one place that knows the binary encoding (bincode 2.x through serde), so the format
//! can change here and nowhere else. Every encoded blob starts with a 4-byte magic, a
//! format version and an xxh3 checksum of the payload, so a truncated or foreign file is
//! reported as such instead of decoding into nonsense.

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
}

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
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Payload(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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
