//! A `file:` credential (a mounted Kubernetes secret, say): read at start by
//! the config, then checked every `credential_check_interval` on a blocking
//! thread, so a rotated key is picked up while llmtap runs. A file that
//! turns unreadable, empty or oversized keeps the last good key in use, with
//! one warning per failing streak. Nothing logged ever holds the key.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::config::credential::{read_key_file, Secret};

/// The current key of a credential file.
pub struct FileKey {
    path: PathBuf,
    key: RwLock<Secret>,
    /// The last check failed (a warning was logged for it).
    failing: std::sync::atomic::AtomicBool,
}

impl FileKey {
    /// A file's key, starting with the value read at config load.
    pub fn new(path: PathBuf, initial: Secret) -> Arc<FileKey> {
        Arc::new(FileKey {
            path,
            key: RwLock::new(initial),
            failing: Default::default(),
        })
    }

    /// The key in use.
    pub fn key(&self) -> Secret {
        match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Checks the file every `every` while this `FileKey` is in use (the
    /// task ends once it is dropped). Needs a Tokio runtime; without one
    /// the key stays as read at start.
    pub fn watch(self: &Arc<FileKey>, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(watch(weak, every));
    }

    /// Reads the file once (on a blocking thread) and takes a new, valid
    /// value; keeps the last good one otherwise.
    pub async fn check(&self) {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || read_key_file(&path))
            .await
            .unwrap_or_else(|e| Err(format!("reading the credential file: {e}")));
        use std::sync::atomic::Ordering::Relaxed;
        let path = self.path.display();
        match read {
            Ok(key) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!(path = %path, "credential file readable again");
                }
                let mut slot = match self.key.write() {
                    Ok(k) => k,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if *slot != key {
                    *slot = key;
                    tracing::info!(path = %path, "credential file changed: llmtap uses its new value");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Relaxed) {
                    tracing::warn!(path = %path, %error, "credential file unusable: llmtap keeps the last good value");
                }
            }
        }
    }
}

async fn watch(key: Weak<FileKey>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; the config just read it
    loop {
        ticks.tick().await;
        let Some(key) = key.upgrade() else {
            return;
        };
        key.check().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::credential::CredentialHeader;

    fn bearer(k: &FileKey) -> String {
        k.key()
            .value(&CredentialHeader::Bearer)
            .to_str()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_new_value_is_taken_a_bad_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "one\n").unwrap();
        let key = FileKey::new(path.clone(), read_key_file(&path).unwrap());
        assert_eq!(bearer(&key), "Bearer one");

        std::fs::write(&path, "two\r\n").unwrap();
        key.check().await;
        assert_eq!(bearer(&key), "Bearer two");

        for bad in ["\n", &"x".repeat(100 * 1024)] {
            std::fs::write(&path, bad).unwrap();
            key.check().await;
            assert_eq!(bearer(&key), "Bearer two", "the last good value is kept");
        }
        std::fs::remove_file(&path).unwrap();
        key.check().await;
        assert_eq!(bearer(&key), "Bearer two");

        std::fs::write(&path, "three").unwrap();
        key.check().await;
        assert_eq!(bearer(&key), "Bearer three");
    }

    #[tokio::test]
    async fn the_watch_picks_up_a_rotation_and_ends_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "old").unwrap();
        let key = FileKey::new(path.clone(), read_key_file(&path).unwrap());
        key.watch(Duration::from_millis(100));
        std::fs::write(&path, "new").unwrap();
        let mut waited = 0;
        while bearer(&key) != "Bearer new" {
            assert!(waited < 100, "not picked up within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        let weak = Arc::downgrade(&key);
        drop(key);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            weak.upgrade().is_none(),
            "the watch holds no strong reference"
        );
    }
}
