//! The Databricks recipe end to end: llmtap configured with the recipe's
//! environment variables alone (`MLFLOW_TRACKING_URI=databricks`,
//! `DATABRICKS_HOST`, a PAT or a service principal, `MLFLOW_EXPERIMENT_ID`)
//! in front of a fake provider, delivering to the Databricks stand-in
//! (`tests/support/databricks.rs`, checked against the real MLflow client in
//! `tests/databricks_standin.rs`): traces arrive as the client sends them;
//! an OAuth token that expires mid-load costs one refresh and loses
//! nothing; a workspace outage (10 minutes by default,
//! `LLMTAP_DBX_OUTAGE_SECS`) loses nothing and duplicates nothing.

#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use databricks::Databricks;
use fake_provider::{FakeProvider, Reply};
use serde_json::json;
use tap::{fixture, post, Tap};

const CHAT: &str = "/v1/chat/completions";

async fn provider() -> FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    let stream = fixture("openai_chat/stream_include_usage.sse");
    FakeProvider::start(
        move |seen| match seen.body.windows(6).any(|w| w == b"stream") {
            true => Reply::sse(&stream),
            false => Reply::json(200, plain.clone()),
        },
    )
    .await
}

fn body(i: usize) -> Vec<u8> {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("Databricks call {i}: capital of France?")}],
        "user": "alice",
    });
    if i % 4 == 3 {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v.to_string().into_bytes()
}

/// The recipe's variables, with `auth` (a PAT or a service principal).
fn recipe<'a>(dbx: &'a str, home: &'a str, auth: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("DATABRICKS_HOST", dbx),
        ("MLFLOW_EXPERIMENT_ID", databricks::EXPERIMENT_ID),
        // No ~/.databrickscfg of the machine's leaks in.
        ("HOME", home),
    ];
    env.extend_from_slice(auth);
    env
}

async fn calls(tap: &Tap, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let got = post(&tap.url(CHAT), &body(i), &[]).await;
        assert_eq!(got.status, 200, "call {i}");
        ids.push(got.trace_id());
    }
    ids
}

