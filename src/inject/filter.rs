//! The response side of usage injection (pure): [`UsageFilter`] takes an SSE
//! stream back to the bytes the client would have got without
//! `include_usage`.
//!
//! The stream is cut into event blocks at blank lines (CR, LF or CRLF line
//! ends). A block is held until its blank line arrives, then forwarded: the
//! usage-only chunk (`"choices":[]` with a `usage` object) is dropped, and a
//! trailing top-level `"usage":null` member is removed from the other chunks.
//! Whether a block is the usage-only chunk is only known from its whole JSON,
//! so a block is never forwarded in part — unless it outgrows the bound.
//!
//! Linear and bounded:
//! - The scan position and line state are kept across pushes, so each byte is
//!   scanned once for the blank line, once more (in its finished block) for
//!   `"usage"`, and — only in a block that mentions it — once more to edit it.
//!   [`UsageFilter::work`] counts these steps.
//! - At most one block is held, up to [`MAX_HELD_EVENT`] bytes. A longer
//!   block is sent on untouched: what is held at once, the rest as it comes,
//!   until its blank line. The filter then cannot know whether it held what
//!   injection added, and says so ([`UsageFilter::failure`]).

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde_json::Value;

/// The longest event block held back (1 MiB). OpenAI's chunks are a few
/// hundred bytes (the usage-only chunk about 300), and even a chunk carrying
/// a whole tool-call argument or a long content delta stays far below this;
/// a longer "event" is not a chat chunk (a proxy's one-line reply, a stream
/// without blank lines). The bound is what one call can hold in memory, and
/// how much a block can be delayed before it is sent on.
pub const MAX_HELD_EVENT: usize = 1 << 20;

const USAGE: &[u8] = b"\"usage\"";

/// Removes what `include_usage` added from an SSE stream; see the module docs.
#[derive(Debug, Default)]
pub struct UsageFilter {
    /// The current block's bytes, not yet forwarded.
    held: BytesMut,
    scanner: Scanner,
    /// The current block outgrew the bound: its bytes pass as they come.
    passing: bool,
    /// Blocks that outgrew the bound and passed untouched.
    pub overflowed: usize,
    /// Usage-only chunks removed so far (normally 0 or 1).
    pub removed: usize,
    work: u64,
}

impl UsageFilter {
    /// Takes the next network chunk; returns the bytes to forward now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let end = self.scanner.feed(rest);
            let (this, next) = rest.split_at(end.unwrap_or(rest.len()));
            self.work += this.len() as u64;
            if !self.passing && self.held.len() + this.len() > MAX_HELD_EVENT {
                self.passing = true;
                self.overflowed += 1;
                out.extend_from_slice(&self.held.split());
            }
            if self.passing {
                out.extend_from_slice(this);
            } else {
                self.held.extend_from_slice(this);
            }
            if end.is_some() {
                self.end_block(&mut out);
            }
            rest = next;
        }
        out.freeze()
    }

    /// End of stream: whatever is held (a final block without its blank line).
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.end_block(&mut out);
        out.freeze()
    }

    /// Why what injection added may have reached the client, if it may have.
    pub fn failure(&self) -> Option<String> {
        (self.overflowed > 0).then(|| {
            format!(
                "an SSE event longer than {MAX_HELD_EVENT} bytes passed unfiltered ({} such event(s))",
                self.overflowed
            )
        })
    }

    /// Bytes examined so far, all passes counted: a linear filter keeps this
    /// within a small multiple of the bytes pushed.
    pub fn work(&self) -> u64 {
        self.work
    }

    fn end_block(&mut self, out: &mut BytesMut) {
        self.scanner = Scanner::default();
        if std::mem::take(&mut self.passing) {
            return;
        }
        let block = self.held.split();
        self.emit(&block, out);
    }

    fn emit(&mut self, block: &[u8], out: &mut BytesMut) {
        self.work += block.len() as u64;
        if memmem::find(block, USAGE).is_none() {
            out.extend_from_slice(block);
            return;
        }
        self.work += block.len() as u64;
        if is_usage_only(block) {
            self.removed += 1;
            return;
        }
        let mut rest = block;
        while !rest.is_empty() {
            let line_len = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
            let (line, tail) = rest.split_at(line_len);
            write_line(line, out);
            let eol = match tail {
                [b'\r', b'\n', ..] => 2,
                [b'\r', ..] | [b'\n', ..] => 1,
                _ => 0,
            };
            out.extend_from_slice(&tail[..eol]);
            rest = &tail[eol..];
        }
    }
}

