//! The cluster keyring: its text format, validation, and loading from a file or the
//! environment.
//!
//! A key is 32 random bytes written in standard base64 (44 characters with padding), the
//! output of `openssl rand -base64 32` or `starling keygen`. A keyring holds one or more
//! keys: the first seals every packet this node sends, and every key opens packets, so a
//! key rotates with no downtime (README, Security). Errors name the line and the problem,
//! never the key material.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;
/// Most keys a keyring holds (a rotation needs two; a few more leave room for mistakes).
pub const MAX_KEYS: usize = 16;
/// The environment variable a node reads its keyring from when no key file is given.
pub const CLUSTER_KEY_ENV: &str = "STARLING_CLUSTER_KEY";

/// A key's public fingerprint: 4 bytes derived from the key by HKDF, shown as 8 hex digits.
/// It travels in every sealed packet so a receiver knows which key sealed it, and names a
/// key in logs without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One cluster key. Its bytes are wiped from memory when it is dropped, and neither
/// `Debug` nor any error shows them: only its [`KeyId`].
#[derive(Clone)]
pub struct ClusterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
}

impl ClusterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ClusterKey {
        let bytes = Zeroizing::new(bytes);
        let mut id = [0u8; 4];
        Hkdf::<Sha256>::new(Some(b"starling cluster key"), &bytes[..])
            .expand(b"starling key id v1", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        ClusterKey {
            bytes,
            id: KeyId(id),
        }
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key in its text form (base64), as a key file holds it: for `starling keygen`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&self.bytes[..]))
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({})", self.id)
    }
}

/// Why a keyring could not be read. No variant holds or prints key material. Nothing was
/// changed: a node keeps its current keyring when a reload fails.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read cluster key file {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file or variable holds no key (only blank lines or comments).
    #[error(
        "{source_name} holds no key; generate one with `starling keygen` or `openssl rand -base64 32`"
    )]
    Empty {
        /// Where the keys came from (the file, or the variable).
        source_name: String,
    },
    /// An entry is not standard base64.
    #[error(
        "{source_name}: key {entry} is not base64; a key is 32 random bytes in base64 (44 characters), e.g. from `starling keygen` or `openssl rand -base64 32`"
    )]
    NotBase64 {
        /// Where the keys came from.
        source_name: String,
        /// The entry's place among the keys (1-based; comments and blank lines skipped).
        entry: usize,
    },
    /// An entry decodes to the wrong number of bytes.
    #[error(
        "{source_name}: key {entry} is {len} bytes long, not 32; generate one with `starling keygen` or `openssl rand -base64 32`"
    )]
    WrongLength {
        /// Where the keys came from.
        source_name: String,
        /// The entry's position (1-based).
        entry: usize,
        /// Its decoded length.
        len: usize,
    },
    /// The same key appears twice, or two keys share an id (astronomically unlikely).
    #[error("{source_name}: key {entry} repeats key {first} (id {id})")]
    Duplicate {
        /// Where the keys came from.
        source_name: String,
        /// The repeated entry's position (1-based).
        entry: usize,
        /// The first entry with that key.
        first: usize,
        /// The key's id.
        id: KeyId,
    },
    /// More keys than [`MAX_KEYS`].
    #[error("{source_name} holds {count} keys; at most {MAX_KEYS} are allowed")]
    TooMany {
        /// Where the keys came from.
        source_name: String,
        /// How many it holds.
        count: usize,
    },
    /// Both a key file and the environment variable are set.
    #[error("both a cluster key file and {CLUSTER_KEY_ENV} are set; use one")]
    TwoSources,
    /// A node started without a key cannot be given one while it runs.
    #[error("this node started without a cluster key (open gossip); restart it with one")]
    StartedOpen,
}

