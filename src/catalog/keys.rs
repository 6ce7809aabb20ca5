//! The catalog's gossip layout: which chitchat key holds what, and how values are encoded.
//!
//! | key (in the holder's own chitchat state) | value |
//! |---|---|
//! | `job:<name>` | an API definition, or its tombstone ([`Value::Job`]) |
//! | `pause:<name>` | whether the job is paused ([`Value::Pause`]) |
//! | `run:<fire id>` | a request to run a job once now ([`Value::Run`]), or once after a parent's success ([`Value::After`]) |
//! | `ran:<fire id>` | the node that claimed that request and ran it ([`Value::Ran`]) |
//! | `cancel:<fire id>` | a request to cancel the run with that fire id ([`Value::Cancel`]) |
//! | `file:<name>` | this node's jobs-file definition of `<name>` ([`FileEntry`]) |
//! | `files` | how many `file:` keys this node holds and their digest ([`FileSetMarker`]), set after them |
//!
//! The first five are *registers*: one value per key cluster-wide, last writer wins by
//! [`Version`]; any node may hold a copy in its own state (see `node::catalog` for who
//! does). `file:` keys are per node: each node publishes only its own file's jobs.
//!
//! Every value is the [`crate::encoding`] blob of its struct in base64 (magic, format
//! version and checksum included). One key and value together stay under
//! [`MAX_VALUE_BYTES`]: chitchat sends each value whole in one datagram, and a value too
//! large to send silently blocks every later update of the node that holds it.

use serde::{Deserialize, Serialize};

use super::def::JobDef;
use super::version::Version;
use crate::core::job::validate_job_name;
use crate::core::types::{FireId, JobId, NodeId};
use crate::encoding::{DecodeError, decode_text, encode_text};

/// Prefix of API definition keys.
pub const KEY_JOB_PREFIX: &str = "job:";
/// Prefix of pause keys.
pub const KEY_PAUSE_PREFIX: &str = "pause:";
/// Prefix of run-now request keys.
pub const KEY_RUN_PREFIX: &str = "run:";
/// Prefix of run-now claim keys.
pub const KEY_RAN_PREFIX: &str = "ran:";
/// Prefix of cancel request keys.
pub const KEY_CANCEL_PREFIX: &str = "cancel:";
/// Prefix of a node's jobs-file definitions.
pub const KEY_FILE_PREFIX: &str = "file:";
/// The marker a node sets after its `file:` keys.
pub const KEY_FILES: &str = "files";
/// The prefixes a node listens to (chitchat matches prefixes: `file` covers `file:` and
/// `files`; `run:` does not match the fire records' `running:`).
pub const SUBSCRIBED_PREFIXES: [&str; 6] = [
    KEY_JOB_PREFIX,
    KEY_PAUSE_PREFIX,
    KEY_RUN_PREFIX,
    KEY_RAN_PREFIX,
    KEY_CANCEL_PREFIX,
    "file",
];

/// Longest key plus value, in bytes, the catalog publishes or accepts. A datagram carries
/// 65,507 bytes; this leaves room for the digest and other keys of the same round.
pub const MAX_VALUE_BYTES: usize = crate::core::limits::MAX_DEFINITION_BYTES;

/// The format version of gossip values.
const VALUE_VERSION: u16 = 1;

/// A register's key: what it is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// The API definition of a job.
    Job(JobId),
    /// Whether a job is paused.
    Pause(JobId),
    /// A request to run a job once.
    Run(FireId),
    /// The claim of a run request.
    Ran(FireId),
    /// A request to cancel a run.
    Cancel(FireId),
}

impl Key {
    /// The chitchat key.
    pub fn to_gossip(&self) -> String {
        match self {
            Key::Job(j) => format!("{KEY_JOB_PREFIX}{j}"),
            Key::Pause(j) => format!("{KEY_PAUSE_PREFIX}{j}"),
            Key::Run(id) => format!("{KEY_RUN_PREFIX}{id}"),
            Key::Ran(id) => format!("{KEY_RAN_PREFIX}{id}"),
            Key::Cancel(id) => format!("{KEY_CANCEL_PREFIX}{id}"),
        }
    }

    /// The job a `Job` or `Pause` key is about.
    pub fn job(&self) -> Option<&JobId> {
        match self {
            Key::Job(j) | Key::Pause(j) => Some(j),
            _ => None,
        }
    }
}

/// Any catalog key, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipKey {
    /// A register.
    Register(Key),
    /// A `file:<name>` key.
    File(JobId),
    /// The `files` marker.
    FileSet,
}

