//! The layers a setting is looked up in — flag, environment, TOML file,
//! default — and the parsers of setting values (durations, sizes, counts,
//! URLs, CA files). A leaf: the config loader and each sink's own config
//! (`crate::sinks::*::config`) read their settings through it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A snapshot of the process environment (or a test's stand-in).
pub type Env = std::collections::HashMap<String, String>;

/// CA certificates trusted in addition to the system's and the webpki roots,
/// read from a PEM file at config load (none by default).
#[derive(Clone, Default, PartialEq)]
pub struct ExtraRoots {
    /// The PEM file they came from.
    pub path: Option<PathBuf>,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for ExtraRoots {
    // The path and a count: DER bytes say nothing in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            None => f.write_str("None"),
            Some(p) => write!(f, "{} ({} certificates)", p.display(), self.certs.len()),
        }
    }
}

/// Layered lookup of one setting: flag, then env, then file, then default.
pub struct Layers<'a> {
    pub env: &'a Env,
    pub file: toml::Table,
    pub errors: Vec<String>,
}

/// Runs one section's `resolve` over `env` and the TOML text `file`:
/// what it read and the errors it reported (the config modules' tests).
#[cfg(test)]
pub fn resolve_in<T>(
    env: &[(&str, &str)],
    file: &str,
    resolve: impl FnOnce(&mut Layers) -> T,
) -> (T, Vec<String>) {
    let env: Env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut l = Layers {
        env: &env,
        file: toml::from_str(file).expect("test TOML"),
        errors: vec![],
    };
    let out = resolve(&mut l);
    (out, l.errors)
}

impl<'a> Layers<'a> {
    /// The settings of one `[[sinks]]` entry: its table alone, read under
    /// `at` (`sinks.<name>`), with no environment (`empty`).
    pub fn entry(at: &str, t: &toml::Table, empty: &'a Env) -> Layers<'a> {
        let mut file = toml::Table::new();
        file.insert(at.to_string(), toml::Value::Table(t.clone()));
        Layers {
            env: empty,
            file,
            errors: vec![],
        }
    }

    pub fn file_value(&self, table: &str, key: &str) -> Option<&toml::Value> {
        self.file.get(table)?.as_table()?.get(key)
    }

    /// A string setting; file values must be strings.
    pub fn string(&mut self, flag: Option<&str>, env: &[&str], at: (&str, &str)) -> Option<String> {
        match flag {
            Some(v) => Some(v.to_string()),
            None => self.sourced(env, at).map(|(v, _)| v),
        }
    }

    /// A string setting without a flag, and where it came from: the
    /// variable's name or `table.key`.
    pub fn sourced(&mut self, env: &[&str], at: (&str, &str)) -> Option<(String, String)> {
        for name in env {
            if let Some(v) = self.env.get(*name).filter(|v| !v.is_empty()) {
                return Some((v.clone(), name.to_string()));
            }
        }
        match self.file_value(at.0, at.1) {
            Some(toml::Value::String(s)) => Some((s.clone(), format!("{}.{}", at.0, at.1))),
            Some(other) => {
                let msg = format!(
                    "{}.{}: expected a string, got {}",
                    at.0,
                    at.1,
                    other.type_str()
                );
                self.errors.push(msg);
                None
            }
            None => None,
        }
    }

    /// A setting parsed from text (env) or taken from the file (string or integer).
    pub fn parsed<T>(
        &mut self,
        env: Option<&str>,
        at: (&str, &str),
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        if let Some(name) = env {
            if let Some(v) = self.env.get(name).filter(|v| !v.is_empty()) {
                return match parse(v) {
                    Ok(t) => t,
                    Err(e) => {
                        self.errors.push(format!("{name}={v:?}: {e}"));
                        default
                    }
                };
            }
        }
        let text = match self.file_value(at.0, at.1) {
            None => return default,
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) => i.to_string(),
            Some(toml::Value::Boolean(b)) => b.to_string(),
            Some(toml::Value::Float(f)) => f.to_string(),
            Some(other) => {
                let msg = format!("{}.{}: unexpected {}", at.0, at.1, other.type_str());
                self.errors.push(msg);
                return default;
            }
        };
        match parse(&text) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(format!("{}.{}: {e}", at.0, at.1));
                default
            }
        }
    }

    /// A PEM file of CA certificates ([`load_roots`]); a bad one is reported
    /// under the variable or key that named it.
    pub fn roots(&mut self, env: &str, at: (&str, &str)) -> ExtraRoots {
        let Some((path, source)) = self.sourced(&[env], at) else {
            return ExtraRoots::default();
        };
        let path = PathBuf::from(path);
        match load_roots(&path) {
            Ok(certs) => ExtraRoots {
                path: Some(path),
                certs,
            },
            Err(e) => {
                self.errors.push(format!("{source}: {e}"));
                ExtraRoots::default()
            }
        }
    }
}

