//! `tcp_connect`: connects to a TCP server and reads newline-delimited
//! records from it, like Spark's `socketTextStream`.
//!
//! When the connection is refused, closed or fails, the receiver connects
//! again after a delay that doubles from `reconnect_min` up to
//! `reconnect_max`, each delay varied by ±20% so that many receivers do not
//! come back in step. A connection that delivered data resets the delay to
//! `reconnect_min`: the server was up, so the next loss is a new outage.
//! One connection at a time; as with `tcp_listen`, each batch is durable
//! before the next read, so a slow disk slows the server down.

use std::{
    hash::{BuildHasher, RandomState},
    pin::Pin,
    time::Duration,
};

use tokio::{net::TcpStream, sync::watch};

use super::{
    ActiveConnection, LogLimit, PumpEnd, Receiver, ReceiverError, Result, StreamIngest, pump,
    stopped,
};

const KIND: &str = "tcp_connect";
/// A connect that has not completed by then counts as failed (a host that
/// drops SYNs would otherwise hold an attempt for minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one log line per this period.
const LOG_PERIOD: Duration = Duration::from_secs(1);

/// A client of a line server; see the module docs.
#[derive(Debug)]
pub struct TcpConnectReceiver {
    address: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl TcpConnectReceiver {
    /// A receiver for `address` (`host:port`; the host is resolved on every
    /// attempt). Connects only once run.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Config`] if `address` is not `host:port`,
    /// `reconnect_min` is zero or `reconnect_max` is below it.
    pub fn new(
        address: &str,
        reconnect_min: Duration,
        reconnect_max: Duration,
    ) -> Result<TcpConnectReceiver> {
        let mut problems = Vec::new();
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => problems.push(format!("`address` {address:?} is not host:port")),
        }
        if reconnect_min.is_zero() {
            problems.push("`reconnect_min_ms` must be > 0".to_string());
        }
        if reconnect_max < reconnect_min {
            problems.push(format!(
                "`reconnect_max_ms` ({}) is below `reconnect_min_ms` ({})",
                reconnect_max.as_millis(),
                reconnect_min.as_millis()
            ));
        }
        if !problems.is_empty() {
            return Err(ReceiverError::Config {
                receiver: KIND,
                reason: problems.join("; "),
            });
        }
        Ok(TcpConnectReceiver {
            address: address.to_string(),
            reconnect_min,
            reconnect_max,
        })
    }

    async fn serve(self, ingest: StreamIngest, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let name = self.describe();
        let failures = LogLimit::new(LOG_PERIOD);
        // Seeded per process and address, so that receivers restarted
        // together still spread out.
        let seed = RandomState::new().hash_one(&self.address);
        let mut backoff = Backoff::new(self.reconnect_min, self.reconnect_max, seed);
        loop {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*self.address));
            let connected = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return Ok(()),
                connected = connect => connected,
            };
            let failure = match connected {
                Ok(Ok(socket)) => {
                    let _active = ActiveConnection::open(&ingest.counters);
                    tracing::info!(receiver = %name, stream = ingest.name(), "connected");
                    let (end, frames) =
                        pump(socket, &ingest, &mut shutdown, None)
                            .await
                            .map_err(|source| ReceiverError::Wal {
                                receiver: name.clone(),
                                source,
                            })?;
                    if frames > 0 {
                        backoff.reset();
                    }
                    match end {
                        PumpEnd::Stopped => return Ok(()),
                        // No idle watch here: a pulled source decides when
                        // to send.
                        PumpEnd::Eof | PumpEnd::IdleTimeout | PumpEnd::Evicted => {
                            format!("connection {end} after {frames} batches")
                        }
                        PumpEnd::Failed(_) => {
                            ingest.counters.error();
                            format!("connection {end}")
                        }
                    }
                }
                Ok(Err(e)) => {
                    ingest.counters.error();
                    format!("connect failed: {e}")
                }
                Err(_) => {
                    ingest.counters.error();
                    format!("connect timed out after {CONNECT_TIMEOUT:?}")
                }
            };
            let delay = backoff.next_delay();
            if let Some(suppressed) = failures.check() {
                tracing::warn!(
                    receiver = %name,
                    retry_in_ms = delay.as_millis() as u64,
                    suppressed,
                    "{failure}"
                );
            }
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

