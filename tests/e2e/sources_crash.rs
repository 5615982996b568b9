//! Every source at once through `kill -9`: Kafka, HTTP ingest (with
//! idempotency keys), Flume Avro RPC and a directory of files feed one
//! stream while the server is killed and restarted at seeded random
//! moments. Afterwards each source's word counts equal its ground truth:
//!
//! - Kafka: every record produced (offsets commit with the micro-batches);
//! - HTTP: every request acknowledged, once (retried with the same key);
//! - files: every line of every file renamed into the directory;
//! - Flume: at least every acknowledged event, and at most those plus the
//!   batches the client had to send again because the kill cut their `OK`
//!   (Flume's protocol has no request ids: at-least-once by design).
//!
//! Skipped without the Kafka-wire broker unless `LAMINA_REQUIRE_PEERS=1`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Rng, Server, Tansu, WorkDir, count, eventually, free_port, ingest_until_acked, seed};
use lamina_speed::receivers::flume_avro::{ClientEvent, append_batch_request, frame};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const ROUNDS: u64 = 40;
const PER_ROUND: u64 = 25;

/// One Flume call until it is answered OK, reconnecting (with a new
/// handshake) whenever the connection fails; returns whether it had to
/// send the batch again after a failed connection (a possible duplicate).
fn flume_call(
    conn: &mut Option<TcpStream>,
    port: u16,
    events: &[Vec<u8>],
    serial: &mut i32,
) -> bool {
    let headers: &[(&str, &str)] = &[];
    let batch: Vec<ClientEvent<'_>> = events.iter().map(|e| (headers, e.as_slice())).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut resent = false;
    let mut failed_connection = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "a Flume batch was never acknowledged"
        );
        let fresh = conn.is_none();
        if fresh {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    *conn = Some(s);
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        if failed_connection {
            resent = true;
        }
        *serial += 1;
        let s = conn.as_mut().unwrap();
        let request = frame(*serial, &append_batch_request(fresh, &batch));
        let mut reply = [0u8; 64];
        let answered = s.write_all(&request).and_then(|()| {
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            let n = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
            s.read_exact(&mut reply[..n])?;
            Ok(n)
        });
        match answered {
            Ok(n) if reply[n - 1] == 0 => return resent,
            Ok(_) => thread::sleep(Duration::from_millis(50)), // FAILED: backlog full
            Err(_) => {
                *conn = None;
                failed_connection = true;
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn every_source_is_exact_through_kill_9() {
    let Some(tansu_bin) = Tansu::binary() else {
        return;
    };
    let seed = seed();
    eprintln!("seed {seed} (LAMINA_E2E_SEED={seed} replays the choices)");
    let dir = WorkDir::new("sources-crash");
    let broker_dir = dir.path().join("broker");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&broker_dir).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let tansu = Tansu::start(&tansu_bin, &broker_dir, free_port());
    let (http, flume) = (free_port(), free_port());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50
epoch_ms = 1000

[[stream]]
name = "lines"
format = "text"
  [[stream.receiver]]
  type = "kafka"
  brokers = "{}"
  topic = "mixed"
  fetch_max_wait_ms = 100
  [[stream.receiver]]
  type = "flume_avro"
  listen = "127.0.0.1:{flume}"
  [[stream.receiver]]
  type = "files"
  path = "{}"
  poll_interval_ms = 50

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[batch]
schedule = "off"
"#,
        tansu.address(),
        inbox.display()
    );
    let path = dir.path().join("lamina.toml");
    std::fs::write(&path, config).unwrap();
    let args = ["--config", path.to_str().unwrap()];
    // The topic before the server: its receiver reads from the start.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let partition_clients = rt.block_on(async {
        let client = ClientBuilder::new(vec![tansu.address()])
            .build()
            .await
            .unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic("mixed", 2, 1, 5_000)
            .await
            .unwrap();
        let mut pcs = Vec::new();
        for p in 0..2 {
            pcs.push(
                client
                    .partition_client("mixed", p, UnknownTopicHandling::Retry)
                    .await
                    .unwrap(),
            );
        }
        pcs
    });
    let mut server = Server::start(dir.path(), http, &args);
    let done = Arc::new(AtomicBool::new(false));
    let flume_resent = Arc::new(AtomicU64::new(0));

    let producers = {
        let mut handles = Vec::new();
        // Kafka.
        handles.push(thread::spawn(move || {
            for round in 0..ROUNDS {
                let records: Vec<Record> = (0..PER_ROUND)
                    .map(|i| Record {
                        key: None,
                        value: Some(
                            format!("kafka k{}", (round * PER_ROUND + i) % 13).into_bytes(),
                        ),
                        headers: Default::default(),
                        timestamp: rskafka::chrono::Utc::now(),
                    })
                    .collect();
                rt.block_on(
                    partition_clients[(round % 2) as usize]
                        .produce(records, Compression::NoCompression),
                )
                .unwrap();
                thread::sleep(Duration::from_millis(40));
            }
        }));
        // HTTP ingest with idempotency keys.
        let client_http = http;
        handles.push(thread::spawn(move || {
            let client = lamina_serving::client::Client::new(
                &format!("http://127.0.0.1:{client_http}"),
                None,
            )
            .unwrap()
            .with_timeout(Duration::from_secs(5));
            for round in 0..ROUNDS {
                let body: String = (0..PER_ROUND)
                    .map(|i| format!("http h{}\n", (round * PER_ROUND + i) % 13))
                    .collect();
                ingest_until_acked(&client, "lines", &format!("r{round}"), &body);
                thread::sleep(Duration::from_millis(40));
            }
        }));
        // Files: written elsewhere, renamed in.
        let files_dir = inbox.clone();
        handles.push(thread::spawn(move || {
            for round in 0..ROUNDS {
                let body: String = (0..PER_ROUND)
                    .map(|i| format!("files f{}\n", (round * PER_ROUND + i) % 13))
                    .collect();
                let tmp = files_dir.join(format!(".part-{round}.txt"));
                std::fs::write(&tmp, body).unwrap();
                std::fs::rename(&tmp, files_dir.join(format!("part-{round:04}.txt"))).unwrap();
                thread::sleep(Duration::from_millis(40));
            }
        }));
        // Flume.
        let resent = Arc::clone(&flume_resent);
        handles.push(thread::spawn(move || {
            let mut conn = None;
            let mut serial = 0;
            for round in 0..ROUNDS {
                let events: Vec<Vec<u8>> = (0..PER_ROUND)
                    .map(|i| format!("flume u{}", (round * PER_ROUND + i) % 13).into_bytes())
                    .collect();
                if flume_call(&mut conn, flume, &events, &mut serial) {
                    resent.fetch_add(PER_ROUND, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(40));
            }
        }));
        handles
    };

    let mut rng = Rng(seed);
    for kill in 0..3 {
        thread::sleep(rng.millis(300, 900));
        eprintln!("kill -9 #{kill}");
        server.kill9();
        server = Server::start(dir.path(), http, &args);
    }
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let total = (ROUNDS * PER_ROUND) as i64;
    let resent = flume_resent.load(Ordering::Relaxed) as i64;
    let settled = eventually(Duration::from_secs(60), || {
        count(&server, "word_counts", "kafka") == total
            && count(&server, "word_counts", "http") == total
            && count(&server, "word_counts", "files") == total
            && count(&server, "word_counts", "flume") >= total
    });
    let got: Vec<(&str, i64)> = ["kafka", "http", "files", "flume"]
        .iter()
        .map(|w| (*w, count(&server, "word_counts", w)))
        .collect();
    assert!(
        settled.is_some(),
        "counts {got:?}, expected {total} each (flume resent {resent})\n{}",
        server.log_text()
    );
    let flume = count(&server, "word_counts", "flume");
    assert!(
        flume <= total + resent,
        "flume counted {flume}: more than {total} acknowledged + {resent} resent"
    );
    eprintln!("counts {got:?}; flume events resent after a cut connection: {resent}");
    drop(tansu);
}
