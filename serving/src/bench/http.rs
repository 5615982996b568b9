//! A keep-alive HTTP/1.1 GET client for the benchmarks' query latencies:
//! one connection reused across requests (as a serving client would), so
//! that a latency is the server's answer time, not a TCP handshake.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest body read.
const MAX_BODY: usize = 64 << 20;

/// A client of one server, holding one connection.
#[derive(Debug)]
pub struct KeepAlive {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    /// A client of `127.0.0.1:port`.
    pub fn new(port: u16, timeout: Duration) -> Self {
        KeepAlive {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            timeout,
            conn: None,
        }
    }

    /// `GET path`: status and body. A request on a reused connection that
    /// the server closed meanwhile is retried once on a new one.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.try_get(path)
            }
            Err(e) => Err(e),
        }
        .inspect_err(|_| self.conn = None)
    }

    /// `GET path` as JSON, with its status.
    pub fn get_json(&mut self, path: &str) -> Result<(u16, serde_json::Value), String> {
        let (status, body) = self.get(path)?;
        let v = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {path}: answer is not JSON: {e}"))?;
        Ok((status, v))
    }

    fn try_get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let fail = |e: std::io::Error| format!("GET http://{}{path}: {e}", self.addr);
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(fail)?;
            s.set_read_timeout(Some(self.timeout)).map_err(fail)?;
            s.set_write_timeout(Some(self.timeout)).map_err(fail)?;
            s.set_nodelay(true).map_err(fail)?;
            self.conn = Some(BufReader::new(s));
        }
        let addr = self.addr;
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        conn.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .map_err(fail)?;
        let mut line = String::new();
        if conn.read_line(&mut line).map_err(fail)? == 0 {
            return Err(format!(
                "GET http://{addr}{path}: connection closed without an answer"
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET http://{addr}{path}: malformed status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).map_err(fail)? == 0 {
                break;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).map_err(fail)?;
                let n = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| format!("GET http://{addr}{path}: malformed chunk {line:?}"))?;
                if n == 0 {
                    line.clear();
                    conn.read_line(&mut line).map_err(fail)?;
                    break;
                }
                if body.len() + n > MAX_BODY {
                    return Err(format!("GET http://{addr}{path}: answer too large"));
                }
                let start = body.len();
                body.resize(start + n, 0);
                conn.read_exact(&mut body[start..]).map_err(fail)?;
                let mut crlf = [0u8; 2];
                conn.read_exact(&mut crlf).map_err(fail)?;
            }
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(format!("GET http://{addr}{path}: answer too large"));
            }
            body.resize(n, 0);
            conn.read_exact(&mut body).map_err(fail)?;
        } else {
            // Neither: the body ends when the server closes.
            conn.take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .map_err(fail)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}
