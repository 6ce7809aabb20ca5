//! The data dir: the last slot this node started per job (its fire records), kept on disk so
//! a restart with the same node id never reruns a slot, even when no peer remembers it.
//!
//! One file, `fire-records.bin`, encoded through [`crate::encoding`] and replaced
//! atomically: written to a temporary file, flushed to disk, renamed over the old one, and
//! the directory flushed. A crash leaves either the old file or the new one. A lock file
//! (`lock`, held with `flock` while the node runs) stops two nodes sharing the directory.
//!
//! The catalog (`catalog.bin`: every register this node knows, see [`crate::catalog`]) is
//! kept the same way, so a whole cluster restarted from its data dirs still holds the jobs
//! made through the API. A damaged catalog file is not fatal (peers hold the catalog): it
//! is reported and moved aside to `catalog.bin.damaged[.N]`, never overwritten, and the
//! node starts without it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{Key, Register};
use crate::core::types::{FireRecord, JobId, NodeId, UnixMillis};
use crate::encoding::{DecodeError, decode, encode};

/// The records file inside the data dir.
pub const RECORDS_FILE: &str = "fire-records.bin";
const LOCK_FILE: &str = "lock";
const VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    node_id: String,
    /// `(job, slot, epoch, first)`, in job order.
    records: Vec<(String, i64, u64, i64)>,
}

/// Why the data dir could not be used. The node does not start with one of these: starting
/// without its records could rerun slots.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("data dir: {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The records file is damaged or foreign.
    #[error("data dir: {}: {source}; move it away to start without it (the node may then rerun the last slot of each of its jobs)", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: DecodeError,
    },
    /// The records file belongs to another node id.
    #[error("data dir: {} holds the records of node `{found}`, not `{expected}`: give every node its own data dir", path.display())]
    OtherNode {
        /// The file.
        path: PathBuf,
        /// The node id in the file.
        found: String,
        /// This node's id.
        expected: NodeId,
    },
    /// Another process holds the directory's lock.
    #[error("data dir: {} is in use by another process (its `lock` file is locked)", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

/// An open data dir, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    node_id: NodeId,
    _lock: File,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

impl Store {
    /// Opens (creating it if needed) and locks `dir`, and reads the records in it.
    pub fn open(
        dir: &Path,
        node_id: &NodeId,
    ) -> Result<(Store, BTreeMap<JobId, FireRecord>), StoreError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        // SAFETY: flock on a file descriptor we own and keep open.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
            });
        }
        let store = Store {
            dir: dir.to_path_buf(),
            node_id: node_id.clone(),
            _lock: lock,
        };
        let path = dir.join(RECORDS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((store, BTreeMap::new()));
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let disk: OnDisk = decode(&bytes, VERSION).map_err(|source| StoreError::Damaged {
            path: path.clone(),
            source,
        })?;
        if disk.node_id != node_id.as_str() {
            return Err(StoreError::OtherNode {
                path,
                found: disk.node_id,
                expected: node_id.clone(),
            });
        }
        let mut records = BTreeMap::new();
        for (job, slot, epoch, first) in disk.records {
            let r = FireRecord {
                slot: UnixMillis(slot),
                epoch,
                first: UnixMillis(first.min(slot)),
                follows: None,
            };
            records.insert(JobId::new(job), r);
        }
        Ok((store, records))
    }

    /// Replaces the records file with `records`, atomically and durably.
    pub fn save(&self, records: &BTreeMap<JobId, FireRecord>) -> Result<(), StoreError> {
        let disk = OnDisk {
            node_id: self.node_id.to_string(),
            records: records
                .iter()
                .map(|(j, r)| (j.to_string(), r.slot.0, r.epoch, r.first.0))
                .collect(),
        };
        write_atomic(&self.dir, RECORDS_FILE, &encode(&disk, VERSION))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The catalog file inside the data dir.
pub const CATALOG_FILE: &str = "catalog.bin";
const CATALOG_VERSION: u16 = 1;
/// Damaged files moved aside are numbered up to this; past it the node stops writing the
/// file rather than overwrite one.
const MAX_DAMAGED: u32 = 100;

#[derive(Serialize, Deserialize)]
struct CatalogOnDisk {
    node_id: String,
    registers: Vec<(Key, Register)>,
}

/// What [`Store::load_catalog`] found.
#[derive(Debug)]
pub enum CatalogFile {
    /// No catalog file: a first start.
    Missing,
    /// The registers saved.
    Loaded(Vec<(Key, Register)>),
    /// The file was damaged (or another node's): `why`, and where it was moved (`None`:
    /// it could not be moved, so the node must not write the file).
    Damaged {
        /// What is wrong with it.
        why: String,
        /// Where it went.
        moved_to: Option<PathBuf>,
    },
}

impl Store {
    /// Reads the catalog file (see the module docs for a damaged one).
    pub fn load_catalog(&self) -> CatalogFile {
        let path = self.dir.join(CATALOG_FILE);
        let why = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CatalogFile::Missing,
            Err(e) => format!("cannot read it: {e}"),
            Ok(bytes) => match decode::<CatalogOnDisk>(&bytes, CATALOG_VERSION) {
                Ok(disk) if disk.node_id == self.node_id.as_str() => {
                    return CatalogFile::Loaded(disk.registers);
                }
                Ok(disk) => format!("it holds the catalog of node `{}`", disk.node_id),
                Err(e) => e.to_string(),
            },
        };
        CatalogFile::Damaged {
            why,
            moved_to: move_aside(&path),
        }
    }

    /// Replaces the catalog file with `registers`, atomically and durably. Blocks on disk
    /// I/O: call it off the async workers.
    pub fn save_catalog(&self, registers: Vec<(Key, Register)>) -> Result<(), StoreError> {
        let disk = CatalogOnDisk {
            node_id: self.node_id.to_string(),
            registers,
        };
        write_atomic(&self.dir, CATALOG_FILE, &encode(&disk, CATALOG_VERSION))
    }
}

