//! The guard across simulated crashes: the marks file is snapshotted while
//! a parse is in progress and put back before the next "start", which is
//! what a process dying mid-parse leaves on disk.

use super::*;
use crate::pipeline::spool::{Spool, SpoolConfig};

struct Fixture {
    _tmp: tempfile::TempDir,
    journal_dir: PathBuf,
    quarantine_dir: PathBuf,
    journal: Shared,
    ids: Vec<RecordId>,
    payloads: Vec<Vec<u8>>,
    metrics: Arc<Metrics>,
}

/// A journal holding three records, all handed out (in flight).
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let journal_dir = tmp.path().join("exchanges");
    let mut spool = Spool::open(
        SpoolConfig::new(&journal_dir),
        crate::pipeline::spool::RealFs::new(),
    )
    .unwrap();
    for n in 0..3u8 {
        let mut payload = vec![0x12, 16];
        payload.extend([n + 1; 16]); // field 2 (the trace id), 16 bytes
        spool.append(&payload).unwrap();
    }
    let batch = spool.next_batch(8, 1 << 20).unwrap();
    let (ids, payloads) = batch.into_iter().unzip();
    Fixture {
        quarantine_dir: tmp.path().join("quarantine"),
        _tmp: tmp,
        journal_dir,
        journal: Arc::new(Mutex::new(spool)),
        ids,
        payloads,
        metrics: Arc::new(Metrics::default()),
    }
}

impl Fixture {
    fn start(&self) -> Arc<Guard> {
        let g = Guard::open(
            &self.journal_dir,
            self.quarantine_dir.clone(),
            self.metrics.clone(),
        );
        Arc::new(g.unwrap())
    }

    fn marks_file(&self) -> PathBuf {
        self.journal_dir.join(FILE)
    }

    /// What the marks file says right now.
    fn marks(&self) -> Vec<Mark> {
        marks::parse(&fs::read(self.marks_file()).unwrap()).marks
    }

    /// Runs `during` while the marks file is as a crash would leave it.
    fn crash_while(&self, parsing: Vec<Parsing>) {
        let snapshot = fs::read(self.marks_file()).unwrap();
        drop(parsing);
        fs::write(self.marks_file(), snapshot).unwrap();
    }

    fn quarantined(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.quarantine_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn parse(a: Admit) -> Parsing {
    match a {
        Admit::Parse(p) => p,
        Admit::Quarantine => panic!("quarantined, expected a parse"),
    }
}

#[test]
fn a_worker_keeps_one_mark_until_it_has_no_record_in_hand() {
    let f = fixture();
    let g = f.start();
    let p = parse(g.admit(0, f.ids[0]));
    let m = f.marks();
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].record, m[0].state, m[0].strikes),
        (key(f.ids[0]), State::Parsing, 0)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(f.marks_file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "private, like the journal");
    // The parse ends; the mark stays until the worker's next record
    // replaces it (one write per record), in the same slot.
    drop(p);
    let p = parse(g.admit(0, f.ids[1]));
    let m: Vec<_> = f.marks().iter().map(|m| m.record).collect();
    assert_eq!(m, vec![key(f.ids[1])], "the next record's mark replaced it");
    drop(p);
    // The worker runs out of records: its slot is freed.
    g.free(0);
    assert!(f.marks().is_empty());
    drop(g);
    let g = f.start();
    assert!(
        !p_is_exclusive(&g, &f, 0),
        "no strike: parsed with the others"
    );
}

/// A crash after a parse ended, before the worker's next record: the record
/// just parsed gets a strike. It is parsed again alone (if it was not yet
/// stored), its struck mark freed at once, so it can never be quarantined
/// for it; a strike on a stored record is forgotten.
#[test]
fn a_crash_right_after_a_parse_costs_one_lone_parse_at_most() {
    let f = fixture();
    let g = f.start();
    let p = parse(g.admit(0, f.ids[0]));
    drop(p);
    f.crash_while(Vec::new());
    drop(g);
    let g = f.start();
    let p = parse(g.admit(1, f.ids[0]));
    assert!(p.exclusive, "struck: parsed again, alone");
    drop(p);
    assert!(
        f.marks().is_empty(),
        "a struck record frees its mark at once"
    );
    drop(g);
    let g = f.start();
    assert!(!p_is_exclusive(&g, &f, 0), "no second strike");
}

