//! Test support: a cached Python venv with pinned packages, built once per
//! machine and shared by the test processes that need it (the MLflow and
//! Arize Phoenix end-to-end tests each have their own, see [`Spec`]).
//!
//! Include it from a support module with `#[path = "venv.rs"] mod venv;`.
//!
//! - **Where**: `$<spec.env_var>` if set, else `$HOME/.cache/llmtap/<spec.dir_name>-<tag>`,
//!   `<tag>` a hash of the package list (a changed list gets a fresh venv).
//! - **Built atomically**: if the completion marker is missing, the venv is
//!   built in a temporary sibling directory (`python3 -m venv`, then
//!   `pip install <spec.packages>`), the marker is written, the console
//!   scripts are pointed at the final path, and the directory is renamed into
//!   place; a process that loses that race uses the winner's venv. Stale
//!   temporary siblings (over two hours old) are removed.
//! - **Never skipped silently**: a missing or old `python3`, a failed
//!   `python3 -m venv` or `pip install` is a panic with the reason.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File whose presence marks a fully installed venv.
pub const VENV_MARKER: &str = ".llmtap-venv-complete";

/// One venv: what it is for, where it lives, what it holds.
pub struct Spec {
    /// For messages: "MLflow", "Arize Phoenix".
    pub what: &'static str,
    /// The progress-line tag: `[llmtap-test <tag>]`.
    pub tag: &'static str,
    /// The env var that overrides the location.
    pub env_var: &'static str,
    /// The directory name under `$HOME/.cache/llmtap/`.
    pub dir_name: &'static str,
    /// `pip install` arguments.
    pub packages: &'static [&'static str],
    /// How long an install takes on a cold machine, for the progress line.
    pub expected: &'static str,
}

impl Spec {
    /// `$<env_var>`, else `$HOME/.cache/llmtap/<dir_name>`.
    pub fn dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os(self.env_var).filter(|v| !v.is_empty()) {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "neither {} nor HOME is set: no place for the {} test venv",
                    self.env_var, self.what
                )
            });
        PathBuf::from(home).join(".cache/llmtap").join(format!(
            "{}-{}",
            self.dir_name,
            self.packages_tag()
        ))
    }

    /// FNV-1a (32 bit) of the package list, as 8 hex digits: a venv built
    /// from another list is never mistaken for this one.
    fn packages_tag(&self) -> String {
        let mut h: u32 = 0x811c_9dc5;
        for b in self.packages.join(" ").bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    /// The venv's python, installing the venv first if needed (blocking).
    pub fn ensure(&self) -> PathBuf {
        let dir = self.dir();
        if !dir.join(VENV_MARKER).is_file() {
            install(self, &dir);
        }
        python(&dir)
    }

    /// Installs the venv into `dir` (which must not hold a complete one).
    pub fn install(&self, dir: &Path) {
        install(self, dir)
    }
}

/// Progress output that shows even when libtest captures test output.
fn stderr_line(spec: &Spec, line: &str) {
    let _ = writeln!(std::io::stderr(), "[llmtap-test {}] {line}", spec.tag);
}

pub fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

