//! Normal operation: round trips, replay after reopen, deletion of acked
//! segments, nack, batch bounds, the size cap, stats, and bounded memory.

use std::time::Duration;

use super::super::record::FILE_HEADER_LEN;
use super::super::{Fsync, Spool, SpoolError};
use super::{cfg, drain, drain_ack, fault_fs, files, open, payload, segment_files};

#[test]
fn round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    let ids: Vec<_> = (0..3).map(|n| s.append(&payload(n, 50)).unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let got = drain(&mut s);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    for (n, (_, p)) in got.iter().enumerate() {
        assert_eq!(*p, payload(n as u32, 50));
    }
    let st = s.stats();
    assert_eq!(
        (st.records_written, st.records_pending, st.records_in_flight),
        (3, 3, 3)
    );
    s.ack(&ids).unwrap();
    let st = s.stats();
    assert_eq!(
        (st.records_acked, st.records_pending, st.records_in_flight),
        (3, 0, 0)
    );
    assert_eq!(st.oldest_unacked_age, None);
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
}

#[test]
fn spool_can_move_to_a_blocking_thread() {
    fn is_send<T: Send + 'static>() {}
    is_send::<Spool>();
    is_send::<Spool<super::FaultFs>>();
}

#[test]
fn empty_payload_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    s.append(b"").unwrap();
    assert_eq!(drain_ack(&mut s), vec![Vec::<u8>::new()]);
}

#[test]
fn handed_out_once_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    for n in 0..5 {
        s.append(&payload(n, 10)).unwrap();
    }
    assert_eq!(s.next_batch(3, 1 << 20).unwrap().len(), 3);
    assert_eq!(s.next_batch(10, 1 << 20).unwrap().len(), 2);
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
    s.append(&payload(5, 10)).unwrap();
    let b = s.next_batch(10, 1 << 20).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1, payload(5, 10));
}

#[test]
fn reopen_replays_only_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let mut s = open(&c);
    let ids: Vec<_> = (0..5).map(|n| s.append(&payload(n, 20)).unwrap()).collect();
    drain(&mut s);
    s.ack(&[ids[0], ids[1], ids[3]]).unwrap();
    drop(s);
    let mut s = open(&c);
    assert_eq!(s.stats().records_pending, 2);
    assert!(s.stats().oldest_unacked_age.is_some());
    let got = drain(&mut s);
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [ids[2], ids[4]]
    );
    assert_eq!(got[0].1, payload(2, 20));
    // Acking after the reopen persists too.
    s.ack(&[ids[2]]).unwrap();
    drop(s);
    let mut s = open(&c);
    assert_eq!(drain_ack(&mut s), vec![payload(4, 20)]);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 4096;
    let mut s = open(&c);
    for n in 0..20 {
        s.append(&payload(n, 1000)).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 5);
    // Acking a sealed segment partially writes an ack file; fully, deletes it.
    let b = s.next_batch(1, 1 << 20).unwrap();
    s.ack(&[b[0].0]).unwrap();
    assert!(files(dir.path()).iter().any(|n| n.ends_with(".acks")));
    assert_eq!(drain_ack(&mut s).len(), 19);
    // Only the unsealed write head (and its acks) is left.
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "{:?}",
        files(dir.path())
    );
    assert_eq!(files(dir.path()).len(), 2, "{:?}", files(dir.path()));
    assert_eq!(s.stats().segments, 1);
    drop(s);
    let s = open(&c);
    assert!(files(dir.path()).is_empty());
    assert_eq!(s.stats().bytes_on_disk, 0);
}

#[test]
fn nack_redelivers_before_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let mut s = open(&c);
    let ids: Vec<_> = (0..4).map(|n| s.append(&payload(n, 10)).unwrap()).collect();
    let b = s.next_batch(2, 1 << 20).unwrap();
    s.nack(&[b[1].0]);
    s.nack(&[b[1].0]); // twice: once is what counts
    assert_eq!(s.stats().records_in_flight, 1);
    let b = s.next_batch(10, 1 << 20).unwrap();
    let got: Vec<_> = b.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, [ids[1], ids[2], ids[3]]);
    assert_eq!(b[0].1, payload(1, 10));
    s.ack(&ids).unwrap();
    s.ack(&ids).unwrap(); // duplicate acks are ignored
    assert_eq!(s.stats().records_acked, 4);
    drop(s);
    assert!(drain(&mut open(&c)).is_empty());
}

#[test]
fn batches_bounded_by_count_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    for n in 0..10 {
        s.append(&payload(n, 96)).unwrap(); // 100-byte payloads
    }
    assert_eq!(s.next_batch(3, 1 << 20).unwrap().len(), 3);
    assert_eq!(s.next_batch(100, 250).unwrap().len(), 2);
    // A record larger than the byte bound still goes out, alone.
    assert_eq!(s.next_batch(100, 10).unwrap().len(), 1);
    assert!(s.next_batch(0, 1 << 20).unwrap().is_empty());
    assert_eq!(s.next_batch(100, 1 << 20).unwrap().len(), 4);
}

