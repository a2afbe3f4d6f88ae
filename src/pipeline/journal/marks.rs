//! The parse-marks file's format, and what a start makes of the marks the
//! last process left. Pure: bytes in, marks out; no I/O (that is
//! [`super::guard`]).
//!
//! The file (`<spool.dir>/exchanges/parsing.marks`) is an array of 32-byte
//! slots, little-endian:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `LTPM` |
//! | 4      | format version (1) |
//! | 5      | state: 0 free, 1 parsing, 2 pending (carried over from an earlier start) |
//! | 6      | strikes: crashes already counted against the record |
//! | 7      | carries: starts a pending slot has been carried through |
//! | 8..16  | the record's journal segment |
//! | 16..20 | its byte offset in that segment |
//! | 20..28 | when the slot was written, Unix milliseconds |
//! | 28..32 | CRC-32 of bytes 0..28 |
//!
//! An all-zero slot is free. A slot that fails any check (torn, flipped,
//! garbage) is damaged: ignored and counted, never trusted, never a panic.

/// Bytes per slot.
pub const SLOT: usize = 32;
/// Slots read from the file at most (the rest is ignored): 128 KiB, room
/// for the pending marks and thousands of parse workers.
pub const MAX_SLOTS: usize = 4096;
/// Strikes at which a record is quarantined instead of parsed.
pub const QUARANTINE_AT: u8 = 2;
/// Starts a pending mark survives without its record showing up (it was
/// acked, or the journal lost it) before it is forgotten.
pub const MAX_CARRIES: u8 = 3;
/// Pending marks kept at most (those with the most strikes first).
pub const MAX_PENDING: usize = 64;

const MAGIC: &[u8; 4] = b"LTPM";
const VERSION: u8 = 1;

/// What a slot says about its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing: the slot is unused.
    Free,
    /// A parse of the record began and has not ended.
    Parsing,
    /// The record has strikes and has not been seen since.
    Pending,
}

/// One slot's content: a journal record, identified by segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub record: (u64, u32),
    pub state: State,
    pub strikes: u8,
    pub carries: u8,
    pub since_ms: u64,
}

impl Mark {
    /// The free slot.
    pub const FREE: Mark = Mark {
        record: (0, 0),
        state: State::Free,
        strikes: 0,
        carries: 0,
        since_ms: 0,
    };
}

/// A slot's bytes.
pub fn encode(m: &Mark) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5] = match m.state {
        State::Free => 0,
        State::Parsing => 1,
        State::Pending => 2,
    };
    b[6] = m.strikes;
    b[7] = m.carries;
    b[8..16].copy_from_slice(&m.record.0.to_le_bytes());
    b[16..20].copy_from_slice(&m.record.1.to_le_bytes());
    b[20..28].copy_from_slice(&m.since_ms.to_le_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A slot read back: `Ok(None)` when free, `Err(())` when damaged.
#[allow(clippy::result_unit_err)]
pub fn decode(b: &[u8]) -> Result<Option<Mark>, ()> {
    if b.len() != SLOT {
        return Err(());
    }
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    if &b[0..4] != MAGIC || b[4] != VERSION || crc32fast::hash(&b[..28]) != crc {
        return Err(());
    }
    let state = match b[5] {
        0 => return Ok(None),
        1 => State::Parsing,
        2 => State::Pending,
        _ => return Err(()),
    };
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Ok(Some(Mark {
        record: (u64_at(8), u32::from_le_bytes([b[16], b[17], b[18], b[19]])),
        state,
        strikes: b[6],
        carries: b[7],
        since_ms: u64_at(20),
    }))
}

/// The marks in a file's bytes, and how many slots were damaged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub marks: Vec<Mark>,
    pub damaged: usize,
}

/// Reads every slot of a file (at most [`MAX_SLOTS`]; a trailing partial
/// slot counts as damaged unless it is all zeros).
pub fn parse(bytes: &[u8]) -> Read {
    let mut out = Read::default();
    let bytes = &bytes[..bytes.len().min(MAX_SLOTS * SLOT)];
    let mut chunks = bytes.chunks_exact(SLOT);
    for slot in chunks.by_ref() {
        match decode(slot) {
            Ok(Some(m)) => out.marks.push(m),
            Ok(None) => {}
            Err(()) => out.damaged += 1,
        }
    }
    if chunks.remainder().iter().any(|&x| x != 0) {
        out.damaged += 1;
    }
    out
}

