//! Spool tests: helpers shared by the suites below, and a fault-injecting
//! [`SpoolFs`] (disk full, short writes, fsync, read, truncate and remove
//! errors) wrapped around [`RealFs`].

mod basic;
mod damage;
mod faults;
mod joint;
mod prop;
mod tail;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Fsync, RealFs, RecordId, Spool, SpoolConfig, SpoolFs};

/// Switches a test flips while the spool owns the file system.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Every append fails with "no space left", writing nothing.
    pub enospc: bool,
    /// The next append writes this many bytes, then fails.
    pub short_write: Option<usize>,
    pub fail_sync: bool,
    pub fail_truncate: bool,
    pub fail_read: bool,
    pub fail_remove: bool,
    /// Successful syncs (files and directories).
    pub syncs: u64,
    /// Appends (writes) attempted.
    pub appends: u64,
}

/// [`RealFs`] with injected faults.
pub(super) struct FaultFs {
    inner: RealFs,
    faults: Arc<Mutex<Faults>>,
}

#[derive(Clone)]
pub(super) struct FaultHandle(Arc<Mutex<Faults>>);

impl FaultHandle {
    pub fn set(&self) -> MutexGuard<'_, Faults> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn fault_fs() -> (FaultFs, FaultHandle) {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let fs = FaultFs {
        inner: RealFs::new(),
        faults: faults.clone(),
    };
    (fs, FaultHandle(faults))
}

impl FaultFs {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn injected(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("{what} (injected)"))
}

impl SpoolFs for FaultFs {
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn len(&mut self, path: &Path) -> io::Result<u64> {
        self.inner.len(path)
    }

    fn read_at(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.faults().fail_read {
            return Err(injected(io::ErrorKind::Other, "read error"));
        }
        self.inner.read_at(path, offset, buf)
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let (enospc, short) = {
            let mut f = self.faults();
            f.appends += 1;
            (f.enospc, f.short_write.take())
        };
        if enospc {
            return Err(injected(io::ErrorKind::StorageFull, "no space left"));
        }
        if let Some(n) = short {
            self.inner.append(path, &data[..n.min(data.len())])?;
            return Err(injected(io::ErrorKind::StorageFull, "short write"));
        }
        self.inner.append(path, data)
    }

    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        if self.faults().fail_truncate {
            return Err(injected(io::ErrorKind::Other, "truncate failed"));
        }
        self.inner.truncate(path, len)
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        let mut f = self.faults();
        if f.fail_sync {
            return Err(injected(io::ErrorKind::Other, "fsync failed"));
        }
        f.syncs += 1;
        drop(f);
        self.inner.sync(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let mut f = self.faults();
        if f.fail_sync {
            return Err(injected(io::ErrorKind::Other, "fsync failed"));
        }
        f.syncs += 1;
        drop(f);
        self.inner.sync_dir(dir)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        if self.faults().fail_remove {
            return Err(injected(io::ErrorKind::PermissionDenied, "remove failed"));
        }
        self.inner.remove(path)
    }
}

/// A config in `dir` that never syncs on its own (tests sync explicitly).
pub(super) fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        fsync: Fsync::Interval(Duration::from_secs(3600)),
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
        // These tests are about the file (damage, faults, replay): every
        // record is read back from it. `tests/tail.rs` runs with a tail.
        tail_bytes: 0,
    }
}

pub(super) fn open(c: &SpoolConfig) -> Spool {
    Spool::open(c.clone(), RealFs::new()).expect("open spool")
}

/// A payload that says which record it is.
pub(super) fn payload(n: u32, len: usize) -> Vec<u8> {
    let mut p = n.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (n as usize + i) as u8));
    p
}

/// Everything `next_batch` hands out until it is empty, without acking.
/// The record numbers `payload` wrote into these payloads.
pub(super) fn numbers(payloads: &[Vec<u8>]) -> Vec<u32> {
    payloads
        .iter()
        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
        .collect()
}

pub(super) fn drain<F: SpoolFs>(s: &mut Spool<F>) -> Vec<(RecordId, Vec<u8>)> {
    let mut all = Vec::new();
    loop {
        let b = s.next_batch(64, 1 << 20).expect("next_batch");
        if b.is_empty() {
            return all;
        }
        all.extend(b);
    }
}

/// Drains and acks everything; returns the payloads.
pub(super) fn drain_ack<F: SpoolFs>(s: &mut Spool<F>) -> Vec<Vec<u8>> {
    let all = drain(s);
    let ids: Vec<_> = all.iter().map(|(id, _)| *id).collect();
    s.ack(&ids).expect("ack");
    all.into_iter().map(|(_, p)| p).collect()
}

/// The spool's files, sorted by name.
pub(super) fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|n| n.ends_with(".spool"))
        .map(|n| dir.join(n))
        .collect()
}

/// Flips one byte of a file in place.
pub(super) fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}
