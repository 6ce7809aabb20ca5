//! Every bound on what a node accepts, in one place (README, Limits; issue 16).
//!
//! Each is checked where the input enters (the jobs file, the API, gossip) and refused
//! with an error that names the job and key, or, for members, dropped with a log line:
//! nothing past a bound is stored, run or published. Gossip fixes most of them: chitchat
//! sends each value whole in one UDP datagram of at most 65,507 bytes, and a value too big
//! to send silently blocks every later update of its node.

use std::time::Duration;

/// Longest job name, in bytes. Names travel in every fire record and gossip key, and in
/// API paths (`/v1/jobs/{name}`).
pub const MAX_JOB_NAME_BYTES: usize = 128;

/// Whether `c` may appear in a job name: ASCII letters and digits, `-`, `_`, `.`, `:`. A
/// name is then safe as it is in a URL path, a gossip key, a log line and a metric label.
pub fn is_job_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Longest gossip key plus value the catalog publishes or accepts, in bytes: a job's
/// definition, encoded. A datagram carries 65,507 bytes; this leaves room for the digest
/// and other keys of the same round.
pub const MAX_DEFINITION_BYTES: usize = 16 * 1024;

/// Longest `command`, in bytes. Every definition the parser accepts must fit in
/// [`MAX_DEFINITION_BYTES`] once encoded (base64 adds a third, the other fields less than
/// a kilobyte; `a_largest_definition_fits_in_gossip` in the catalog's tests checks it).
/// A longer script belongs in a file the command runs.
pub const MAX_COMMAND_BYTES: usize = 8 * 1024;

/// Longest `schedule` text, in bytes (the longest sensible cron expression, a list of
/// every minute, is about 170).
pub const MAX_SCHEDULE_BYTES: usize = 512;

/// Longest text of any other key of a job (`timezone`, `dst`, `timeout`, `misfire`,
/// `catch_up_window`, `overlap`), in bytes.
pub const MAX_FIELD_BYTES: usize = 64;

/// Most `retries` of a job.
pub const MAX_RETRIES: u32 = 100;

/// Most jobs in one jobs file, and most API jobs in the catalog.
pub const MAX_JOBS: usize = 10_000;

/// Largest jobs file, in bytes: [`MAX_JOBS`] jobs with long commands, read whole before
/// it is parsed.
pub const MAX_JOBS_FILE_BYTES: usize = 32 << 20;

/// Most nodes a node tracks in its gossip state (live, dead or an older generation, until
/// `dead_node_grace_period` forgets them). chitchat 0.13 sends its whole digest, 41 bytes
/// plus the node id per node (53 with an IPv6 address), in every message, and its server
/// panics once that passes a datagram: about 1,280 nodes with 10-byte ids, 380 with
/// 128-byte ids. With ids of at most [`MAX_NODE_ID_BYTES`], the digest of this many nodes
/// fits in one datagram.
pub const MAX_MEMBERS: usize = 512;

/// Longest node id, in bytes: it travels in every gossip message (see [`MAX_MEMBERS`]).
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Bytes of each output stream (stdout, stderr) kept of a shell run, its last ones.
pub const OUTPUT_TAIL_BYTES: usize = 2048;

/// Longest message (an error, an output tail) kept in a run history entry, in bytes.
pub const MAX_HISTORY_MESSAGE_BYTES: usize = 2048;

/// Most runs `history_max_runs` accepts.
pub const MAX_HISTORY_RUNS: usize = 1_000_000;

/// Most bytes `history_max_bytes` accepts (1 GiB).
pub const MAX_HISTORY_BYTES: usize = 1 << 30;

/// Shortest `@every` interval. Cron's finest grain is a second too; a shorter interval
/// asks for more runs than gossip can carry records for, and `@every 1ms` made a node fall
/// seconds behind (issue 14).
pub const MIN_EVERY_INTERVAL: Duration = Duration::from_secs(1);

// The largest digest must fit in a datagram, with room for the seal (see MAX_MEMBERS).
const _: () = assert!(MAX_MEMBERS * (53 + MAX_NODE_ID_BYTES) < 65_507 - 64 - 1_024);
