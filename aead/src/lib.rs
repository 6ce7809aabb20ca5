//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) behind a non-generic type.
//!
//! The cipher's code is generic, so Rust compiles it in the crate that names the concrete
//! type, at that crate's optimization level. Naming it here, in a crate the workspace
//! builds with `opt-level = 3` even in debug builds (root `Cargo.toml`), keeps the
//! simulator and the tests from running an unoptimized cipher on every gossip packet
//! (several times slower). Starling's seal (`src/security/seal.rs`) is the only user.

#![warn(missing_docs)]

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

/// Key length in bytes.
pub const KEY_LEN: usize = 32;
/// Nonce length in bytes.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An XChaCha20-Poly1305 key, ready to seal and open.
#[derive(Clone)]
pub struct Cipher(XChaCha20Poly1305);

/// The tag did not verify: the bytes, the associated data or the key differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthentic;

impl Cipher {
    /// A cipher under `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Cipher {
        Cipher(XChaCha20Poly1305::new(key.into()))
    }

    /// Encrypts `buf` in place, authenticating it and `aad`; returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        self.0
            .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf)
            // Only messages beyond 256 GiB fail.
            .expect("a message below XChaCha20-Poly1305's length limit")
            .into()
    }

    /// Verifies `tag` over `buf` and `aad`, then decrypts `buf` in place. On error `buf` is
    /// unchanged (still encrypted).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unauthentic> {
        self.0
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .map_err(|_| Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    #[test]
    fn matches_the_xchacha20_poly1305_test_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let cipher = Cipher::new(&key);
        let mut buf = plaintext.to_vec();
        let tag = cipher.seal(&nonce, &aad, &mut buf);
        assert_eq!(
            buf[..16],
            hex("bd6d179d3e83d43b9576579493c0e939")[..],
            "ciphertext"
        );
        assert_eq!(tag[..], hex("c0875924c1c7987947deafd8780acf49")[..], "tag");
        let mut flipped = tag;
        flipped[0] ^= 1;
        let sealed = buf.clone();
        assert_eq!(
            cipher.open(&nonce, &aad, &mut buf, &flipped),
            Err(Unauthentic)
        );
        assert_eq!(buf, sealed, "a failed open leaves the bytes as they were");
        cipher.open(&nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plaintext);
    }
}