/// Finds where an event block ends (its blank line), fed a chunk at a time.
/// A block ends at a line end met at the start of a line, unless that line
/// end is the block's first byte (a stray blank line joins the next block).
#[derive(Debug, Clone, Copy)]
struct Scanner {
    /// The block has bytes before the current position.
    started: bool,
    /// The current position is at the start of a line.
    line_start: bool,
    /// The last byte fed was a CR that may be half of a CRLF; `true` when it
    /// ends the block.
    cr: Option<bool>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            started: false,
            line_start: true,
            cr: None,
        }
    }
}

impl Scanner {
    /// Feeds `bytes`; when the block ends within them, returns how many of
    /// them belong to it (the caller then starts a new scanner).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if let Some(ends) = self.cr.take() {
            let crlf = bytes.first() == Some(&b'\n');
            if ends {
                return Some(usize::from(crlf));
            }
            i = usize::from(crlf);
        }
        while i < bytes.len() {
            let Some(off) = memchr::memchr2(b'\r', b'\n', &bytes[i..]) else {
                self.line_start = false;
                self.started = true;
                return None;
            };
            if off > 0 {
                self.line_start = false;
                self.started = true;
            }
            let at = i + off;
            let ends = self.line_start && self.started;
            let eol = match (bytes[at], bytes.get(at + 1)) {
                (b'\r', None) => {
                    self.cr = Some(ends);
                    self.line_start = true;
                    self.started = true;
                    return None;
                }
                (b'\r', Some(b'\n')) => 2,
                _ => 1,
            };
            if ends {
                return Some(at + eol);
            }
            self.line_start = true;
            self.started = true;
            i = at + eol;
        }
        None
    }
}

/// The JSON of a block's `data:` lines.
fn block_data(block: &[u8]) -> String {
    let text = String::from_utf8_lossy(block);
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    data
}

fn is_usage_only(block: &[u8]) -> bool {
    // Most events carry choices: only one whose "choices" may be an empty
    // array is parsed (a content chunk costs a byte scan, not a parse).
    if !may_have_empty_choices(block) {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(&block_data(block)) else {
        return false;
    };
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && v.get("usage").is_some_and(Value::is_object)
}

/// Whether some `"choices"` in the event is followed by `: []` (any
/// whitespace): the cheap test before [`is_usage_only`]'s parse.
fn may_have_empty_choices(block: &[u8]) -> bool {
    memchr::memmem::find_iter(block, b"\"choices\"").any(|at| {
        let rest = block[at + 9..]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace());
        rest.take(3).eq(b":[]".iter().copied())
    })
}

/// Writes `line`, turning `data: {...,"usage":null}` into `data: {...}`.
fn write_line(line: &[u8], out: &mut BytesMut) {
    match usage_null_member(line) {
        Some(cut) => {
            out.extend_from_slice(&line[..cut]);
            out.extend_from_slice(&line[line.len() - trailing_from_brace(line)..]);
        }
        None => out.extend_from_slice(line),
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &s[..n]
}

/// Bytes from the line's last `}` to its end.
fn trailing_from_brace(line: &[u8]) -> usize {
    line.len() - line.iter().rposition(|b| *b == b'}').unwrap_or(line.len())
}

/// Where a trailing top-level `,"usage":null` member starts, if the line
/// is a `data:` line ending in one. (The last `}` of the line closes the
/// top-level object, so the member right before it is top-level.)
fn usage_null_member(line: &[u8]) -> Option<usize> {
    if !line.starts_with(b"data:") {
        return None;
    }
    let inner = trim_end(line).strip_suffix(b"}")?;
    let rest = trim_end(inner).strip_suffix(b"null")?;
    let rest = trim_end(rest).strip_suffix(b":")?;
    let rest = trim_end(rest).strip_suffix(b"\"usage\"")?;
    let before = trim_end(rest).strip_suffix(b",")?;
    Some(before.len())
}

#[cfg(test)]
mod tests;
