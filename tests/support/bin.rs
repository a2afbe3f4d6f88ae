//! The llmtap binary as the integration tests run it: a child process with
//! a clean environment (no LLMTAP_*/MLFLOW_*/OTEL_* from the caller), its cwd,
//! config file, trace and dead-letter dirs (and, when asked, its spool) in
//! one dir, JSON logs captured from stdout and stderr, the addresses of its
//! "llmtap listening" line, its memory, descriptors and CPU time read from
//! /proc, and `kill -9` or SIGTERM to end it.
//!
//! What differs between the suites (config file, spool, base env, how much
//! log to keep, which binary) is a [`Launch`]; each suite has one as a const.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Settings only the config file has: fast batches and retries.
pub const FAST_CONFIG: &str = r#"
[server]
shutdown_grace = "5s"
[export]
batch_interval = "50ms"
retry_initial = "50ms"
retry_max = "1s"
"#;

/// How long llmtap may take to listen, or to exit once it should.
const LIMIT: Duration = Duration::from_secs(30);

/// Which log lines a [`Bin`] keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// The first N (a flood of per-connection lines stays bounded, and
    /// nothing that came before it is lost).
    First(usize),
    /// The last N.
    Last(usize),
}

/// How a suite runs the binary.
#[derive(Debug, Clone, Copy)]
pub struct Launch {
    /// Written to `dir/llmtap.toml` and named by `LLMTAP_CONFIG`; `None`:
    /// no config file.
    pub config: Option<&'static str>,
    /// Appended to `config` (under its last section).
    pub config_extra: &'static str,
    /// `LLMTAP_SPOOL_DIR=dir/spool`.
    pub spool: bool,
    /// Env on top of the defaults (`RUST_LOG=info` among them), under the
    /// upstream and the caller's env.
    pub env: &'static [(&'static str, &'static str)],
    /// The log lines kept per process.
    pub keep: Keep,
    /// An env var that, when set, names the binary to run instead of the
    /// test profile's `llmtap`.
    pub bin_var: Option<&'static str>,
}

impl Launch {
    /// [`FAST_CONFIG`], the spool under `dir`, the last 1000 log lines.
    pub const DEFAULT: Launch = Launch {
        config: Some(FAST_CONFIG),
        config_extra: "",
        spool: true,
        env: &[],
        keep: Keep::Last(1000),
        bin_var: None,
    };

    /// The binary under test.
    pub fn bin_path(&self) -> PathBuf {
        match self.bin_var.map(std::env::var) {
            Some(Ok(p)) if !p.trim().is_empty() => {
                let p = PathBuf::from(p.trim());
                assert!(
                    p.is_file(),
                    "{}={} is not a file",
                    self.bin_var.unwrap(),
                    p.display()
                );
                p
            }
            _ => PathBuf::from(env!("CARGO_BIN_EXE_llmtap")),
        }
    }

