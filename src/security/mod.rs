//! Gossip security: the cluster keyring and the seal every gossip packet carries.
//!
//! - `keyring`: the key format (32 random bytes in base64, one per line), validation, and
//!   loading from `--cluster-key-file` or `STARLING_CLUSTER_KEY`.
//! - `seal`: sealing and opening one packet (XChaCha20-Poly1305, HKDF-derived packet keys
//!   bound to the cluster id, a replay window). Pure: no I/O, no clock.
//!
//! The transport that seals every packet before it leaves and opens every datagram before
//! chitchat parses it is `cluster::transport`.

mod keyring;
mod seal;

pub use keyring::{CLUSTER_KEY_ENV, ClusterKey, KEY_LEN, KeyError, KeyId, Keyring, MAX_KEYS};
pub use seal::{
    CountedNonces, Entropy, OpenError, OsEntropy, PLAIN_FORMAT, SEAL_OVERHEAD, SEALED_FORMAT, Seal,
};
