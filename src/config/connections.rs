//! `[server]` limits on client connections: how many each listener holds, and
//! how long a client may take to send a request head, sit idle between
//! requests, or leave a response unread.

use std::time::Duration;

use super::{count_max, duration_max, Layers, HOUR};

/// Limits and timeouts of the proxy and admin listeners' client connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    /// Open connections on the proxy listener; at the limit llmtap stops
    /// accepting and new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// The same for the admin listener.
    pub admin_max_connections: usize,
    /// From a connection's accept (or the first byte of a later request) to
    /// its complete request head.
    pub header_read_timeout: Duration,
    /// Longest silence between two requests on a kept-alive connection (and
    /// on an HTTP/2 connection with no stream open).
    pub keepalive_timeout: Duration,
    /// Longest a write to the client may make no progress (a client that
    /// stopped reading); the connection is then closed.
    pub client_write_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_connections: 1024,
            admin_max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            client_write_timeout: Duration::from_secs(60),
        }
    }
}

/// Highest accepted connection limit: far above any fd limit in use.
const MAX_CONNECTIONS: usize = 1_000_000;
/// Highest accepted timeout: a longer one is the same as none. "none" is
/// refused: these are the only bounds on a hostile client.
const MAX_TIMEOUT: Duration = HOUR;

/// Reads the five settings (env over file over default).
pub(super) fn resolve(l: &mut Layers<'_>) -> ConnectionSettings {
    let d = ConnectionSettings::default();
    ConnectionSettings {
        max_connections: l.parsed(
            Some("LLMTAP_MAX_CONNECTIONS"),
            ("server", "max_connections"),
            d.max_connections,
            count_max(MAX_CONNECTIONS),
        ),
        admin_max_connections: l.parsed(
            Some("LLMTAP_ADMIN_MAX_CONNECTIONS"),
            ("server", "admin_max_connections"),
            d.admin_max_connections,
            count_max(MAX_CONNECTIONS),
        ),
        header_read_timeout: l.parsed(
            Some("LLMTAP_HEADER_READ_TIMEOUT"),
            ("server", "header_read_timeout"),
            d.header_read_timeout,
            duration_max(MAX_TIMEOUT),
        ),
        keepalive_timeout: l.parsed(
            Some("LLMTAP_KEEPALIVE_TIMEOUT"),
            ("server", "keepalive_timeout"),
            d.keepalive_timeout,
            duration_max(MAX_TIMEOUT),
        ),
        client_write_timeout: l.parsed(
            Some("LLMTAP_CLIENT_WRITE_TIMEOUT"),
            ("server", "client_write_timeout"),
            d.client_write_timeout,
            duration_max(MAX_TIMEOUT),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::super::{resolve, Env, Flags};
    use super::*;

    #[test]
    fn defaults_are_bounded() {
        let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
        assert_eq!(c.connections, ConnectionSettings::default());
        assert_eq!(c.connections.max_connections, 1024);
        assert_eq!(c.connections.admin_max_connections, 64);
    }

    #[test]
    fn env_beats_file() {
        let file = "[server]\nmax_connections = 10\nheader_read_timeout = \"3s\"\nkeepalive_timeout = \"20s\"\n";
        let e = env(&[
            ("LLMTAP_MAX_CONNECTIONS", "20"),
            ("LLMTAP_ADMIN_MAX_CONNECTIONS", "5"),
            ("LLMTAP_CLIENT_WRITE_TIMEOUT", "500ms"),
        ]);
        let c = resolve(&Flags::default(), &e, Some(file))
            .unwrap()
            .connections;
        assert_eq!(c.max_connections, 20);
        assert_eq!(c.admin_max_connections, 5);
        assert_eq!(c.header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(20));
        assert_eq!(c.client_write_timeout, Duration::from_millis(500));
    }

    #[test]
    fn every_bad_value_is_named() {
        let e = env(&[
            ("LLMTAP_MAX_CONNECTIONS", "0"),
            ("LLMTAP_ADMIN_MAX_CONNECTIONS", "2000000"),
            ("LLMTAP_HEADER_READ_TIMEOUT", "none"),
            ("LLMTAP_KEEPALIVE_TIMEOUT", "2h"),
            ("LLMTAP_CLIENT_WRITE_TIMEOUT", "soon"),
        ]);
        let err = resolve(&Flags::default(), &e, None).unwrap_err().0;
        for name in [
            "LLMTAP_MAX_CONNECTIONS",
            "LLMTAP_ADMIN_MAX_CONNECTIONS",
            "LLMTAP_HEADER_READ_TIMEOUT",
            "LLMTAP_KEEPALIVE_TIMEOUT",
            "LLMTAP_CLIENT_WRITE_TIMEOUT",
        ] {
            assert!(err.iter().any(|m| m.starts_with(name)), "{name}: {err:?}");
        }
        let file = "[server]\nadmin_max_connections = -1\n";
        let err = resolve(&Flags::default(), &Env::new(), Some(file))
            .unwrap_err()
            .0;
        assert!(
            err.iter()
                .any(|m| m.starts_with("server.admin_max_connections")),
            "{err:?}"
        );
    }
}
