//! Incremental Server-Sent Events decoder over raw bytes (WHATWG EventSource
//! parsing rules), reporting each event's byte range in the whole stream.
//!
//! Feed network chunks as they arrive with [`SseDecoder::feed`]; call
//! [`SseDecoder::finish`] at end of stream. Line endings may be LF, CRLF or a
//! lone CR, including a CR ending one chunk and its LF starting the next.
//! Lines are decoded as UTF-8 (lossily) only once complete, so multi-byte
//! characters split across chunks come out intact. A leading UTF-8 BOM is
//! skipped. Output never depends on how the stream was chunked.
//!
//! Deviations from a browser `EventSource`, on purpose for tracing: `id` is
//! per event (not carried over to later events), `retry` is ignored, an event
//! is dispatched when it had a `data` *or* an `event` field, and `finish`
//! dispatches a final event that lacks its closing blank line.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` field; `None` when absent or empty.
    pub event: Option<String>,
    /// `data:` lines joined with `'\n'`.
    pub data: String,
    /// `id:` field of this event (ignored when it contains NUL).
    pub id: Option<String>,
    /// Byte offset in the whole stream where this event's first line began.
    pub start: usize,
    /// Byte offset just past the blank line that dispatched it (or stream end).
    pub end: usize,
}

/// Incremental decoder; see the module docs.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// Stream offset where `line` begins.
    line_start: usize,
    /// Total bytes fed so far.
    pos: usize,
    /// The last chunk ended in CR: the line is complete, but its terminator
    /// may still grow by an LF at the start of the next chunk.
    pending_cr: bool,
    /// The first line has been examined for a BOM.
    bom_checked: bool,
    /// Fields of the event being assembled.
    ev_start: Option<usize>,
    data: String,
    data_seen: bool,
    event: Option<String>,
    id: Option<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next network chunk; returns the events completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let base = self.pos;
        self.pos = self.pos.saturating_add(chunk.len());
        let mut i = 0;
        if self.pending_cr {
            match chunk.first() {
                None => return out,
                Some(b'\n') => {
                    i = 1;
                    self.complete_line(base + 1, &mut out);
                }
                Some(_) => self.complete_line(base, &mut out),
            }
            self.pending_cr = false;
        }
        while let Some(rest) = chunk.get(i..).filter(|r| !r.is_empty()) {
            let Some(p) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.line.extend_from_slice(rest);
                break;
            };
            self.line
                .extend_from_slice(rest.get(..p).unwrap_or_default());
            let term_end = base + i + p + 1;
            match (rest.get(p), rest.get(p + 1)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += p + 2;
                    self.complete_line(term_end + 1, &mut out);
                }
                (Some(b'\r'), None) => {
                    i += p + 1;
                    self.pending_cr = true;
                }
                _ => {
                    i += p + 1;
                    self.complete_line(term_end, &mut out);
                }
            }
        }
        out
    }

    /// End of stream: returns a final event that had data (or an event name)
    /// but no trailing blank line, if any. The decoder is then reset for the
    /// event state but keeps counting offsets if fed again.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if self.pending_cr || !self.line.is_empty() {
            self.pending_cr = false;
            self.complete_line(self.pos, &mut out);
        }
        if let Some(ev) = out.pop() {
            return Some(ev);
        }
        self.dispatch(self.pos)
    }

    /// Process the buffered line, whose terminator ends at stream offset `end`.
    fn complete_line(&mut self, end: usize, out: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        let mut start = self.line_start;
        self.line_start = end;
        let mut bytes = raw.as_slice();
        if !self.bom_checked {
            self.bom_checked = true;
            if let Some(stripped) = bytes.strip_prefix(BOM) {
                bytes = stripped;
                start += BOM.len();
            }
        }
        if bytes.is_empty() {
            out.extend(self.dispatch(end));
        } else {
            self.ev_start.get_or_insert(start);
            let line = String::from_utf8_lossy(bytes);
            self.field(&line);
        }
        // Reuse the allocation for the next line.
        self.line = raw;
        self.line.clear();
    }

    /// Apply one non-blank line to the event being assembled.
    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = (!value.is_empty()).then(|| value.to_owned()),
            "data" => {
                if self.data_seen {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.data_seen = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }

    /// Blank line (or end of stream): emit the assembled event, if any, and
    /// reset the per-event state.
    fn dispatch(&mut self, end: usize) -> Option<SseEvent> {
        let start = self.ev_start.take().unwrap_or(end);
        let data = std::mem::take(&mut self.data);
        let event = self.event.take();
        let id = self.id.take();
        let seen = std::mem::replace(&mut self.data_seen, false) || event.is_some();
        seen.then_some(SseEvent {
            event,
            data,
            id,
            start,
            end,
        })
    }
}