/// Reads the CA certificates of a PEM file; other PEM sections (keys, CRLs)
/// are skipped. A file that cannot be read, holds no certificate, or holds
/// one rustls cannot use as a trust anchor is an error naming the path.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in it"));
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| format!("{shown}: certificate {} is not a usable CA ({e})", i + 1))?;
    }
    Ok(certs)
}

/// Parses a duration such as `250ms`, `10s`, `5m`, `1h`; `0`/`none`/`off` mean "no limit".
pub fn parse_duration_opt(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if matches!(s, "0" | "none" | "off" | "") {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration (try 10s, 500ms, 5m): {s:?}"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown duration unit {u:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_opt(s)?.ok_or_else(|| "must be greater than zero".to_string())
}

/// Parses a byte size: `1048576`, `512KiB`, `10MiB`, `1GiB`, `1TiB` (also
/// KB/MB/GB/TB as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a size (try 10MiB): {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_string())
}

pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("not a positive integer: {s:?}")),
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("not a boolean: {s:?}")),
    }
}

pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("not a socket address (like 127.0.0.1:8788): {s:?}"))
}

/// Parses an upstream base URL: http(s) with an authority, no query, no
/// userinfo. Messages show the URL only through [`crate::redact::url`].
pub fn parse_base_url(s: &str) -> Result<Uri, String> {
    if crate::redact::has_userinfo(s) {
        return Err(format!(
            "a URL with credentials (user:password@) is not supported: put the credential in the agent's Authorization header ({})",
            crate::redact::url(s)
        ));
    }
    let uri = parse_http_url(s)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("a URL with credentials (user:password@) is not supported".into());
    }
    Ok(uri)
}

/// An http(s) URL with an authority and no query; userinfo is left to the caller.
pub fn parse_http_url(s: &str) -> Result<Uri, String> {
    let shown = crate::redact::url(s);
    let uri: Uri = s
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("not a URL: {shown} ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL must start with http:// or https://: {shown}")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL has no host: {shown}"));
    }
    if uri.query().is_some() {
        return Err(format!("must not have a query (not shown): {shown}"));
    }
    Ok(uri)
}

/// Keys of a sink's `[[sinks]]` table (`at`: how errors name it) that are
/// not in `known`; `kind`, `name` and the delivery keys every entry has are
/// taken out before a kind reads its table.
pub fn unknown_keys(at: &str, t: &toml::Table, known: &[&str]) -> Vec<String> {
    t.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{at}.{k}: unknown key"))
        .collect()
}

/// A sink kind's environment shortcut read by a pure `from_env`: its
/// errors join the others.
pub fn env_shortcut<T>(
    l: &mut Layers<'_>,
    from_env: impl FnOnce(&Env) -> Result<Option<T>, Vec<String>>,
) -> Option<T> {
    match from_env(l.env) {
        Ok(t) => t,
        Err(errors) => {
            l.errors.extend(errors);
            None
        }
    }
}
