//! The llmtap binary as the hostile-client suite runs it: a child process
//! with its config file, spool, trace and dead-letter dirs in one temp dir,
//! JSON logs captured (every line, for the secret sweep), and its memory read
//! from /proc. `LLMTAP_HOSTILE_BIN` points it at another binary (CI: the
//! release build); by default it is the test profile's `llmtap`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Settings only the config file has: fast batches and retries.
const BIN_CONFIG: &str = r#"
[server]
shutdown_grace = "5s"
[export]
batch_interval = "50ms"
retry_initial = "50ms"
retry_max = "1s"
"#;

/// Log lines kept per process (a flood of per-connection lines stays bounded).
const MAX_LOG_LINES: usize = 50_000;

/// The binary under test.
pub fn bin_path() -> PathBuf {
    match std::env::var("LLMTAP_HOSTILE_BIN") {
        Ok(p) if !p.trim().is_empty() => {
            let p = PathBuf::from(p.trim());
            assert!(
                p.is_file(),
                "LLMTAP_HOSTILE_BIN={} is not a file",
                p.display()
            );
            p
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_llmtap")),
    }
}

/// A command for the binary with a clean environment (no LLMTAP_*/MLFLOW_*
/// from the caller), its cwd and config file in `dir`, JSON logs, and the
/// spool, trace and dead-letter dirs under `dir`; `env` goes on top.
pub fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("llmtap.toml");
    std::fs::write(&config, BIN_CONFIG).unwrap();
    let mut cmd = Command::new(bin_path());
    for (k, _) in std::env::vars() {
        if k.starts_with("LLMTAP_") || k.starts_with("MLFLOW_") || k == "ENABLE_MLFLOW_TRACING" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env("LLMTAP_CONFIG", &config)
        .env("LLMTAP_LISTEN", "127.0.0.1:0")
        .env("LLMTAP_ADMIN_LISTEN", "127.0.0.1:0")
        .env("LLMTAP_LOG_FORMAT", "json")
        .env("LLMTAP_TRACE_DIR", dir.join("traces"))
        .env("LLMTAP_DEAD_LETTER_DIR", dir.join("dead-letter"))
        .env("LLMTAP_SPOOL_DIR", dir.join("spool"))
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// How a process that was expected to refuse to start ended.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    /// stdout and stderr, interleaved line by line as read.
    pub output: String,
}

/// Runs `cmd` to its end (killed after `limit`), returning its exit code and
/// output; `None` as the code means it was still running at `limit`.
pub fn run_to_exit(mut cmd: Command, limit: Duration) -> Exited {
    let mut child = cmd.spawn().expect("starting the llmtap binary");
    let log = Arc::new(Mutex::new(Vec::new()));
    let readers = collect(&mut child, log.clone(), None);
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    let output = log.lock().unwrap().join("\n");
    Exited { code, output }
}

type Listening = std::sync::mpsc::Sender<(SocketAddr, SocketAddr)>;

/// Reads the child's stdout and stderr into `log`, reporting the addresses
/// of the "llmtap listening" line on `tx`.
fn collect(
    child: &mut Child,
    log: Arc<Mutex<Vec<String>>>,
    tx: Option<Listening>,
) -> Vec<std::thread::JoinHandle<()>> {
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    [(out, None), (err, tx)]
        .into_iter()
        .map(|(stream, mut tx)| {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addrs) = tx.is_some().then(|| listening(&line)).flatten() {
                        let _ = tx.take().unwrap().send(addrs);
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() < MAX_LOG_LINES {
                        log.push(line);
                    }
                }
            })
        })
        .collect()
}

fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "llmtap listening" {
        return None;
    }
    let parse = |k: &str| v[k].as_str().and_then(|s| s.parse().ok());
    Some((parse("addr")?, parse("admin_addr")?))
}

/// A running llmtap process.
pub struct Bin {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    /// Traces go to OTLP-JSON files under `dir/traces` (no MLflow URI set).
    pub traces_to_files: bool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Bin {
    /// Starts llmtap in `dir` against `upstream`; panics (with its output) if
    /// it does not log "llmtap listening" within 30 s.
    pub async fn start(upstream: &str, dir: &Path, env: &[(&str, &str)]) -> Bin {
        match Bin::try_start(upstream, dir, env).await {
            Ok(bin) => bin,
            Err(e) => panic!("llmtap did not start (exit {:?}):\n{}", e.code, e.output),
        }
    }

    /// Starts llmtap, or reports how it ended when it exited (or was still not
    /// listening after 30 s) instead.
    pub async fn try_start(
        upstream: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Bin, Exited> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert(0, ("LLMTAP_UPSTREAM".into(), upstream.into()));
        let dir = dir.to_path_buf();
        let files = !env.iter().any(|(k, _)| k == "MLFLOW_TRACKING_URI");
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Bin::start_blocking(command(&dir, &env), &dir)
        })
        .await
        .unwrap()
        .map(|mut bin| {
            bin.traces_to_files = files;
            bin
        })
    }

    fn start_blocking(mut cmd: Command, dir: &Path) -> Result<Bin, Exited> {
        let mut child = cmd.spawn().expect("starting the llmtap binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        collect(&mut child, log.clone(), Some(tx));
        let start = Instant::now();
        loop {
            if let Ok((addr, admin)) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Bin {
                    child,
                    addr,
                    admin,
                    dir: dir.to_path_buf(),
                    traces_to_files: true,
                    log,
                });
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || start.elapsed() > Duration::from_secs(30) {
                if exited.is_none() {
                    let _ = child.kill();
                }
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                let output = log.lock().unwrap().join("\n");
                return Err(Exited {
                    code: exited.and(status.code()),
                    output,
                });
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status of llmtap");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kb * 1024
    }

    /// Resident set size now.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS")
    }

    /// The highest resident set size the process has had.
    pub fn hwm(&self) -> u64 {
        self.status_bytes("VmHWM")
    }

    /// Open file descriptors (sockets included).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL and reap: no handler runs, nothing is flushed.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (30 s at most) for a clean exit.
    pub async fn stop(&mut self) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "llmtap exited with {status}:\n{}",
                    self.log_tail(40)
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "llmtap did not exit within 30 s of SIGTERM:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