/// Waits until the stand-in holds every trace with its span document.
async fn wait_stored(dbx: &Databricks, ids: &[String], limit: Duration) {
    let start = Instant::now();
    loop {
        let stored: HashSet<String> = dbx
            .traces()
            .into_iter()
            .filter(|t| t.spans.is_some())
            .map(|t| t.trace_id)
            .collect();
        let missing = ids.iter().filter(|id| !stored.contains(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{missing} of {} traces not in the workspace after {limit:?}; rejections: {:?}",
            ids.len(),
            dbx.rejections()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every test checks: each trace once, complete, uploaded without the
/// workspace token.
fn assert_delivered_as_the_client_does(dbx: &Databricks, ids: &[String]) {
    let traces = dbx.traces();
    for id in ids {
        let t = traces
            .iter()
            .find(|t| &t.trace_id == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(t.field("state"), Some("OK"), "{id}: {}", t.info);
        assert!(
            t.field("request_preview")
                .is_some_and(|p| p.contains("capital of France")),
            "{id}: request preview {:?}",
            t.field("request_preview")
        );
        assert!(t.field("response_preview").is_some_and(|p| !p.is_empty()));
        assert_eq!(t.metadata("mlflow.trace.user"), Some("alice"), "{}", t.info);
        assert!(
            t.metadata("mlflow.trace.tokenUsage")
                .is_some_and(|u| u.contains("input_tokens")),
            "{id}: no token usage in {}",
            t.info
        );
        assert_eq!(t.uploads, 1, "{id}: uploaded {} times", t.uploads);
        let spans = t.spans.as_ref().unwrap()["spans"].as_array().unwrap().len();
        assert_eq!(spans, 1, "{id}: one span per call");
    }
    let signed = dbx.requests_to("/signed");
    assert!(!signed.is_empty());
    assert!(
        signed.iter().all(|r| !r.authorized),
        "an upload carried the workspace token"
    );
}

/// The stand-in, an empty home directory (no machine's ~/.databrickscfg
/// leaks in) and the fake provider.
async fn setup() -> (Databricks, tempfile::TempDir, FakeProvider) {
    let home = tempfile::tempdir().unwrap();
    (Databricks::start().await, home, provider().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipe_with_a_pat_delivers_traces_as_the_mlflow_client_does() {
    let (dbx, _home, provider) = setup().await;
    let host = dbx.host();
    let env = recipe(
        &host,
        _home.path().to_str().unwrap(),
        &[("DATABRICKS_TOKEN", databricks::PAT)],
    );
    let tap = Tap::start(&provider.url(), &env).await;
    let ids = calls(&tap, 0, 8).await;
    wait_stored(&dbx, &ids, Duration::from_secs(20)).await;
    assert_delivered_as_the_client_does(&dbx, &ids);
    let api = dbx.requests_to("/api/");
    assert!(api.iter().all(|r| r.authorized), "an API call without auth");
    assert!(
        dbx.rejections().is_empty(),
        "the stand-in refused: {:?}",
        dbx.rejections()
    );
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_expiring_mid_load_costs_one_refresh_and_loses_nothing() {
    let (dbx, _home, provider) = setup().await;
    let host = dbx.host();
    let env = recipe(
        &host,
        _home.path().to_str().unwrap(),
        &[
            ("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID),
            ("DATABRICKS_CLIENT_SECRET", databricks::CLIENT_SECRET),
        ],
    );
    let tap = Tap::start(&provider.url(), &env).await;
    let mut ids = calls(&tap, 0, 10).await;
    wait_stored(&dbx, &ids, Duration::from_secs(20)).await;
    let grants = dbx.token_grants();
    assert_eq!(grants, 1, "one token for the first 10 traces");
    // The workspace revokes every token (as expiry does) while calls go on.
    dbx.expire_all_tokens();
    ids.extend(calls(&tap, 10, 10).await);
    wait_stored(&dbx, &ids, Duration::from_secs(30)).await;
    assert_delivered_as_the_client_does(&dbx, &ids);
    let grants = dbx.token_grants();
    assert!(
        (2..=3).contains(&grants),
        "{grants} token grants: expected one refresh (two with a racing probe)"
    );
    let unauthorized = dbx.rejections().iter().filter(|r| r.status == 401).count();
    assert!(
        unauthorized <= 4,
        "{unauthorized} calls refused with the expired token: a 401 must refresh at once"
    );
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_outage_loses_and_duplicates_nothing() {
    let outage = Duration::from_secs(
        std::env::var("LLMTAP_DBX_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let (dbx, _home, provider) = setup().await;
    let host = dbx.host();
    let env = recipe(
        &host,
        _home.path().to_str().unwrap(),
        &[("DATABRICKS_TOKEN", databricks::PAT)],
    );
    let tap = Tap::start(&provider.url(), &env).await;
    let mut ids = calls(&tap, 0, 4).await;
    wait_stored(&dbx, &ids, Duration::from_secs(20)).await;

    dbx.stop().await;
    let down = Instant::now();
    let mut i = 4;
    // One call every 2 s for the whole outage: the agent never notices.
    while down.elapsed() < outage {
        ids.extend(calls(&tap, i, 1).await);
        i += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let m = tap::get(&tap.admin_url("/metrics")).await.body;
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(
        m.contains(&format!("llmtap_spool_records {}", ids.len() - 4)),
        "the outage's traces wait in the spool:\n{}",
        m.lines()
            .filter(|l| l.starts_with("llmtap_spool_records"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    dbx.restart().await;
    let back = Instant::now();
    wait_stored(&dbx, &ids, Duration::from_secs(120)).await;
    eprintln!(
        "outage of {outage:?}: {} calls, all {} traces delivered {:?} after the workspace came back",
        ids.len() - 4,
        ids.len(),
        back.elapsed()
    );
    assert_delivered_as_the_client_does(&dbx, &ids);
    assert_eq!(
        dbx.traces().len(),
        ids.len(),
        "no trace twice, no stray trace"
    );
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipe_plus_a_uc_schema_also_fills_the_delta_table() {
    let (dbx, _home, provider) = setup().await;
    let host = dbx.host();
    let mut env = recipe(
        &host,
        _home.path().to_str().unwrap(),
        &[("DATABRICKS_TOKEN", databricks::PAT)],
    );
    env.push(("MLFLOW_TRACING_DESTINATION", "main.llmtap"));
    let tap = Tap::start(&provider.url(), &env).await;
    let ids = calls(&tap, 0, 4).await;
    wait_stored(&dbx, &ids, Duration::from_secs(20)).await;
    assert_delivered_as_the_client_does(&dbx, &ids);
    let start = Instant::now();
    loop {
        let rows = dbx.otlp_rows();
        let in_table: HashSet<String> = rows
            .iter()
            .map(|r| {
                let hex: String = r.span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                format!("tr-{hex}")
            })
            .collect();
        if ids.iter().all(|id| in_table.contains(id)) {
            assert!(
                rows.iter()
                    .all(|r| r.table == "main.llmtap.mlflow_experiment_trace_otel_spans"),
                "rows went to {:?}",
                rows.iter().map(|r| &r.table).collect::<HashSet<_>>()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {} traces in the UC table; rejections: {:?}",
            ids.iter().filter(|id| in_table.contains(*id)).count(),
            ids.len(),
            dbx.rejections()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dbx.v4_infos().len() >= ids.len(),
        "one v4 trace info per trace"
    );
    tap.running.shutdown().await;
}