/// How much of a captured stream [`for_each_event`] feeds at a time.
const PIECE: usize = 16 << 10;

/// Decodes a whole captured stream a piece at a time, handing each event to
/// `each` as it completes: the events of a stream of millions of tiny ones
/// are never all in memory at once. Same events as [`decode_all`].
pub fn for_each_event(bytes: &[u8], mut each: impl FnMut(SseEvent)) {
    let mut dec = SseDecoder::new();
    for piece in bytes.chunks(PIECE) {
        dec.feed(piece).into_iter().for_each(&mut each);
    }
    dec.finish().into_iter().for_each(each);
}

/// Convenience: decode a whole captured stream.
pub fn decode_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new();
    let mut events = dec.feed(bytes);
    events.extend(dec.finish());
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(data: &str, start: usize, end: usize) -> SseEvent {
        SseEvent {
            data: data.into(),
            start,
            end,
            ..SseEvent::default()
        }
    }

    fn datas(bytes: &[u8]) -> Vec<String> {
        decode_all(bytes).into_iter().map(|e| e.data).collect()
    }

    /// Feed `bytes` split at the given cut points (positions modulo length).
    fn decode_split(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<SseEvent> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut dec = SseDecoder::new();
        let (mut out, mut last) = (Vec::new(), 0);
        for p in points.into_iter().chain([bytes.len()]) {
            out.extend(dec.feed(bytes.get(last..p).unwrap_or_default()));
            last = p;
        }
        out.extend(dec.finish());
        out
    }

    #[test]
    fn lf_framing_with_offsets() {
        let s = b"data: a\n\ndata: b\n\n";
        assert_eq!(decode_all(s), vec![ev("a", 0, 9), ev("b", 9, 18)]);
    }

    #[test]
    fn crlf_and_lone_cr_endings() {
        assert_eq!(
            datas(b"data: a\r\n\r\ndata: b\r\rdata: c\n\r\n"),
            ["a", "b", "c"]
        );
        assert_eq!(decode_all(b"data: a\r\n\r\n"), vec![ev("a", 0, 11)]);
    }

    #[test]
    fn cr_then_lf_across_chunks_is_one_line_ending() {
        let mut dec = SseDecoder::new();
        assert!(dec.feed(b"data: a\r").is_empty());
        assert!(dec.feed(b"\n\r").is_empty());
        assert_eq!(
            dec.feed(b"\ndata: b\n\n"),
            vec![ev("a", 0, 11), ev("b", 11, 20)]
        );
        assert_eq!(dec.finish(), None);
    }

    #[test]
    fn comments_are_ignored_but_belong_to_their_block() {
        assert_eq!(datas(b": keep-alive\n\n:ping\ndata: x\n\n"), ["x"]);
        assert_eq!(decode_all(b": c\n\n: d\ndata: x\n\n"), vec![ev("x", 5, 18)]);
    }

    #[test]
    fn field_parsing() {
        let got = decode_all(b"event: delta\nid: 7\nretry: 10\ndata:no-space\ndata:  two\n\n");
        let want = SseEvent {
            event: Some("delta".into()),
            data: "no-space\n two".into(),
            id: Some("7".into()),
            start: 0,
            end: 55,
        };
        assert_eq!(got, vec![want]);
        // A line without a colon is a field name with an empty value.
        assert_eq!(datas(b"data\ndata\n\n"), ["\n"]);
        assert_eq!(datas(b"data\n\n"), [""]);
        // Unknown fields alone do not dispatch; ids with NUL are dropped.
        assert!(decode_all(b"foo: bar\nid: 1\n\n").is_empty());
        assert_eq!(decode_all(b"id: a\0b\ndata: x\n\n")[0].id, None);
    }

    #[test]
    fn event_without_data_is_dispatched() {
        let got = decode_all(b"event: ping\n\n");
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].event.as_deref(), got[0].data.as_str()),
            (Some("ping"), "")
        );
        assert!(decode_all(b"event:\n\n").is_empty());
    }

    #[test]
    fn done_is_a_plain_event() {
        assert_eq!(datas(b"data: {}\n\ndata: [DONE]\n\n"), ["{}", "[DONE]"]);
    }

    #[test]
    fn multibyte_split_across_chunks_and_invalid_utf8() {
        let s = "data: h\u{e9}llo \u{1f600}\n\n".as_bytes();
        for cut in 0..=s.len() {
            let mut dec = SseDecoder::new();
            let mut got = dec.feed(s.get(..cut).unwrap_or_default());
            got.extend(dec.feed(s.get(cut..).unwrap_or_default()));
            assert_eq!(
                got,
                vec![ev("h\u{e9}llo \u{1f600}", 0, s.len())],
                "cut {cut}"
            );
        }
        assert_eq!(datas(b"data: a\xFFb\xC3\n\n"), ["a\u{fffd}b\u{fffd}"]);
    }

    #[test]
    fn leading_bom_is_skipped() {
        assert_eq!(decode_all(b"\xEF\xBB\xBFdata: x\n\n"), vec![ev("x", 3, 12)]);
        let mut dec = SseDecoder::new();
        assert!(dec.feed(b"\xEF\xBB").is_empty());
        assert_eq!(dec.feed(b"\xBFdata: x\n\n"), vec![ev("x", 3, 12)]);
        // Only at the very start.
        assert_eq!(datas(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"), ["x"]);
    }

    #[test]
    fn finish_flushes_unterminated_event() {
        assert_eq!(
            decode_all(b"data: a\n\ndata: b"),
            vec![ev("a", 0, 9), ev("b", 9, 16)]
        );
        assert_eq!(decode_all(b"data: b\n"), vec![ev("b", 0, 8)]);
        assert_eq!(decode_all(b"data: b\r"), vec![ev("b", 0, 8)]);
        assert_eq!(decode_all(b"data: b\r\r"), vec![ev("b", 0, 9)]);
        assert!(decode_all(b"").is_empty());
        assert!(decode_all(b": only a comment").is_empty());
    }

    #[test]
    fn for_each_event_matches_decode_all_across_pieces() {
        let mut s = Vec::new();
        for i in 0..5000 {
            s.extend_from_slice(format!("event: e\r\ndata: {i}\r\n\r\n").as_bytes());
        }
        assert!(s.len() > 4 * PIECE);
        let mut got = Vec::new();
        for_each_event(&s, |e| got.push(e));
        assert_eq!(got.len(), 5000);
        assert_eq!(got, decode_all(&s));
    }

    const STREAMS: &[&[u8]] = &[
        include_bytes!("../../tests/fixtures/openai_chat/stream_basic.sse"),
        include_bytes!("../../tests/fixtures/openai_chat/stream_crlf.sse"),
        include_bytes!("../../tests/fixtures/openai_chat/stream_include_usage.sse"),
        include_bytes!("../../tests/fixtures/openai_chat/stream_tool_calls_parallel.sse"),
        include_bytes!("../../tests/fixtures/openai_chat/stream_cut_no_done.sse"),
        include_bytes!("../../tests/fixtures/openai_chat/stream_n2.sse"),
        b"\xEF\xBB\xBF: hi\r\nevent: x\rdata: \xE2\x82\xAC\r\n\r\ndata: a\ndata: b\r\r\ndata",
        b"data: \xF0\x9F\x98\x80\r\r\r\n\n\r\nid: 1\nevent: e\n\n: c\r",
    ];

    /// Bytes that exercise every branch of the line/field scanner.
    fn sse_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            prop::sample::select(b"data:event id\r\n\r\n: x".to_vec()),
            prop::sample::select(vec![0xEF, 0xBB, 0xBF, 0xE2, 0x82, 0xAC, 0xFF, 0x00]),
            any::<u8>(),
        ]
    }

    proptest! {
        #[test]
        fn chunking_never_changes_events(
            which in 0..STREAMS.len(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let bytes = STREAMS.get(which).copied().unwrap_or_default();
            prop_assert_eq!(decode_split(bytes, &cuts), decode_all(bytes));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_consistently(
            bytes in prop::collection::vec(sse_byte(), 0..400),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let mut streamed = Vec::new();
            for_each_event(&bytes, |e| streamed.push(e));
            prop_assert_eq!(&streamed, &decode_all(&bytes));
            let whole = decode_all(&bytes);
            for e in &whole {
                prop_assert!(e.start <= e.end && e.end <= bytes.len());
            }
            prop_assert_eq!(decode_split(&bytes, &cuts), whole);
        }
    }
}
