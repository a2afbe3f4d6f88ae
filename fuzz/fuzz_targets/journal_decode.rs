//! An exchange journal record read back from disk: arbitrary bytes either
//! fail to decode or give an exchange that re-encodes to the same record
//! facts and builds a trace, never a panic. (The spool's checksum keeps most
//! damage from reaching the decoder; this covers what gets past it, and
//! records written by another version.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::pipeline::journal::codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(ex) = decode(data) else { return };
    let again = decode(&encode(&ex, usize::MAX)).expect("a decoded exchange re-encodes");
    assert_eq!(again.trace_id, ex.trace_id);
    assert_eq!(again.api, ex.api);
    assert_eq!(
        again.response.as_ref().map(|b| b.bytes()),
        ex.response.as_ref().map(|b| b.bytes())
    );
    let _ = llmtap::trace::build(&ex, 1 << 20);
});
