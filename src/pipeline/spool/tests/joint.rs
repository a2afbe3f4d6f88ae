//! Joint appends ([`Spool::append_all`]): one write per group and write
//! head, the same file and ids as appending one at a time, and no record
//! lost to a fault that appending singly would have kept.

use super::super::{Fsync, Spool, SpoolConfig, SpoolError};
use super::{cfg, drain, drain_ack, fault_fs, numbers, open, payload, segment_files};

fn payloads(range: std::ops::Range<u32>, len: usize) -> Vec<Vec<u8>> {
    range.map(|k| payload(k, len)).collect()
}

#[test]
fn a_group_is_one_write_and_reads_back_as_single_appends_would() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 10)).unwrap(); // the head exists
    let before = faults.set().appends;
    let ids: Vec<_> = s
        .append_all(payloads(1..101, 200))
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(faults.set().appends - before, 1, "100 records, one write");
    assert_eq!(s.stats().records_written, 101);
    assert_eq!(s.stats().records_pending, 101);
    let got = drain(&mut s);
    assert_eq!(got[1..].iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert_eq!(
        numbers(&got.iter().map(|r| r.1.clone()).collect::<Vec<_>>()),
        (0..101).collect::<Vec<_>>()
    );
    drop(s);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 0);
    let again = drain_ack(&mut s);
    assert_eq!(
        again,
        got.into_iter().map(|r| r.1).collect::<Vec<_>>(),
        "the file holds exactly these records"
    );
}

#[test]
fn a_group_rolls_over_segments_and_stops_at_the_cap_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = SpoolConfig {
        segment_bytes: 4096,
        max_bytes: 20_000,
        ..cfg(dir.path())
    };
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c.clone(), fs).unwrap();
    // 1 KiB records: four fit a segment, and the cap holds under twenty.
    let results = s.append_all(payloads(0..30, 1000));
    let stored: Vec<usize> = (0..30).filter(|&k| results[k].is_ok()).collect();
    assert!(stored.len() >= 12 && stored.len() < 20, "{stored:?}");
    assert_eq!(
        stored,
        (0..stored.len()).collect::<Vec<_>>(),
        "stored first, in order"
    );
    assert!(results[stored.len()..]
        .iter()
        .all(|r| matches!(r, Err(SpoolError::Full { .. }))));
    assert_eq!(s.stats().records_dropped_full, (30 - stored.len()) as u64);
    let segments = segment_files(dir.path()).len();
    assert!(segments >= 3, "{segments} segments");
    assert!(
        faults.set().appends <= 2 * segments as u64 + (30 - stored.len()) as u64,
        "one write per segment's records and one per header, not per record"
    );
    drop(s);
    let mut s = open(&c);
    assert_eq!(
        numbers(&drain_ack(&mut s)),
        stored.iter().map(|&k| k as u32).collect::<Vec<_>>()
    );
}

#[test]
fn a_failed_joint_write_is_retried_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 10)).unwrap();
    faults.set().short_write = Some(700);
    let results = s.append_all(payloads(1..11, 300));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "the torn head sealed, a fresh one"
    );
    assert_eq!(s.stats().write_errors, 1);
    assert_eq!(s.stats().records_dropped_error, 0);
    assert_eq!(
        numbers(&drain(&mut s).into_iter().map(|r| r.1).collect::<Vec<_>>()),
        (0..11).collect::<Vec<_>>()
    );
    drop(s);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(
        s.stats().records_corrupt_skipped,
        0,
        "the short write was cut away"
    );
    assert_eq!(numbers(&drain_ack(&mut s)), (0..11).collect::<Vec<_>>());
}

#[test]
fn a_disk_that_stays_full_loses_the_group_counted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 10)).unwrap();
    faults.set().enospc = true;
    let results = s.append_all(payloads(1..6, 100));
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(SpoolError::Io { .. }))));
    assert_eq!(s.stats().records_dropped_error, 5);
    faults.set().enospc = false;
    assert!(s.append_all(payloads(6..8, 100)).iter().all(|r| r.is_ok()));
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 6, 7]);
}

#[test]
fn with_fsync_always_a_group_is_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let c = SpoolConfig {
        fsync: Fsync::Always,
        ..cfg(dir.path())
    };
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c, fs).unwrap();
    s.append(&payload(0, 10)).unwrap();
    let before = faults.set().syncs;
    assert!(s.append_all(payloads(1..51, 100)).iter().all(|r| r.is_ok()));
    assert_eq!(faults.set().syncs - before, 1);
    faults.set().fail_sync = true;
    let failed = s.append_all(payloads(51..54, 100));
    assert!(
        failed.iter().all(|r| r.is_err()),
        "not stored unless synced"
    );
    faults.set().fail_sync = false;
    assert!(s
        .append_all(payloads(54..56, 100))
        .iter()
        .all(|r| r.is_ok()));
    assert_eq!(
        numbers(&drain_ack(&mut s)),
        (0..51).chain(54..56).collect::<Vec<_>>()
    );
}

#[test]
fn an_empty_spool_and_an_oversized_record_take_the_single_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    let mut group = payloads(0..3, 50);
    group.insert(1, vec![0; super::super::MAX_PAYLOAD + 1]);
    let results = s.append_all(group);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    assert!(matches!(results[1], Err(SpoolError::TooLarge { .. })));
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1, 2]);
}
