//! The spool's only door to the disk: [`SpoolFs`], path-based so a test can
//! wrap it and inject faults (disk full, short writes, fsync and read errors),
//! and [`RealFs`], the `std::fs` implementation (files `0600`, directories
//! `0700`: see [`crate::pipeline::private`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File operations the spool needs. Every call names its file by path; an
/// implementation may cache open handles. Methods take `&mut self` because
/// the spool is single-owner.
pub trait SpoolFs: Send + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()>;
    /// The names (not paths) of the plain files in `dir`.
    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>>;
    /// The file's length in bytes.
    fn len(&mut self, path: &Path) -> io::Result<u64>;
    /// Reads from `offset` until `buf` is full or the file ends; returns the
    /// number of bytes read (fewer than `buf.len()` only at end of file).
    fn read_at(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends `data`, creating the file if missing. On error a prefix of
    /// `data` may have reached the file (a short write).
    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync(&mut self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries (files created or removed) durable.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Removes the file.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
}

/// How many open handles of each kind [`RealFs`] keeps.
const MAX_HANDLES: usize = 8;

/// [`SpoolFs`] on `std::fs`, caching a few open write and read handles (the
/// write head and its ack file are appended to on every call).
#[derive(Debug, Default)]
pub struct RealFs {
    writers: HashMap<PathBuf, File>,
    readers: HashMap<PathBuf, File>,
}

impl RealFs {
    pub fn new() -> Self {
        Self::default()
    }

    fn writer(&mut self, path: &Path) -> io::Result<&mut File> {
        if !self.writers.contains_key(path) {
            if self.writers.len() >= MAX_HANDLES {
                self.writers.clear();
            }
            let f = crate::private::open_append(path)?;
            self.writers.insert(path.to_path_buf(), f);
        }
        self.writers
            .get_mut(path)
            .ok_or_else(|| io::Error::other("write handle vanished"))
    }

    fn reader(&mut self, path: &Path) -> io::Result<&mut File> {
        if !self.readers.contains_key(path) {
            if self.readers.len() >= MAX_HANDLES {
                self.readers.clear();
            }
            let f = File::open(path)?;
            self.readers.insert(path.to_path_buf(), f);
        }
        self.readers
            .get_mut(path)
            .ok_or_else(|| io::Error::other("read handle vanished"))
    }

    fn forget(&mut self, path: &Path) {
        self.writers.remove(path);
        self.readers.remove(path);
    }
}

impl SpoolFs for RealFs {
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        crate::private::create_dir(dir)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn len(&mut self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_at(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.reader(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let r = self.writer(path)?.write_all(data);
        if r.is_err() {
            // A failed handle is not trusted again.
            self.writers.remove(path);
        }
        r
    }

    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        self.forget(path);
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        match self.writers.get(path) {
            Some(f) => f.sync_data(),
            None => OpenOptions::new().write(true).open(path)?.sync_data(),
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.forget(path);
        std::fs::remove_file(path)
    }
}
