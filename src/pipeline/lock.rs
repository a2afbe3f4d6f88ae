//! The spool directory's lock: `<spool.dir>/LOCK`, an exclusive OS file lock
//! (`flock`) held by the one process that uses the directory — the live
//! pipeline for its whole life, or `llmtap replay` while it drains the
//! directory. Two processes sharing a spool (two replicas on one volume, or
//! a replay of a live spool) would hand out and delete each other's
//! segments; with the lock the second one refuses to start, naming the
//! holder's pid.
//!
//! The lock is the kernel's, not the file's existence: it goes when the
//! holder exits, however it exits (`kill -9` included), so a stale `LOCK`
//! file never blocks a restart. The file itself is left in place; it holds
//! the holder's pid, for the error message only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name inside the spool directory.
pub const FILE: &str = "LOCK";

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "spool directory {} is in use by another running llmtap{}",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    /// The directory or the lock file could not be made or locked.
    #[error("cannot lock spool directory {}: {error}", dir.display())]
    Io { dir: PathBuf, error: std::io::Error },
}

/// Takes `<dir>/LOCK` (creating the directory, 0700, and the file, 0600, if
/// needed) without waiting, and writes this process's pid into it.
pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
    let io = |error| LockError::Io {
        dir: dir.to_path_buf(),
        error,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    // Not truncated on open: until the lock is ours, the pid is the holder's.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid: holder(&mut file),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // The pid is for humans only: failing to write it does not matter.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(DirLock { _file: file })
}

/// The pid written by the lock's holder, if it could be read.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let held = acquire(&dir).expect("first lock");
        let err = acquire(&dir).expect_err("second lock while the first is held");
        match &err {
            LockError::InUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains(&format!(
                "is in use by another running llmtap (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        drop(held);
        acquire(&dir).expect("free again once dropped");
    }

    #[test]
    fn the_directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/spool");
        let _held = acquire(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
    }
}
