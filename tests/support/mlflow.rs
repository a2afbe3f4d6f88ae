//! Test support: a real MLflow tracking server for end-to-end tests.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "support/mlflow.rs"]
//! mod mlflow;
//! ```
//!
//! What it does:
//!
//! - **Python venv, cached.** `$LLMTAP_TEST_VENV`, else
//!   `$HOME/.cache/llmtap/venv-mlflow-3.17.2-<tag>`, the tag a hash of the
//!   package list (a list change means a new venv). If the completion marker is
//!   missing, a venv is built in a temporary sibling directory with
//!   `pip install mlflow==3.17.2 openai anthropic databricks-sdk`, the marker is written and
//!   the directory is renamed into place atomically (a process that loses that
//!   race uses the winner's venv). About a minute on a cold machine.
//! - **One server per test process** ([`shared`]): `mlflow server` on a free
//!   loopback port with a sqlite store in a fresh temp dir, run under
//!   `python/supervise.py`, which kills the server's whole process group and
//!   removes the temp dir as soon as this process exits (the supervisor's stdin
//!   pipe, held open in a static, reaches EOF).
//! - **A private, restartable server** ([`Private`]): its own temp dir,
//!   sqlite store and port, which [`Private::stop`] (SIGTERM to the server's
//!   process group) or [`Private::kill`] (SIGKILL) takes away, waiting until
//!   the port is closed, and [`Private::start_again`] brings back on the same
//!   port with the same store — for fault tests. Same venv and supervisor as
//!   the shared one; every start costs ~4–17 s.
//! - **Helpers**: REST calls (experiments, traces, search), span read-back via
//!   the MLflow Python client (`python/get_spans.py`), and running inline
//!   Python scripts with the venv's interpreter (e.g. the official OpenAI SDK).
//!
//! Environment knobs: `LLMTAP_TEST_VENV` (venv location),
//! `LLMTAP_KEEP_MLFLOW_DIR=1` (keep the server's temp dir and log after exit).
//!
//! Nothing here is skipped silently: a missing `python3`, a failed `pip
//! install` or a server that does not come up is a panic with the reason.
#![allow(dead_code)]

#[path = "venv.rs"]
mod venv;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// The MLflow version the venv pins (the newest the reachable registry serves).
pub const MLFLOW_VERSION: &str = "3.17.2";

/// Packages installed into the venv.
/// Changing this list changes the venv's directory name ([`venv_dir`]), so a
/// cached venv built from another list is never mistaken for this one.
const PIP_PACKAGES: &[&str] = &["mlflow==3.17.2", "openai", "anthropic", "databricks-sdk"];

/// The venv's directory name under `~/.cache/llmtap/`.
const VENV_DIR_NAME: &str = "venv-mlflow-3.17.2";

/// How long `mlflow server` may take to answer `GET /health`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// Timeout of one REST call to the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A running MLflow tracking server (see [`shared`]).
pub struct Mlflow {
    uri: String,
    port: u16,
    venv: PathBuf,
    dir: PathBuf,
    /// The supervisor and server while running (`None` while a [`Private`]
    /// server is stopped).
    process: Mutex<Option<ServerProcess>>,
}

/// A running supervisor and its server.
struct ServerProcess {
    /// Write end of the supervisor's stdin. Never written; it closes when the
    /// process exits, which tells the supervisor to kill the server.
    _keepalive: ChildStdin,
    supervisor: Child,
    /// The server's process group (the supervisor makes it a group leader).
    server_pgid: u32,
}

static SHARED: tokio::sync::OnceCell<Result<Mlflow, String>> = tokio::sync::OnceCell::const_new();

/// The process-wide MLflow server, started (and the venv installed) on first use.
///
/// Works from any tokio runtime (each `#[tokio::test]` has its own): the
/// server is a plain OS process and no helper keeps runtime-bound state. If
/// startup fails, every caller in this process panics with the same reason
/// instead of retrying the slow setup.
pub async fn shared() -> &'static Mlflow {
    let result = SHARED
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(Mlflow::start).await {
                Ok(mlflow) => Ok(mlflow),
                Err(err) if err.is_panic() => Err(panic_message(err.into_panic())),
                Err(err) => Err(format!("MLflow startup task failed: {err}")),
            }
        })
        .await;
    match result {
        Ok(mlflow) => mlflow,
        Err(reason) => panic!("the shared MLflow server is unavailable: {reason}"),
    }
}

