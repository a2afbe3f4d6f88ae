//! Compression bombs in requests and responses, and restarts over a journal
//! full of them.

use super::*;

/// A JSON document of about `total` bytes — `head`, `record` repeated, `last`
/// — compressed with `compress` one ~1 MiB piece at a time (gzip members and
/// zstd frames concatenate), so a bomb takes milliseconds to make and a few
/// KB per MiB on the wire.
fn bomb(
    head: &str,
    record: &str,
    last: &str,
    total: usize,
    compress: fn(&[u8]) -> Vec<u8>,
) -> Bytes {
    let records = (total - head.len() - last.len()) / record.len();
    let per_piece = MIB as usize / record.len();
    let packed = compress(record.repeat(per_piece).as_bytes());
    let mut out = compress(head.as_bytes());
    for _ in 0..records / per_piece {
        out.extend_from_slice(&packed);
    }
    out.extend(compress(record.repeat(records % per_piece).as_bytes()));
    out.extend(compress(last.as_bytes()));
    Bytes::from(out)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 19).unwrap()
}

/// What the bombs inflate to: the issue's 80 MiB; just under 8 × the
/// capture cap (the most llmtap before issue 8 decoded, and then parsed
/// whole); just under the cap (decoded and parsed whole by any design).
const BOMB_SIZES: [usize; 3] = [
    80 * MIB as usize,
    8 * MIB as usize - 1024,
    MIB as usize - 1024,
];

/// A chat request of messages (each a JSON object: the costliest shape to
/// hold as a parsed tree), gzip'd (80 MiB: about 200 KB).
fn request_bomb(total: usize) -> Bytes {
    bomb(
        r#"{"model":"gpt-4o-mini","messages":["#,
        r#"{"role":"user","content":"hi"},"#,
        r#"{"role":"user","content":"hi"}]}"#,
        total,
        gzip,
    )
}

/// A chat response of choices.
fn response_bomb(total: usize, compress: fn(&[u8]) -> Vec<u8>) -> Bytes {
    bomb(
        r#"{"id":"chatcmpl-bomb","object":"chat.completion","model":"gpt-4o-mini","choices":["#,
        r#"{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"},"#,
        r#"{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
        total,
        compress,
    )
}

/// Response bombs by `x-attack` tag: (tag, content-encoding, body).
type RespBombs = Vec<(String, &'static str, Bytes)>;

fn response_bombs() -> RespBombs {
    let mut out = Vec::new();
    for total in &BOMB_SIZES[..2] {
        for (enc, f) in [("gzip", gzip as fn(&[u8]) -> Vec<u8>), ("zstd", zstd)] {
            out.push((format!("{enc}-{total}"), enc, response_bomb(*total, f)));
        }
    }
    let br = tap::fixture("bombs/chat_response_80mib.json.br");
    out.push(("br-80MiB".into(), "br", Bytes::from(br)));
    out
}

/// Sends every bomb, all at once, checking each answer's exact bytes.
async fn send_bombs(bin: &Bin, req_bombs: &[Bytes], resp_bombs: &RespBombs) {
    let mut tasks = tokio::task::JoinSet::new();
    for body in req_bombs {
        let (url, body) = (bin.url(CHAT), body.to_vec());
        tasks.spawn(async move {
            let got = kit::post(&url, body, &[("content-encoding", "gzip")], SERVE_LIMIT).await;
            assert_eq!(
                got.status, 200,
                "a gzip request bomb was answered {}",
                got.status
            );
            assert!(
                got.body == tap::fixture("openai_chat/plain.json"),
                "request bomb: other bytes"
            );
        });
    }
    for (tag, enc, want) in resp_bombs.iter().cloned() {
        let url = bin.url(CHAT);
        tasks.spawn(async move {
            let got = kit::post(
                &url,
                kit::chat_body(false),
                &[("x-attack", &tag)],
                SERVE_LIMIT,
            )
            .await;
            assert_eq!(
                got.status, 200,
                "{tag} response bomb answered {}",
                got.status
            );
            assert_eq!(got.headers["content-encoding"], enc);
            assert!(
                got.body == want,
                "{tag} response bomb: other bytes than the provider's"
            );
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_stay_within_memory_and_do_not_crash_loop() {
    let req_bombs: Vec<Bytes> = BOMB_SIZES.iter().map(|t| request_bomb(*t)).collect();
    let resp_bombs = response_bombs();
    eprintln!(
        "bombs on the wire: requests {:?} B; responses {:?}",
        req_bombs.iter().map(Bytes::len).collect::<Vec<_>>(),
        resp_bombs
            .iter()
            .map(|(t, _, b)| (t.as_str(), b.len()))
            .collect::<Vec<_>>()
    );
    let answers = resp_bombs.clone();
    let provider = provider(move |attack, _| {
        let (_, enc, body) = answers.iter().find(|(t, _, _)| t == attack)?;
        Some(Reply::json(200, body.clone()).header("content-encoding", enc))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("LLMTAP_SPOOL_FSYNC", "always")];
    let limits = Limits::new(16);

    // Bombs, then real calls: their traces prove the worker got through.
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    send_bombs(&bin, &req_bombs, &resp_bombs).await;
    finish(&mut bin, idle, limits, &[], "after compression bombs").await;

    // Bombs again, and SIGKILL at once: they wait in the journal, parsed at
    // the next start. That start, and the one after, must serve.
    send_bombs(&bin, &req_bombs, &resp_bombs).await;
    bin.kill9();
    for round in ["restart 1 over journalled bombs", "restart 2"] {
        let env = [&kit::CAPTURE_ENV[..], &env[..]].concat();
        let mut bin = HOSTILE.start(&provider.url(), dir.path(), &env).await;
        finish(&mut bin, idle, limits, &[], round).await;
        bin.stop().await;
    }
}
