//! The Databricks stand-in (tests/support/databricks.rs) checked against the
//! real clients: the MLflow Python client 3.17.2 with the Databricks SDK
//! (tests/support/python/dbx_client.py) logs a chat trace and a feedback to
//! it with a PAT, with OAuth M2M and with a `.databrickscfg` profile, and to a
//! Unity Catalog schema; the stand-in must accept everything the client sends
//! and store exactly what it sent. Then the stand-in's own enforcement (auth,
//! token expiry, signed URLs, faults), exercised with a plain HTTP client.
//!
//! Needs python3 (the venv is built on first use by tests/support/mlflow.rs);
//! without it the tests fail with the reason.

#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/mlflow.rs"]
mod mlflow;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use databricks::{Databricks, StoredTrace};
use serde_json::Value;

/// How the client authenticates.
#[derive(Clone, Copy, Debug)]
enum Login {
    Pat,
    OAuth,
    Profile,
}

/// Runs dbx_client.py against `host` and returns its trace id.
async fn run_client(host: String, auth: Login, mode: &'static str) -> String {
    tokio::task::spawn_blocking(move || run_client_blocking(&host, auth, mode))
        .await
        .expect("client task")
}

/// The venv's python, installed once per test process (tests run in parallel).
fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(mlflow::ensure_venv)
}

