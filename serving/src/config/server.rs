//! `[server]`: the REST endpoint; `[auth]`: who may write and administer.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Report};

/// `[server]`: the REST API (queries, ingest, admin, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address the REST API listens on, `IP:PORT` (`[::1]:8080` for IPv6).
    /// Default `127.0.0.1:8080`.
    pub listen: String,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    /// Default 16777216 (16 MiB); 1..=1073741824.
    pub max_body_bytes: u64,
    /// Requests served at once; further requests are answered 503
    /// `overloaded` at once (retry shortly) rather than queued.
    /// Default 256; 1..=65536.
    pub max_concurrent_requests: usize,
    /// How long a graceful shutdown waits for requests in flight, in
    /// milliseconds, before they are cut off. Default 10000; 0..=3600000.
    pub shutdown_timeout_ms: u64,
    /// How long a request may take to arrive, in milliseconds: its line
    /// and headers from their first byte (the connection is closed
    /// otherwise), and its body from when the server starts reading it (408
    /// `request_timeout` otherwise), so a stalled client cannot hold a
    /// request open for ever. Default 30000; 1..=3600000.
    pub request_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_concurrent_requests: 256,
            shutdown_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

impl ServerConfig {
    /// The address to bind.
    ///
    /// # Errors
    ///
    /// `server.listen` is not an `IP:PORT` address (never for a validated
    /// config).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr("server.listen", &self.listen)
    }

    /// [`shutdown_timeout_ms`](Self::shutdown_timeout_ms) as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// [`request_timeout_ms`](Self::request_timeout_ms) as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(super) fn validate(&self, report: &mut Report) {
        if let Err(e) = self.listen_addr() {
            report.errors.push(e);
        }
        report.range("server.max_body_bytes", self.max_body_bytes, 1..=1 << 30);
        report.range(
            "server.max_concurrent_requests",
            self.max_concurrent_requests,
            1..=65_536,
        );
        report.range(
            "server.shutdown_timeout_ms",
            self.shutdown_timeout_ms,
            0..=3_600_000,
        );
        report.range(
            "server.request_timeout_ms",
            self.request_timeout_ms,
            1..=3_600_000,
        );
    }
}

/// Parses a listen address, naming `key` when it is not one.
pub(super) fn parse_socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!(
                "{text:?} is not a socket address (expected IP:PORT, like 127.0.0.1:8080 or [::1]:8080)"
            ),
        )
    })
}

/// Largest token file read; a token is a few dozen bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// `[auth]`: when a token is set, write and admin endpoints (ingest, batch
/// runs) need `Authorization: Bearer <token>`; reads stay open.
///
/// `Debug` never shows the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// The bearer token itself: printable ASCII, no spaces. Default: none
    /// (no authentication). At most one of `token` and `token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace and the trailing
    /// newline are ignored), read at startup; relative to the working
    /// directory. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl AuthConfig {
    /// The token requests must carry, reading `token_file` if that is how
    /// it is given; `None` when authentication is off.
    ///
    /// # Errors
    ///
    /// Both keys set, the file unreadable, or the token empty or not
    /// printable ASCII. Messages never contain the token.
    pub fn bearer_token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.token, &self.token_file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(both_set()),
            (Some(token), None) => {
                check_token("auth.token", token)?;
                Ok(Some(token.clone()))
            }
            (None, Some(path)) => {
                let key = "auth.token_file";
                let cannot_read = |e: &dyn fmt::Display| {
                    ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
                };
                let mut text = String::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_string(&mut text))
                    .map_err(|e| cannot_read(&e))?;
                if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
                    return Err(cannot_read(&format_args!(
                        "larger than {MAX_TOKEN_FILE_BYTES} bytes"
                    )));
                }
                let token = text.trim();
                check_token(key, token)?;
                Ok(Some(token.to_owned()))
            }
        }
    }

    pub(super) fn validate(&self, report: &mut Report) {
        if self.token.is_some() && self.token_file.is_some() {
            report.errors.push(both_set());
        }
        if let Some(token) = &self.token
            && let Err(e) = check_token("auth.token", token)
        {
            report.errors.push(e);
        }
        if self
            .token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            report.push("auth.token_file", "is empty (expected a file path)");
        }
    }
}

fn both_set() -> ConfigError {
    ConfigError::new(
        "auth.token_file",
        "cannot be combined with auth.token; set exactly one of them",
    )
}

/// A token must survive an HTTP header unchanged.
fn check_token(key: &str, token: &str) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(ConfigError::new(key, "the token is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            key,
            "the token must be printable ASCII without spaces (it is sent as `Authorization: Bearer <token>`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_read_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("lamina-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret-T0ken\n").unwrap();
        let auth = AuthConfig {
            token: None,
            token_file: Some(file.clone()),
        };
        assert_eq!(
            auth.bearer_token().unwrap().as_deref(),
            Some("s3cret-T0ken")
        );

        std::fs::write(&file, "  \n").unwrap();
        let err = auth.bearer_token().unwrap_err();
        assert_eq!(err.key, "auth.token_file");
        assert!(err.message.contains("empty"), "{err}");

        std::fs::remove_file(&file).unwrap();
        let err = auth.bearer_token().unwrap_err();
        assert!(err.message.starts_with("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(AuthConfig::default().bearer_token().unwrap(), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let auth = AuthConfig {
            token: Some("hunter2".into()),
            token_file: None,
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
        let err = AuthConfig {
            token: Some("two words".into()),
            token_file: None,
        }
        .bearer_token()
        .unwrap_err();
        assert!(!err.to_string().contains("two words"), "{err}");
    }
}