/// What a start makes of the last process's marks: a record found being
/// parsed gets a strike (the process died during its parse); a pending one
/// keeps its strikes and is carried once more (forgotten after
/// [`MAX_CARRIES`] starts). One pending mark per record (the most strikes),
/// at most [`MAX_PENDING`], most strikes first.
pub fn carry_over(marks: &[Mark], now_ms: u64) -> Vec<Mark> {
    let mut out: Vec<Mark> = Vec::new();
    for m in marks {
        let (strikes, carries) = match m.state {
            State::Free => continue,
            State::Parsing => (m.strikes.saturating_add(1), 0),
            State::Pending => (m.strikes, m.carries.saturating_add(1)),
        };
        if strikes == 0 || carries > MAX_CARRIES {
            continue;
        }
        match out.iter_mut().find(|o| o.record == m.record) {
            Some(o) => {
                o.strikes = o.strikes.max(strikes);
                o.carries = o.carries.min(carries);
            }
            None => out.push(Mark {
                record: m.record,
                state: State::Pending,
                strikes,
                carries,
                since_ms: now_ms,
            }),
        }
    }
    out.sort_by(|a, b| b.strikes.cmp(&a.strikes).then(a.record.cmp(&b.record)));
    out.truncate(MAX_PENDING);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seg: u64, off: u32, state: State, strikes: u8, carries: u8) -> Mark {
        Mark {
            record: (seg, off),
            state,
            strikes,
            carries,
            since_ms: 1_764_000_000_000,
        }
    }

    fn file(marks: &[Mark]) -> Vec<u8> {
        marks.iter().flat_map(encode).collect()
    }

    #[test]
    fn marks_survive_the_round_trip() {
        let marks = [
            mark(7, 4096, State::Parsing, 0, 0),
            mark(u64::MAX, u32::MAX, State::Pending, 1, 3),
        ];
        let bytes = file(&[marks[0], Mark::FREE, marks[1]]);
        assert_eq!(bytes.len(), 3 * SLOT);
        assert_eq!(
            parse(&bytes),
            Read {
                marks: marks.to_vec(),
                damaged: 0
            }
        );
        assert_eq!(parse(&[0u8; 5 * SLOT]), Read::default(), "zeros are free");
        assert_eq!(parse(&[]), Read::default());
    }

    #[test]
    fn a_torn_or_flipped_slot_is_damaged_and_the_others_still_read() {
        let good = mark(3, 64, State::Parsing, 1, 0);
        let mut bytes = file(&[good, good, good]);
        bytes[SLOT + 9] ^= 0x40; // a flipped bit in the second slot
        bytes.truncate(3 * SLOT - 7); // the third slot torn
        let read = parse(&bytes);
        assert_eq!(read.marks, vec![good]);
        assert_eq!(read.damaged, 2);
    }

    #[test]
    fn garbage_is_damage_never_a_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1, 31, 32, 33, 64, 1000, MAX_SLOTS * SLOT + 77] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let read = parse(&bytes);
            assert!(read.marks.is_empty(), "random bytes are not a mark");
            assert!(read.damaged <= MAX_SLOTS + 1, "reading is bounded");
            assert!(read.damaged > 0);
        }
        // A valid checksum over an unknown state is damage too.
        let mut b = encode(&mark(1, 1, State::Parsing, 0, 0));
        b[5] = 9;
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&b), Err(()));
    }

    #[test]
    fn a_record_found_being_parsed_gets_a_strike() {
        let now = 42;
        let marks = [
            mark(1, 0, State::Parsing, 0, 0),   // died once during its parse
            mark(1, 100, State::Parsing, 1, 0), // died again, parsed alone
            mark(1, 100, State::Pending, 1, 0), // its carried mark
            mark(2, 0, State::Pending, 1, MAX_CARRIES), // never came back: forgotten
            mark(3, 0, State::Pending, 1, 1),   // not reached last time: kept
            Mark::FREE,
        ];
        let out = carry_over(&marks, now);
        let got: Vec<_> = out
            .iter()
            .map(|m| (m.record, m.strikes, m.carries))
            .collect();
        assert_eq!(got, vec![((1, 100), 2, 0), ((1, 0), 1, 0), ((3, 0), 1, 2)]);
        assert!(out
            .iter()
            .all(|m| m.state == State::Pending && m.since_ms == now));
    }

    #[test]
    fn pending_marks_are_capped() {
        let marks: Vec<_> = (0..MAX_PENDING as u32 + 10)
            .map(|i| mark(1, i, State::Parsing, 0, 0))
            .collect();
        assert_eq!(carry_over(&marks, 0).len(), MAX_PENDING);
    }
}
