//! Request rewrite and stream filter: exact bytes in, exact bytes out.

use super::*;

fn rewrite(s: &str) -> Option<String> {
    add_include_usage(s.as_bytes()).map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn adds_the_option_to_a_stream_request_and_nothing_else() {
    let req =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let out = rewrite(req).unwrap();
    assert_eq!(
        out,
        r#"{"stream_options":{"include_usage":true},"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#
    );
    let pretty = "{\n  \"stream\": true,\n  \"model\": \"m\"\n}";
    let out = rewrite(pretty).unwrap();
    assert_eq!(
        out,
        "{\"stream_options\":{\"include_usage\":true},\n  \"stream\": true,\n  \"model\": \"m\"\n}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    // A member name written with escapes is the same member to a provider.
    let escaped = r#"{"\u0073tream":true,"model":"m"}"#;
    let out = rewrite(escaped).unwrap();
    assert_eq!(
        out,
        format!(
            "{{{}{}",
            std::str::from_utf8(MEMBER).unwrap(),
            &escaped[1..]
        )
    );
}

#[test]
fn completes_existing_stream_options() {
    let out =
        rewrite(r#"{"stream":true,"stream_options":{"include_obfuscation":false},"model":"m"}"#)
            .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["stream_options"],
        serde_json::json!({"include_obfuscation": false, "include_usage": true})
    );
    assert!(out.ends_with(r#","model":"m"}"#), "{out}");
    let out = rewrite(r#"{"stream":true,"stream_options":{"include_usage":false}}"#).unwrap();
    assert_eq!(
        out,
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#
    );
    let out = rewrite(r#"{"stream":true,"stream_options":null}"#).unwrap();
    assert_eq!(
        out,
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn leaves_everything_else_alone() {
    for req in [
        r#"{"model":"m","messages":[]}"#,
        r#"{"stream":false}"#,
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        r#"[1,2]"#,
        "not json",
        "",
        r#"{"stream":true,"stream_options":"weird"}"#,
        // Named twice: which one the provider reads is its own business.
        r#"{"stream":false,"stream":true}"#,
        r#"{"stream":true,"stream_options":null,"stream_options":{}}"#,
    ] {
        assert_eq!(rewrite(req), None, "{req}");
    }
}

const WITH_USAGE: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
    "data: [DONE]\n\n",
);
const WITHOUT_USAGE: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

fn filter_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut f = UsageFilter::default();
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        out.extend_from_slice(&f.push(&input[last..c]));
        last = c;
    }
    out.extend_from_slice(&f.finish());
    (out, f.removed)
}

#[test]
fn the_client_sees_the_stream_it_asked_for() {
    let (out, removed) = filter_in_pieces(WITH_USAGE.as_bytes(), &[]);
    assert_eq!(String::from_utf8(out).unwrap(), WITHOUT_USAGE);
    assert_eq!(removed, 1);
}

#[test]
fn any_split_gives_the_same_bytes() {
    let input = WITH_USAGE.replace("\n", "\r\n");
    let expected = WITHOUT_USAGE.replace("\n", "\r\n");
    for a in 0..input.len() {
        let b = (a * 7 + 3) % input.len();
        let mut cuts = [a.min(b), a.max(b)];
        cuts.sort();
        let (out, _) = filter_in_pieces(input.as_bytes(), &cuts);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "cuts {cuts:?}");
    }
}

#[test]
fn complete_blocks_pass_at_once_partial_ones_wait() {
    let mut f = UsageFilter::default();
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    assert_eq!(f.push(first.as_bytes()), first.as_bytes());
    assert!(
        f.push(b": keep-alive\n").is_empty(),
        "waits for the blank line"
    );
    assert_eq!(&f.push(b"\n")[..], b": keep-alive\n\n");
    assert_eq!(&f.push(b"data: x")[..], b"");
    assert_eq!(
        &f.finish()[..],
        b"data: x",
        "a final block without its blank line is flushed"
    );
}

#[test]
fn other_usage_chunks_are_kept() {
    // vLLM-style: usage on the last chunk that still has choices: not ours to remove.
    let s = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}\n\n";
    let (out, removed) = filter_in_pieces(s.as_bytes(), &[]);
    assert_eq!(out, s.as_bytes());
    assert_eq!(removed, 0);
    // A "usage":null that is not the last member stays.
    let s = "data: {\"usage\":null,\"choices\":[]}\n\n";
    assert_eq!(filter_in_pieces(s.as_bytes(), &[]).0, s.as_bytes());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 7u64;
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"data: {}\r\n\"usage\":null,[]"[(seed >> 33) as usize % 27]
                    .wrapping_add(i as u8 % 2)
            })
            .collect();
        let _ = filter_in_pieces(&bytes, &[len / 3, len / 2]);
        let _ = add_include_usage(&bytes);
    }
}