    /// A command for the binary with a clean environment, its cwd (and
    /// config file) in `dir`, JSON logs, and the trace, dead-letter (and
    /// spool) dirs under `dir`; `env` goes on top.
    pub fn command(&self, dir: &Path, env: &[(&str, &str)]) -> Command {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new(self.bin_path());
        for (k, _) in std::env::vars() {
            if k.starts_with("LLMTAP_")
                || k.starts_with("MLFLOW_")
                || k.starts_with("OTEL_")
                || k == "ENABLE_MLFLOW_TRACING"
            {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(dir);
        if let Some(text) = self.config {
            let config = dir.join("llmtap.toml");
            std::fs::write(&config, format!("{text}{}", self.config_extra)).unwrap();
            cmd.env("LLMTAP_CONFIG", &config);
        }
        cmd.env("LLMTAP_LISTEN", "127.0.0.1:0")
            .env("LLMTAP_ADMIN_LISTEN", "127.0.0.1:0")
            .env("LLMTAP_LOG_FORMAT", "json")
            .env("LLMTAP_TRACE_DIR", dir.join("traces"))
            .env("LLMTAP_DEAD_LETTER_DIR", dir.join("dead-letter"))
            .env("RUST_LOG", "info");
        if self.spool {
            cmd.env("LLMTAP_SPOOL_DIR", dir.join("spool"));
        }
        for (k, v) in self.env.iter().chain(env) {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts llmtap in `dir` against `upstream` without waiting for it to
    /// listen ([`Bin::addrs`] does).
    pub fn spawn(&self, upstream: &str, dir: &Path, env: &[(&str, &str)]) -> Bin {
        let mut all = vec![("LLMTAP_UPSTREAM", upstream)];
        all.extend_from_slice(env);
        let mut child = self
            .command(dir, &all)
            .spawn()
            .expect("starting the llmtap binary");
        let log = Arc::new(Mutex::new(Log::new(self.keep)));
        let (tx, listening) = std::sync::mpsc::channel();
        let readers = collect(&mut child, log.clone(), Some(tx));
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        Bin {
            child,
            addr: unknown,
            admin: unknown,
            dir: dir.to_path_buf(),
            traces_to_files: !all.iter().any(|(k, _)| *k == "MLFLOW_TRACKING_URI"),
            log,
            readers,
            listening,
        }
    }

    /// Starts llmtap in `dir` against `upstream`; panics (with its output)
    /// if it does not log "llmtap listening" within 30 s.
    pub async fn start(&self, upstream: &str, dir: &Path, env: &[(&str, &str)]) -> Bin {
        match self.try_start(upstream, dir, env).await {
            Ok(bin) => bin,
            Err(e) => panic!("llmtap did not start (exit {:?}):\n{}", e.code, e.output),
        }
    }

    /// Starts llmtap, or reports how it ended when it exited (or was still
    /// not listening after 30 s) instead.
    pub async fn try_start(
        &self,
        upstream: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Bin, Exited> {
        let mut bin = self.spawn(upstream, dir, env);
        bin.listen().await?;
        Ok(bin)
    }
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
    let log = Arc::new(Mutex::new(Log::new(Keep::First(MAX_RUN_LINES))));
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
    let output = log.lock().unwrap().text();
    Exited { code, output }
}

/// Log lines kept by [`run_to_exit`].
const MAX_RUN_LINES: usize = 50_000;

/// A process's log lines, as many as its [`Keep`] allows.
struct Log {
    lines: VecDeque<String>,
    keep: Keep,
}

impl Log {
    fn new(keep: Keep) -> Log {
        Log {
            lines: VecDeque::new(),
            keep,
        }
    }

    fn push(&mut self, line: String) {
        match self.keep {
            Keep::First(n) if self.lines.len() >= n => {}
            Keep::Last(n) if self.lines.len() >= n => {
                self.lines.pop_front();
                self.lines.push_back(line);
            }
            _ => self.lines.push_back(line),
        }
    }

    fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

type Listening = Sender<(SocketAddr, SocketAddr)>;

/// Reads the child's stdout and stderr into `log`, reporting the addresses
/// of the "llmtap listening" line on `tx`.
fn collect(
    child: &mut Child,
    log: Arc<Mutex<Log>>,
    tx: Option<Listening>,
) -> Vec<std::thread::JoinHandle<()>> {
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    [(out, tx.clone()), (err, tx)]
        .into_iter()
        .map(|(stream, mut tx)| {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addrs) = tx.is_some().then(|| listening(&line)).flatten() {
                        let _ = tx.take().unwrap().send(addrs);
                    }
                    log.lock().unwrap().push(line);
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

/// A `/proc/PID/status` field (`VmRSS`, `VmHWM`) in bytes, if readable.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 20 ms until stopped; returns the maximum.
pub fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut max = 0;
        while !s.load(Relaxed) {
            if let Some(rss) = proc_status(pid, "VmRSS") {
                max = max.max(rss);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        max
    });
    (stop, handle)
}

/// A running llmtap process.
pub struct Bin {
    child: Child,
    /// The proxy's address (`0.0.0.0:0` until it listens).
    pub addr: SocketAddr,
    /// The admin listener's address (`0.0.0.0:0` until it listens).
    pub admin: SocketAddr,
    pub dir: PathBuf,
    /// Traces go to OTLP-JSON files under `dir/traces` (no MLflow URI set).
    pub traces_to_files: bool,
    log: Arc<Mutex<Log>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    listening: Receiver<(SocketAddr, SocketAddr)>,
}

impl Bin {
    /// Waits (30 s at most) for "llmtap listening" and takes its addresses;
    /// reports how the process ended if it exited (or was killed at the
    /// limit) instead.
    pub async fn listen(&mut self) -> Result<(), Exited> {
        let start = Instant::now();
        loop {
            if let Ok((addr, admin)) = self.listening.try_recv() {
                self.addr = addr;
                self.admin = admin;
                return Ok(());
            }
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || start.elapsed() > LIMIT {
                if exited.is_none() {
                    let _ = self.child.kill();
                }
                let status = self.child.wait().unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(Exited {
                    code: exited.and(status.code()),
                    output: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The proxy and admin addresses, once it listens; panics (with its
    /// log) if it exits or does not listen within 30 s.
    pub async fn addrs(&mut self) -> (SocketAddr, SocketAddr) {
        if let Err(e) = self.listen().await {
            panic!("llmtap did not listen (exit {:?}):\n{}", e.code, e.output);
        }
        (self.addr, self.admin)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
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
        proc_status(self.pid(), field)
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status of llmtap"))
    }

    /// Resident set size now.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS")
    }

    /// The highest resident set size the process has had.
    pub fn hwm(&self) -> u64 {
        self.status_bytes("VmHWM")
    }

    /// Open file descriptors (sockets included); 0 once /proc has none.
    pub fn fds(&self) -> usize {
        self.open_fds().unwrap_or(0)
    }

    /// Open file descriptors (sockets included), if /proc/PID/fd is readable.
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .ok()
    }

    /// CPU time used so far (user + system), in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("/proc/PID/stat of llmtap");
        let after_name = &stat[stat.rfind(')').expect("(comm)") + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix: no handler runs, nothing
    /// is flushed), then reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL llmtap");
        self.child.wait().expect("reap llmtap");
    }

    /// Waits (up to 30 s) for the process to end on its own, and for its
    /// last log line to be read.
    pub async fn exited(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let read = self.readers.iter().all(|r| r.is_finished());
                if read || start.elapsed() > LIMIT + Duration::from_secs(5) {
                    return status;
                }
            }
            assert!(
                start.elapsed() < LIMIT,
                "llmtap still running after 30 s:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait (30 s at most) for a clean exit.
    pub async fn stop(&mut self) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.exited().await;
        assert!(
            status.success(),
            "llmtap exited with {status}:\n{}",
            self.log_tail(40)
        );
    }

    /// Every log line kept.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().text()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.lines.len().saturating_sub(n);
        log.lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Log lines (JSON) whose message contains `text`.
    pub fn logged(&self, text: &str) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        log.lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    }

    /// Log lines at WARN or ERROR (and panics), for reports.
    pub fn complaints(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| {
                l.contains("\"level\":\"WARN\"")
                    || l.contains("\"level\":\"ERROR\"")
                    || l.contains("panicked")
            })
            .cloned()
            .collect()
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