#[test]
fn full_until_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 16 << 10;
    c.segment_bytes = 4096;
    let mut s = open(&c);
    let mut stored = 0;
    let err = loop {
        match s.append(&payload(stored, 1000)) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(s.append(&payload(99, 1000)).is_err());
    let st = s.stats();
    assert_eq!(st.records_dropped_full, 2);
    assert!(st.bytes_on_disk <= c.max_bytes);
    assert_eq!(drain_ack(&mut s).len(), stored as usize);
    for n in 0..stored {
        s.append(&payload(n, 1000)).expect("room again after acks");
    }
    assert!(s.stats().bytes_on_disk <= c.max_bytes);
}

#[test]
fn too_large_payload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    let big = vec![0u8; super::super::MAX_PAYLOAD + 1];
    assert!(matches!(s.append(&big), Err(SpoolError::TooLarge { .. })));
    assert_eq!(s.stats().records_written, 0);
}

#[test]
fn stats_track_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().oldest_unacked_age, None);
    let a = s.append(&payload(0, 100)).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let b = s.append(&payload(1, 100)).unwrap();
    let st = s.stats();
    assert_eq!(st.bytes_on_disk, FILE_HEADER_LEN + 2 * (8 + 8 + 104));
    assert!(st.oldest_unacked_age.unwrap() >= Duration::from_millis(30));
    drain(&mut s);
    assert!(s.stats().oldest_unacked_age.unwrap() >= Duration::from_millis(30));
    s.ack(&[a]).unwrap();
    assert!(s.stats().oldest_unacked_age.unwrap() < Duration::from_millis(30));
    s.ack(&[b]).unwrap();
    assert_eq!(s.stats().oldest_unacked_age, None);
}

#[test]
fn fsync_always_syncs_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = Fsync::Always;
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c, fs).unwrap();
    s.append(b"a").unwrap();
    let first = faults.set().syncs; // the new segment: file and directory
    assert!(first >= 3);
    s.append(b"b").unwrap();
    assert_eq!(faults.set().syncs, first + 1);
}

#[test]
fn fsync_interval_syncs_on_flush_or_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(cfg(dir.path()), fs).unwrap();
    s.append(b"a").unwrap();
    assert_eq!(faults.set().syncs, 0);
    s.flush().unwrap();
    assert_eq!(faults.set().syncs, 2); // segment and directory
    s.flush().unwrap();
    assert_eq!(faults.set().syncs, 2, "nothing new to sync");
    let mut c = cfg(dir.path());
    c.fsync = Fsync::Interval(Duration::ZERO);
    drop(s);
    let (fs, faults) = fault_fs();
    let mut s = Spool::open(c, fs).unwrap();
    s.append(b"b").unwrap();
    assert!(faults.set().syncs >= 1, "an overdue append syncs");
}

#[test]
fn foreign_and_orphan_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    std::fs::write(dir.path().join("README"), b"not ours").unwrap();
    std::fs::write(dir.path().join("seg-00000000000000000007.acks"), b"orphan").unwrap();
    let mut s = open(&c);
    assert_eq!(files(dir.path()), ["README"]);
    let id = s.append(b"x").unwrap();
    assert!(id.segment() > 7, "sequence numbers are never reused");
    drain_ack(&mut s);
}

#[test]
fn unsupported_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = *b"LLMTAPSG\x02\0\0\0";
    let crc = crc32fast::hash(&h).to_le_bytes();
    let mut bytes = h.to_vec();
    bytes.extend_from_slice(&crc);
    std::fs::write(dir.path().join("seg-00000000000000000001.spool"), bytes).unwrap();
    let err = Spool::open(cfg(dir.path()), super::super::RealFs::new()).err();
    assert!(matches!(
        err,
        Some(SpoolError::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn memory_bounded_with_a_large_backlog() {
    const N: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let mut s = open(&c);
    for n in 0..N {
        s.append(&payload(n, 16)).unwrap();
    }
    drop(s);
    let mut s = open(&c);
    assert_eq!(s.stats().records_pending, u64::from(N));
    let mut next = 0u32;
    while next < N / 2 {
        let b = s.next_batch(1000, 16 << 10).unwrap();
        assert!(!b.is_empty() && b.len() <= 1000);
        assert!(b.iter().map(|(_, p)| p.len()).sum::<usize>() <= 16 << 10);
        for (_, p) in &b {
            assert_eq!(*p, payload(next, 16));
            next += 1;
        }
        s.ack(&b.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(s.stats().records_in_flight, 0);
    }
    drop(s);
    // Half acked: in-order acks load as one range per segment at most.
    let mut s = open(&c);
    let ranges: usize = s.segments.iter().map(|g| g.acked.ranges().len()).sum();
    assert!(ranges <= 1, "{ranges} ack ranges held");
    assert_eq!(s.stats().records_pending, u64::from(N - next));
    loop {
        let b = s.next_batch(1000, 16 << 10).unwrap();
        if b.is_empty() {
            break;
        }
        assert!(b.len() <= 1000 && s.in_flight.len() <= 1000);
        for (_, p) in &b {
            assert_eq!(*p, payload(next, 16));
            next += 1;
        }
        s.ack(&b.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .unwrap();
    }
    assert_eq!(next, N);
    assert_eq!(s.stats().records_pending, 0);
}