fn p_is_exclusive(g: &Arc<Guard>, f: &Fixture, i: usize) -> bool {
    parse(g.admit(0, f.ids[i])).exclusive
}

#[test]
fn one_crash_is_one_strike_and_the_record_is_parsed_again_alone() {
    let f = fixture();
    let g = f.start();
    // Two workers were parsing when the process died: both get a strike.
    f.crash_while(vec![
        parse(g.admit(0, f.ids[0])),
        parse(g.admit(1, f.ids[1])),
    ]);
    drop(g);
    let g = f.start();
    let p = parse(g.admit(0, f.ids[0]));
    assert!(p.exclusive, "a record with a strike is parsed alone");
    let marked: Vec<_> = f
        .marks()
        .iter()
        .filter(|m| m.state == State::Parsing)
        .map(|m| (m.record, m.strikes))
        .collect();
    assert_eq!(marked, vec![(key(f.ids[0]), 1)], "marked with its strike");
    drop(p);
    assert!(!p_is_exclusive(&g, &f, 2), "others are not");
    g.free(0);
    // It parsed: its strike is gone; the other struck record keeps its own.
    let left: Vec<_> = f.marks().iter().map(|m| (m.record, m.strikes)).collect();
    assert_eq!(left, vec![(key(f.ids[1]), 1)]);
    assert_eq!(f.metrics.journal_quarantined.load(Relaxed), 0);
    drop(g);
    // A start that never reached the other one carries its strike over.
    let g = f.start();
    assert!(p_is_exclusive(&g, &f, 1));
}

#[test]
fn two_crashes_quarantine_the_record_and_ack_it() {
    let f = fixture();
    let g = f.start();
    f.crash_while(vec![parse(g.admit(0, f.ids[1]))]);
    drop(g);
    let g = f.start();
    f.crash_while(vec![parse(g.admit(2, f.ids[1]))]);
    drop(g);
    let g = f.start();
    assert!(matches!(g.admit(0, f.ids[1]), Admit::Quarantine));
    let acked_before = f.journal.lock().unwrap().stats().records_acked;
    g.quarantine(f.ids[1], &f.payloads[1], &f.journal);
    assert_eq!(
        f.journal.lock().unwrap().stats().records_acked,
        acked_before + 1
    );
    assert_eq!(f.metrics.journal_quarantined.load(Relaxed), 1);
    let files = f.quarantined();
    assert_eq!(files.len(), 1);
    let bytes = fs::read(&files[0]).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let head: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    assert_eq!(head["reason"], REASON);
    assert_eq!(head["strikes"], 2);
    assert_eq!(head["trace_id"], format!("tr-{}", "02".repeat(16)));
    assert_eq!(&bytes[nl + 1..], &f.payloads[1][..]);
    assert!(f.marks().is_empty(), "resolved: no strike left behind");
    drop(g);
    let g = f.start();
    assert!(!p_is_exclusive(&g, &f, 1), "nothing carried over");
}

#[test]
fn a_garbage_marks_file_reads_as_no_marks_and_is_replaced() {
    let f = fixture();
    fs::create_dir_all(&f.journal_dir).unwrap();
    let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(f.marks_file(), junk).unwrap();
    let g = f.start();
    assert!(f.marks().is_empty());
    assert_eq!(fs::read(f.marks_file()).unwrap().len(), 0, "replaced");
    assert!(!p_is_exclusive(&g, &f, 0));
    // A directory where the file should be: the guard cannot open, and says so.
    drop(g);
    fs::remove_file(f.marks_file()).unwrap();
    fs::create_dir(f.marks_file()).unwrap();
    assert!(Guard::open(&f.journal_dir, f.quarantine_dir.clone(), f.metrics.clone()).is_err());
}
