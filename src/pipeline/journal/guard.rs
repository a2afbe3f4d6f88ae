//! The poison-pill guard: a journal record whose parse killed the process
//! twice is quarantined, never parsed a third time, so no record can
//! crash-loop llmtap (an OOM kill under a container limit, a stack
//! overflow, an abort: nothing `catch_unwind` sees).
//!
//! - Before a worker decodes and parses a record, it writes the record's id
//!   into its own slot of `parsing.marks` ([`marks`] has the format) with
//!   one `pwrite`, over whatever the slot held. A finished parse leaves its
//!   mark in place while the worker goes on to its next record (whose mark
//!   replaces it: one write per record under load, not two); a worker frees
//!   its slot when it runs out of records ([`Guard::free`]), and a record
//!   with a strike frees its slot as soon as its parse ends. So a crash
//!   right after a parse may strike the record just parsed: it is parsed
//!   again, alone, if it was not yet stored (never lost, never quarantined
//!   for it, since a struck record frees its mark at once), and its strike
//!   is forgotten if it was. The marks are not fsynced: they must survive
//!   the process dying, not the machine.
//! - At start, [`Guard::open`] reads what the last process left: a record
//!   found being parsed gets a strike. A record with one strike is parsed
//!   again, but **alone** (the [`Gate`] holds every other worker back), so a
//!   crash then points at it and at no bystander; with two it is
//!   quarantined ([`quarantine`]) and acked instead. So a single crash (a
//!   `kill -9` during a deploy) never loses a trace, and a poison record
//!   costs two crashes, then nothing.
//! - Strikes outlive a start that does not reach their record: they are
//!   rewritten as pending slots at the head of the file and freed once the
//!   record is parsed or quarantined (forgotten after a few starts without
//!   it: it was acked or lost).
//! - A damaged, torn or garbage marks file is read as "no marks" slot by
//!   slot, logged, and replaced; no byte of it can crash the process.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::gate::Gate;
use super::marks::{self, Mark, State, QUARANTINE_AT, SLOT};
use super::{codec, quarantine, Shared};
use crate::metrics::Metrics;
use crate::pipeline::spool::group::{publish, Slot};
use crate::pipeline::spool::RecordId;

/// The marks file's name in the journal directory.
pub const FILE: &str = "parsing.marks";

const REASON: &str = "llmtap died twice while parsing this record (out of memory, stack overflow or abort); quarantined so it is never parsed again";

type Key = (u64, u32);