fn run_client_blocking(host: &str, auth: Login, mode: &str) -> String {
    let python = python();
    let home = tempfile::tempdir().expect("temp HOME");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python/dbx_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(mode);
    for (k, _) in std::env::vars() {
        if k.starts_with("DATABRICKS_") || k.starts_with("MLFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path())
        .env("MLFLOW_TRACKING_URI", "databricks")
        .env("MLFLOW_EXPERIMENT_ID", databricks::EXPERIMENT_ID)
        .env("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false");
    match auth {
        Login::Pat => {
            cmd.env("DATABRICKS_HOST", host)
                .env("DATABRICKS_TOKEN", databricks::PAT);
        }
        Login::OAuth => {
            cmd.env("DATABRICKS_HOST", host)
                .env("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID)
                .env("DATABRICKS_CLIENT_SECRET", databricks::CLIENT_SECRET);
        }
        Login::Profile => {
            let cfg = home.path().join("dbcfg");
            let text = format!(
                "[DEFAULT]\nhost = http://127.0.0.1:1\n\n[llmtap]\nhost = {host}\nclient_id = {}\nclient_secret = {}\n",
                databricks::CLIENT_ID,
                databricks::CLIENT_SECRET
            );
            std::fs::write(&cfg, text).expect("write the profile file");
            cmd.env("DATABRICKS_CONFIG_FILE", &cfg)
                .env("DATABRICKS_CONFIG_PROFILE", "llmtap");
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "the MLflow client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The client logs (never raises) when an export fails: such a line means the stand-in refused something.
    assert!(
        !stderr.contains("Failed to send trace") && !stderr.contains("Failed to log"),
        "the MLflow client reported a failed export:\n{stderr}"
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("TRACE_ID "))
        .unwrap_or_else(|| panic!("no TRACE_ID in the client's output:\n{stdout}"))
        .trim()
        .to_string()
}

/// What the client sent, as the stand-in stored it.
fn assert_chat_trace(dbx: &Databricks, trace_id: &str) {
    assert!(
        dbx.rejections().is_empty(),
        "the stand-in refused: {:#?}",
        dbx.rejections()
    );
    let t: StoredTrace = dbx
        .trace(trace_id)
        .unwrap_or_else(|| panic!("trace {trace_id} not stored"));
    assert_eq!(t.starts, 1);
    assert_eq!(t.field("state"), Some("OK"));
    assert_eq!(t.field("request_preview"), Some("hello"));
    assert_eq!(t.field("response_preview"), Some("hi there"));
    assert_eq!(t.metadata("mlflow.trace.user"), Some("alice"));
    assert_eq!(t.metadata("mlflow.trace.session"), Some("sess-1"));
    assert_eq!(t.metadata("mlflow.trace_schema.version"), Some("3"));
    let usage: Value =
        serde_json::from_str(t.metadata("mlflow.trace.tokenUsage").expect("token usage")).unwrap();
    assert_eq!(usage["input_tokens"], 12);
    assert_eq!(usage["output_tokens"], 5);
    assert_eq!(usage["total_tokens"], 17);
    assert_eq!(t.tag("mlflow.traceName"), Some("chat"));
    assert_eq!(t.tag("team"), Some("search"));

    assert_eq!(t.uploads, 1, "span document uploaded once");
    let spans = t.spans.as_ref().expect("span document")["spans"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["name"], "chat");
    assert_eq!(spans[0]["attributes"]["mlflow.spanType"], "\"CHAT_MODEL\"");

    let puts = dbx.requests_to("/signed/");
    assert_eq!(puts.len(), 1);
    assert!(
        !puts[0].authorized,
        "the signed PUT must not carry the workspace token"
    );
    for r in dbx.requests_to("/api/") {
        assert!(
            r.authorized,
            "{} {} sent without Authorization",
            r.method, r.path
        );
        assert_eq!(
            r.headers.get("x-databricks-org-id").map(|v| v.as_bytes()),
            Some(databricks::WORKSPACE_ID.as_bytes()),
            "{} carries the workspace id from host metadata",
            r.path
        );
    }
    let a = dbx.assessments();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["trace_id"], trace_id);
    assert_eq!(a[0]["assessment_name"], "helpful");
    assert_eq!(a[0]["feedback"]["value"], true);
}

fn bearer_tokens(dbx: &Databricks) -> Vec<String> {
    dbx.requests_to("/api/")
        .iter()
        .filter_map(|r| {
            r.headers
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_with_a_pat() {
    let dbx = Databricks::start().await;
    let id = run_client(dbx.host(), Login::Pat, "experiment").await;
    assert_chat_trace(&dbx, &id);
    assert_eq!(dbx.token_grants(), 0);
    let pat = format!("Bearer {}", databricks::PAT);
    assert!(bearer_tokens(&dbx).iter().all(|t| *t == pat));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_with_oauth_m2m() {
    let dbx = Databricks::start().await;
    let id = run_client(dbx.host(), Login::OAuth, "experiment").await;
    assert_chat_trace(&dbx, &id);
    assert!(dbx.token_grants() >= 1);
    let tokens = bearer_tokens(&dbx);
    assert!(
        tokens
            .iter()
            .all(|t| t.starts_with("Bearer standin-oauth-")),
        "{tokens:?}"
    );
    let grants = dbx.requests_to("/oidc/v1/token");
    assert_eq!(
        grants[0].body.as_ref(),
        b"grant_type=client_credentials&scope=all-apis",
        "the SDK's client-credentials form"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_with_a_profile_file() {
    let dbx = Databricks::start().await;
    let id = run_client(dbx.host(), Login::Profile, "experiment").await;
    assert_chat_trace(&dbx, &id);
    assert!(dbx.token_grants() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_to_a_unity_catalog_schema() {
    let dbx = Databricks::start().await;
    let id = run_client(dbx.host(), Login::Pat, "uc").await;
    assert!(
        dbx.rejections().is_empty(),
        "the stand-in refused: {:#?}",
        dbx.rejections()
    );
    let rows = dbx.otlp_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].table,
        "main.llmtap.mlflow_experiment_trace_otel_spans"
    );
    assert_eq!(rows[0].span.name, "chat");
    let infos = dbx.v4_infos();
    assert_eq!(infos.len(), 1);
    let hex = databricks::validate::hex_of(&rows[0].span.trace_id);
    assert_eq!(infos[0]["trace_id"], hex.as_str());
    assert_eq!(id, format!("trace:/main.llmtap/{hex}"));
    assert_eq!(infos[0]["trace_metadata"]["mlflow.trace.user"], "alice");
    assert!(
        dbx.traces().is_empty(),
        "no StartTraceV3 for a UC destination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_waits_out_a_429_with_retry_after() {
    let dbx = Databricks::start().await;
    dbx.throttle_next(1, 1);
    let id = run_client(dbx.host(), Login::Pat, "experiment").await;
    let throttled: Vec<_> = dbx
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(throttled.len(), 1);
    let t = dbx.trace(&id).expect("trace stored after the 429");
    assert_eq!(t.field("state"), Some("OK"));
}

// ---- the stand-in's own rules, with a plain HTTP client --------------------

mod plain {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub struct Answer {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: String,
    }

    pub async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

use plain::call;

fn fixture_request(name: &str, path_prefix: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/databricks")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str().unwrap().starts_with(path_prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no {path_prefix} request in {name}"))
}

async fn grant(dbx: &Databricks, id: &str, secret: &str) -> plain::Answer {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    call(
        "POST",
        &format!("{}/oidc/v1/token", dbx.host()),
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials&scope=all-apis",
    )
    .await
}

async fn get_experiment(dbx: &Databricks, bearer: Option<&str>) -> plain::Answer {
    let url = format!(
        "{}/api/2.0/mlflow/experiments/get?experiment_id={}",
        dbx.host(),
        databricks::EXPERIMENT_ID
    );
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    call("GET", &url, &headers, b"").await
}

#[tokio::test]
async fn api_calls_need_a_valid_unexpired_bearer_token() {
    let dbx = Databricks::start().await;
    let none = get_experiment(&dbx, None).await;
    assert_eq!(none.status, 401);
    assert!(none.body.contains("UNAUTHENTICATED"), "{}", none.body);
    assert_eq!(get_experiment(&dbx, Some("dapi-wrong")).await.status, 401);
    assert_eq!(
        get_experiment(&dbx, Some(databricks::PAT)).await.status,
        200
    );

    assert_eq!(
        grant(&dbx, databricks::CLIENT_ID, "wrong").await.status,
        401
    );
    let ok = grant(&dbx, databricks::CLIENT_ID, databricks::CLIENT_SECRET).await;
    assert_eq!(ok.status, 200);
    let tok: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(tok["expires_in"], 3600);
    let token = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(get_experiment(&dbx, Some(&token)).await.status, 200);
    dbx.expire_all_tokens();
    let expired = get_experiment(&dbx, Some(&token)).await;
    assert_eq!(expired.status, 401);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    assert_eq!(dbx.token_grants(), 1);
}

#[tokio::test]
async fn issued_tokens_expire_after_their_lifetime() {
    let dbx = Databricks::start().await;
    dbx.set_token_lifetime(Duration::from_secs(1));
    let tok: Value = serde_json::from_str(
        &grant(&dbx, databricks::CLIENT_ID, databricks::CLIENT_SECRET)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(tok["expires_in"], 1);
    let token = tok["access_token"].as_str().unwrap();
    assert_eq!(get_experiment(&dbx, Some(token)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_experiment(&dbx, Some(token)).await.status, 401);
}

/// Replays the recorded StartTraceV3 and PUT (pat.json) and checks the
/// signed-URL rules on them.
#[tokio::test]
async fn recorded_trace_is_accepted_and_the_signed_put_is_guarded() {
    let dbx = Databricks::start().await;
    let start = fixture_request("pat.json", "/api/3.0/mlflow/traces");
    let body = start["body"].as_str().unwrap();
    let trace_id = serde_json::from_str::<Value>(body).unwrap()["trace"]["trace_info"]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pat = format!("Bearer {}", databricks::PAT);
    let auth = [
        ("authorization", pat.as_str()),
        ("content-type", "application/json"),
    ];
    let r = call(
        "POST",
        &format!("{}/api/3.0/mlflow/traces", dbx.host()),
        &auth,
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reply: Value = serde_json::from_str(&r.body).unwrap();
    let loc = reply["trace"]["trace_info"]["tags"]["mlflow.artifactLocation"]
        .as_str()
        .unwrap();
    assert!(
        loc.ends_with(&format!(
            "/{}/{trace_id}/artifacts",
            databricks::EXPERIMENT_ID
        )),
        "{loc}"
    );

    let creds_url = format!(
        "{}/api/2.0/mlflow/traces/{trace_id}/credentials-for-data-upload",
        dbx.host()
    );
    let creds: Value =
        serde_json::from_str(&call("GET", &creds_url, &auth[..1], b"").await.body).unwrap();
    let uri = creds["credential_info"]["signed_uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(creds["credential_info"]["type"], "AWS_PRESIGNED_URL");
    let doc = fixture_request("pat.json", "/signed/")["body"]
        .as_str()
        .unwrap()
        .to_string();
    let sse = databricks::UPLOAD_HEADER;

    let with_auth = call("PUT", &uri, &[sse, ("authorization", &pat)], doc.as_bytes()).await;
    assert_eq!(with_auth.status, 400, "{}", with_auth.body);
    let no_header = call("PUT", &uri, &[], doc.as_bytes()).await;
    assert_eq!(no_header.status, 403, "{}", no_header.body);
    let forged = uri.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(
        call("PUT", &forged, &[sse], doc.as_bytes()).await.status,
        403
    );
    assert!(dbx.trace(&trace_id).unwrap().spans.is_none());

    let ok = call("PUT", &uri, &[sse], doc.as_bytes()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let stored = dbx.trace(&trace_id).unwrap();
    assert_eq!(stored.spans.as_ref().unwrap()["spans"][0]["name"], "chat");
    assert_eq!(stored.metadata("mlflow.trace.user"), Some("alice"));
}

#[tokio::test]
async fn start_trace_rejects_malformed_trace_info() {
    let dbx = Databricks::start().await;
    let start = fixture_request("pat.json", "/api/3.0/mlflow/traces");
    let good: Value = serde_json::from_str(start["body"].as_str().unwrap()).unwrap();
    let pat = format!("Bearer {}", databricks::PAT);
    let auth = [("authorization", pat.as_str())];
    let url = format!("{}/api/3.0/mlflow/traces", dbx.host());
    type Mutate = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "trace_id",
            Box::new(|v| v["trace"]["trace_info"]["trace_id"] = "abc".into()),
        ),
        (
            "request_time",
            Box::new(|v| v["trace"]["trace_info"]["request_time"] = 1_796_131_109_105u64.into()),
        ),
        (
            "execution_duration",
            Box::new(|v| v["trace"]["trace_info"]["execution_duration"] = "64ms".into()),
        ),
        (
            "state",
            Box::new(|v| v["trace"]["trace_info"]["state"] = "DONE".into()),
        ),
        (
            "request_preview",
            Box::new(|v| v["trace"]["trace_info"]["request_preview"] = "x".repeat(10_001).into()),
        ),
        (
            "trace_metadata",
            Box::new(|v| {
                v["trace"]["trace_info"]["trace_metadata"]["mlflow.trace.user"] = 7.into()
            }),
        ),
        (
            "No Experiment",
            Box::new(|v| {
                v["trace"]["trace_info"]["trace_location"]["mlflow_experiment"]["experiment_id"] =
                    "99".into()
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut v = good.clone();
        mutate(&mut v);
        let r = call("POST", &url, &auth, v.to_string().as_bytes()).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body.contains(what), "{what}: {}", r.body);
    }
    assert!(dbx.traces().is_empty());
}

#[tokio::test]
async fn faults_throttle_outage_and_restart() {
    let dbx = Databricks::start().await;
    dbx.throttle_next(2, 7);
    for _ in 0..2 {
        let r = get_experiment(&dbx, Some(databricks::PAT)).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.headers.get("retry-after").unwrap(), "7");
        assert!(r.body.contains("REQUEST_LIMIT_EXCEEDED"));
    }
    assert_eq!(
        get_experiment(&dbx, Some(databricks::PAT)).await.status,
        200
    );

    dbx.set_outage(true);
    assert_eq!(
        get_experiment(&dbx, Some(databricks::PAT)).await.status,
        503
    );
    dbx.set_outage(false);

    dbx.fail_next("/oidc/v1/token", 503, 1);
    assert_eq!(
        grant(&dbx, databricks::CLIENT_ID, databricks::CLIENT_SECRET)
            .await
            .status,
        503
    );
    assert_eq!(
        grant(&dbx, databricks::CLIENT_ID, databricks::CLIENT_SECRET)
            .await
            .status,
        200
    );

    dbx.stop().await;
    assert!(
        tokio::net::TcpStream::connect(dbx.addr()).await.is_err(),
        "port closed while stopped"
    );
    dbx.restart().await;
    assert_eq!(
        get_experiment(&dbx, Some(databricks::PAT)).await.status,
        200
    );
}

#[tokio::test]
async fn trace_creation_rate_limit() {
    let dbx = Databricks::start().await;
    dbx.set_rate_limit(Some(2));
    let start = fixture_request("pat.json", "/api/3.0/mlflow/traces");
    let pat = format!("Bearer {}", databricks::PAT);
    let url = format!("{}/api/3.0/mlflow/traces", dbx.host());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let body = start["body"].as_str().unwrap().as_bytes();
        statuses.push(
            call("POST", &url, &[("authorization", &pat)], body)
                .await
                .status,
        );
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}

#[tokio::test]
async fn experiments_by_id_by_name_and_create() {
    let dbx = Databricks::start().await;
    let pat = format!("Bearer {}", databricks::PAT);
    let auth = [("authorization", pat.as_str())];
    let by_name = format!(
        "{}/api/2.0/mlflow/experiments/get-by-name?experiment_name=%2FUsers%2Fllmtap%40example.com%2Fllmtap",
        dbx.host()
    );
    let r = call("GET", &by_name, &auth, b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["experiment"]["experiment_id"], databricks::EXPERIMENT_ID);
    let missing = format!(
        "{}/api/2.0/mlflow/experiments/get?experiment_id=42",
        dbx.host()
    );
    let r = call("GET", &missing, &auth, b"").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("RESOURCE_DOES_NOT_EXIST"));

    let create = format!("{}/api/2.0/mlflow/experiments/create", dbx.host());
    let r = call("POST", &create, &auth, br#"{"name":"relative-name"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("absolute path"), "{}", r.body);
    let r = call("POST", &create, &auth, br#"{"name":"/Shared/llmtap-new"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id: Value = serde_json::from_str(&r.body).unwrap();
    assert!(dbx
        .experiments()
        .iter()
        .any(|e| e.id == id["experiment_id"].as_str().unwrap() && e.name == "/Shared/llmtap-new"));
    let r = call("POST", &create, &auth, br#"{"name":"/Shared/llmtap-new"}"#).await;
    assert!(r.body.contains("RESOURCE_ALREADY_EXISTS"), "{}", r.body);
}

#[tokio::test]
async fn otlp_to_a_uc_table_needs_the_table_header() {
    let dbx = Databricks::start().await;
    let rec = fixture_request("uc.json", "/api/2.0/otel/v1/traces");
    let body: Vec<u8> = (0..rec["body_hex"].as_str().unwrap().len() / 2)
        .map(|i| {
            u8::from_str_radix(&rec["body_hex"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    let pat = format!("Bearer {}", databricks::PAT);
    let url = format!("{}/api/2.0/otel/v1/traces", dbx.host());
    let proto = ("content-type", "application/x-protobuf");
    let r = call("POST", &url, &[("authorization", &pat), proto], &body).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("X-Databricks-UC-Table-Name"), "{}", r.body);
    let table = (
        "x-databricks-uc-table-name",
        "main.llmtap.mlflow_experiment_trace_otel_spans",
    );
    let bad_table = ("x-databricks-uc-table-name", "llmtap");
    assert_eq!(
        call(
            "POST",
            &url,
            &[("authorization", &pat), proto, bad_table],
            &body
        )
        .await
        .status,
        400
    );
    assert_eq!(
        call("POST", &url, &[("authorization", &pat), table], &body)
            .await
            .status,
        415
    );
    let gz = ("content-encoding", "gzip");
    assert_eq!(
        call(
            "POST",
            &url,
            &[("authorization", &pat), proto, table, gz],
            &body
        )
        .await
        .status,
        400
    );
    assert_eq!(call("POST", &url, &[proto, table], &body).await.status, 401);
    let r = call(
        "POST",
        &url,
        &[("authorization", &pat), proto, table],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = dbx.otlp_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].span.name, "chat");
}

#[tokio::test]
async fn org_id_must_name_this_workspace_and_assessments_need_a_trace() {
    let dbx = Databricks::start().await;
    let pat = format!("Bearer {}", databricks::PAT);
    let url = format!(
        "{}/api/2.0/mlflow/experiments/get?experiment_id={}",
        dbx.host(),
        databricks::EXPERIMENT_ID
    );
    let r = call(
        "GET",
        &url,
        &[("authorization", &pat), ("x-databricks-org-id", "1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let ok = [
        ("authorization", pat.as_str()),
        ("x-databricks-org-id", databricks::WORKSPACE_ID),
    ];
    assert_eq!(call("GET", &url, &ok, b"").await.status, 200);

    let rec = fixture_request("pat.json", "/api/3.0/mlflow/traces/");
    let path = rec["path"].as_str().unwrap();
    let r = call(
        "POST",
        &format!("{}{path}", dbx.host()),
        &ok,
        rec["body"].as_str().unwrap().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(dbx.assessments().is_empty());
}

#[tokio::test]
async fn an_expired_upload_url_is_refused_and_new_credentials_work() {
    let dbx = Databricks::start().await;
    let start = fixture_request("pat.json", "/api/3.0/mlflow/traces");
    let body = start["body"].as_str().unwrap();
    let trace_id = serde_json::from_str::<Value>(body).unwrap()["trace"]["trace_info"]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pat = format!("Bearer {}", databricks::PAT);
    let auth = [("authorization", pat.as_str())];
    let r = call(
        "POST",
        &format!("{}/api/3.0/mlflow/traces", dbx.host()),
        &auth,
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let creds_url = format!(
        "{}/api/2.0/mlflow/traces/{trace_id}/credentials-for-data-upload",
        dbx.host()
    );
    let signed_uri = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["credential_info"]["signed_uri"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let doc = fixture_request("pat.json", "/signed/")["body"]
        .as_str()
        .unwrap()
        .to_string();
    dbx.set_upload_url_ttl(Duration::ZERO);
    let stale = signed_uri(&call("GET", &creds_url, &auth, b"").await.body);
    let r = call("PUT", &stale, &[databricks::UPLOAD_HEADER], doc.as_bytes()).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("expired"), "{}", r.body);
    dbx.set_upload_url_ttl(Duration::from_secs(900));
    let fresh = signed_uri(&call("GET", &creds_url, &auth, b"").await.body);
    let r = call("PUT", &fresh, &[databricks::UPLOAD_HEADER], doc.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(dbx.trace(&trace_id).unwrap().uploads, 1);
}
