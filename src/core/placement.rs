//! Placement: a node's weight and tags, a job's constraints, and their written forms.
//!
//! A node declares a *weight* (`--weight N`, its share of the jobs relative to the other
//! nodes) and *tags* (`--tag region=eu`). A job may declare *constraints*
//! (`constraints = { region = "eu" }`): only members whose tags hold every one of them may
//! own it. Both travel in gossip (see `cluster`), so every node computes the same owners.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The weight of a node that declares none.
pub const DEFAULT_WEIGHT: u32 = 1;

/// The largest weight a node may declare.
pub const MAX_WEIGHT: u32 = 10_000;

/// The most tags a node may declare, and the most constraints a job may have: tags
/// travel in every node's gossip state.
pub const MAX_TAGS: usize = 32;

/// Longest tag key or value, in bytes.
pub const MAX_TAG_BYTES: usize = 64;

/// Tag keys: letters, digits and `_ . -`. Values may also hold `: / +` (`eu-west-1`,
/// `nvidia/a100`). Neither may hold `=`, `,` or whitespace, so the gossip form needs no
/// escaping.
fn check_part(what: &str, s: &str, extra: &[u8]) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.len() > MAX_TAG_BYTES {
        return Err(format!(
            "the {what} `{s}` is longer than {MAX_TAG_BYTES} bytes"
        ));
    }
    if let Some(c) = s
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || b"_.-".contains(b) || extra.contains(b)))
    {
        return Err(format!(
            "the {what} `{}` holds `{}`; use letters, digits and `_ . -`{}",
            crate::logs::escape(s),
            crate::logs::escape(&(c as char).to_string()),
            if extra.is_empty() {
                ""
            } else {
                " (and `: / +` in values)"
            }
        ));
    }
    Ok(())
}

/// Checks one tag or constraint: its key and its value.
pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    check_part("key", key, &[])?;
    check_part("value", value, b":/+")
}

/// Parses `KEY=VALUE` (the `--tag` flag).
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| {
        format!(
            "`{}`: expected KEY=VALUE, e.g. region=eu",
            crate::logs::escape(text)
        )
    })?;
    check_tag(k, v).map_err(|e| format!("`{}`: {e}", crate::logs::escape(text)))?;
    Ok((k.to_string(), v.to_string()))
}

macro_rules! tag_map {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Held boxed, and not at all when empty: every job carries one and almost all are
        /// empty (8 bytes instead of a map's 24: issue 15, memory per catalog entry). It is
        /// never `Some` of an empty map, so the derived comparisons are the maps'.
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name(Option<Box<BTreeMap<String, String>>>);

        impl $name {
            /// Takes `pairs` as they are (the checks are [`Self::new`]'s).
            fn from_map(pairs: BTreeMap<String, String>) -> $name {
                $name((!pairs.is_empty()).then(|| Box::new(pairs)))
            }

            /// Checks and takes `pairs` (at most [`MAX_TAGS`], each checked by [`check_tag`]).
            pub fn new(pairs: BTreeMap<String, String>) -> Result<$name, String> {
                if pairs.len() > MAX_TAGS {
                    return Err(format!("{} entries; at most {MAX_TAGS} are allowed", pairs.len()));
                }
                for (k, v) in &pairs {
                    check_tag(k, v)?;
                }
                Ok($name::from_map(pairs))
            }

            /// True when there is none.
            pub fn is_empty(&self) -> bool {
                self.0.is_none()
            }

            /// The pairs, in key order.
            pub fn pairs(&self) -> &BTreeMap<String, String> {
                static EMPTY: BTreeMap<String, String> = BTreeMap::new();
                self.0.as_deref().unwrap_or(&EMPTY)
            }

            /// The value of `key`.
            pub fn get(&self, key: &str) -> Option<&str> {
                self.pairs().get(key).map(String::as_str)
            }

            /// The gossip form: `k=v` pairs in key order, joined by `,` (empty when none).
            pub fn encode(&self) -> String {
                self.to_string()
            }

            /// Parses [`Self::encode`]'s output; anything else (from a peer of another
            /// version, or garbage) is an error, never a panic.
            pub fn decode(text: &str) -> Result<$name, String> {
                let mut pairs = BTreeMap::new();
                for part in text.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = parse_tag(part)?;
                    pairs.insert(k, v);
                }
                $name::new(pairs)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, (k, v)) in self.pairs().iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                Ok(())
            }
        }

        // Debug, Hash and serde as a newtype of the map (what they were derived as before
        // the map was boxed): the same output, hashes and encodings.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(self.pairs()).finish()
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.pairs().hash(state);
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_newtype_struct(stringify!($name), self.pairs())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                BTreeMap::deserialize(deserializer).map($name::from_map)
            }
        }
    };
}

tag_map!(
    /// A node's tags (`--tag KEY=VALUE`, config `[tags]`).
    Tags
);
tag_map!(
    /// A job's constraints (`constraints = { region = "eu" }`): tags an owner must have.
    Constraints
);

impl Constraints {
    /// True when `tags` holds every constraint with the same value.
    pub fn satisfied_by(&self, tags: &Tags) -> bool {
        self.pairs()
            .iter()
            .all(|(k, v)| tags.get(k) == Some(v.as_str()))
    }
}

/// What a node declares about itself for ownership: its weight and its tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Its share of the jobs relative to other nodes' weights (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
    /// Its tags, which jobs' constraints select.
    pub tags: Arc<Tags>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            weight: DEFAULT_WEIGHT,
            tags: Arc::default(),
        }
    }
}

