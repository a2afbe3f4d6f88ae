//! The file sink's settings: the directory and its rotation. The shortcut is
//! `LLMTAP_TRACE_DIR` and the `[file_sink]` table (the embedded default when
//! no other sink is configured); a `[[sinks]]` entry of `kind = "file"` has
//! the same keys.

use std::path::PathBuf;

use crate::config::layers::{unknown_keys, Env, Layers};
use crate::config::limits::{bytes_max, count_max, GIB};

#[derive(Debug, Clone, PartialEq)]
pub struct FileSinkConfig {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub max_files: usize,
}

/// Keys of a `[[sinks]]` entry of this kind.
pub const TABLE_KEYS: &[&str] = &["dir", "max_file_bytes", "max_files"];

/// The shortcut: `LLMTAP_TRACE_DIR` / `[file_sink]`, defaults otherwise.
/// Always set: the registry uses it only as the fallback, or when
/// `LLMTAP_SINKS` names `file`.
pub fn shortcut(l: &mut Layers<'_>) -> Option<FileSinkConfig> {
    Some(read(l, "file_sink", &["LLMTAP_TRACE_DIR"]))
}

/// A `[[sinks]]` entry of `kind = "file"`.
pub fn from_table(name: &str, t: &toml::Table, _env: &Env) -> Result<FileSinkConfig, Vec<String>> {
    let at = format!("sinks.{name}");
    let unknown = unknown_keys(&at, t, TABLE_KEYS);
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let empty = Env::new();
    let mut l = Layers::entry(&at, t, &empty);
    if !t.contains_key("dir") {
        return Err(vec![format!("{at}.dir: required for kind = \"file\"")]);
    }
    let cfg = read(&mut l, &at, &[]);
    match l.errors.is_empty() {
        true => Ok(cfg),
        false => Err(l.errors),
    }
}

fn read(l: &mut Layers<'_>, table: &str, dir_env: &[&str]) -> FileSinkConfig {
    FileSinkConfig {
        dir: l
            .string(None, dir_env, (table, "dir"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("llmtap-traces")),
        max_file_bytes: l.parsed(
            None,
            (table, "max_file_bytes"),
            64 << 20,
            bytes_max(16 * GIB),
        ),
        max_files: l.parsed(None, (table, "max_files"), 20, count_max(10_000)),
    }
}
