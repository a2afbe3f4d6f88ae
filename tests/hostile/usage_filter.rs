//! Replies the usage-hiding filter sees: an 8 MiB SSE line, 64 MiB of JSON.

use super::*;

const LONG_LINE_HEAD: &str = r#"data: {"id":"chatcmpl-long","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":""#;
const LONG_LINE_TAIL: &str = "\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_sse_line_streams_through_before_the_provider_finishes_it() {
    const LINE: usize = 8 * MIB as usize;
    let provider = provider(|attack, _| {
        (attack == "long-line").then(|| {
            let mut steps = vec![Step::Send(Bytes::from_static(LONG_LINE_HEAD.as_bytes()))];
            steps.extend(frames(LINE / 2, b'a'));
            steps.push(Step::Gate); // half the line sent; the rest waits for the test
            steps.extend(frames(LINE / 2, b'a'));
            steps.push(Step::Send(Bytes::from_static(LONG_LINE_TAIL.as_bytes())));
            streamed("text/event-stream", steps)
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    // A stream request without include_usage: llmtap injects it and filters
    // the response for the usage chunk.
    let (status, mut body) = post_attack(&bin, "long-line", kit::chat_body(true)).await;
    assert_eq!(status, 200);
    let first = first_byte(&mut body, Duration::from_secs(10)).await;
    provider.release();
    let first = first
        .expect("no byte of an 8 MiB SSE line reached the client while the provider was mid-line");
    let (head, tail) = (LONG_LINE_HEAD.as_bytes(), LONG_LINE_TAIL.as_bytes());
    let want = move |i: usize| match i {
        i if i < head.len() => head[i],
        i if i < head.len() + LINE => b'a',
        i => tail[i - head.len() - LINE],
    };
    for (i, b) in first.iter().enumerate() {
        assert_eq!(*b, want(i), "byte {i} of the long line differs");
    }
    let n = first.len()
        + read_exact_stream(
            body,
            move |i| want(i + first.len()),
            SERVE_LIMIT,
            "long SSE line",
        )
        .await;
    assert_eq!(
        n,
        head.len() + LINE + tail.len(),
        "the long SSE line arrived whole"
    );
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after an 8 MiB SSE line",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_json_reply_to_a_stream_request_streams_through() {
    const HEAD: &[u8] = br#"{"error":{"message":""#;
    const TAIL: &[u8] = br#"","type":"server_error"}}"#;
    const PAD: usize = 64 * MIB as usize;
    let provider = provider(|attack, _| {
        (attack == "big-json").then(|| {
            let mut steps = vec![Step::Send(Bytes::from_static(HEAD))];
            steps.extend(frames(8 * MIB as usize, b'b'));
            steps.push(Step::Gate);
            steps.extend(frames(PAD - 8 * MIB as usize, b'b'));
            steps.push(Step::Send(Bytes::from_static(TAIL)));
            streamed("application/json", steps)
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    let (status, mut body) = post_attack(&bin, "big-json", kit::chat_body(true)).await;
    assert_eq!(status, 200);
    let first = first_byte(&mut body, Duration::from_secs(10)).await;
    provider.release();
    let first = first
        .expect("no byte of a 64 MiB JSON reply reached the client before the provider's 8th MiB");
    let want = |i: usize| match i {
        i if i < HEAD.len() => HEAD[i],
        i if i < HEAD.len() + PAD => b'b',
        i => TAIL[i - HEAD.len() - PAD],
    };
    for (i, b) in first.iter().enumerate() {
        assert_eq!(*b, want(i), "byte {i} differs");
    }
    let skip = first.len();
    let n =
        skip + read_exact_stream(body, move |i| want(i + skip), SERVE_LIMIT, "64 MiB JSON").await;
    assert_eq!(
        n,
        HEAD.len() + PAD + TAIL.len(),
        "the 64 MiB reply arrived whole"
    );
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after a 64 MiB JSON stream reply",
    )
    .await;
}
