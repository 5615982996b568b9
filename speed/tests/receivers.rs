//! The receivers through their public API ([`build`] and the [`Receiver`]
//! trait), against real sockets: many concurrent senders, and a WAL slow
//! enough to push back.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use lamina_speed::{
    control::{self, Kind},
    receivers::{ReceiverConfig, StreamIngest, TcpConnectConfig, TcpListenConfig},
    wal::{Wal, WalConfig},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    task::JoinSet,
};

const LIMIT: Duration = Duration::from_secs(15);

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("lamina-receivers-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_wal(dir: &TempDir, max_pending_bytes: u64) -> Wal {
    let mut cfg = WalConfig::new(dir.0.join("wal"));
    cfg.max_pending_bytes = max_pending_bytes;
    Wal::open(cfg).unwrap().0
}

/// Runs a `tcp_listen` receiver built from its spec while `clients`
/// connections each send `lines` numbered lines, all at once; checks that
/// the WAL holds every line exactly once, in order per connection.
async fn every_line_arrives_once_in_order(wal: Wal, clients: usize, lines: usize) {
    let spec = ReceiverConfig::TcpListen(TcpListenConfig {
        listen: "127.0.0.1:0".into(),
        max_connections: clients,
        idle_timeout_ms: 300_000,
    });
    let receiver = spec.build().await.unwrap();
    let addr: SocketAddr = receiver.local_addr().unwrap();
    assert_eq!(receiver.describe(), format!("tcp_listen {addr}"));
    let ingest = StreamIngest::new(wal.clone(), 2, "numbers", 1 << 20);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(receiver.run(ingest.clone(), shutdown_rx));

    let mut senders = JoinSet::new();
    for client in 0..clients {
        senders.spawn(async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let data: String = (0..lines)
                .map(|i| format!("c{client:02}-{i:06}\n"))
                .collect();
            socket.write_all(data.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            // The receiver closes after appending everything it read.
            let mut rest = Vec::new();
            assert_eq!(socket.read_to_end(&mut rest).await.unwrap(), 0);
        });
    }
    tokio::time::timeout(LIMIT, async {
        while let Some(sent) = senders.join_next().await {
            sent.unwrap();
        }
    })
    .await
    .expect("all senders done");
    shutdown.send(true).unwrap();
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("receiver stops")
        .unwrap()
        .unwrap();

    let reader = wal.clone();
    let next_per_client = tokio::task::spawn_blocking(move || {
        let mut next: HashMap<String, usize> = HashMap::new();
        reader
            .read_range(
                reader.first_seq()..reader.durable_seq(),
                |_, id, _, payload| {
                    assert_eq!(control::kind(id), Kind::Data(2));
                    let line = std::str::from_utf8(payload).unwrap();
                    let (client, i) = line.split_once('-').unwrap();
                    let expected = next.entry(client.to_string()).or_default();
                    assert_eq!(
                        i.parse::<usize>().unwrap(),
                        *expected,
                        "{line}: out of order"
                    );
                    *expected += 1;
                },
            )
            .unwrap();
        next
    })
    .await
    .unwrap();
    assert_eq!(next_per_client.len(), clients);
    assert!(
        next_per_client.values().all(|&n| n == lines),
        "{next_per_client:?}"
    );

    let c = ingest.counters().snapshot();
    let total = (clients * lines) as u64;
    assert_eq!(c.records, total);
    assert_eq!(c.bytes, total * 10);
    assert_eq!(c.connections_accepted, clients as u64);
    assert_eq!(
        (
            c.connections_active,
            c.connections_refused,
            c.rejected,
            c.errors
        ),
        (0, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_connections_lose_and_reorder_nothing() {
    let dir = TempDir::new("concurrent");
    let started = Instant::now();
    every_line_arrives_once_in_order(open_wal(&dir, 64 << 20), 20, 5000).await;
    eprintln!("20 x 5000 lines in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_that_pushes_back_slows_senders_down_and_drops_nothing() {
    let dir = TempDir::new("backpressure");
    // Smaller than one batch: appends go one at a time across all
    // connections, each waiting for the one before to be durable, and a
    // connection reads nothing while its append waits; what the senders
    // write meanwhile waits in the socket buffers, then in TCP flow control.
    let wal = open_wal(&dir, 256);
    let started = Instant::now();
    every_line_arrives_once_in_order(wal.clone(), 4, 50_000).await;
    eprintln!(
        "4 x 50000 lines in {:?}, {:?}",
        started.elapsed(),
        wal.stats()
    );
}

/// Every payload in the WAL, in log order.
fn wal_payloads(wal: &Wal) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    wal.read_range(wal.first_seq()..wal.durable_seq(), |_, _, _, payload| {
        out.push(payload.to_vec());
    })
    .unwrap();
    out
}

/// The tester's lock-out: every connection slot held by a connection that
/// sends nothing. New producers must still get their lines in, within
/// about a second (the least idle time before a connection may be evicted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_limit_never_lock_new_producers_out() {
    let dir = TempDir::new("lockout");
    let wal = open_wal(&dir, 64 << 20);
    let spec = ReceiverConfig::TcpListen(TcpListenConfig {
        listen: "127.0.0.1:0".into(),
        max_connections: 8,
        idle_timeout_ms: 300_000,
    });
    let receiver = spec.build().await.unwrap();
    let addr = receiver.local_addr().unwrap();
    let ingest = StreamIngest::new(wal.clone(), 0, "lines", 1 << 20);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(receiver.run(ingest.clone(), shutdown_rx));
    let counters = || ingest.counters().snapshot();

    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let deadline = Instant::now() + LIMIT;
    while counters().connections_active < 8 {
        assert!(Instant::now() < deadline, "{:?}", counters());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    for producer in 0..3 {
        let data: String = (0..100).map(|i| format!("p{producer}-{i:03}\n")).collect();
        // Until the idle ones have been idle for a second, a new
        // connection may be refused: retry, within the bound.
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "producer {producer} locked out: {:?}",
                counters()
            );
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let sent =
                socket.write_all(data.as_bytes()).await.is_ok() && socket.shutdown().await.is_ok();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(LIMIT, socket.read_to_end(&mut rest))
                .await
                .expect("closed by the receiver");
            if sent && read.is_ok() && counters().records >= 100 * (producer + 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    let c = counters();
    // The first producer evicted an idle connection; a later one evicts
    // another when the slot of the one before is not free yet.
    assert_eq!(c.records, 300, "{c:?}");
    assert!((1..=3).contains(&c.connections_evicted), "{c:?}");

    shutdown.send(true).unwrap();
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    let mut lines: Vec<Vec<u8>> = wal_payloads(&wal);
    lines.sort();
    let mut want: Vec<Vec<u8>> = (0..3)
        .flat_map(|p| (0..100).map(move |i| format!("p{p}-{i:03}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(lines, want);
    drop(idle);
}

#[tokio::test]
async fn build_rejects_bad_specs_naming_them() {
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap();
    let spec = ReceiverConfig::TcpListen(TcpListenConfig {
        listen: addr.to_string(),
        max_connections: 8,
        idle_timeout_ms: 300_000,
    });
    let err = spec.build().await.err().expect("address in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    let spec = ReceiverConfig::TcpConnect(TcpConnectConfig {
        address: "localhost".into(),
        reconnect_min_ms: 100,
        reconnect_max_ms: 5000,
    });
    let err = spec.build().await.err().expect("no port");
    assert!(err.to_string().contains("\"localhost\""), "{err}");

    let spec = ReceiverConfig::TcpConnect(TcpConnectConfig {
        address: "localhost:9999".into(),
        reconnect_min_ms: 100,
        reconnect_max_ms: 5000,
    });
    let receiver = spec.build().await.unwrap();
    assert_eq!(receiver.describe(), "tcp_connect localhost:9999");
    assert_eq!(receiver.local_addr(), None);
}
