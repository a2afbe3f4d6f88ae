//! Injected I/O faults: disk full, short writes, fsync, read, truncate and
//! remove errors. After each the spool stays consistent, the failed append is
//! reported, and later appends work once the fault clears.

use super::super::{Fsync, Spool, SpoolError};
use super::{cfg, drain, drain_ack, fault_fs, files, numbers, open, payload, segment_files};

#[test]
fn disk_full_fails_the_append_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 50)).unwrap();
    faults.set().enospc = true;
    let err = s.append(&payload(1, 50)).unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    assert!(
        s.append(&payload(2, 50)).is_err(),
        "no segment can be created either"
    );
    faults.set().enospc = false;
    s.append(&payload(3, 50)).unwrap();
    let st = s.stats();
    assert_eq!((st.write_errors, st.records_written), (2, 2));
    assert_eq!(
        (st.records_dropped_error, st.records_dropped_full),
        (2, 0),
        "both lost records counted as dropped, not as refused by the cap"
    );
    assert_eq!(
        numbers(&drain(&mut s).into_iter().map(|r| r.1).collect::<Vec<_>>()),
        [0, 3]
    );
    drop(s);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 0);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 3]);
}

#[test]
fn short_write_is_truncated_away() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 50)).unwrap();
    faults.set().short_write = Some(20);
    assert!(s.append(&payload(1, 50)).is_err());
    s.append(&payload(2, 50)).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "a fresh segment after the failure"
    );
    assert_eq!(
        numbers(&drain(&mut s).into_iter().map(|r| r.1).collect::<Vec<_>>()),
        [0, 2]
    );
    drop(s);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 0);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 2]);
}

#[test]
fn short_write_left_behind_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 50)).unwrap();
    {
        let mut f = faults.set();
        f.short_write = Some(30);
        f.fail_truncate = true;
    }
    assert!(s.append(&payload(1, 50)).is_err());
    faults.set().fail_truncate = false;
    s.append(&payload(2, 50)).unwrap();
    // This process never hands out the torn bytes.
    assert_eq!(
        numbers(&drain(&mut s).into_iter().map(|r| r.1).collect::<Vec<_>>()),
        [0, 2]
    );
    drop(s);
    let mut s = open(&cfg(dir.path()));
    let st = s.stats();
    assert_eq!(
        (st.records_corrupt_skipped, st.bytes_corrupt_skipped),
        (1, 30)
    );
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 2]);
}

#[test]
fn torn_segment_header_write_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    faults.set().short_write = Some(5);
    assert!(s.append(&payload(0, 10)).is_err());
    assert!(files(dir.path()).is_empty());
    s.append(&payload(1, 10)).unwrap();
    assert_eq!(numbers(&drain_ack(&mut s)), [1]);
}

#[test]
fn fsync_error_with_always_fails_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = Fsync::Always;
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c.clone(), fs).unwrap();
    s.append(&payload(0, 50)).unwrap();
    faults.set().fail_sync = true;
    assert!(s.append(&payload(1, 50)).is_err());
    assert!(
        s.append(&payload(2, 50)).is_err(),
        "a new segment cannot be synced either"
    );
    faults.set().fail_sync = false;
    s.append(&payload(3, 50)).unwrap();
    let st = s.stats();
    assert_eq!(
        (st.sync_errors, st.records_written, st.records_pending),
        (2, 2, 2)
    );
    assert_eq!(
        numbers(&drain(&mut s).into_iter().map(|r| r.1).collect::<Vec<_>>()),
        [0, 3]
    );
    drop(s);
    let mut s = open(&c);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 3]);
}

#[test]
fn fsync_error_on_flush_keeps_records_and_seals_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(&payload(0, 50)).unwrap();
    faults.set().fail_sync = true;
    assert!(s.flush().is_err());
    assert_eq!(s.stats().sync_errors, 2); // the segment and the directory
    faults.set().fail_sync = false;
    s.append(&payload(1, 50)).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    s.flush().unwrap();
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1]);
}

#[test]
fn read_errors_are_returned_then_skipped_after_strikes() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    for k in 0..3 {
        s.append(&payload(k, 50)).unwrap();
    }
    faults.set().fail_read = true;
    assert!(s.next_batch(10, 1 << 20).is_err());
    faults.set().fail_read = false;
    assert_eq!(
        s.next_batch(1, 1 << 20).unwrap().len(),
        1,
        "a passing error loses nothing"
    );
    faults.set().fail_read = true;
    for _ in 0..3 {
        assert!(s.next_batch(10, 1 << 20).is_err());
    }
    faults.set().fail_read = false;
    // The head is not sealed: the unreadable rest was skipped and counted.
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(s.stats().records_pending, 1, "only the one handed out");
    s.append(&payload(9, 50)).unwrap();
    assert_eq!(s.next_batch(10, 1 << 20).unwrap().len(), 1);
}

#[test]
fn failed_ack_write_holds_in_process_and_resends_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    let ids: Vec<_> = (0..3).map(|k| s.append(&payload(k, 50)).unwrap()).collect();
    drain(&mut s);
    s.ack(&ids[..1]).unwrap();
    faults.set().short_write = Some(6);
    assert!(s.ack(&ids[1..2]).is_err());
    assert_eq!(s.stats().records_acked, 2);
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
    drop(s);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(
        s.stats().ack_records_corrupt_skipped,
        0,
        "the partial ack was cut away"
    );
    assert_eq!(numbers(&drain_ack(&mut s)), [1, 2]);
}

#[test]
fn failed_removal_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 4096;
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c, fs).unwrap();
    for k in 0..60 {
        s.append(&payload(k, 100)).unwrap();
    }
    let before = segment_files(dir.path()).len();
    faults.set().fail_remove = true;
    let all = drain(&mut s);
    let ids: Vec<_> = all.iter().map(|(id, _)| *id).collect();
    assert!(s.ack(&ids).is_err());
    assert_eq!(segment_files(dir.path()).len(), before);
    faults.set().fail_remove = false;
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
    assert_eq!(segment_files(dir.path()).len(), 1, "only the head is left");
    assert_eq!(s.stats().records_pending, 0);
}