fn install(spec: &Spec, dir: &Path) {
    check_system_python(spec);
    let parent = dir
        .parent()
        .unwrap_or_else(|| panic!("venv dir {} has no parent", dir.display()));
    fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    let name = dir
        .file_name()
        .unwrap_or_else(|| panic!("venv dir {} has no file name", dir.display()))
        .to_string_lossy()
        .into_owned();
    remove_stale_tmp_dirs(parent, &name);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));

    let started = Instant::now();
    stderr_line(
        spec,
        &format!(
            "installing the {} test venv into {} (pip install {}; {})",
            spec.what,
            dir.display(),
            spec.packages.join(" "),
            spec.expected
        ),
    );

    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running python3 -m venv failed: {e}"));
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        panic!(
            "python3 -m venv {} failed ({}); the {} end-to-end tests need Python 3.9+ with \
             venv (apt-get install python3 python3-venv):\n{}{}",
            tmp.display(),
            out.status,
            spec.what,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let tmp_python = python(&tmp);
    let mut pip = Command::new(&tmp_python);
    pip.args(["-m", "pip", "install", "--progress-bar", "off"])
        .args(spec.packages)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    let (ok, status, tail) = run_streaming(spec, pip, "pip");
    if !ok {
        let _ = fs::remove_dir_all(&tmp);
        panic!(
            "pip install {} failed ({status}); last output:\n{tail}",
            spec.packages.join(" ")
        );
    }

    // Console scripts (`bin/mlflow`, `bin/pip`, ...) carry the absolute path of
    // the interpreter in their shebang: point them at the final location
    // before the move, so they work once the directory is renamed.
    relocate_bin_scripts(&tmp, dir);
    fs::write(
        tmp.join(VENV_MARKER),
        format!("{}\n", spec.packages.join(" ")),
    )
    .unwrap_or_else(|e| panic!("cannot write the venv marker in {}: {e}", tmp.display()));

    match fs::rename(&tmp, dir) {
        Ok(()) => {}
        Err(_) if dir.join(VENV_MARKER).is_file() => {
            // Another process finished first: use theirs.
            stderr_line(spec, "another process installed the venv first; using it");
            let _ = fs::remove_dir_all(&tmp);
            return;
        }
        Err(e) if dir.exists() => {
            let _ = fs::remove_dir_all(&tmp);
            panic!(
                "{} exists but is not a complete llmtap test venv (no {VENV_MARKER}); \
                 remove it and rerun ({e})",
                dir.display()
            );
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            panic!(
                "cannot move the venv from {} to {}: {e}",
                tmp.display(),
                dir.display()
            );
        }
    }
    stderr_line(
        spec,
        &format!(
            "{} test venv ready in {:.0}s",
            spec.what,
            started.elapsed().as_secs_f64()
        ),
    );
}

fn check_system_python(spec: &Spec) {
    let out = match Command::new("python3")
        .args([
            "-c",
            "import sys, venv; print('%d.%d' % sys.version_info[:2])",
        ])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 not found: the {} end-to-end tests need Python 3.9+ with venv \
             (apt-get install python3 python3-venv)",
            spec.what
        ),
        Err(e) => panic!(
            "cannot run python3 ({e}): the {} end-to-end tests need Python 3.9+ with venv",
            spec.what
        ),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let parsed: Option<(u32, u32)> = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some(v) if out.status.success() && v >= (3, 9) => {}
        _ => panic!(
            "python3 is unusable (version {version:?}, {}): the {} end-to-end tests need \
             Python 3.9+ with venv (apt-get install python3 python3-venv)\n{}",
            out.status,
            spec.what,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Removes `.<name>.tmp-*` siblings left by interrupted installs (older than
/// two hours, so a concurrent install is never touched).
fn remove_stale_tmp_dirs(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(2 * 3600));
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Rewrites occurrences of `from`'s path in the text files of `from/bin`
/// (shebangs, activate scripts) to `to`'s path.
fn relocate_bin_scripts(from: &Path, to: &Path) {
    let from_s = from.to_string_lossy().into_owned();
    let to_s = to.to_string_lossy().into_owned();
    let bin = from.join("bin");
    let entries =
        fs::read_dir(&bin).unwrap_or_else(|e| panic!("cannot list {}: {e}", bin.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        }; // binary
        if text.contains(&from_s) {
            fs::write(&path, text.replace(&from_s, &to_s))
                .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
        }
    }
}

/// Runs `cmd`, echoing each output line to stderr as `[label] ...`; returns
/// (success, status text, last 40 lines).
pub fn run_streaming(spec: &Spec, mut cmd: Command, label: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|stream| {
        let tail = Arc::clone(&tail);
        let label = label.to_string();
        let tag = spec.tag;
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "[llmtap-test {tag}] [{label}] {line}");
                let mut tail = tail.lock().unwrap();
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
    })
    .collect();
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {label}: {e}"));
    for reader in readers {
        let _ = reader.join();
    }
    let tail = tail
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    (status.success(), status.to_string(), tail)
}