impl Placement {
    /// A placement with `weight` and no tags.
    pub fn weighted(weight: u32) -> Placement {
        Placement {
            weight,
            ..Placement::default()
        }
    }

    /// True when this node may own a job with `constraints`.
    pub fn satisfies(&self, constraints: &Constraints) -> bool {
        constraints.satisfied_by(&self.tags)
    }
}

/// Checks a weight: 1 to [`MAX_WEIGHT`].
pub fn check_weight(weight: u32) -> Result<u32, String> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(weight)
    } else {
        Err(format!("{weight} is outside 1..={MAX_WEIGHT}"))
    }
}

/// The `--weight` setting: a number, or `auto` for the CPUs this process may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightSetting {
    /// This weight.
    Fixed(u32),
    /// The number of CPUs the process may use (its affinity mask and cgroup quota), read
    /// once at start.
    Auto,
}

impl std::str::FromStr for WeightSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(WeightSetting::Auto);
        }
        let n: u32 = s.parse().map_err(|_| {
            format!("`{s}` is not a weight: use a whole number 1-{MAX_WEIGHT} or `auto`")
        })?;
        check_weight(n).map(WeightSetting::Fixed)
    }
}

impl WeightSetting {
    /// The weight: `cpus` (the CPUs this process may use) for `auto`.
    pub fn resolve(self, cpus: impl FnOnce() -> u32) -> u32 {
        match self {
            WeightSetting::Fixed(n) => n,
            WeightSetting::Auto => cpus().clamp(1, MAX_WEIGHT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        Tags::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    mod before {
        use std::collections::BTreeMap;

        /// What `Constraints` was before it was boxed (issue 15): a derived newtype.
        #[derive(Debug, Hash, serde::Serialize)]
        pub struct Constraints(pub BTreeMap<String, String>);
    }

    #[test]
    fn boxed_constraints_print_hash_and_encode_as_the_map_they_hold() {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = |v: &dyn Fn(&mut DefaultHasher)| {
            let mut h = BuildHasherDefault::<DefaultHasher>::default().build_hasher();
            v(&mut h);
            std::hash::Hasher::finish(&h)
        };
        for pairs in [vec![], vec![("region", "eu"), ("gpu", "true")]] {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let new = Constraints::new(map.clone()).unwrap();
            let old = before::Constraints(map.clone());
            assert_eq!(new.is_empty(), map.is_empty());
            assert_eq!(new.pairs(), &map);
            assert_eq!(format!("{new:?}"), format!("{old:?}"));
            assert_eq!(
                hash(&|h| std::hash::Hash::hash(&new, h)),
                hash(&|h| std::hash::Hash::hash(&old, h))
            );
            let json = serde_json::to_string(&new).unwrap();
            assert_eq!(json, serde_json::to_string(&old).unwrap());
            assert_eq!(serde_json::from_str::<Constraints>(&json).unwrap(), new);
            let bytes = crate::encoding::encode(&new, 1);
            assert_eq!(bytes, crate::encoding::encode(&old, 1));
            assert_eq!(
                crate::encoding::decode::<Constraints>(&bytes, 1).unwrap(),
                new
            );
        }
        let empty = Constraints::new(BTreeMap::new()).unwrap();
        assert_eq!(empty, Constraints::default());
        assert!(
            empty < constraint_eu(),
            "the empty set sorts first, as the empty map"
        );
        assert!(std::mem::size_of::<Constraints>() <= 8);
    }

    fn constraint_eu() -> Constraints {
        Constraints::new([("region".to_string(), "eu".to_string())].into()).unwrap()
    }

    #[test]
    fn tags_round_trip_through_their_gossip_form() {
        let t = tags(&[("region", "eu-west-1"), ("gpu", "nvidia/a100")]);
        assert_eq!(t.encode(), "gpu=nvidia/a100,region=eu-west-1");
        assert_eq!(Tags::decode(&t.encode()), Ok(t));
        assert_eq!(Tags::decode(""), Ok(Tags::default()));
        for bad in ["x", "=v", "k=", "k=v w", "k=v=w", "k\u{202e}=v"] {
            assert!(Tags::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tag_flag_names_what_is_wrong() {
        assert_eq!(parse_tag("region=eu"), Ok(("region".into(), "eu".into())));
        let e = parse_tag("region").unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = parse_tag("re gion=eu").unwrap_err();
        assert!(e.contains("key") && e.contains("` `"), "{e}");
        let e = parse_tag(&format!("k={}", "v".repeat(65))).unwrap_err();
        assert!(e.contains("longer than 64"), "{e}");
    }

    #[test]
    fn constraints_need_every_pair_with_the_same_value() {
        let c = Constraints::new(
            [("region", "eu"), ("gpu", "true")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        assert!(c.satisfied_by(&tags(&[("region", "eu"), ("gpu", "true"), ("x", "y")])));
        assert!(!c.satisfied_by(&tags(&[("region", "eu")])));
        assert!(!c.satisfied_by(&tags(&[("region", "us"), ("gpu", "true")])));
        assert!(Constraints::default().satisfied_by(&Tags::default()));
    }

    #[test]
    fn weights_parse_and_resolve() {
        assert_eq!("4".parse(), Ok(WeightSetting::Fixed(4)));
        assert_eq!("auto".parse(), Ok(WeightSetting::Auto));
        for bad in ["0", "-1", "10001", "two", ""] {
            assert!(bad.parse::<WeightSetting>().is_err(), "{bad:?}");
        }
        assert_eq!(WeightSetting::Auto.resolve(|| 16), 16);
        assert_eq!(WeightSetting::Auto.resolve(|| 0), 1);
    }
}
