//! The seal on every gossip packet: XChaCha20-Poly1305 (`starling-aead`) under a packet key derived by HKDF
//! from a cluster key and bound to the cluster id, with the send time inside.
//!
//! ```text
//! sealed packet = format (1) | key id (4) | nonce (24) | ciphertext of [time (8) | envelope] | tag (16)
//! ```
//!
//! - **Format** `0xA1` tells a sealed packet from a plain chitchat one (whose first byte is
//!   `0x53`). It and the key id are authenticated as associated data.
//! - **Key id**: the sealing key's public fingerprint ([`KeyId`]); the receiver opens with
//!   that key of its keyring, and names it in logs when it lacks it.
//! - **Nonce**: 24 random bytes per packet from the node's [`Entropy`]. XChaCha20's 192-bit
//!   nonce makes random nonces safe for any number of packets (a repeat is a 2^-96 event
//!   after 2^48 packets), so nodes share a key with no nonce coordination and no state.
//! - **Time**: the sender's clock in Unix milliseconds, encrypted and authenticated. A
//!   receiver drops a packet whose time is further than the replay window from its own
//!   clock (README, Security: why replays within the window change nothing).
//! - **Key**: `HKDF-SHA256(salt "starling gossip v1", key)` expanded with info
//!   `"starling packet key v1" 0x00 <cluster id>`: a packet sealed for another cluster id
//!   fails authentication even under the same key.
//!
//! Nothing here does I/O or reads a clock: time and randomness come in as arguments.

use hkdf::Hkdf;
use sha2::Sha256;
use starling_aead::{Cipher, NONCE_LEN, TAG_LEN};
use zeroize::Zeroizing;

use super::keyring::{KeyId, Keyring};
use crate::core::types::UnixMillis;

/// First byte of a sealed packet.
pub const SEALED_FORMAT: u8 = 0xA1;
/// First byte of a plain chitchat packet (its magic number 45139, little-endian).
pub const PLAIN_FORMAT: u8 = 0x53;
const HEADER_LEN: usize = 1 + 4;
const TIME_LEN: usize = 8;
/// Bytes a seal adds to a packet: format, key id, nonce, time and tag.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TIME_LEN + TAG_LEN;

// The vendored chitchat keeps this much of every datagram free for the seal (vendor/README.md).
const _: () = assert!(SEAL_OVERHEAD <= chitchat::TRANSPORT_RESERVED_LEN);

/// A source of nonces: bytes that never repeat under a key. Nodes use [`CountedNonces`];
/// the simulator injects a seeded generator so its runs replay bit for bit.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `buf` with bytes no earlier call returned (random, or random and counted).
    fn fill(&self, buf: &mut [u8]);
}

/// Nonces for a real node: 16 random bytes from the operating system drawn once, followed
/// by a 64-bit count of the nonces handed out.
///
/// A nonce must never repeat under a key; it need not be unpredictable. Two processes
/// sharing a key repeat a nonce only if they drew the same 128-bit prefix (a 2^-64 chance
/// after 2^32 process starts), and one process never repeats its count. Drawing 24 OS
/// random bytes per packet instead cost a system call per packet: about 0.7 µs, an eighth
/// of the seal's whole cost on this project's machine (benches/seal.rs, issue 16).
pub struct CountedNonces {
    prefix: [u8; 16],
    next: std::sync::atomic::AtomicU64,
}

impl CountedNonces {
    /// A fresh prefix from the operating system, counting from zero.
    pub fn from_os() -> CountedNonces {
        let mut prefix = [0u8; 16];
        OsEntropy.fill(&mut prefix);
        CountedNonces {
            prefix,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for CountedNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountedNonces")
    }
}

impl Entropy for CountedNonces {
    /// The prefix, then the count (little-endian); a `buf` longer than 24 bytes repeats
    /// the prefix before the count, a shorter one keeps the count's low bytes.
    fn fill(&self, buf: &mut [u8]) {
        let n = self
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes();
        let split = buf.len().saturating_sub(n.len());
        for (i, b) in buf[..split].iter_mut().enumerate() {
            *b = self.prefix[i % self.prefix.len()];
        }
        let tail = buf.len() - split;
        buf[split..].copy_from_slice(&n[..tail]);
    }
}

/// The operating system's random number generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // The OS generator failing is a broken machine; a predictable nonce would be worse.
        getrandom::fill(buf).expect("the operating system's random number generator failed");
    }
}

/// Why a packet did not open. The packet is dropped; nothing else changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// A plain chitchat packet: its sender has no cluster key.
    #[error("not sealed: the sender has no cluster key")]
    Plain,
    /// Too short to be sealed, or an unknown format.
    #[error("not a sealed packet")]
    Malformed,
    /// Sealed with a key this node does not hold.
    #[error("sealed with key {0}, which is not in this node's keyring")]
    UnknownKey(KeyId),
    /// Failed authentication under the key it names: corrupted, forged, or sealed for
    /// another cluster id.
    #[error("failed authentication under key {0} (corrupted, forged, or another cluster id)")]
    Forged(KeyId),
    /// Authentic, but its time is further than the replay window from this node's clock.
    #[error("dated {age_ms} ms from this node's clock, outside the replay window")]
    Stale {
        /// This node's time minus the packet's (negative: from the future).
        age_ms: i64,
    },
}

