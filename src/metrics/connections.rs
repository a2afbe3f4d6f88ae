//! Client connection metrics of the two listeners, rendered as
//! `llmtap_connections_*{listener="proxy"|"admin"}`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Why llmtap closed a client connection on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The request head did not arrive in `server.header_read_timeout`.
    HeaderRead,
    /// Idle between requests for `server.keepalive_timeout`.
    KeepAlive,
    /// A write to the client made no progress for `server.client_write_timeout`.
    ClientWrite,
}

impl Timeout {
    const ALL: [Timeout; 3] = [
        Timeout::HeaderRead,
        Timeout::KeepAlive,
        Timeout::ClientWrite,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Timeout::HeaderRead => "header_read",
            Timeout::KeepAlive => "keepalive",
            Timeout::ClientWrite => "client_write",
        }
    }
}

/// The counters of one listener.
#[derive(Debug, Default)]
pub struct Listener {
    open: AtomicI64,
    limit: AtomicU64,
    accepted: AtomicU64,
    at_limit: AtomicU64,
    accept_errors: AtomicU64,
    timed_out: [AtomicU64; 3],
}

impl Listener {
    /// The listener's connection limit, shown as a gauge.
    pub fn set_limit(&self, n: usize) {
        self.limit.store(n as u64, Relaxed);
    }

    /// A connection accepted (it counts as open until [`Listener::closed`]).
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The listener reached its limit and stopped accepting.
    pub fn at_limit(&self) {
        self.at_limit.fetch_add(1, Relaxed);
    }

    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    pub fn timed_out(&self, why: Timeout) {
        self.timed_out[why as usize].fetch_add(1, Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.load(Relaxed).max(0)
    }

    /// Connections closed for `why` so far.
    pub fn timed_out_count(&self, why: Timeout) -> u64 {
        self.timed_out[why as usize].load(Relaxed)
    }

    /// Times the listener reached its limit so far.
    pub fn at_limit_count(&self) -> u64 {
        self.at_limit.load(Relaxed)
    }

    /// Failed accepts so far.
    pub fn accept_error_count(&self) -> u64 {
        self.accept_errors.load(Relaxed)
    }
}

/// Both listeners.
#[derive(Debug, Default)]
pub struct Connections {
    pub proxy: Listener,
    pub admin: Listener,
}

impl Connections {
    pub fn render(&self, out: &mut String) {
        let both = [("proxy", &self.proxy), ("admin", &self.admin)];
        type Get = fn(&Listener) -> i64;
        let rows: [(&str, &str, &str, Get); 5] = [
            ("llmtap_connections_open", "gauge", "Client connections open.", |l| l.open()),
            ("llmtap_connections_max", "gauge", "The listener's connection limit.", |l| {
                l.limit.load(Relaxed) as i64
            }),
            ("llmtap_connections_accepted_total", "counter", "Client connections accepted.", |l| {
                l.accepted.load(Relaxed) as i64
            }),
            (
                "llmtap_connections_at_limit_total",
                "counter",
                "Times the listener reached its connection limit and stopped accepting; new connections waited in the kernel backlog.",
                |l| l.at_limit.load(Relaxed) as i64,
            ),
            (
                "llmtap_connections_accept_errors_total",
                "counter",
                "Failed accepts (EMFILE, ENFILE, ENOBUFS...), each followed by a backoff.",
                |l| l.accept_errors.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (label, l) in both {
                let _ = writeln!(out, "{name}{{listener=\"{label}\"}} {}", get(l));
            }
        }
        let name = "llmtap_connections_timed_out_total";
        let _ = writeln!(
            out,
            "# HELP {name} Client connections closed by a timeout, by reason.\n# TYPE {name} counter"
        );
        for (label, l) in both {
            for why in Timeout::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{label}\",reason=\"{}\"}} {}",
                    why.label(),
                    l.timed_out_count(why)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_listener_and_reason() {
        let c = Connections::default();
        c.proxy.set_limit(4096);
        c.proxy.accepted();
        c.proxy.accepted();
        c.proxy.closed();
        c.admin.at_limit();
        c.admin.accept_error();
        c.proxy.timed_out(Timeout::ClientWrite);
        let mut out = String::new();
        c.render(&mut out);
        for line in [
            "llmtap_connections_open{listener=\"proxy\"} 1",
            "llmtap_connections_max{listener=\"proxy\"} 4096",
            "llmtap_connections_accepted_total{listener=\"proxy\"} 2",
            "llmtap_connections_at_limit_total{listener=\"admin\"} 1",
            "llmtap_connections_accept_errors_total{listener=\"admin\"} 1",
            "llmtap_connections_timed_out_total{listener=\"proxy\",reason=\"client_write\"} 1",
            "llmtap_connections_timed_out_total{listener=\"admin\",reason=\"header_read\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