/// The venv's python, installing the venv first if needed (blocking).
///
/// [`shared`] calls this; use it directly only for Python without a server.
pub fn ensure_venv() -> PathBuf {
    VENV.ensure()
}

impl Mlflow {
    /// Base URI, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The venv's python interpreter (has mlflow, openai and anthropic).
    pub fn python(&self) -> PathBuf {
        venv_python(&self.venv)
    }

    /// The server's temp dir (sqlite DB, artifacts, `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.dir.join("server.log"), lines)
    }

    // ----- raw HTTP -------------------------------------------------------

    /// One HTTP request to the server; returns `(status, body)`.
    ///
    /// `path` includes the query string, e.g. `/v1/traces`. Panics on
    /// connection errors and after [`REQUEST_TIMEOUT`].
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (u16, Bytes) {
        let url = format!("{}{}", self.uri, path);
        let mut builder = hyper::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            builder = builder.header("host", format!("127.0.0.1:{}", self.port));
        }
        let req = builder
            .body(Full::new(body.into()))
            .unwrap_or_else(|e| panic!("bad request {method} {url}: {e}"));
        // A fresh client per call with no pool: nothing here is tied to the
        // runtime of the test that happened to make an earlier call.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http::<Full<Bytes>>();
        let call = async {
            let resp = client
                .request(req)
                .await
                .unwrap_or_else(|e| panic!("{method} {url} failed: {e:?}"));
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: reading the body failed: {e}"))
                .to_bytes();
            (status, body)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(out) => out,
            Err(_) => panic!(
                "{method} {url} got no answer within {REQUEST_TIMEOUT:?}; server log tail:\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// A JSON request; returns `(status, parsed body)` (`Value::Null` for an
    /// empty body, `Value::String` for a body that is not JSON).
    pub async fn request_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (headers, bytes): (&[(&str, &str)], Bytes) = match body {
            Some(v) => (
                &[("content-type", "application/json")],
                Bytes::from(v.to_string()),
            ),
            None => (&[], Bytes::new()),
        };
        let (status, body) = self.request(method, path, headers, bytes).await;
        (status, parse_body(&body))
    }

    /// POST an OTLP-JSON `ExportTraceServiceRequest` to `/v1/traces`, as an
    /// exporter would; returns `(status, body text)`.
    pub async fn post_otlp_json(&self, experiment_id: &str, body: &Value) -> (u16, String) {
        let (status, bytes) = self
            .request(
                "POST",
                "/v1/traces",
                &[
                    ("content-type", "application/json"),
                    ("x-mlflow-experiment-id", experiment_id),
                ],
                body.to_string(),
            )
            .await;
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    // ----- experiments ------------------------------------------------------

    /// The id of experiment `name`, or `None` if it does not exist.
    pub async fn experiment_id_by_name(&self, name: &str) -> Option<String> {
        let path = format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            percent_encode(name)
        );
        let (status, body) = self.request_json("GET", &path, None).await;
        match status {
            200 => Some(
                json_id(&body["experiment"]["experiment_id"])
                    .unwrap_or_else(|| panic!("get-by-name {name:?}: no experiment_id in {body}")),
            ),
            404 => None,
            _ => panic!("get-by-name {name:?}: HTTP {status}: {body}"),
        }
    }

    /// Creates experiment `name` and returns its id. If it already exists
    /// (e.g. a concurrent test created it), returns the existing id.
    pub async fn create_experiment(&self, name: &str) -> String {
        let (status, body) = self
            .request_json(
                "POST",
                "/api/2.0/mlflow/experiments/create",
                Some(&json!({ "name": name })),
            )
            .await;
        match status {
            200 => json_id(&body["experiment_id"]).unwrap_or_else(|| {
                panic!("create experiment {name:?}: no experiment_id in {body}")
            }),
            400 if body["error_code"] == "RESOURCE_ALREADY_EXISTS" => self
                .experiment_id_by_name(name)
                .await
                .unwrap_or_else(|| panic!("experiment {name:?} exists but cannot be looked up")),
            _ => panic!("create experiment {name:?}: HTTP {status}: {body}"),
        }
    }

    /// A new experiment with a unique name starting with `prefix`; returns
    /// `(name, id)`. Handy to isolate one test's traces.
    pub async fn unique_experiment(&self, prefix: &str) -> (String, String) {
        let name = format!("{prefix}-{:016x}", fastrand::u64(..));
        let id = self.create_experiment(&name).await;
        (name, id)
    }

    // ----- traces -------------------------------------------------------------

    /// `GET /api/3.0/mlflow/traces/{trace_id}`: the `trace` object
    /// (`{"trace_info": {...}}`), or `None` on 404.
    pub async fn get_trace(&self, trace_id: &str) -> Option<Value> {
        let path = format!("/api/3.0/mlflow/traces/{}", percent_encode(trace_id));
        let (status, body) = self.request_json("GET", &path, None).await;
        match status {
            200 => match body.get("trace") {
                Some(trace) => Some(trace.clone()),
                None => panic!("get trace {trace_id}: no `trace` in {body}"),
            },
            404 => None,
            _ => panic!("get trace {trace_id}: HTTP {status}: {body}"),
        }
    }

    /// `GET /api/3.0/mlflow/traces/get?trace_id=...`: the `trace` object with
    /// `trace_info` *and* `spans`, or `None` on 404. The spans come in OTLP
    /// proto-JSON form (base64 ids, `attributes` as a list of
    /// `{"key", "value": {"string_value" | "int_value" | "kvlist_value" ...}}`),
    /// which is lower level than [`Mlflow::spans`] but needs no Python.
    pub async fn get_trace_with_spans(&self, trace_id: &str) -> Option<Value> {
        let path = format!(
            "/api/3.0/mlflow/traces/get?trace_id={}",
            percent_encode(trace_id)
        );
        let (status, body) = self.request_json("GET", &path, None).await;
        match status {
            200 => match body.get("trace") {
                Some(trace) => Some(trace.clone()),
                None => panic!("get trace {trace_id} with spans: no `trace` in {body}"),
            },
            404 => None,
            _ => panic!("get trace {trace_id} with spans: HTTP {status}: {body}"),
        }
    }

    /// Polls [`Mlflow::get_trace`] until the trace exists and its
    /// `trace_info.state` is not `IN_PROGRESS`; returns the `trace` object.
    /// Panics after `timeout` with the last state seen.
    pub async fn wait_trace(&self, trace_id: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let last = self.get_trace(trace_id).await;
            if let Some(trace) = &last {
                let state = trace["trace_info"]["state"].as_str().unwrap_or("");
                if !state.is_empty() && state != "IN_PROGRESS" {
                    return trace.clone();
                }
            }
            if start.elapsed() >= timeout {
                match last {
                    None => panic!("trace {trace_id} did not appear in MLflow within {timeout:?}"),
                    Some(trace) => panic!(
                        "trace {trace_id} still not finished after {timeout:?} \
                         (state {}); the root span probably never arrived: {trace}",
                        trace["trace_info"]["state"]
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// All traces of an experiment (every page), as `trace_info` objects in
    /// the server's order.
    pub async fn search_traces(&self, experiment_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut body = json!({
                "locations": [{
                    "type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": { "experiment_id": experiment_id },
                }],
                "max_results": 100,
            });
            if let Some(token) = &page_token {
                body["page_token"] = json!(token);
            }
            let (status, resp) = self
                .request_json("POST", "/api/3.0/mlflow/traces/search", Some(&body))
                .await;
            if status != 200 {
                panic!("search traces in experiment {experiment_id}: HTTP {status}: {resp}");
            }
            if let Some(traces) = resp["traces"].as_array() {
                out.extend(traces.iter().cloned());
            }
            match resp["next_page_token"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => return out,
            }
        }
    }

    /// The spans of each trace, read back with the MLflow Python client
    /// (`mlflow.get_trace(id).data.spans`), one Python run for all ids.
    ///
    /// Returns `{"tr-...": [span.to_dict(), ...], ...}` with every attribute
    /// value JSON-decoded (so `attributes["mlflow.spanType"]` is
    /// `"CHAT_MODEL"`, not `"\"CHAT_MODEL\""`), or `null` for a trace the
    /// client cannot find.
    pub async fn spans(&self, trace_ids: &[&str]) -> Value {
        let script = support_python_dir().join("get_spans.py");
        let mut cmd = Command::new(self.python());
        cmd.arg(&script).args(trace_ids);
        self.python_env(&mut cmd, &[]);
        let what = format!("get_spans.py {trace_ids:?}");
        let out = run_blocking(cmd, what.clone()).await;
        if !out.status.success() {
            panic!(
                "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                tail_lines(&String::from_utf8_lossy(&out.stderr), 60)
            );
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what} printed invalid JSON ({e}):\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                tail_lines(&String::from_utf8_lossy(&out.stderr), 60)
            )
        })
    }

    /// Runs an inline Python script with the venv's interpreter and returns
    /// its output (whatever its exit status: check it).
    ///
    /// `MLFLOW_TRACKING_URI` is set to this server; `env` is applied after
    /// (and may override it). Runs on tokio's blocking pool, so a server
    /// under test on the caller's runtime keeps serving meanwhile.
    pub async fn run_python(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.python());
        cmd.arg("-c").arg(script);
        self.python_env(&mut cmd, env);
        run_blocking(cmd, "inline python script".to_string()).await
    }

    /// Runs `python/<name>` (beside this file) with `args` and the venv's
    /// interpreter, as [`Mlflow::run_python`] runs an inline script; returns
    /// its output (whatever its exit status: check it).
    pub async fn run_python_file(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.python());
        cmd.arg(support_python_dir().join(name)).args(args);
        self.python_env(&mut cmd, env);
        run_blocking(cmd, format!("{name} {args:?}")).await
    }

    fn python_env(&self, cmd: &mut Command, env: &[(&str, &str)]) {
        cmd.env("MLFLOW_TRACKING_URI", &self.uri)
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
    }

    // ----- startup ----------------------------------------------------------------

    /// Blocking: venv, temp dir, supervisor + server, wait for `/health`.
    fn start() -> Mlflow {
        let venv = venv_dir();
        let python = ensure_venv();
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::start_once(&venv, &python) {
                Ok(mlflow) => return mlflow,
                Err(reason) if attempt < ATTEMPTS && reason.contains("address already in use") => {
                    stderr_line(&format!(
                        "mlflow server lost its port (attempt {attempt}/{ATTEMPTS}), retrying"
                    ));
                }
                Err(reason) => panic!("{reason}"),
            }
        }
        unreachable!()
    }

    fn start_once(venv: &Path, python: &Path) -> Result<Mlflow, String> {
        let dir = tempfile::Builder::new()
            .prefix("llmtap-mlflow-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for mlflow server: {e}"))
            .keep();
        let port = free_port();
        let process = match launch(python, &dir, port) {
            Ok(process) => process,
            Err(reason) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(reason);
            }
        };
        Ok(Mlflow {
            uri: format!("http://127.0.0.1:{port}"),
            port,
            venv: venv.to_path_buf(),
            dir,
            process: Mutex::new(Some(process)),
        })
    }
}