fn key(id: RecordId) -> Key {
    (id.segment(), id.offset())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A record that came into this start with strikes: how many, and its slot.
#[derive(Debug, Clone, Copy)]
struct Pending {
    strikes: u8,
    slot: usize,
}

/// The guard shared by a journal's parse workers.
pub struct Guard {
    file: File,
    gate: Gate,
    pending: Mutex<HashMap<Key, Pending>>,
    any_pending: AtomicBool,
    /// Worker `i` writes slot `first_worker_slot + i`.
    first_worker_slot: usize,
    quarantine_dir: PathBuf,
    metrics: Arc<Metrics>,
    write_errors: AtomicU64,
}

/// What to do with a record a worker is about to parse.
pub enum Admit {
    /// Parse it; dropping the token ends the parse (see [`Parsing`]).
    Parse(Parsing),
    /// Quarantine it ([`Guard::quarantine`]); never parse it.
    Quarantine,
}

impl Guard {
    /// Reads the marks the last process left in `journal_dir`, decides, and
    /// rewrites the file with the strikes carried over.
    pub fn open(
        journal_dir: &Path,
        quarantine_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> io::Result<Guard> {
        let path = journal_dir.join(FILE);
        let read = read_marks(&path);
        if read.damaged > 0 {
            tracing::warn!(file = %path.display(), damaged_slots = read.damaged, "exchange journal: damaged parse marks ignored (a crash mid-write, or a foreign file); their records get no strike");
        }
        let carried = marks::carry_over(&read.marks, now_ms());
        carried.iter().for_each(log_strike);
        let bytes: Vec<u8> = carried.iter().flat_map(marks::encode).collect();
        replace(&path, &bytes)?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let pending: HashMap<Key, Pending> = carried
            .iter()
            .enumerate()
            .map(|(slot, m)| {
                (
                    m.record,
                    Pending {
                        strikes: m.strikes,
                        slot,
                    },
                )
            })
            .collect();
        Ok(Guard {
            file,
            gate: Gate::default(),
            any_pending: AtomicBool::new(!pending.is_empty()),
            first_worker_slot: carried.len(),
            pending: Mutex::new(pending),
            quarantine_dir,
            metrics,
            write_errors: AtomicU64::new(0),
        })
    }

    fn pending(&self, k: Key) -> Option<Pending> {
        if !self.any_pending.load(Relaxed) {
            return None;
        }
        self.pending.lock().ok()?.get(&k).copied()
    }

    /// Marks record `id` as being parsed by `worker` (alone, if it has a
    /// strike), or says to quarantine it.
    pub fn admit(self: &Arc<Self>, worker: usize, id: RecordId) -> Admit {
        let k = key(id);
        let pending = self.pending(k);
        if pending.is_some_and(|p| p.strikes >= QUARANTINE_AT) {
            return Admit::Quarantine;
        }
        let exclusive = pending.is_some();
        if exclusive {
            self.gate.enter_exclusive();
        } else {
            self.gate.enter_shared();
        }
        let slot = self.first_worker_slot + worker;
        self.write_slot(
            slot,
            &Mark {
                record: k,
                state: State::Parsing,
                strikes: pending.map_or(0, |p| p.strikes),
                carries: 0,
                since_ms: now_ms(),
            },
        );
        Admit::Parse(Parsing {
            guard: self.clone(),
            slot,
            exclusive,
            key: k,
        })
    }

    /// Writes record `id` to the quarantine directory, counts and logs it,
    /// and acks it in the journal so that no start parses it again.
    pub fn quarantine(&self, id: RecordId, payload: &[u8], journal: &Shared) {
        let k = key(id);
        let trace_id = codec::peek_trace_id(payload).map(|t| crate::exchange::mlflow_trace_id(&t));
        let entry = quarantine::Entry {
            segment: k.0,
            offset: k.1,
            trace_id: trace_id.clone(),
            strikes: self.pending(k).map_or(QUARANTINE_AT, |p| p.strikes),
            reason: REASON,
            now_ms: now_ms(),
            payload,
        };
        let written = quarantine::write(&self.quarantine_dir, &entry);
        let total = self.metrics.journal_quarantined.fetch_add(1, Relaxed) + 1;
        let trace_id = trace_id.as_deref().unwrap_or("unknown");
        match written {
            Ok(file) => {
                tracing::warn!(trace_id, file = %file.display(), quarantined_total = total, "exchange journal: a record killed llmtap twice while being parsed; quarantined, its trace is not sent (see README, \"Operating it\")")
            }
            Err(e) => {
                tracing::error!(trace_id, error = %e, quarantined_total = total, "exchange journal: a record killed llmtap twice while being parsed; it cannot be written to the quarantine directory and is dropped")
            }
        }
        let acked = journal.lock().ok().is_some_and(|mut j| {
            let r = j.ack(&[id]);
            publish(&j, &self.metrics, &Slot::Journal);
            r.is_ok()
        });
        // Keep the strikes until the ack is on disk: else a restart would
        // hand the record out unmarked and parse it a third time.
        if acked {
            self.resolve(k);
        } else {
            tracing::warn!(trace_id, "exchange journal: the quarantined record's ack was not persisted; the next start quarantines it again");
        }
    }

    /// Forgets a pending record's strikes (parsed, or quarantined and acked).
    fn resolve(&self, k: Key) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if let Some(p) = pending.remove(&k) {
            self.write_slot(p.slot, &Mark::FREE);
        }
        self.any_pending.store(!pending.is_empty(), Relaxed);
    }

    /// Frees `worker`'s slot: it has no record in hand (idle, or stopping).
    pub fn free(&self, worker: usize) {
        self.write_slot(self.first_worker_slot + worker, &Mark::FREE);
    }

    fn write_slot(&self, slot: usize, m: &Mark) {
        let at = (slot * SLOT) as u64;
        if let Err(e) = self.file.write_all_at(&marks::encode(m), at) {
            let n = self.write_errors.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(error = %e, failures = n, "exchange journal: a parse mark cannot be written; a record that crashes llmtap may be parsed again after a restart");
            }
        }
    }
}

/// Held while a record is decoded and parsed. Dropping it ends the parse:
/// a record with a strike frees its mark and strike at once (and lets the
/// other workers go on); any other leaves its mark to be overwritten by the
/// worker's next record or freed by [`Guard::free`].
pub struct Parsing {
    guard: Arc<Guard>,
    slot: usize,
    exclusive: bool,
    key: Key,
}

impl Drop for Parsing {
    fn drop(&mut self) {
        if self.exclusive {
            // The worker slot first: a crash between the two leaves the
            // record pending, to be parsed once more, rather than struck.
            self.guard.write_slot(self.slot, &Mark::FREE);
            self.guard.resolve(self.key);
        }
        self.guard.gate.leave(self.exclusive);
    }
}

/// Says what a start does with a record that has strikes: a new strike is
/// a WARN; a quarantine is logged (WARN, with the trace id) when done.
fn log_strike(m: &Mark) {
    let (segment, offset) = m.record;
    if m.strikes >= QUARANTINE_AT {
        tracing::info!(journal_segment = segment, journal_offset = offset, strikes = m.strikes, "exchange journal: a record that killed llmtap twice while being parsed is quarantined when read, not parsed");
    } else if m.carries == 0 {
        tracing::warn!(journal_segment = segment, journal_offset = offset, strikes = m.strikes, "exchange journal: llmtap stopped while a record was being parsed (a crash, an OOM kill or kill -9); it is parsed again, alone");
    } else {
        tracing::info!(journal_segment = segment, journal_offset = offset, strikes = m.strikes, "exchange journal: a record with a strike, not reached by the last start, is parsed again, alone");
    }
}

/// The last process's marks, read within a bound; anything unreadable is
/// "no marks" (logged).
fn read_marks(path: &Path) -> marks::Read {
    let read = || -> io::Result<Vec<u8>> {
        if !fs::symlink_metadata(path)?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut buf = Vec::new();
        File::open(path)?
            .take((marks::MAX_SLOTS * SLOT + SLOT) as u64)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(bytes) => marks::parse(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => marks::Read::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "exchange journal: the parse marks cannot be read; none assumed");
            marks::Read::default()
        }
    }
}

/// Replaces the file at `path` with `bytes` (0600), atomically.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("marks.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