struct PacketKey {
    id: KeyId,
    cipher: Cipher,
}

/// Seals and opens packets for one cluster id with a keyring's keys.
pub struct Seal {
    keys: Vec<PacketKey>,
    window_ms: i64,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal({:?}, window {} ms)", self.ids(), self.window_ms)
    }
}

impl Seal {
    /// Packet keys for `cluster_id` from every key of `keyring` (the first seals); packets
    /// dated further than `window` from the receiver's clock are refused.
    pub fn new(keyring: &Keyring, cluster_id: &str, window: std::time::Duration) -> Seal {
        let mut info = b"starling packet key v1\0".to_vec();
        info.extend_from_slice(cluster_id.as_bytes());
        let keys = keyring
            .keys()
            .iter()
            .map(|k| {
                let mut okm = Zeroizing::new([0u8; 32]);
                Hkdf::<Sha256>::new(Some(b"starling gossip v1"), k.bytes())
                    .expand(&info, &mut okm[..])
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
                PacketKey {
                    id: k.id(),
                    cipher: Cipher::new(&okm),
                }
            })
            .collect();
        Seal {
            keys,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The id of the key that seals.
    pub fn sealing_id(&self) -> KeyId {
        self.keys[0].id
    }

    /// The ids of every key that opens, the sealing key's first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// Seals `plain` (an envelope's bytes) sent at `now` into `out` (cleared first).
    pub fn seal(&self, plain: &[u8], now: UnixMillis, entropy: &dyn Entropy, out: &mut Vec<u8>) {
        let key = &self.keys[0];
        out.clear();
        out.reserve(plain.len() + SEAL_OVERHEAD);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&key.id.0);
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&now.0.to_le_bytes());
        out.extend_from_slice(plain);
        let (aad, rest) = out.split_at_mut(HEADER_LEN);
        let tag = key.cipher.seal(&nonce, aad, &mut rest[NONCE_LEN..]);
        out.extend_from_slice(&tag);
    }

    /// Opens `packet` received at `now`: verifies it and writes the envelope's bytes into
    /// `out` (cleared first); returns the id of the key that sealed it. Never panics,
    /// whatever the bytes.
    pub fn open(
        &self,
        packet: &[u8],
        now: UnixMillis,
        out: &mut Vec<u8>,
    ) -> Result<KeyId, OpenError> {
        out.clear();
        match packet.first() {
            Some(&SEALED_FORMAT) if packet.len() >= SEAL_OVERHEAD => {}
            Some(&PLAIN_FORMAT) => return Err(OpenError::Plain),
            _ => return Err(OpenError::Malformed),
        }
        let (header, rest) = packet.split_at(HEADER_LEN);
        let id = KeyId([header[1], header[2], header[3], header[4]]);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey(id))?;
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        out.extend_from_slice(body);
        if key.cipher.open(nonce, header, out, tag).is_err() {
            out.clear();
            return Err(OpenError::Forged(id));
        }
        let mut time = [0u8; TIME_LEN];
        time.copy_from_slice(&out[..TIME_LEN]);
        let age_ms = now.0.saturating_sub(i64::from_le_bytes(time));
        if age_ms.saturating_abs() > self.window_ms {
            out.clear();
            return Err(OpenError::Stale { age_ms });
        }
        out.drain(..TIME_LEN);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::security::keyring::{ClusterKey, KEY_LEN};

    /// Deterministic nonces for tests.
    struct Counter(AtomicU64);