/// The cluster keys of a node: the first seals, every one opens. `Debug` shows key ids only.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl Keyring {
    /// A keyring of the given keys, the first sealing. `None` if `keys` is empty or holds
    /// the same key twice.
    pub fn new(keys: Vec<ClusterKey>) -> Option<Keyring> {
        let mut ids: Vec<KeyId> = keys.iter().map(ClusterKey::id).collect();
        ids.sort();
        ids.dedup();
        (!keys.is_empty() && ids.len() == keys.len() && keys.len() <= MAX_KEYS)
            .then_some(Keyring { keys })
    }

    /// Parses keys, one per line; blank lines and lines starting with `#` are skipped.
    /// In the environment variable, keys may also be separated by commas. `source_name`
    /// names the origin in errors (a path, or the variable's name).
    pub fn parse(text: &str, source_name: &str) -> Result<Keyring, KeyError> {
        let mut keys: Vec<(usize, ClusterKey)> = Vec::new();
        let entries = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            // Keys are named by their place among the keys (comments and blanks skipped).
            let at = i + 1;
            let name = || source_name.to_string();
            let decoded =
                Zeroizing::new(STANDARD.decode(entry).map_err(|_| KeyError::NotBase64 {
                    source_name: name(),
                    entry: at,
                })?);
            let bytes: [u8; KEY_LEN] =
                decoded
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::WrongLength {
                        source_name: name(),
                        entry: at,
                        len: decoded.len(),
                    })?;
            let key = ClusterKey::from_bytes(bytes);
            if let Some((first, _)) = keys.iter().find(|(_, k)| k.id() == key.id()) {
                return Err(KeyError::Duplicate {
                    source_name: name(),
                    entry: at,
                    first: *first,
                    id: key.id(),
                });
            }
            keys.push((at, key));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty {
                source_name: source_name.to_string(),
            });
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany {
                source_name: source_name.to_string(),
                count: keys.len(),
            });
        }
        Ok(Keyring {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// Reads a key file. Warns (once per read) when other users may read it.
    pub fn read_file(path: &Path) -> Result<Keyring, KeyError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            KeyError::Unreadable {
                path: path.to_path_buf(),
                error,
            }
        })?);
        warn_if_shared(path);
        Keyring::parse(&text, &path.display().to_string())
    }

    /// The keyring a node runs with: from `file` if given, else from the environment
    /// variable's value `env` ([`CLUSTER_KEY_ENV`]), else none (open gossip). Both at once
    /// is an error.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<Keyring>, KeyError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(KeyError::TwoSources),
            (Some(path), None) => Keyring::read_file(path).map(Some),
            (None, Some(text)) => Keyring::parse(text, CLUSTER_KEY_ENV).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The key that seals.
    pub fn sealing(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// Every key, the sealing one first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// Every key's id, the sealing one first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(ClusterKey::id).collect()
    }
}

/// Logs a warning when group or others may read the key file (as ssh does for its keys).
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "the cluster key file is readable by other users; `chmod 600` it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        STANDARD.encode([n; KEY_LEN])
    }

    #[test]
    fn a_file_holds_one_key_per_line_the_first_sealing() {
        let text = format!("# rotated 2026-12\n{}\n\n  {}  \n", key(2), key(1));
        let ring = Keyring::parse(&text, "keys.txt").unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(
            ring.sealing().id(),
            ClusterKey::from_bytes([2; KEY_LEN]).id()
        );
        assert_eq!(ring.ids()[1], ClusterKey::from_bytes([1; KEY_LEN]).id());
        let env = Keyring::parse(&format!("{},{}", key(1), key(2)), CLUSTER_KEY_ENV).unwrap();
        assert_eq!(env.ids(), vec![ring.ids()[1], ring.ids()[0]]);
    }

    #[test]
    fn errors_name_the_entry_and_never_the_key() {
        let secret = key(7);
        let short = STANDARD.encode([7u8; 16]);
        let cases = [
            (
                format!("{secret}\n{short}\n"),
                "key 2 is 16 bytes long, not 32",
            ),
            (
                format!("{secret}\n{}!\n", &secret[..40]),
                "key 2 is not base64",
            ),
            (format!("{secret}\n{secret}\n"), "key 2 repeats key 1"),
            ("# nothing\n\n".to_string(), "holds no key"),
            (short.clone(), "key 1 is 16 bytes long"),
        ];
        for (text, expected) in cases {
            let e = Keyring::parse(&text, "keys.txt").unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
            assert!(e.contains("keys.txt"), "{e}");
            assert!(!e.contains(&secret[..12]), "the key leaked: {e}");
            assert!(!e.contains(&short[..12]), "the key leaked: {e}");
        }
        let many: Vec<String> = (0..=MAX_KEYS as u8).map(key).collect();
        let e = Keyring::parse(&many.join("\n"), "k").unwrap_err();
        assert!(matches!(e, KeyError::TooMany { count: 17, .. }), "{e}");
    }

    /// A key id is shown to operators and carried in every packet: it must not change
    /// between builds. The expected value was computed apart from this code, with Python's
    /// `hmac` (HKDF-SHA256 by RFC 5869's two steps).
    #[test]
    fn the_key_id_is_hkdf_of_the_key() {
        let ring = Keyring::parse(&key(7), "k").unwrap();
        assert_eq!(ring.sealing().id().to_string(), "7e51805c");
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = Keyring::parse(&key(9), "k").unwrap();
        let text = format!("{ring:?} {:?}", ring.sealing());
        assert!(text.contains(&ring.sealing().id().to_string()), "{text}");
        assert!(!text.contains(&key(9)[..12]), "{text}");
        assert_eq!(ring.sealing().to_base64().as_str(), key(9));
    }

    #[test]
    fn a_key_comes_from_a_file_or_the_environment_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, key(3)).unwrap();
        let from_file = Keyring::load(Some(&path), None).unwrap().unwrap();
        let from_env = Keyring::load(None, Some(&key(3))).unwrap().unwrap();
        assert_eq!(from_file.ids(), from_env.ids());
        assert!(Keyring::load(None, None).unwrap().is_none());
        assert!(matches!(
            Keyring::load(Some(&path), Some(&key(3))),
            Err(KeyError::TwoSources)
        ));
        let missing = dir.path().join("nope");
        let e = Keyring::load(Some(&missing), None).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
