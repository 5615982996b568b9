//! The Kafka receiver against a real Kafka-wire broker (tansu, installed by
//! `deploy/install-tansu.sh`), through the real binary.
//!
//! - Exactly once through `kill -9`: a producer writes keyed lines to a
//!   3-partition topic while the server is killed and restarted at seeded
//!   random moments; every view — words, records per `_partition`, per
//!   `_key` — ends equal to what was produced, before and after a batch run
//!   that recomputes them from the master dataset (whose Parquet files
//!   carry the source columns).
//! - A broker that is down is retried and shown as the receiver's status,
//!   never a crash; once it is up, records flow.
//! - `start = "latest"` skips what the topic held before the first start.
//!
//! Skipped (with a message) when the broker is not installed, unless
//! `LAMINA_REQUIRE_PEERS=1` — the README's test command installs it and sets
//! that.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Rng, Server, Tansu, WorkDir, batch_run_and_wait, eventually, free_port, seed};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::Value;

/// A producer of test records over the Kafka protocol.
struct Producer {
    rt: tokio::runtime::Runtime,
    partitions: Vec<PartitionClient>,
}

impl Producer {
    /// Creates `topic` with `partitions` partitions on the broker at
    /// `address` and connects to each.
    fn create(address: &str, topic: &str, partitions: i32) -> Producer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clients = rt.block_on(async {
            let client: Client = ClientBuilder::new(vec![address.to_owned()])
                .build()
                .await
                .expect("the broker answers");
            client
                .controller_client()
                .unwrap()
                .create_topic(topic, partitions, 1, 5_000)
                .await
                .expect("the topic is created");
            let mut clients = Vec::new();
            for p in 0..partitions {
                clients.push(
                    client
                        .partition_client(topic, p, UnknownTopicHandling::Retry)
                        .await
                        .unwrap(),
                );
            }
            clients
        });
        Producer {
            rt,
            partitions: clients,
        }
    }

    /// Produces `(key, value)` records to partition `p`; returns once the
    /// broker acknowledged them.
    fn produce(&self, p: usize, records: &[(String, String)]) {
        let now = rskafka::chrono::Utc::now();
        let records: Vec<Record> = records
            .iter()
            .map(|(k, v)| Record {
                key: Some(k.clone().into_bytes()),
                value: Some(v.clone().into_bytes()),
                headers: BTreeMap::from([("origin".to_owned(), b"test".to_vec())]),
                timestamp: now,
            })
            .collect();
        self.rt
            .block_on(self.partitions[p].produce(records, Compression::NoCompression))
            .expect("the broker acknowledges");
    }
}

