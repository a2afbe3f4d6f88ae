//! Test support: a real Arize Phoenix (from PyPI) for the OTLP sink's
//! end-to-end tests.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "support/phoenix.rs"]
//! mod phoenix;
//! ```
//!
//! - **Python venv, cached** (`venv.rs`): `$LLMTAP_TEST_PHOENIX_VENV`, else
//!   `$HOME/.cache/llmtap/venv-phoenix-20.26.1`, holding
//!   `arize-phoenix==20.26.1`; built atomically on first use (about two
//!   minutes on a cold machine).
//! - **One server per test process** ([`shared`]): `phoenix serve` on free
//!   loopback ports (HTTP and gRPC) with a fresh temp working dir (sqlite),
//!   telemetry off, run under `python/supervise.py`, which kills the
//!   server's whole process group and removes the temp dir as soon as this
//!   process exits. Startup waits for `GET /healthz` (about 20–30 s here).
//! - **Read-back**: the spans of a project through Phoenix's REST API
//!   (`GET /v1/projects/{project}/spans`), polled until a trace shows up.
//!
//! Environment knobs: `LLMTAP_TEST_PHOENIX_VENV` (venv location),
//! `LLMTAP_KEEP_PHOENIX_DIR=1` (keep the working dir and log after exit).
//! Nothing is skipped silently: a missing `python3`, a failed `pip install`
//! or a server that does not come up is a panic with the reason.
#![allow(dead_code)]

#[path = "venv.rs"]
mod venv;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Phoenix version the venv pins.
pub const PHOENIX_VERSION: &str = "20.26.1";

const VENV: venv::Spec = venv::Spec {
    what: "Arize Phoenix",
    tag: "phoenix",
    env_var: "LLMTAP_TEST_PHOENIX_VENV",
    dir_name: "venv-phoenix-20.26.1",
    packages: &["arize-phoenix==20.26.1"],
    expected: "about two minutes",
};

/// How long `phoenix serve` may take to answer `GET /healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);

/// A running Phoenix server (see [`shared`]).
pub struct Phoenix {
    uri: String,
    port: u16,
    dir: PathBuf,
    /// The supervisor and the write end of its stdin: dropped at process
    /// exit, which makes the supervisor kill the server's process group.
    process: Mutex<Option<(Child, ChildStdin)>>,
    /// How long the server took to answer its health check.
    pub startup: Duration,
}

static SHARED: tokio::sync::OnceCell<Result<Phoenix, String>> = tokio::sync::OnceCell::const_new();

/// The process-wide Phoenix server, started (and the venv installed) on first use.
pub async fn shared() -> &'static Phoenix {
    let result = SHARED
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(Phoenix::start).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(panic_message(e.into_panic())),
                Err(e) => Err(format!("Phoenix startup task failed: {e}")),
            }
        })
        .await;
    match result {
        Ok(p) => p,
        Err(reason) => panic!("the shared Phoenix server is unavailable: {reason}"),
    }
}

impl Phoenix {
    /// Base URI, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last `lines` of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(self.dir.join("server.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET path` on the server (blocking socket, run off the async workers):
    /// (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let port = self.port;
        let owned = path.to_string();
        tokio::task::spawn_blocking(move || http_get(port, &owned))
            .await
            .expect("GET task")
            .unwrap_or_else(|e| panic!("GET {path} on Phoenix: {e}"))
    }

    /// The spans of `project` (newest first, up to 1000).
    pub async fn spans(&self, project: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/projects/{project}/spans?limit=1000"))
            .await;
        match status {
            200 => body["data"].as_array().cloned().unwrap_or_default(),
            404 => Vec::new(), // the project appears with its first span
            _ => panic!("Phoenix answered {status} listing spans: {body}"),
        }
    }

    /// Waits until a span of trace `trace_id` (32 hex digits) is in
    /// `project`, and returns it; panics with the server log after `limit`.
    pub async fn wait_span(&self, project: &str, trace_id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let spans = self.spans(project).await;
            let found = spans
                .into_iter()
                .find(|s| s["context"]["trace_id"].as_str() == Some(trace_id));
            if let Some(span) = found {
                return span;
            }
            if started.elapsed() > limit {
                panic!(
                    "no span of trace {trace_id} in Phoenix project {project} after {limit:?}; \
                     server log tail:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Blocking: venv, temp dir, supervisor + server, wait for `/healthz`.
    fn start() -> Result<Phoenix, String> {
        let python = VENV.ensure();
        let dir = tempfile::Builder::new()
            .prefix("llmtap-phoenix-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for Phoenix: {e}"))?
            .keep();
        let (port, grpc_port) = (free_port(), free_port());
        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(&python);
        cmd.arg(support_python_dir().join("supervise.py"));
        if !keep_dir() {
            cmd.arg("--cleanup").arg(&dir);
        }
        cmd.arg(&log_path)
            .arg("--")
            .arg(&python)
            .args(["-m", "phoenix.server.main", "serve"])
            .current_dir(&dir)
            .env("PHOENIX_WORKING_DIR", &dir)
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .env("DO_NOT_TRACK", "true")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let stdin = child.stdin.take().expect("supervisor stdin is piped");
        let uri = format!("http://127.0.0.1:{port}");
        progress(&format!(
            "starting phoenix serve {PHOENIX_VERSION} at {uri} (dir {})",
            dir.display()
        ));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait on supervisor") {
                return Err(format!(
                    "phoenix serve exited during startup ({status}); server.log tail:\n{}",
                    file_tail(&log_path, 60)
                ));
            }
            if matches!(http_get(port, "/healthz"), Ok((200, _))) {
                break;
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                let tail = file_tail(&log_path, 60);
                drop(stdin); // the supervisor tears the server down
                let _ = child.wait();
                return Err(format!(
                    "phoenix serve did not answer /healthz within {STARTUP_TIMEOUT:?}; \
                     server.log tail:\n{tail}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let startup = started.elapsed();
        progress(&format!(
            "phoenix serve ready in {:.1}s",
            startup.as_secs_f64()
        ));
        Ok(Phoenix {
            uri,
            port,
            dir,
            process: Mutex::new(Some((child, stdin))),
            startup,
        })
    }
}

/// `LLMTAP_KEEP_PHOENIX_DIR` is set.
fn keep_dir() -> bool {
    std::env::var_os("LLMTAP_KEEP_PHOENIX_DIR").is_some_and(|v| !v.is_empty() && v != "0")
}

fn support_python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python")
}

fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "[llmtap-test phoenix] {line}");
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local addr").port()
}

/// A plain HTTP/1.0 GET on loopback: (status, JSON body or the text as a string).
fn http_get(port: u16, path: &str) -> Result<(u16, Value), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Ok((status, body))
}

fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
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