/// `LLMTAP_KEEP_MLFLOW_DIR` is set (keep server dirs after exit).
fn keep_dirs() -> bool {
    std::env::var_os("LLMTAP_KEEP_MLFLOW_DIR")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// Blocking: starts `mlflow server` on `port` with its sqlite store, artifacts
/// and `server.log` in `dir` (created on first use, reused as they are on a
/// restart), under `python/supervise.py`, and waits for `/health`. On failure
/// the server is gone; `dir` is left in place if the server exited by itself
/// (the caller decides), and may be removed by the supervisor on a timeout.
fn launch(python: &Path, dir: &Path, port: u16) -> Result<ServerProcess, String> {
    let log_path = dir.join("server.log");
    // Append mode: the supervisor and the server write to it through
    // separate descriptors (and a restarted server adds to the same log).
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    let artifacts = dir.join("artifacts");
    fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", artifacts.display()));
    let log_start = fs::metadata(&log_path).map_or(0, |m| m.len());

    let mut cmd = Command::new(python);
    cmd.arg(support_python_dir().join("supervise.py"));
    if !keep_dirs() {
        cmd.arg("--cleanup").arg(dir);
    }
    cmd.arg(&log_path)
        .arg("--")
        .arg(python)
        .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(&artifacts)
        .args(["--workers", "1"])
        .current_dir(dir)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let stdin = child.stdin.take().expect("supervisor stdin is piped");
    let uri = format!("http://127.0.0.1:{port}");
    stderr_line(&format!(
        "starting mlflow server {MLFLOW_VERSION} at {uri} (dir {})",
        dir.display()
    ));

    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait on supervisor") {
            let tail = file_tail(&log_path, 60);
            return Err(format!(
                "mlflow server exited during startup ({status}); server.log tail:\n{tail}"
            ));
        }
        if health_ok(port) {
            break;
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            let tail = file_tail(&log_path, 60);
            if let Some(pgid) = supervised_pgid(&log_path, log_start, child.id()) {
                kill_group(pgid, "KILL");
            }
            drop(stdin);
            let _ = child.wait();
            return Err(format!(
                "mlflow server at {uri} did not answer GET /health with OK within \
                 {STARTUP_TIMEOUT:?}; server.log tail:\n{tail}"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // supervise.py logs the group before the server can answer.
    let server_pgid = supervised_pgid(&log_path, log_start, child.id()).unwrap_or_else(|| {
        panic!(
            "supervise.py (pid {}) did not log the server's process group in {}",
            child.id(),
            log_path.display()
        )
    });
    stderr_line(&format!(
        "mlflow server up at {uri} after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(ServerProcess {
        _keepalive: stdin,
        supervisor: child,
        server_pgid,
    })
}

/// The process group supervise.py (pid `supervisor`) started, from its
/// `[supervise.py PID] started pid/pgid N: ...` line in the log (read from
/// byte `from` on, so a restart's log lines are told apart).
fn supervised_pgid(log_path: &Path, from: u64, supervisor: u32) -> Option<u32> {
    let bytes = fs::read(log_path).ok()?;
    let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or(&[]));
    let prefix = format!("[supervise.py {supervisor}] started pid/pgid ");
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(&prefix)?;
        rest.split(':').next()?.trim().parse().ok()
    })
}