impl Receiver for TcpConnectReceiver {
    fn describe(&self) -> String {
        format!("{KIND} {}", self.address)
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

/// Exponential backoff with ±20% jitter.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// The delay before jitter that comes next.
    step: Duration,
    /// splitmix64 state: the jitter needs no more than that.
    rng: u64,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            step: min,
            rng: seed,
        }
    }

    pub(super) fn reset(&mut self) {
        self.step = self.min;
    }

    /// The next delay: the current step ±20%, never above `max`; the step
    /// then doubles, up to `max`.
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        step.mul_f64(0.8 + 0.4 * self.unit()).min(self.max)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `type = "tcp_connect"` in `[[stream.receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl super::config::BuildReceiver for TcpConnectConfig {
    fn validate(&self) -> Vec<super::config::Problem> {
        use super::config::Problem;
        let mut problems = Vec::new();
        if !is_host_port(&self.address) {
            problems.push(Problem::new(
                "address",
                format!(
                    "{:?} is not a HOST:PORT address (like kafka-1:9092, 10.0.0.5:7000 or [::1]:7000)",
                    self.address
                ),
            ));
        }
        problems.extend(Problem::range(
            "reconnect_min_ms",
            self.reconnect_min_ms,
            1..=MAX_RECONNECT_MS,
        ));
        if self.reconnect_max_ms < self.reconnect_min_ms || self.reconnect_max_ms > MAX_RECONNECT_MS
        {
            problems.push(Problem::new(
                "reconnect_max_ms",
                format!(
                    "{} is out of range ({}..={MAX_RECONNECT_MS}: at least reconnect_min_ms)",
                    self.reconnect_max_ms, self.reconnect_min_ms
                ),
            ));
        }
        problems
    }

    fn build(&self) -> super::config::Building<'_> {
        Box::pin(async move {
            let receiver = TcpConnectReceiver::new(
                &self.address,
                Duration::from_millis(self.reconnect_min_ms),
                Duration::from_millis(self.reconnect_max_ms),
            )?;
            Ok(Box::new(receiver) as Box<dyn super::Receiver>)
        })
    }
}

/// `HOST:PORT` with a non-zero port; IPv6 hosts in brackets.
pub(super) fn is_host_port(text: &str) -> bool {
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
mod host_port_tests {
    use super::is_host_port;

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

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Instant};

    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpSocket},
        task::JoinHandle,
    };

    use super::{super::testkit, *};
    use crate::control::Kind;

    const LIMIT: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    struct Running {
        ingest: StreamIngest,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<Result<()>>,
    }

    fn start(wal: &crate::wal::Wal, addr: SocketAddr, min: Duration, max: Duration) -> Running {
        let receiver = TcpConnectReceiver::new(&addr.to_string(), min, max).unwrap();
        let ingest = StreamIngest::new(wal.clone(), 1, "lines", 1000);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(Box::new(receiver).run(ingest.clone(), rx));
        Running {
            ingest,
            shutdown,
            task,
        }
    }

    impl Running {
        fn counters(&self) -> crate::receivers::IngestSnapshot {
            self.ingest.counters().snapshot()
        }

        /// Signals shutdown and returns how long the receiver took to stop.
        async fn stop(self) -> Duration {
            let started = Instant::now();
            self.shutdown.send(true).unwrap();
            tokio::time::timeout(LIMIT, self.task)
                .await
                .expect("receiver stops")
                .unwrap()
                .unwrap();
            started.elapsed()
        }
    }

    /// An address nothing listens on (it was free a moment ago).
    async fn refusing_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// Listens on `addr` again, also while old connections of it linger.
    fn listen_on(addr: SocketAddr) -> TcpListener {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        socket.listen(16).unwrap()
    }

    /// Accepts one connection, sends lines `range` on it and closes it.
    async fn serve_lines(listener: &TcpListener, range: std::ops::Range<u32>) {
        let (mut socket, _) = tokio::time::timeout(LIMIT, listener.accept())
            .await
            .expect("the receiver connects")
            .unwrap();
        let data: String = range.map(|i| format!("line {i}\n")).collect();
        socket.write_all(data.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn it_reconnects_to_a_server_that_comes_back_and_loses_no_line() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let listener = listen_on("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let running = start(&wal, addr, ms(20), ms(100));

        serve_lines(&listener, 0..1000).await;
        testkit::wait_until("first lines durable", LIMIT, || {
            running.counters().records == 1000
        })
        .await;
        // Not listening: connects are refused for a while.
        drop(listener);
        let errors = running.counters().errors;
        testkit::wait_until("refused 3 times", LIMIT, || {
            running.counters().errors >= errors + 3
        })
        .await;

        let listener = listen_on(addr);
        serve_lines(&listener, 1000..2000).await;
        testkit::wait_until("all lines durable", LIMIT, || {
            running.counters().records == 2000
        })
        .await;
        running.stop().await;

        let got = testkit::read_all(&wal);
        let want: Vec<_> = (0..2000)
            .map(|i| (Kind::Data(1), format!("line {i}").into_bytes()))
            .collect();
        assert!(
            got == want,
            "{} records, not the 2000 sent in order",
            got.len()
        );
    }

    #[tokio::test]
    async fn the_backoff_grows_and_shutdown_interrupts_it() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, refusing_addr().await, ms(20), ms(10_000));
        tokio::time::sleep(ms(1500)).await;
        // Delays of about 20, 40, 80, ... ms put attempts at about 0, 20,
        // 60, 140, 300, 620 and 1260 ms: 7 by now, where a fixed delay of
        // 20 ms would have made about 75.
        let attempts = running.counters().errors;
        assert!((4..=9).contains(&attempts), "{attempts} attempts");
        // Now in a delay of over a second.
        let took = running.stop().await;
        assert!(took < ms(500), "{took:?}");
    }

    #[tokio::test]
    async fn shutdown_interrupts_a_long_backoff_and_an_idle_read() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, refusing_addr().await, ms(10_000), ms(10_000));
        testkit::wait_until("first attempt failed", LIMIT, || {
            running.counters().errors == 1
        })
        .await;
        let took = running.stop().await;
        assert!(took < ms(500), "{took:?}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = start(&wal, listener.local_addr().unwrap(), ms(10), ms(10));
        let (_silent, _) = listener.accept().await.unwrap();
        testkit::wait_until("connected", LIMIT, || {
            running.counters().connections_active == 1
        })
        .await;
        let took = running.stop().await;
        assert!(took < ms(500), "{took:?}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_max_and_resets() {
        let mut backoff = Backoff::new(ms(100), ms(1000), 7);
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(backoff.next_delay());
        }
        for (delay, step) in steps
            .iter()
            .zip([100, 200, 400, 800, 1000, 1000, 1000, 1000])
        {
            assert!(*delay >= ms(step * 8 / 10), "{delay:?} for step {step}");
            assert!(*delay <= ms(step * 12 / 10).min(ms(1000)), "{delay:?}");
        }
        assert!(steps.windows(2).any(|w| w[0] != w[1]), "jittered");
        backoff.reset();
        assert!(backoff.next_delay() <= ms(120));
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let err = TcpConnectReceiver::new("nohost", ms(0), ms(0)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"nohost\" is not host:port"), "{text}");
        assert!(text.contains("`reconnect_min_ms` must be > 0"), "{text}");
        let err = TcpConnectReceiver::new("localhost:99999", ms(10), ms(5)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not host:port"), "{text}");
        assert!(text.contains("`reconnect_max_ms` (5) is below"), "{text}");
        let ok = TcpConnectReceiver::new("[::1]:9999", ms(10), ms(10)).unwrap();
        assert_eq!(ok.describe(), "tcp_connect [::1]:9999");
    }
}
