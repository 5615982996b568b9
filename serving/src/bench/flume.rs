//! `lamina bench flume`: Flume Avro RPC `appendBatch` into `word_counts`:
//! events per second and the latency of the acknowledgement.
//!
//! A real `lamina serve` with a `flume_avro` receiver feeding `lines` and
//! the `word_counts` view. `--connections` clients (threads, like Flume
//! sinks: one request in flight each) send `appendBatch` calls of `--batch`
//! events of fresh Zipf text (the same generator as `lamina bench stream`)
//! for `--duration-secs`, each waiting for `OK` before the next call — the
//! way a Flume AvroSink works. Reported: events/s acknowledged, the
//! acknowledgement latency (send → `OK`, i.e. durable) p50/p99/max, calls
//! answered `FAILED` (backlog full: retried by the client), and, once every
//! event is processed, exact counts of 2,000 random words and the 100 most
//! frequent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lamina_speed::receivers::flume_avro::{ClientEvent, append_batch_request, frame};

use super::server::{ServerProcess, percentile, sorted};
use super::text::{Distribution, LineGen, Sampler, Vocabulary};

/// `lamina bench flume`.
#[derive(Debug, clap::Args)]
pub struct FlumeBench {
    /// Client connections, each with one call in flight.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Events per `appendBatch` (Flume's AvroSink default is 100).
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// How long the clients send.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Vocabulary size (distinct words), drawn Zipf(1).
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Micro-batch interval of the server.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Seed of the vocabulary and the lines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What one client did.
struct ClientResult {
    events: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
    counts: Vec<u64>,
}

fn read_reply(s: &mut TcpStream, serial: i32) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let got = i32::from_be_bytes(head[..4].try_into().unwrap_or_default());
    if got != serial {
        return Err(format!("reply to call {got}, expected {serial}"));
    }
    let buffers = u32::from_be_bytes(head[4..].try_into().unwrap_or_default());
    let mut body = Vec::new();
    for _ in 0..buffers {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let start = body.len();
        body.resize(start + u32::from_be_bytes(len) as usize, 0);
        s.read_exact(&mut body[start..])
            .map_err(|e| e.to_string())?;
    }
    Ok(body)
}

fn client(
    port: u16,
    args: &FlumeBench,
    vocab: Arc<Vocabulary>,
    sampler: Arc<Sampler>,
    seed: u64,
    until: Instant,
) -> Result<ClientResult, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut lines = LineGen::new(vocab, sampler, seed);
    let mut r = ClientResult {
        events: 0,
        failed: 0,
        latencies_ms: Vec::new(),
        counts: Vec::new(),
    };
    let mut serial = 0;
    let headers: &[(&str, &str)] = &[("host", "bench")];
    while Instant::now() < until {
        let mut bodies = Vec::with_capacity(args.batch as usize);
        for _ in 0..args.batch {
            let mut line = Vec::with_capacity(96);
            lines.push_line(&mut line);
            line.pop();
            bodies.push(line);
        }
        let events: Vec<ClientEvent<'_>> = bodies.iter().map(|b| (headers, b.as_slice())).collect();
        let request = append_batch_request(serial == 0, &events);
        loop {
            serial += 1;
            let sent = Instant::now();
            s.write_all(&frame(serial, &request))
                .map_err(|e| e.to_string())?;
            let reply = read_reply(&mut s, serial)?;
            // BOTH handshake (4 zero bytes) on the first call, then
            // metadata, error flag and the Status index: 0 OK, 2 FAILED.
            let status = reply.last().copied().unwrap_or(255);
            if status == 0 && reply[reply.len() - 2] == 0 {
                r.latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                r.events += u64::from(args.batch);
                break;
            }
            if status != 2 {
                return Err(format!("unexpected reply {reply:?}"));
            }
            r.failed += 1;
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() > until + Duration::from_secs(60) {
                return Err("the server kept answering FAILED for a minute".into());
            }
        }
    }
    r.counts = lines.into_counts();
    Ok(r)
}

/// Runs `lamina bench flume`.
///
/// # Errors
///
/// The server does not start, a client fails, the server does not take in
/// every event within 2 minutes, or counts differ from what was sent.
pub fn flume(args: &FlumeBench) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let receiver = format!(
        "  [[stream.receiver]]\n  type = \"flume_avro\"\n  listen = \"127.0.0.1:{port}\"\n"
    );
    let epoch = super::server::epoch_ms(args.interval_ms, None)?;
    let server = ServerProcess::start_with(
        "flume",
        args.interval_ms,
        epoch,
        false,
        None,
        Some(&receiver),
    )?;
    let vocab = Arc::new(Vocabulary::new(args.vocab, args.seed));
    let sampler = Arc::new(Sampler::new(args.vocab, Distribution::Zipf(1.0)));
    eprintln!(
        "bench flume: {} connections, appendBatch of {} events of Zipf(1) text over {} words, {} s",
        args.connections, args.batch, args.vocab, args.duration_secs
    );
    let start = Instant::now();
    let until = start + Duration::from_secs(args.duration_secs);
    let results: Vec<Result<ClientResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let (vocab, sampler) = (Arc::clone(&vocab), Arc::clone(&sampler));
                scope.spawn(move || {
                    client(
                        port,
                        args,
                        vocab,
                        sampler,
                        args.seed.wrapping_mul(31).wrapping_add(u64::from(c)),
                        until,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut events = 0;
    let mut failed = 0;
    let mut latencies = Vec::new();
    let mut counts = vec![0u64; vocab.len()];
    for r in results {
        let r = r?;
        events += r.events;
        failed += r.failed;
        latencies.extend(r.latencies_ms);
        for (total, c) in counts.iter_mut().zip(r.counts) {
            *total += c;
        }
    }
    let latencies = sorted(latencies);
    // Every acknowledged event processed, then exact counts.
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.processed().unwrap_or(0) < events {
        if Instant::now() > deadline {
            return Err(format!(
                "the server took {} of {events} events in 2 minutes",
                server.processed().unwrap_or(0)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    super::server::check_counts(&server, &vocab, &counts, args.seed ^ 0xf1)?;
    println!(
        "RESULT flume connections={} batch={} events={} events_per_s={:.0} ack_p50_ms={:.2} ack_p99_ms={:.2} ack_max_ms={:.2} failed_calls={} peak_rss_mib={:.0} exact=true",
        args.connections,
        args.batch,
        events,
        events as f64 / secs,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        failed,
        server.peak_rss_mib().unwrap_or(0.0)
    );
    Ok(())
}