/// `kill -SIGNAL -- -PGID` (the whole process group).
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether anything accepts TCP connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

// ----- a private, restartable server ---------------------------------------------------

/// An MLflow server of one's own that can be stopped and started again on the
/// same port with the same sqlite store: for fault tests that take the
/// tracking server away. It derefs to [`Mlflow`] for all the helpers.
///
/// Like [`shared`], it runs under `python/supervise.py`, so a test process
/// that dies takes the running server (and its temp dir) with it. Dropping a
/// `Private` kills the server and removes its dir (unless
/// `LLMTAP_KEEP_MLFLOW_DIR=1`). Each start costs about as long as the shared
/// server's (~10-15 s on a 2-core machine).
pub struct Private {
    server: Mlflow,
    python: PathBuf,
}

impl std::ops::Deref for Private {
    type Target = Mlflow;
    fn deref(&self) -> &Mlflow {
        &self.server
    }
}

impl Private {
    /// A new server: venv (installed if needed), temp dir, a port chosen now
    /// and kept for every restart, `/health` answering.
    pub async fn start() -> Private {
        tokio::task::spawn_blocking(|| {
            let venv = venv_dir();
            let python = ensure_venv();
            const ATTEMPTS: usize = 3;
            for attempt in 1..=ATTEMPTS {
                match Mlflow::start_once(&venv, &python) {
                    Ok(server) => return Private { server, python },
                    Err(reason)
                        if attempt < ATTEMPTS && reason.contains("address already in use") =>
                    {
                        stderr_line(&format!(
                            "private mlflow server lost its port (attempt {attempt}/{ATTEMPTS}), \
                             retrying"
                        ));
                    }
                    Err(reason) => panic!("private mlflow server: {reason}"),
                }
            }
            unreachable!()
        })
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("private mlflow startup task failed: {e}"),
        })
    }

    /// Whether the server is running (between [`Private::start`] or
    /// [`Private::start_again`] and [`Private::stop`]).
    pub fn is_running(&self) -> bool {
        self.server.process.lock().unwrap().is_some()
    }

    /// Stops the server as an operator would: SIGTERM to its process group,
    /// SIGKILL after 10 s, then waits until the supervisor has exited and
    /// nothing accepts connections on the port. Returns how long it took.
    /// The dir (sqlite store, log) stays for [`Private::start_again`].
    ///
    /// MLflow 3.x takes several seconds to wind down its job runner and
    /// workers on SIGTERM, answering (or not) meanwhile; [`Private::kill`] is
    /// the abrupt, immediate version.
    pub async fn stop(&self) -> Duration {
        self.halt("TERM").await
    }

    /// Kills the server at once (SIGKILL to its process group: a crash, no
    /// graceful shutdown), then waits as [`Private::stop`] does.
    pub async fn kill(&self) -> Duration {
        self.halt("KILL").await
    }

    async fn halt(&self, signal: &'static str) -> Duration {
        let process = self.server.process.lock().unwrap().take();
        let Some(process) = process else {
            panic!("private mlflow server at {} is not running", self.uri());
        };
        let port = self.port();
        let uri = self.uri().to_string();
        let took = tokio::task::spawn_blocking(move || {
            let ServerProcess {
                _keepalive,
                mut supervisor,
                server_pgid,
            } = process;
            let started = Instant::now();
            kill_group(server_pgid, signal);
            let mut killed = signal == "KILL";
            // The supervisor exits once the server's group is gone, keeping
            // the dir (the command exited "by itself").
            loop {
                if supervisor.try_wait().expect("wait on supervisor").is_some() {
                    break;
                }
                if !killed && started.elapsed() > Duration::from_secs(10) {
                    kill_group(server_pgid, "KILL");
                    killed = true;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = supervisor.kill();
                    let _ = supervisor.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(_keepalive);
            while port_open(port) {
                if started.elapsed() > Duration::from_secs(40) {
                    panic!("{uri} still accepts connections 40 s after the server was stopped");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            started.elapsed()
        })
        .await
        .expect("stopping the private mlflow server");
        stderr_line(&format!(
            "private mlflow server at {} stopped (SIG{signal}) in {:.1}s",
            self.uri(),
            took.as_secs_f64()
        ));
        took
    }

    /// Starts the server again on the same port with the same store; returns
    /// once `/health` answers, with how long that took.
    pub async fn start_again(&self) -> Duration {
        assert!(
            !self.is_running(),
            "private mlflow server at {} is already running",
            self.uri()
        );
        let python = self.python.clone();
        let dir = self.dir().to_path_buf();
        let port = self.port();
        let started = Instant::now();
        let process = tokio::task::spawn_blocking(move || launch(&python, &dir, port))
            .await
            .expect("restarting the private mlflow server")
            .unwrap_or_else(|reason| panic!("restarting the private mlflow server: {reason}"));
        *self.server.process.lock().unwrap() = Some(process);
        started.elapsed()
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let process = self.server.process.lock().map(|mut p| p.take());
        if let Ok(Some(mut process)) = process {
            kill_group(process.server_pgid, "KILL");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = process.supervisor.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(self.server.dir());
        }
    }
}

// ----- venv installation ------------------------------------------------------------

/// The MLflow test venv (see `venv.rs`).
const VENV: venv::Spec = venv::Spec {
    what: "MLflow",
    tag: "mlflow",
    env_var: "LLMTAP_TEST_VENV",
    dir_name: VENV_DIR_NAME,
    packages: PIP_PACKAGES,
    expected: "about a minute",
};

/// `$LLMTAP_TEST_VENV`, else `$HOME/.cache/llmtap/venv-mlflow-3.17.2-<tag>`,
/// `<tag>` a hash of [`PIP_PACKAGES`] (see `venv.rs`).
pub fn venv_dir() -> PathBuf {
    VENV.dir()
}

fn venv_python(venv: &Path) -> PathBuf {
    venv::python(venv)
}

// ----- small helpers ----------------------------------------------------------------

fn support_python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python")
}

/// Progress output that shows even when libtest captures test output.
fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "[llmtap-test mlflow] {line}");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local addr").port()
}

/// `GET /health` with a plain blocking socket (startup runs outside async).
fn health_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /health HTTP/1.0\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return false;
    }
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return false;
    };
    head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200") && body.trim() == "OK"
}

async fn run_blocking(mut cmd: Command, what: String) -> Output {
    tokio::task::spawn_blocking(move || {
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
    })
    .await
    .unwrap_or_else(|e| match e.try_into_panic() {
        Ok(payload) => std::panic::resume_unwind(payload),
        Err(e) => panic!("python task failed: {e}"),
    })
}

fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Experiment ids are strings in MLflow's JSON; accept numbers too.
fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
