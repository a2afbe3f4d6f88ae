//! The process's open-file limit. Every client connection holds a
//! descriptor, and a proxied call a second one upstream: the soft limit is
//! raised to the hard one at start, and a warning says when the connection
//! limits could still exhaust it.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::config::ConnectionSettings;

/// Descriptors kept for everything but client connections and their
/// upstream sockets: listeners, journal, spool, trace files, the sink.
const RESERVE: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// now in force (`None`: unlimited or unknown).
pub fn raise() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

/// Descriptors the connection limits may need at once.
pub fn needed(c: &ConnectionSettings) -> u64 {
    2 * c.max_connections as u64 + c.admin_max_connections as u64 + RESERVE
}

/// A warning when `soft` is below what the connection limits may need.
pub fn shortfall(soft: Option<u64>, c: &ConnectionSettings) -> Option<String> {
    let soft = soft?;
    let needed = needed(c);
    (soft < needed).then(|| {
        format!(
            "the open-file limit ({soft}) is below what server.max_connections ({}) and \
             server.admin_max_connections ({}) may need ({needed}: a descriptor per client \
             connection and per upstream connection, plus {RESERVE}); raise `ulimit -n` or \
             lower max_connections — past it accepts fail and back off",
            c.max_connections, c.admin_max_connections
        )
    })
}

/// Raises the limit and warns when the connection limits exceed it.
pub fn prepare(c: &ConnectionSettings) {
    let soft = raise();
    match shortfall(soft, c) {
        Some(warning) => tracing::warn!("{warning}"),
        None => tracing::debug!(open_file_limit = ?soft, "open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_limits_exceed_the_descriptors() {
        let c = ConnectionSettings::default();
        assert_eq!(needed(&c), 2 * 1024 + 64 + 128);
        assert!(shortfall(Some(1_048_576), &c).is_none());
        assert!(shortfall(None, &c).is_none());
        let w = shortfall(Some(1024), &c).expect("1024 descriptors are too few");
        assert!(
            w.contains("(1024)") && w.contains("server.max_connections"),
            "{w}"
        );
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = raise();
        assert_eq!(soft, getrlimit(Resource::Nofile).maximum);
    }
}
