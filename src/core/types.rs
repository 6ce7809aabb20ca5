//! Newtypes for the units the core deals in.

use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Every time the core sees is one of these; it never reads a clock itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The earliest representable time; used as "no bound".
    pub const MIN: UnixMillis = UnixMillis(i64::MIN);

    /// Adds a duration, saturating at the ends of the range.
    pub fn saturating_add(self, d: std::time::Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_add(duration_millis(d)))
    }

    /// Subtracts a duration, saturating at the ends of the range.
    pub fn saturating_sub(self, d: std::time::Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_sub(duration_millis(d)))
    }

    /// Milliseconds from `earlier` to `self` (negative if `self` is earlier).
    pub fn millis_since(self, earlier: UnixMillis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Formats as RFC 3339 in UTC with millisecond precision, e.g.
    /// `2026-11-21T12:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => format!("{}ms", self.0),
        }
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn duration_millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a name. Validation, where it applies, happens where names enter
            /// (job files, config), not here.
            pub fn new(name: impl AsRef<str>) -> Self {
                $name(Arc::from(name.as_ref()))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

name_newtype!(
    /// A job's name, unique in the cluster. Ownership hashes it.
    JobId
);
name_newtype!(
    /// A node's id, unique in the cluster and stable across restarts of that node.
    NodeId
);

/// The idempotency key of one slot: a stable hash of `(job, scheduled_at)`.
///
/// Every node computes the same id for the same slot, so a job can use it to
/// reject a second run of a slot it already handled.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct FireId(pub u64);

impl FireId {
    /// The fire id of `job`'s slot at `scheduled_at`:
    /// `xxh3_64(job bytes ++ [0xff] ++ scheduled_at as i64 little-endian)`.
    /// The 0xff separator cannot occur in UTF-8, so no two pairs collide by concatenation.
    pub fn of(job: &JobId, scheduled_at: UnixMillis) -> FireId {
        let name = job.as_str().as_bytes();
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if name.len() + 9 <= stack.len() {
            &mut stack[..name.len() + 9]
        } else {
            heap.resize(name.len() + 9, 0);
            &mut heap
        };
        buf[..name.len()].copy_from_slice(name);
        buf[name.len()] = 0xff;
        buf[name.len() + 1..].copy_from_slice(&scheduled_at.0.to_le_bytes());
        FireId(xxh3_64(buf))
    }
}

impl fmt::Display for FireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for FireId {
    type Err = String;

    /// Parses the 16 hex digits [`FireId`]'s `Display` writes (`STARLING_FIRE_ID`).
    fn from_str(s: &str) -> Result<FireId, String> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{s}` is not a fire id: expected 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(FireId)
            .map_err(|e| format!("`{s}` is not a fire id: {e}"))
    }
}

impl fmt::Debug for FireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FireId({self})")
    }
}

/// A job's fire record, as one node publishes it: the last slot it started, the ownership
/// epoch it ran under, and the first slot it started in that epoch (so peers can tell
/// which slots it ran, to detect duplicates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FireRecord {
    /// The last slot started.
    pub slot: UnixMillis,
    /// The ownership epoch (fencing token) of that run.
    pub epoch: u64,
    /// The first slot this node started under `epoch`.
    pub first: UnixMillis,
    /// What the epoch took over from, when another node's record decided where it began.
    pub follows: Option<Follows>,
}

/// Where an ownership epoch began: after `slot`, which the highest record the node knew
/// of (from another node) held, and which node that was. A node that gave up a run it had
/// announced (quorum mode) learns from this that the taker skipped the slot because of its
/// announcement, so nobody ran it (see `Planner::abandon`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Follows {
    /// The slot of that record.
    pub slot: UnixMillis,
    /// [`crate::core::owner::node_key`] of the node whose record it was, or 0 when several
    /// nodes' records held that slot.
    pub node: u64,
}

impl FireRecord {
    /// A record of `slot` alone, under `epoch`.
    pub fn single(slot: UnixMillis, epoch: u64) -> FireRecord {
        FireRecord {
            slot,
            epoch,
            first: slot,
            follows: None,
        }
    }

    /// The gossip encoding: `slot/epoch/first`, then `/<follows slot>/<follows node>` when
    /// the epoch follows another node's record; slots in Unix milliseconds, the node as
    /// 16 hex digits.
    pub fn encode(&self) -> String {
        match self.follows {
            None => format!("{}/{}/{}", self.slot.0, self.epoch, self.first.0),
            Some(f) => format!(
                "{}/{}/{}/{}/{:016x}",
                self.slot.0, self.epoch, self.first.0, f.slot.0, f.node
            ),
        }
    }

    /// Parses [`FireRecord::encode`]'s output; `None` for anything else (never panics).
    /// Fields after the fifth are ignored, so later versions can add some.
    pub fn decode(text: &str) -> Option<FireRecord> {
        let mut parts = text.split('/');
        let slot = parts.next()?.parse().ok()?;
        let epoch = parts.next()?.parse().ok()?;
        let first = parts.next()?.parse().ok()?;
        if first > slot {
            return None;
        }
        let follows = match parts.next() {
            None => None,
            Some(f) => Some(Follows {
                slot: UnixMillis(f.parse().ok()?),
                node: u64::from_str_radix(parts.next()?, 16).ok()?,
            }),
        };
        Some(FireRecord {
            slot: UnixMillis(slot),
            epoch,
            first: UnixMillis(first),
            follows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_records_round_trip_and_garbage_is_refused() {
        let r = FireRecord {
            slot: UnixMillis(5_000),
            epoch: 7,
            first: UnixMillis(-1_000),
            follows: None,
        };
        assert_eq!(r.encode(), "5000/7/-1000");
        assert_eq!(FireRecord::decode(&r.encode()), Some(r));
        let f = FireRecord {
            follows: Some(Follows {
                slot: UnixMillis(4_000),
                node: 0xab,
            }),
            ..r
        };
        assert_eq!(f.encode(), "5000/7/-1000/4000/00000000000000ab");
        assert_eq!(FireRecord::decode(&f.encode()), Some(f));
        assert_eq!(
            FireRecord::decode("5000/7/-1000/4000/00000000000000ab/later"),
            Some(f),
            "fields a later version adds are ignored"
        );
        for bad in [
            "",
            "5000",
            "5000/7",
            "5000/7/1/2",
            "5000/7/1/2/zz",
            "a/b/c",
            "1/2/3",
            "5000/-1/0",
        ] {
            assert_eq!(FireRecord::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_has_millisecond_precision_in_utc() {
        assert_eq!(
            UnixMillis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn fire_id_is_stable_and_distinguishes_slots() {
        let job = JobId::new("backup");
        let a = FireId::of(&job, UnixMillis(1_000));
        assert_eq!(a, FireId::of(&job, UnixMillis(1_000)));
        assert_ne!(a, FireId::of(&job, UnixMillis(2_000)));
        assert_ne!(a, FireId::of(&JobId::new("backup2"), UnixMillis(1_000)));
        // Golden value: changing the fire id breaks idempotency keys users stored.
        assert_eq!(a.to_string(), "d768fff83eca2c0a");
        assert_eq!("d768fff83eca2c0a".parse::<FireId>(), Ok(a));
        for bad in [
            "",
            "d768fff83eca2c0",
            "d768fff83eca2c0a0",
            "+768fff83eca2c0a",
            "zz",
        ] {
            assert!(bad.parse::<FireId>().is_err(), "{bad:?}");
        }
        let long = JobId::new("x".repeat(300));
        assert_ne!(
            FireId::of(&long, UnixMillis(1)),
            FireId::of(&long, UnixMillis(2))
        );
    }
}