fn kafka_config(dir: &Path, http: u16, brokers: &str, topic: &str, extra: &str) -> String {
    let text = format!(
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
  brokers = "{brokers}"
  topic = "{topic}"
  fetch_max_wait_ms = 100
  {extra}

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[[view]]
name = "per_partition"
stream = "lines"
key = {{ column = "_partition" }}
aggregate = "count"

[[view]]
name = "per_key"
stream = "lines"
key = {{ column = "_key" }}
aggregate = "count"

[batch]
schedule = "off"
"#
    );
    let path = dir.join("lamina.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Every key of a view and its merged value (`top`, up to 10,000 keys).
fn all_values(server: &Server, view: &str) -> BTreeMap<String, i64> {
    let (status, v) = server.get(&format!("/v1/views/{view}/top?k=10000"));
    assert_eq!(status, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["value"].as_i64().unwrap_or(0) != 0)
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn receiver_status(server: &Server) -> Value {
    server.get("/v1/streams").1["streams"][0]["receiver_status"].clone()
}

#[derive(Default)]
struct Truth {
    words: BTreeMap<String, i64>,
    partitions: BTreeMap<String, i64>,
    keys: BTreeMap<String, i64>,
}

#[test]
fn kafka_records_count_exactly_once_through_kill_9_and_batch_runs() {
    let Some(tansu_bin) = Tansu::binary() else {
        return;
    };
    let seed = seed();
    eprintln!("seed {seed} (LAMINA_E2E_SEED={seed} replays the choices)");
    let dir = WorkDir::new("kafka-crash");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let tansu = Tansu::start(&tansu_bin, &broker_dir, free_port());
    let producer = Producer::create(&tansu.address(), "words", 3);
    let http = free_port();
    let config = kafka_config(dir.path(), http, &tansu.address(), "words", "");
    let args = ["--config", config.as_str()];
    let mut server = Server::start(dir.path(), http, &args);

    // The producer: rounds of records to every partition, in a random
    // order, until told to stop; the truth is what the broker acknowledged.
    let truth = Arc::new(Mutex::new(Truth::default()));
    let rounds = 60;
    let producing = {
        let truth = Arc::clone(&truth);
        thread::spawn(move || {
            let mut rng = Rng(seed);
            for round in 0..rounds {
                let first = rng.range(0, 2) as usize;
                for i in 0..3 {
                    let p = (first + i) % 3;
                    let records: Vec<(String, String)> = (0..40)
                        .map(|j| {
                            let words: Vec<String> = (0..rng.range(1, 3))
                                .map(|_| format!("w{}", rng.range(0, 149)))
                                .collect();
                            (format!("k{}", (round * 40 + j) % 7), words.join(" "))
                        })
                        .collect();
                    producer.produce(p, &records);
                    let mut t = truth.lock().unwrap();
                    for (k, line) in &records {
                        for w in line.split(' ') {
                            *t.words.entry(w.to_owned()).or_default() += 1;
                        }
                        *t.keys.entry(k.clone()).or_default() += 1;
                        *t.partitions.entry(p.to_string()).or_default() += 1;
                    }
                }
                thread::sleep(Duration::from_millis(60));
            }
        })
    };

    // Kill -9 at random moments while records flow, restart at once.
    let mut rng = Rng(seed ^ 0x5EED);
    for kill in 0..3 {
        thread::sleep(rng.millis(400, 1300));
        eprintln!("kill -9 #{kill}");
        server.kill9();
        server = Server::start(dir.path(), http, &args);
    }
    producing.join().unwrap();
    let truth = truth.lock().unwrap();
    let produced: i64 = truth.keys.values().sum();
    assert_eq!(produced, rounds as i64 * 3 * 40);

    let check = |server: &Server| {
        all_values(server, "word_counts") == truth.words
            && all_values(server, "per_partition") == truth.partitions
            && all_values(server, "per_key") == truth.keys
    };
    let caught_up = eventually(Duration::from_secs(60), || check(&server));
    assert!(
        caught_up.is_some(),
        "views differ from what was produced:\nper_partition {:?} vs {:?}\nper_key {:?} vs {:?}\nreceiver {}\n{}",
        all_values(&server, "per_partition"),
        truth.partitions,
        all_values(&server, "per_key"),
        truth.keys,
        receiver_status(&server),
        server.log_text()
    );
    let status = receiver_status(&server);
    assert_eq!(status[1]["lag_records"], 0, "{status}");
    assert!(
        status[1]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("reading 3 partition(s)")),
        "{status}"
    );
    let streams = server.get("/v1/streams").1;
    assert_eq!(
        streams["streams"][0]["records_total"], produced,
        "{streams}"
    );

    // A batch run recomputes the views from the master dataset: the sealed
    // epochs' Parquet files hold the records with their source columns.
    batch_run_and_wait(&server);
    assert!(check(&server), "after a batch run:\n{}", server.log_text());
    // And a clean restart changes nothing.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let server = Server::start(dir.path(), http, &args);
    assert!(
        eventually(Duration::from_secs(10), || check(&server)).is_some(),
        "after a clean restart"
    );
    drop(tansu);
}

#[test]
fn a_broker_that_is_down_is_retried_and_shown_and_latest_skips_old_records() {
    let Some(tansu_bin) = Tansu::binary() else {
        return;
    };
    let dir = WorkDir::new("kafka-down");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let broker_port = free_port();
    let http = free_port();
    let brokers = format!("127.0.0.1:{broker_port}");
    let config = kafka_config(
        dir.path(),
        http,
        &brokers,
        "late",
        "start = \"latest\"\n  partitions = [0, 3]",
    );
    // No broker yet: the server starts anyway and says what is wrong.
    let server = Server::start(dir.path(), http, &["--config", config.as_str()]);
    let retrying = eventually(Duration::from_secs(20), || {
        receiver_status(&server)[1]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("retrying") && s.contains(&brokers))
    });
    assert!(retrying.is_some(), "{}", receiver_status(&server));
    let (status, health) = server.get("/healthz");
    assert_eq!(status, 200, "{health}");

    // The broker comes up; the topic exists with records from before.
    let tansu = Tansu::start(&tansu_bin, &broker_dir, broker_port);
    let producer = Producer::create(&tansu.address(), "late", 1);
    let old: Vec<(String, String)> = (0..10).map(|i| (format!("o{i}"), "old".into())).collect();
    producer.produce(0, &old);
    // The receiver finds the topic within its backoff (at most 10 s) and
    // starts at its end.
    let reading = eventually(Duration::from_secs(30), || {
        receiver_status(&server)[1]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("reading"))
    });
    assert!(
        reading.is_some(),
        "{}\n{}",
        receiver_status(&server),
        server.log_text()
    );
    let status = receiver_status(&server)[1]["status"].clone();
    assert!(
        status
            .as_str()
            .is_some_and(|s| s.ends_with("configured partitions not in the topic: [3]")),
        "{status}"
    );
    // Records produced from now on are read; the old ones never.
    let new: Vec<(String, String)> = (0..5).map(|i| (format!("n{i}"), "new".into())).collect();
    let counted = eventually(Duration::from_secs(30), || {
        // `latest` is looked up when the partition is first read: produce
        // until a record after it shows up.
        producer.produce(0, &new);
        common::count(&server, "word_counts", "new") > 0
    });
    assert!(counted.is_some(), "{}", server.log_text());
    thread::sleep(Duration::from_millis(500));
    assert_eq!(common::count(&server, "word_counts", "old"), 0);
    let metrics = server.client().get("/metrics").unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("lamina_receiver_lag_records{stream=\"lines\",receiver=\"kafka late@"),
        "{text}"
    );
    assert!(
        text.contains("lamina_receiver_errors_total{stream=\"lines\",receiver=\"kafka late@"),
        "{text}"
    );
    drop(tansu);
}

