//! Files that hold prompts — the spool, the exchange journal, trace files,
//! dead-letter files — are private to llmtap's user: created `0600` in
//! directories created `0700`.
//!
//! A directory that already exists is left as it is (it may be `.` or a
//! shared mount llmtap does not own); if other users can enter it llmtap
//! warns once, naming it, since files an older version wrote there may be
//! readable. A file llmtap opens for appending is tightened to `0600` when it
//! is looser (an older version created files `0644`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Mode of every file llmtap writes (unix).
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory llmtap creates (unix).
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents `0700`; warns (once per path) when
/// an existing `dir` lets other users in.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b.create(dir)?;
    warn_if_open(dir);
    Ok(())
}

/// Opens `path` for appending, creating it `0600`; an existing file with a
/// looser mode is tightened to `0600`.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    let f = o.open(path)?;
    tighten(&f, path);
    Ok(f)
}

#[cfg(unix)]
fn tighten(f: &File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = f.metadata() else { return };
    if meta.permissions().mode() & 0o077 == 0 {
        return;
    }
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the file private (0600); other users may read it");
    }
}

#[cfg(not(unix))]
fn tighten(_: &File, _: &Path) {}

#[cfg(unix)]
fn warn_if_open(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    static WARNED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let mut warned = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if warned.insert(dir.to_path_buf()) {
        tracing::warn!(
            dir = %dir.display(),
            mode = %format!("{mode:04o}"),
            "directory holding prompts is open to other users; llmtap's new files in it are 0600, but older ones may not be (chmod -R go-rwx it)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_open(_: &Path) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_dirs_are_0700_and_files_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        open_append(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn an_old_world_readable_file_is_tightened_an_old_dir_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("old");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755, "an existing directory is not changed");
        open_append(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
