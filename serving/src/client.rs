//! A small blocking HTTP/1.1 client for the command-line subcommands
//! (`lamina query`, `top`, `ingest`, `batch run`, `status`) and the
//! end-to-end tests: one request per connection, `Content-Length` or
//! chunked responses, bounded response size, timeouts on every socket
//! operation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Headers, names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
    }
}

/// A server address parsed from `http://host:port`.
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of `url` (`http://HOST:PORT`; `https` is not supported).
    ///
    /// # Errors
    ///
    /// A message for a URL of another form.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("server URL `{url}` must start with http://"))?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("server URL `{url}` must be http://HOST:PORT"));
        }
        Ok(Client {
            host: host.to_owned(),
            token,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sets the timeout of every connect, read and write.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET path`.
    ///
    /// # Errors
    ///
    /// A message naming the server when it cannot be reached or answers
    /// malformed HTTP.
    pub fn get(&self, path: &str) -> Result<Response, String> {
        self.request("GET", path, &[], &[])
    }

    /// `POST path` with a body and extra headers.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        self.request("POST", path, body, headers)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let fail = |e: std::io::Error| format!("{method} http://{}{path}: {e}", self.host);
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", self.host))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| {
            format!(
                "cannot reach the server at http://{} ({e}); is `lamina serve` running?",
                self.host
            )
        })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(fail)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(fail)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        // A server may answer before it has read the whole body (413 for a
        // body over its limit) and close the connection: keep the write
        // error and still read the answer.
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        match (reader.read_line(&mut status_line), written) {
            (Ok(n), _) if n > 0 => {}
            (_, Err(e)) => return Err(fail(e)),
            (Err(e), Ok(())) => return Err(fail(e)),
            (Ok(_), Ok(())) => {
                return Err(format!(
                    "{method} http://{}{path}: connection closed without an answer",
                    self.host
                ));
            }
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "malformed HTTP status line from {}: {status_line:?}",
                    self.host
                )
            })?;
        let mut length = None;
        let mut chunked = false;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(fail)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
                headers.push((k, v.to_owned()));
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).map_err(fail)?;
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| format!("malformed chunk size {size:?}"))?;
                if n == 0 {
                    break;
                }
                if body.len() + n > MAX_RESPONSE_BYTES {
                    return Err("response too large".into());
                }
                let start = body.len();
                body.resize(start + n, 0);
                reader.read_exact(&mut body[start..]).map_err(fail)?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf).map_err(fail)?;
            }
        } else if let Some(n) = length {
            if n > MAX_RESPONSE_BYTES {
                return Err("response too large".into());
            }
            body.resize(n, 0);
            reader.read_exact(&mut body).map_err(fail)?;
        } else {
            reader
                .take(MAX_RESPONSE_BYTES as u64)
                .read_to_end(&mut body)
                .map_err(fail)?;
        }
        Ok(Response {
            status,
            body,
            headers,
        })
    }
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