/// Renames a damaged file to a free `<name>.damaged[.N]`; `None` if none is free or the
/// rename failed.
pub fn move_aside(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    for n in 1..=MAX_DAMAGED {
        let to = if n == 1 {
            path.with_file_name(format!("{name}.damaged"))
        } else {
            path.with_file_name(format!("{name}.damaged.{n}"))
        };
        if to.exists() {
            continue;
        }
        return std::fs::rename(path, &to).ok().map(|()| to);
    }
    None
}

/// Replaces `dir/file` with `bytes`, atomically and durably: written to `file.tmp`,
/// flushed to disk, renamed over `file`, and the directory flushed. A crash leaves either
/// the old file or the new one.
pub fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{file}.tmp"));
    let path = dir.join(file);
    let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("flushing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("renaming over", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flushing", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_survives_a_reopen_and_a_damaged_one_is_moved_aside() {
        use crate::catalog::{Value, Version};
        let dir = tempfile::tempdir().unwrap();
        let me = NodeId::new("n1");
        let (store, _) = Store::open(dir.path(), &me).unwrap();
        assert!(matches!(store.load_catalog(), CatalogFile::Missing));
        let regs = vec![(
            Key::Pause(JobId::new("j")),
            Register {
                version: Version {
                    millis: 5,
                    counter: 1,
                    node: me.clone(),
                },
                value: Value::Pause(true),
            },
        )];
        store.save_catalog(regs.clone()).unwrap();
        drop(store);
        let (store, _) = Store::open(dir.path(), &me).unwrap();
        match store.load_catalog() {
            CatalogFile::Loaded(back) => assert_eq!(back, regs),
            other => panic!("{other:?}"),
        }
        // Torn: the checksum catches it; the bytes are kept aside, not overwritten.
        let path = dir.path().join(CATALOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        match store.load_catalog() {
            CatalogFile::Damaged {
                why,
                moved_to: Some(to),
            } => {
                assert!(why.contains("truncated"), "{why}");
                assert_eq!(to, dir.path().join("catalog.bin.damaged"));
                assert_eq!(std::fs::read(&to).unwrap(), bytes);
            }
            other => panic!("{other:?}"),
        }
        assert!(!path.exists());
        // A second damaged file does not overwrite the first one set aside.
        std::fs::write(&path, b"garbage").unwrap();
        match store.load_catalog() {
            CatalogFile::Damaged {
                moved_to: Some(to), ..
            } => assert_eq!(to, dir.path().join("catalog.bin.damaged.2")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read(dir.path().join("catalog.bin.damaged")).unwrap(),
            bytes
        );
    }

    fn rec(slot: i64, epoch: u64) -> FireRecord {
        FireRecord::single(UnixMillis(slot), epoch)
    }

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let me = NodeId::new("n1");
        let (store, empty) = Store::open(dir.path(), &me).unwrap();
        assert!(empty.is_empty());
        let mut m = BTreeMap::new();
        m.insert(JobId::new("a"), rec(1_000, 3));
        m.insert(JobId::new("b"), rec(2_000, 1));
        store.save(&m).unwrap();
        m.insert(JobId::new("a"), rec(5_000, 4));
        store.save(&m).unwrap();
        drop(store);
        let (_store, back) = Store::open(dir.path(), &me).unwrap();
        assert_eq!(back, m);
        assert!(!dir.path().join("fire-records.bin.tmp").exists());
    }

    #[test]
    fn a_second_process_a_damaged_file_and_another_node_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let me = NodeId::new("n1");
        let (store, _) = Store::open(dir.path(), &me).unwrap();
        let e = Store::open(dir.path(), &me).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        store
            .save(&BTreeMap::from([(JobId::new("a"), rec(1, 1))]))
            .unwrap();
        drop(store);

        let e = Store::open(dir.path(), &NodeId::new("n2")).unwrap_err();
        assert!(
            e.to_string().contains("`n1`") && e.to_string().contains("`n2`"),
            "{e}"
        );

        let path = dir.path().join(RECORDS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, bytes).unwrap();
        let e = Store::open(dir.path(), &me).unwrap_err().to_string();
        assert!(
            e.contains("fire-records.bin") && e.contains("truncated"),
            "{e}"
        );
    }
}
