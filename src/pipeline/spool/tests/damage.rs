//! Damaged files: torn tails, flipped bytes, zeroed pages, torn headers and
//! ack files, damage that appears while running, and arbitrary garbage.

use proptest::prelude::*;

use super::super::record::FILE_HEADER_LEN;
use super::super::{RealFs, Spool};
use super::{cfg, drain, drain_ack, files, flip, numbers, open, payload, segment_files};

/// Payload size in these tests: records are 16 + 4 + 96 = 116 bytes.
const LEN: usize = 96;
const REC: u64 = 116;

fn at(k: u64) -> u64 {
    FILE_HEADER_LEN + k * REC
}

/// Writes `n` records and closes the spool; returns the segment's path.
fn write_records(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    let mut s = open(&cfg(dir));
    for k in 0..n {
        s.append(&payload(k, LEN)).unwrap();
    }
    drop(s);
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

#[test]
fn torn_tail_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 5);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(at(4) + 30).unwrap(); // the last record cut mid-body
    let mut s = open(&cfg(dir.path()));
    let st = s.stats();
    assert_eq!(
        (st.records_corrupt_skipped, st.bytes_corrupt_skipped),
        (1, 30)
    );
    assert_eq!(st.records_pending, 4);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1, 2, 3]);
    drop(s);
    // Fully acked: the damaged segment is gone, and so is the count.
    let s = open(&cfg(dir.path()));
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(s.stats().records_corrupt_skipped, 0);
}

#[test]
fn torn_frame_header_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 3);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(at(2) + 5).unwrap(); // not even a whole length + checksum
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1]);
}

#[test]
fn flipped_payload_byte_skips_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 5);
    flip(&seg, at(2) + 40);
    let mut s = open(&cfg(dir.path()));
    let st = s.stats();
    assert_eq!(
        (st.records_corrupt_skipped, st.bytes_corrupt_skipped),
        (1, REC)
    );
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1, 3, 4]);
}

#[test]
fn flipped_length_byte_resyncs_to_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 5);
    flip(&seg, at(1) + 1); // length becomes huge: resync byte by byte
    flip(&seg, at(3)); // length off by a little: skip by length fails, resync
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 2);
    assert_eq!(s.stats().bytes_corrupt_skipped, 2 * REC);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 2, 4]);
}

#[test]
fn flipped_checksum_byte_skips_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 3);
    flip(&seg, at(0) + 5);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(numbers(&drain_ack(&mut s)), [1, 2]);
}

#[test]
fn zeroed_region_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 6);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[at(1) as usize..at(3) as usize + 10].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(s.stats().bytes_corrupt_skipped, 3 * REC);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 4, 5]);
}

#[test]
fn damaged_segment_header_still_yields_records() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 2);
    flip(&seg, 3);
    let mut s = open(&cfg(dir.path()));
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1]);
}

#[test]
fn torn_segment_creation_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg-00000000000000000003.spool"), b"LLMT").unwrap();
    std::fs::write(dir.path().join("seg-00000000000000000004.spool"), b"").unwrap();
    let s = open(&cfg(dir.path()));
    assert_eq!(
        s.stats().records_corrupt_skipped,
        1,
        "the empty file is no damage"
    );
    assert!(files(dir.path()).is_empty());
}

#[test]
fn torn_ack_record_means_resend_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let mut s = open(&c);
    let ids: Vec<_> = (0..4)
        .map(|k| s.append(&payload(k, LEN)).unwrap())
        .collect();
    drain(&mut s);
    s.ack(&ids[..1]).unwrap();
    s.ack(&ids[1..2]).unwrap();
    drop(s);
    let acks = dir.path().join(
        files(dir.path())
            .into_iter()
            .find(|n| n.ends_with(".acks"))
            .unwrap(),
    );
    let len = std::fs::metadata(&acks).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&acks).unwrap();
    f.set_len(len - 3).unwrap();
    let mut s = open(&c);
    assert_eq!(s.stats().ack_records_corrupt_skipped, 1);
    assert_eq!(s.stats().records_corrupt_skipped, 0);
    assert_eq!(numbers(&drain_ack(&mut s)), [1, 2, 3]);
}

#[test]
fn damage_appearing_while_running_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 4096;
    let mut s = open(&c);
    for k in 0..40 {
        s.append(&payload(k, LEN)).unwrap();
    }
    let first = segment_files(dir.path())[0].clone();
    flip(&first, at(1) + 50);
    let got = drain_ack(&mut s);
    assert_eq!(got.len(), 39);
    assert!(!numbers(&got).contains(&1));
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    // The damaged record cannot be acked, yet its segment goes.
    assert!(!segment_files(dir.path()).contains(&first));
    assert_eq!(s.stats().records_pending, 0);
}

#[test]
fn record_damaged_before_redelivery_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&cfg(dir.path()));
    for k in 0..3 {
        s.append(&payload(k, LEN)).unwrap();
    }
    let b = s.next_batch(10, 1 << 20).unwrap();
    s.nack(&[b[1].0]);
    flip(&segment_files(dir.path())[0], at(1) + 50);
    assert!(s.next_batch(10, 1 << 20).unwrap().is_empty());
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(s.stats().records_pending, 2);
}

#[test]
fn large_garbage_region_resyncs_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_records(dir.path(), 3);
    let mut bytes = std::fs::read(&seg).unwrap();
    let tail = bytes.split_off(at(1) as usize);
    // 2 MiB of noise (xorshift) between record 0 and records 1 and 2.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..(2 << 20) / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.extend_from_slice(&tail);
    std::fs::write(&seg, bytes).unwrap();
    let started = std::time::Instant::now();
    let mut s = open(&cfg(dir.path()));
    assert_eq!(numbers(&drain_ack(&mut s)), [0, 1, 2]);
    assert_eq!(s.stats().records_corrupt_skipped, 1);
    assert_eq!(s.stats().bytes_corrupt_skipped, 2 << 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes the files hold, open and drain never panic, and a
    /// valid prefix stays readable.
    #[test]
    fn arbitrary_garbage_never_panics(
        garbage in proptest::collection::vec(any::<u8>(), 0..600),
        cut in 0usize..600,
        acks in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_records(dir.path(), 3);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.truncate(at(2) as usize + cut.min(REC as usize));
        bytes.extend_from_slice(&garbage);
        std::fs::write(&seg, &bytes).unwrap();
        std::fs::write(dir.path().join("seg-00000000000000000009.spool"), &garbage).unwrap();
        let acks_name = seg.file_name().unwrap().to_string_lossy().replace(".spool", ".acks");
        std::fs::write(dir.path().join(acks_name), &acks).unwrap();
        let mut s = Spool::open(cfg(dir.path()), RealFs::new()).unwrap();
        let got = numbers(&drain_ack(&mut s));
        prop_assert!(got.len() >= 2 || !acks.is_empty());
        drop(s);
        let mut s = Spool::open(cfg(dir.path()), RealFs::new()).unwrap();
        prop_assert!(drain(&mut s).is_empty());
    }
}
