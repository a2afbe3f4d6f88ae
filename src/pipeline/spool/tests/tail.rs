//! The tail in memory: a caught-up reader gets this process's appends
//! without reading the file, and gets exactly what the file holds.

use super::super::{Spool, SpoolConfig};
use super::{cfg, drain, fault_fs, flip, open, payload, segment_files};

fn with_tail(dir: &std::path::Path, tail_bytes: usize) -> SpoolConfig {
    SpoolConfig {
        tail_bytes,
        ..cfg(dir)
    }
}

#[test]
fn a_caught_up_reader_never_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(with_tail(dir.path(), 1 << 20), fs).unwrap();
    let ids: Vec<_> = (0..20)
        .map(|k| s.append(&payload(k, 300)).unwrap())
        .collect();
    faults.set().fail_read = true;
    let got = drain(&mut s);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    for (k, (_, p)) in got.iter().enumerate() {
        assert_eq!(*p, payload(k as u32, 300));
    }
    s.ack(&ids).unwrap();
    assert_eq!(s.stats().records_pending, 0);
    faults.set().fail_read = false;
    drop(s);
    // The acks are on disk as ever: a new process has nothing to send.
    let mut again = open(&cfg(dir.path()));
    assert!(drain(&mut again).is_empty());
}

#[test]
fn what_the_tail_hands_out_is_what_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    // A tail of a few records and small segments: reads switch between the
    // tail and the file, across segment rollovers.
    let mut c = with_tail(dir.path(), 2000);
    c.segment_bytes = 4096;
    let mut s = open(&c);
    let mut got = Vec::new();
    for k in 0..60u32 {
        s.append(&payload(k, 150 + (k as usize % 7) * 40)).unwrap();
        if k % 9 == 0 {
            got.extend(s.next_batch(3, 1 << 20).unwrap());
        }
    }
    got.extend(drain(&mut s));
    // Another process reading the same files sees the same records.
    let from_file = drain(&mut open(&cfg(dir.path())));
    assert_eq!(got.len(), 60);
    assert_eq!(got, from_file);
}

#[test]
fn damage_after_the_append_does_not_reach_a_caught_up_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&with_tail(dir.path(), 1 << 20));
    for k in 0..5 {
        s.append(&payload(k, 100)).unwrap();
    }
    flip(&segment_files(dir.path())[0], 16 + 8 + 8 + 20);
    let got = drain(&mut s);
    assert_eq!(got.len(), 5, "the copy in memory is intact");
    assert_eq!(got[0].1, payload(0, 100));
    assert_eq!(s.stats().records_corrupt_skipped, 0);
}

#[test]
fn a_failed_append_is_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(with_tail(dir.path(), 1 << 20), fs).unwrap();
    s.append(&payload(0, 100)).unwrap();
    faults.set().short_write = Some(10);
    assert!(s.append(&payload(1, 100)).is_err());
    s.append(&payload(2, 100)).unwrap();
    faults.set().fail_read = true;
    let got: Vec<_> = drain(&mut s).into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![payload(0, 100), payload(2, 100)]);
}

#[test]
fn topping_up_never_passes_the_byte_limit_and_says_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&with_tail(dir.path(), 1 << 20));
    for k in 0..4 {
        s.append(&payload(k, 100)).unwrap();
    }
    // 104 bytes per payload: 50 bytes take none, and the batch is full.
    let (b, full) = s.next_batch_within(10, 50).unwrap();
    assert!(b.is_empty() && full);
    let (b, full) = s.next_batch_within(10, 250).unwrap();
    assert_eq!((b.len(), full), (2, true));
    let (b, full) = s.next_batch_within(10, 1 << 20).unwrap();
    assert_eq!((b.len(), full), (2, false), "all there was");
    // The plain read still takes one record whatever its size.
    s.append(&payload(9, 100)).unwrap();
    assert_eq!(s.next_batch(10, 1).unwrap().len(), 1);
    // A first read says when it is full, by bytes or by count.
    for k in 10..14 {
        s.append(&payload(k, 100)).unwrap();
    }
    let (b, full) = s.next_batch_and_full(10, 1).unwrap();
    assert_eq!((b.len(), full), (1, true), "one record, whatever its size");
    let (b, full) = s.next_batch_and_full(1, 1 << 20).unwrap();
    assert_eq!((b.len(), full), (1, true));
    let (b, full) = s.next_batch_and_full(10, 1 << 20).unwrap();
    assert_eq!((b.len(), full), (2, false), "all there was");
}