    impl Entropy for Counter {
        fn fill(&self, buf: &mut [u8]) {
            let n = self.0.fetch_add(1, Ordering::Relaxed).to_le_bytes();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = n[i % 8] ^ i as u8;
            }
        }
    }

    fn ring(seeds: &[u8]) -> Keyring {
        Keyring::new(
            seeds
                .iter()
                .map(|&s| ClusterKey::from_bytes([s; KEY_LEN]))
                .collect(),
        )
        .unwrap()
    }

    const WINDOW: Duration = Duration::from_secs(600);
    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn seal_of(seeds: &[u8], cluster: &str) -> Seal {
        Seal::new(&ring(seeds), cluster, WINDOW)
    }

    fn sealed(seal: &Seal, plain: &[u8], at: UnixMillis) -> Vec<u8> {
        let mut out = Vec::new();
        seal.seal(plain, at, &Counter(AtomicU64::new(1)), &mut out);
        out
    }

    #[test]
    fn a_sealed_packet_opens_with_any_key_of_the_ring_and_hides_its_content() {
        let plain = b"\x53\xb0 fire:billing=1800000000000/3/1799999990000".to_vec();
        let sender = seal_of(&[1], "prod");
        let packet = sealed(&sender, &plain, NOW);
        assert_eq!(packet.len(), plain.len() + SEAL_OVERHEAD);
        assert!(
            !packet.windows(7).any(|w| w == b"billing"),
            "the content shows through"
        );
        let mut out = Vec::new();
        for receiver in [seal_of(&[1], "prod"), seal_of(&[2, 1], "prod")] {
            receiver.open(&packet, NOW, &mut out).unwrap();
            assert_eq!(out, plain);
        }
        // Two packets of the same content differ (fresh nonces).
        let entropy = Counter(AtomicU64::new(5));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        sender.seal(&plain, NOW, &entropy, &mut a);
        sender.seal(&plain, NOW, &entropy, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn every_kind_of_bad_packet_is_refused_and_named() {
        let plain = b"\x53\xb0 hello".to_vec();
        let sender = seal_of(&[1], "prod");
        let packet = sealed(&sender, &plain, NOW);
        let mut out = Vec::new();
        let id1 = ring(&[1]).sealing().id();
        assert_eq!(
            seal_of(&[2], "prod").open(&packet, NOW, &mut out),
            Err(OpenError::UnknownKey(id1))
        );
        assert_eq!(
            seal_of(&[1], "staging").open(&packet, NOW, &mut out),
            Err(OpenError::Forged(id1)),
            "bound to the cluster id"
        );
        let mut flipped = packet.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert_eq!(
            sender.open(&flipped, NOW, &mut out),
            Err(OpenError::Forged(id1))
        );
        assert!(out.is_empty(), "nothing of a forged packet is handed on");
        assert_eq!(sender.open(&plain, NOW, &mut out), Err(OpenError::Plain));
        assert_eq!(sender.open(&[], NOW, &mut out), Err(OpenError::Malformed));
        assert_eq!(
            sender.open(&packet[..SEAL_OVERHEAD - 1], NOW, &mut out),
            Err(OpenError::Malformed)
        );
        let late = NOW.saturating_add(WINDOW + Duration::from_millis(1));
        assert_eq!(
            sender.open(&packet, late, &mut out),
            Err(OpenError::Stale { age_ms: 600_001 })
        );
        let early = UnixMillis(NOW.0 - 600_001);
        assert_eq!(
            sender.open(&packet, early, &mut out),
            Err(OpenError::Stale { age_ms: -600_001 })
        );
        let edge = NOW.saturating_add(WINDOW);
        assert_eq!(
            sender.open(&packet, edge, &mut out),
            Ok(sender.sealing_id())
        );
        assert_eq!(out, plain);
    }

    #[test]
    fn counted_nonces_never_repeat_and_differ_between_processes() {
        let a = CountedNonces::from_os();
        let b = CountedNonces::from_os();
        let mut seen = std::collections::BTreeSet::new();
        for source in [&a, &b] {
            for _ in 0..1_000 {
                let mut n = [0u8; NONCE_LEN];
                source.fill(&mut n);
                assert!(seen.insert(n), "nonce {n:?} repeated");
            }
        }
        let (mut x, mut y) = ([0u8; NONCE_LEN], [0u8; NONCE_LEN]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x[..16], y[..16], "two sources drew the same prefix");
        let mut short = [0u8; 4];
        a.fill(&mut short);
    }

    #[test]
    fn an_empty_envelope_still_seals() {
        let s = seal_of(&[3], "c");
        let packet = sealed(&s, &[], NOW);
        assert_eq!(packet.len(), SEAL_OVERHEAD);
        let mut out = vec![1, 2, 3];
        s.open(&packet, NOW, &mut out).unwrap();
        assert!(out.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// The opener never panics and never opens bytes that were not sealed with a key
        /// of the ring, whatever they are.
        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..600), sealed_format in any::<bool>()) {
            let receiver = seal_of(&[1, 2], "prod");
            let mut bytes = bytes;
            if sealed_format && bytes.len() > 5 {
                // Give random bytes the best chance: the right format and a known key id.
                bytes[0] = SEALED_FORMAT;
                bytes[1..5].copy_from_slice(&ring(&[2]).sealing().id().0);
            }
            let mut out = Vec::new();
            prop_assert!(receiver.open(&bytes, NOW, &mut out).is_err());
            prop_assert!(out.is_empty());
        }

        /// Any change to a sealed packet (a flipped bit, a cut, bytes appended) is refused.
        #[test]
        fn a_tampered_packet_never_opens(
            plain in proptest::collection::vec(any::<u8>(), 0..300),
            bit in any::<prop::sample::Index>(),
            cut in 1usize..40,
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let s = seal_of(&[4], "prod");
            let packet = sealed(&s, &plain, NOW);
            let mut out = Vec::new();
            let mut flipped = packet.clone();
            let i = bit.index(flipped.len() * 8);
            flipped[i / 8] ^= 1 << (i % 8);
            prop_assert!(s.open(&flipped, NOW, &mut out).is_err());
            let cut = &packet[..packet.len() - cut.min(packet.len())];
            prop_assert!(s.open(cut, NOW, &mut out).is_err());
            let mut longer = packet.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(s.open(&longer, NOW, &mut out).is_err());
            s.open(&packet, NOW, &mut out).unwrap();
            prop_assert_eq!(out, plain);
        }
    }
}
