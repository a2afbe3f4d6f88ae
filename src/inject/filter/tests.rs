//! The filter against the one it replaced (which rescanned its buffer on every
//! chunk): the same bytes out for any input cut anywhere, in linear work,
//! holding at most one bounded block.

use super::*;
use proptest::prelude::*;

/// The previous filter's block cut: scans from the start of `buf`.
fn old_block_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = true;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\r' if i + 1 == buf.len() => return None,
            b'\r' if buf[i + 1] == b'\n' => 2,
            b'\r' | b'\n' => 1,
            _ => 0,
        };
        if eol == 0 {
            line_start = false;
            i += 1;
            continue;
        }
        if line_start && i > 0 {
            return Some(i + eol);
        }
        line_start = true;
        i += eol;
    }
    None
}

/// What the previous filter gave for `input` in one piece.
fn reference(input: &[u8]) -> (Vec<u8>, usize) {
    let mut f = UsageFilter::default();
    let mut out = BytesMut::new();
    let mut rest = input;
    while let Some(end) = old_block_end(rest) {
        f.emit(&rest[..end], &mut out);
        rest = &rest[end..];
    }
    f.emit(rest, &mut out);
    (out.to_vec(), f.removed)
}

fn in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<u8>, UsageFilter) {
    let mut f = UsageFilter::default();
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts.into_iter().chain(std::iter::once(input.len())) {
        out.extend_from_slice(&f.push(&input[last..c]));
        last = c;
    }
    out.extend_from_slice(&f.finish());
    (out, f)
}

const PIECES: [&str; 16] = [
    "data: ",
    "data:",
    "{\"choices\":[]",
    "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]",
    ",\"usage\":null}",
    ",\"usage\":{\"total_tokens\":3}}",
    "}",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    ": keep-alive",
    "event: x",
    "[DONE]",
    " ",
    "\"usage\"",
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..PIECES.len(), 0..40)
        .prop_map(|ix| ix.into_iter().flat_map(|i| PIECES[i].bytes()).collect())
}

proptest! {
    #[test]
    fn any_split_gives_the_bytes_the_old_filter_gave(
        input in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (want, want_removed) = reference(&input);
        let (got, f) = in_pieces(&input, &cuts);
        prop_assert_eq!(got, want);
        prop_assert_eq!(f.removed, want_removed);
        prop_assert!(f.failure().is_none());
        prop_assert!(f.work() <= 3 * input.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_split_anywhere_match_too(
        input in prop::collection::vec(prop::sample::select(b"data: {}\r\n\"usage\":nul,[]x".to_vec()), 0..200),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        prop_assert_eq!(in_pieces(&input, &cuts).0, reference(&input).0);
    }
}

/// A chat chunk with a trailing `"usage":null`, `len` bytes with its blank line.
fn chunk_of(len: usize) -> Vec<u8> {
    let head = b"data: {\"choices\":[{\"delta\":{\"content\":\"";
    let tail = b"\"}}],\"usage\":null}\n\n";
    let mut v = head.to_vec();
    v.resize(len - tail.len(), b'a');
    v.extend_from_slice(tail);
    v
}

const USAGE_ONLY: &[u8] = b"data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n";

#[test]
fn a_block_of_exactly_the_bound_is_still_filtered() {
    let mut input = chunk_of(MAX_HELD_EVENT);
    input.extend_from_slice(USAGE_ONLY);
    let (out, f) = in_pieces(&input, &[1000, MAX_HELD_EVENT - 1, MAX_HELD_EVENT + 3]);
    assert_eq!(out.len(), MAX_HELD_EVENT - ",\"usage\":null".len());
    assert!(out.ends_with(b"\"}}]}\n\n"));
    assert_eq!((f.removed, f.failure()), (1, None));
}

#[test]
fn a_longer_block_passes_untouched_and_says_so_whatever_the_split() {
    let big = chunk_of(MAX_HELD_EVENT + 1);
    let mut input = big.clone();
    input.extend_from_slice(USAGE_ONLY);
    input.extend_from_slice(b"data: [DONE]\n\n");
    for cuts in [
        vec![],
        vec![10],
        vec![MAX_HELD_EVENT],
        vec![5, MAX_HELD_EVENT + 2],
    ] {
        let (out, f) = in_pieces(&input, &cuts);
        let mut want = big.clone();
        want.extend_from_slice(b"data: [DONE]\n\n");
        assert!(
            out == want,
            "cuts {cuts:?}: the big block untouched, the usage chunk still removed"
        );
        assert_eq!(f.removed, 1);
        assert_eq!(f.overflowed, 1);
        assert!(f.failure().unwrap().contains("1048576"));
    }
}

#[test]
fn an_8_mib_line_goes_out_as_it_comes_in_linear_work() {
    let line = vec![b'x'; 8 << 20];
    let mut f = UsageFilter::default();
    let mut sent = 0;
    let mut first_out_at = None;
    for (i, piece) in line.chunks(16 << 10).enumerate() {
        let out = f.push(piece);
        sent += out.len();
        if !out.is_empty() && first_out_at.is_none() {
            first_out_at = Some(i);
        }
        assert!(
            f.held.len() <= MAX_HELD_EVENT,
            "never holds more than the bound"
        );
    }
    sent += f.finish().len();
    assert_eq!(sent, line.len());
    assert_eq!(
        first_out_at,
        Some(MAX_HELD_EVENT / (16 << 10)),
        "sent on once past the bound"
    );
    assert!(
        f.work() <= line.len() as u64,
        "each byte scanned once: {}",
        f.work()
    );
    assert!(f.failure().is_some());
}

#[test]
fn many_small_events_cost_linear_work() {
    let input: Vec<u8> = (0..20_000).flat_map(|_| chunk_of(120)).collect();
    let (out, f) = in_pieces(&input, &[7, 999, 50_001]);
    assert_eq!(out.len(), input.len() - 20_000 * ",\"usage\":null".len());
    assert!(f.work() <= 3 * input.len() as u64);
}
