//! `[[stream.receiver]]`: the push and pull sources feeding a stream.
//!
//! Every receiver type has its own `*Config` struct and one variant in
//! [`ReceiverConfig`]; adding a receiver means adding both here, plus its
//! line in [`ReceiverConfig::unknown_keys`] and
//! [`ReceiverConfig::refine_type_error`].

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Report};
use super::parse::Document;
use super::server::parse_socket_addr;

/// One receiver, chosen by its `type` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReceiverConfig {
    /// `type = "tcp_listen"`: newline-delimited records on a listening
    /// socket, each line acknowledged once it is in the write-ahead log.
    TcpListen(TcpListenConfig),
    /// `type = "tcp_connect"`: newline-delimited records read from a
    /// socket this server connects to (and reconnects to when it drops).
    TcpConnect(TcpConnectConfig),
}

/// `type = "tcp_listen"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpListenConfig {
    /// Address to listen on, `IP:PORT`. Required.
    pub listen: String,
    /// Connections served at once. Default 1024; 1..=65536. At the limit a
    /// new connection takes the place of the longest-idle one (idle for at
    /// least a second); only when none is idle is it refused (closed at
    /// once, counted in `lamina_receiver_connections_refused_total`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed, in
    /// milliseconds. Default 300000 (5 minutes: a producer sending every
    /// minute or so keeps its connection); 1..=86400000. Complete lines
    /// are never lost by the close; an unfinished last line (no newline
    /// yet) is dropped, as on shutdown.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_max_connections() -> usize {
    1024
}

fn default_idle_timeout_ms() -> u64 {
    300_000
}

/// `type = "tcp_connect"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpConnectConfig {
    /// Peer to connect to, `HOST:PORT` (a name is resolved on every
    /// connect). Required.
    pub address: String,
    /// First wait before reconnecting after a failure, in milliseconds;
    /// doubled on every further failure. Default 100; 1..=3600000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnect attempts, in milliseconds.
    /// Default 10000; reconnect_min_ms..=3600000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_reconnect_min_ms() -> u64 {
    100
}

fn default_reconnect_max_ms() -> u64 {
    10_000
}

const MAX_RECONNECT_MS: u64 = 3_600_000;

impl ReceiverConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReceiverConfig::TcpListen(_) => "tcp_listen",
            ReceiverConfig::TcpConnect(_) => "tcp_connect",
        }
    }

    /// Keys of this receiver's table (at `key`) that its type does not
    /// have. Serde reads internally tagged enums through a buffer that
    /// hides unknown keys, so each type's table is checked on its own.
    pub(super) fn unknown_keys(&self, doc: &Document<'_>, key: &str) -> Vec<ConfigError> {
        match self {
            ReceiverConfig::TcpListen(_) => doc.unknown_keys_in::<TcpListenConfig>(key, "type"),
            ReceiverConfig::TcpConnect(_) => doc.unknown_keys_in::<TcpConnectConfig>(key, "type"),
        }
    }

    /// Serde reports a bad value inside a receiver table at the table
    /// (the buffer of the tagged enum has no spans); reading the table
    /// (at `key`) again as its type names the key itself.
    pub(super) fn refine_type_error(doc: &Document<'_>, key: &str) -> Option<ConfigError> {
        match doc.str_at(&format!("{key}.type"))? {
            "tcp_listen" => doc.type_error_in::<TcpListenConfig>(key, "type"),
            "tcp_connect" => doc.type_error_in::<TcpConnectConfig>(key, "type"),
            _ => None,
        }
    }

    pub(super) fn validate(&self, key: &str, report: &mut Report) {
        match self {
            ReceiverConfig::TcpListen(c) => {
                if let Err(e) = parse_socket_addr(&format!("{key}.listen"), &c.listen) {
                    report.errors.push(e);
                }
                report.range(
                    &format!("{key}.max_connections"),
                    c.max_connections,
                    1..=65_536,
                );
                report.range(
                    &format!("{key}.idle_timeout_ms"),
                    c.idle_timeout_ms,
                    1..=86_400_000,
                );
            }
            ReceiverConfig::TcpConnect(c) => {
                if !is_host_port(&c.address) {
                    report.push(
                        format!("{key}.address"),
                        format!(
                            "{:?} is not a HOST:PORT address (like kafka-1:9092, 10.0.0.5:7000 or [::1]:7000)",
                            c.address
                        ),
                    );
                }
                report.range(
                    &format!("{key}.reconnect_min_ms"),
                    c.reconnect_min_ms,
                    1..=MAX_RECONNECT_MS,
                );
                if c.reconnect_max_ms < c.reconnect_min_ms || c.reconnect_max_ms > MAX_RECONNECT_MS
                {
                    report.push(
                        format!("{key}.reconnect_max_ms"),
                        format!(
                            "{} is out of range ({}..={MAX_RECONNECT_MS}: at least reconnect_min_ms)",
                            c.reconnect_max_ms, c.reconnect_min_ms
                        ),
                    );
                }
            }
        }
    }
}

/// `HOST:PORT` with a non-zero port; IPv6 hosts in brackets.
fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_addresses() {
        for ok in [
            "localhost:9092",
            "10.0.0.5:7000",
            "[::1]:7000",
            "kafka-1.internal:1",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "localhost",
            ":9092",
            "host:0",
            "host:65536",
            "::1:7000",
            "a b:1",
            "[x]:1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