#[test]
fn a_slow_consumer_leaves_the_backlog_in_kafka_not_in_memory() {
    let Some(tansu_bin) = Tansu::binary() else {
        return;
    };
    let dir = WorkDir::new("kafka-slow");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let tansu = Tansu::start(&tansu_bin, &broker_dir, free_port());
    let producer = Producer::create(&tansu.address(), "slow", 2);
    // 10,000 records waiting in Kafka before the server starts.
    for round in 0..100 {
        let records: Vec<(String, String)> = (0..100)
            .map(|i| (format!("k{i}"), format!("w{} x", (round * 100 + i) % 50)))
            .collect();
        producer.produce(round % 2, &records);
    }
    let http = free_port();
    let config = kafka_config(
        dir.path(),
        http,
        &tansu.address(),
        "slow",
        "fetch_max_bytes = 1024",
    );
    // A consumer far slower than the source: at most 1,000 records a
    // micro-batch, and room for 1,000 unprocessed records.
    let config_text = std::fs::read_to_string(&config).unwrap().replace(
        "batch_interval_ms = 50",
        "batch_interval_ms = 500\nmax_batch_records = 1000\nmax_backlog_records = 1000",
    );
    std::fs::write(&config, config_text).unwrap();
    let server = Server::start(dir.path(), http, &["--config", config.as_str()]);
    let mut max_unprocessed = 0i64;
    let mut saw_lag = false;
    let finished = eventually(Duration::from_secs(90), || {
        let (_, v) = server.get("/v1/streams");
        let stream = &v["streams"][0];
        let processed = stream["records_total"].as_i64().unwrap_or(0);
        let appended = stream["receiver_status"][1]["records_total"]
            .as_i64()
            .unwrap_or(0);
        max_unprocessed = max_unprocessed.max(appended - processed);
        saw_lag |= stream["receiver_status"][1]["lag_records"]
            .as_i64()
            .unwrap_or(0)
            > 5_000;
        thread::sleep(Duration::from_millis(20));
        processed == 10_000
    });
    assert!(
        finished.is_some(),
        "{}\n{}",
        server.get("/v1/streams").1,
        server.log_text()
    );
    assert!(
        saw_lag,
        "the records waited in Kafka (lag), not in the server"
    );
    // The budget, plus at most one fetch per partition in flight.
    assert!(
        max_unprocessed <= 1_000 + 2 * 200,
        "{max_unprocessed} records read from Kafka were waiting in the server"
    );
    assert_eq!(count_all(&server, 50), 10_000);
    drop(tansu);
}

/// The sum of `word_counts` over `w0`..`w{n-1}`.
fn count_all(server: &Server, n: usize) -> i64 {
    (0..n)
        .map(|i| common::count(server, "word_counts", &format!("w{i}")))
        .sum()
}
