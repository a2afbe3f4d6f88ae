//! Moving spooled traces between sink spools when the list of sinks
//! changes: one sink keeps its spool in `spool.dir` itself (as before
//! several sinks existed); several sinks each have `spool.dir/sinks/<name>`.
//! Traces a process left in the layout it no longer uses are copied into
//! the spools of the sinks that should get them, then acknowledged where
//! they were, so switching from one sink to several (or back) loses
//! nothing. Runs at start, on the blocking pool, before anything is sent.

use std::path::{Path, PathBuf};

use super::spool::{RealFs, Spool, SpoolError};

/// Where sink `name`'s spool lives when `count` sinks are configured.
pub fn sink_dir(root: &Path, name: &str, count: usize) -> PathBuf {
    match count {
        1 => root.to_path_buf(),
        _ => root.join("sinks").join(name),
    }
}

/// The spool directories whose traces belong to the current sinks but sit
/// in the other layout: with several sinks, `root` itself; with one sink,
/// `root/sinks/<its name>`. Only those holding segment files.
pub fn leftovers(root: &Path, names: &[String]) -> Vec<PathBuf> {
    let candidate = match names {
        [one] => root.join("sinks").join(one),
        _ => root.to_path_buf(),
    };
    match has_segments(&candidate) {
        true => vec![candidate],
        false => vec![],
    }
}

fn has_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".spool")
        })
    })
}

/// Copies every unacknowledged record of `from` into each of `to` (synced),
/// then acks it in `from`; returns how many records moved. Stops at the
/// first error, leaving what was not moved where it was (it moves on the
/// next start).
pub fn copy_all(
    from: &mut Spool<RealFs>,
    to: &mut [&mut Spool<RealFs>],
) -> Result<u64, SpoolError> {
    let mut moved = 0;
    loop {
        let batch = from.next_batch(512, 8 << 20)?;
        if batch.is_empty() {
            return Ok(moved);
        }
        for target in to.iter_mut() {
            for (_, payload) in &batch {
                target.append(payload)?;
            }
            target.flush()?;
        }
        let ids: Vec<_> = batch.iter().map(|(id, _)| *id).collect();
        from.ack(&ids)?;
        moved += ids.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::spool::SpoolConfig;

    fn open(dir: &Path) -> Spool<RealFs> {
        Spool::open(SpoolConfig::new(dir), RealFs::new()).unwrap()
    }

    #[test]
    fn one_sink_uses_the_root_and_several_get_their_own() {
        let root = Path::new("/s");
        assert_eq!(sink_dir(root, "mlflow", 1), root);
        assert_eq!(sink_dir(root, "mlflow", 2), root.join("sinks/mlflow"));
    }

    #[test]
    fn records_left_in_the_root_reach_every_sink_spool_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        {
            let mut legacy = open(root);
            for i in 0..3u8 {
                legacy.append(&[i; 10]).unwrap();
            }
            legacy.flush().unwrap();
        }
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(leftovers(root, &names), vec![root.to_path_buf()]);
        let (mut a, mut b) = (open(&root.join("sinks/a")), open(&root.join("sinks/b")));
        let mut from = open(root);
        assert_eq!(copy_all(&mut from, &mut [&mut a, &mut b]).unwrap(), 3);
        drop(from);
        assert!(
            leftovers(root, &names).is_empty(),
            "the root spool is emptied"
        );
        for s in [&mut a, &mut b] {
            let got: Vec<_> = s.next_batch(10, 1 << 20).unwrap();
            let payloads: Vec<_> = got.into_iter().map(|(_, p)| p).collect();
            assert_eq!(payloads, vec![vec![0u8; 10], vec![1u8; 10], vec![2u8; 10]]);
        }
    }
}