impl GossipKey {
    /// Parses a chitchat key; `None` for keys that are not the catalog's or are malformed
    /// (a bad job name, a fire id that is not 16 hex digits).
    pub fn parse(key: &str) -> Option<GossipKey> {
        let job = |rest: &str| validate_job_name(rest).ok().map(|()| JobId::new(rest));
        let id = |rest: &str| rest.parse::<FireId>().ok();
        if key == KEY_FILES {
            return Some(GossipKey::FileSet);
        }
        let (prefix, rest) = key.split_at(key.find(':')? + 1);
        Some(match prefix {
            KEY_JOB_PREFIX => GossipKey::Register(Key::Job(job(rest)?)),
            KEY_PAUSE_PREFIX => GossipKey::Register(Key::Pause(job(rest)?)),
            KEY_RUN_PREFIX => GossipKey::Register(Key::Run(id(rest)?)),
            KEY_RAN_PREFIX => GossipKey::Register(Key::Ran(id(rest)?)),
            KEY_CANCEL_PREFIX => GossipKey::Register(Key::Cancel(id(rest)?)),
            KEY_FILE_PREFIX => GossipKey::File(job(rest)?),
            _ => return None,
        })
    }
}

/// A register's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// An API definition; `None` once deleted (a tombstone). Boxed, so a register in the
    /// catalog's map is 56 bytes, not 176 (issue 15, memory per catalog entry); it encodes
    /// the same either way.
    Job(Option<Box<JobDef>>),
    /// Paused or not.
    Pause(bool),
    /// Run this job once, now.
    Run(JobId),
    /// This node claimed the run request (and ran it, or is running it).
    Ran(NodeId),
    /// Cancel the run with this fire id, wherever it runs.
    Cancel,
    /// Run `job` once: `parent`'s run with fire id `parent_fire`, of slot `slot` (Unix
    /// ms), succeeded, and `job` runs after it (`core::after`). The key's fire id is
    /// `core::after::child_fire_id(parent_fire, job)`.
    After {
        /// The job to run (the child).
        job: JobId,
        /// The parent that succeeded.
        parent: JobId,
        /// The parent run's fire id.
        parent_fire: FireId,
        /// The parent run's slot, which the child's run takes as its own.
        slot: i64,
    },
}

impl Value {
    /// True when the value fits the key's kind.
    pub fn fits(&self, key: &Key) -> bool {
        matches!(
            (key, self),
            (Key::Job(_), Value::Job(_))
                | (Key::Pause(_), Value::Pause(_))
                | (Key::Run(_), Value::Run(_) | Value::After { .. })
                | (Key::Ran(_), Value::Ran(_))
                | (Key::Cancel(_), Value::Cancel)
        )
    }
}

/// One register's content: a value and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Last writer wins by this.
    pub version: Version,
    /// The value.
    pub value: Value,
}

/// A node's jobs-file definition of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// When the node first loaded this definition (it keeps the version while the file
    /// says the same).
    pub version: Version,
    /// The definition.
    pub def: JobDef,
}

/// What a node's `files` key says: its `file:` keys, set before this one (chitchat sends
/// a node's keys in the order they were set, so a peer holding the marker holds them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSetMarker {
    /// How many `file:` keys.
    pub count: u32,
    /// [`file_set_digest`] of them.
    pub digest: u64,
}

/// Why a gossip value was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The value's kind does not match its key (`job:` holding a pause, ...).
    #[error("the value does not fit its key")]
    WrongKind,
}

/// The encoded value of a register.
pub fn encode_register(r: &Register) -> String {
    encode_text(r, VALUE_VERSION)
}

/// Decodes a register's value and checks it fits `key`. Never panics.
pub fn decode_register(key: &Key, text: &str) -> Result<Register, ValueError> {
    let r: Register = decode_text(text, VALUE_VERSION, MAX_VALUE_BYTES)?;
    if !r.value.fits(key) {
        return Err(ValueError::WrongKind);
    }
    Ok(r)
}

/// The encoded value of a `file:` key.
pub fn encode_file_entry(e: &FileEntry) -> String {
    encode_text(e, VALUE_VERSION)
}

/// Decodes a `file:` value. Never panics.
pub fn decode_file_entry(text: &str) -> Result<FileEntry, ValueError> {
    Ok(decode_text(text, VALUE_VERSION, MAX_VALUE_BYTES)?)
}

/// The encoded value of the `files` marker.
pub fn encode_marker(m: &FileSetMarker) -> String {
    encode_text(m, VALUE_VERSION)
}

/// Decodes the `files` marker. Never panics.
pub fn decode_marker(text: &str) -> Result<FileSetMarker, ValueError> {
    Ok(decode_text(text, VALUE_VERSION, MAX_VALUE_BYTES)?)
}

/// The digest a [`FileSetMarker`] carries: of every `(name, encoded value)` in name order.
pub fn file_set_digest<'a>(entries: impl IntoIterator<Item = (&'a JobId, &'a str)>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, value) in entries {
        h.update(name.as_str().as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}
