//! `lamina bench source`: a TCP server that sends realistic text to
//! whoever connects — the load for programs that read a socket themselves,
//! such as `examples/network_word_count` (Spark's `socketTextStream` reads
//! from `nc -lk`; this is `nc` with fresh Zipf text at a chosen rate).
//!
//! It listens on `--listen`, and for each connection (one at a time) sends
//! fresh lines of the same text as `lamina bench stream` ([`super::text`]),
//! paced to `--rate` lines/s or as fast as the reader takes them, for
//! `--duration-secs`; then it closes the connection and prints what was
//! sent: lines, bytes, seconds and lines/s. A reader slower than the rate
//! slows the sender down (TCP backpressure), so lines/s is what the reader
//! took.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::text::{Distribution, LineGen, Sampler, Vocabulary};

/// `lamina bench source`.
#[derive(Debug, clap::Args)]
pub struct SourceBench {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub listen: String,
    /// Lines per second; without it, as fast as the reader takes them.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long each connection is fed.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Vocabulary size (distinct words), drawn Zipf(1).
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Seed of the vocabulary and of the lines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Connections to serve before exiting.
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
}

/// Runs `lamina bench source`.
///
/// # Errors
///
/// The address cannot be bound, or accepting fails.
pub fn source(args: &SourceBench) -> Result<(), String> {
    let vocab = Arc::new(Vocabulary::new(args.vocab, args.seed));
    let sampler = Arc::new(Sampler::new(args.vocab, Distribution::Zipf(1.0)));
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "bench source: listening on {} ({} words, Zipf 1, {})",
        args.listen,
        args.vocab,
        args.rate
            .map_or("as fast as read".to_owned(), |r| format!("{r} lines/s"))
    );
    for n in 0..args.connections {
        let (mut conn, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let mut generator = LineGen::new(
            Arc::clone(&vocab),
            Arc::clone(&sampler),
            args.seed ^ u64::from(n) << 20,
        );
        let start = Instant::now();
        let limit = Duration::from_secs(args.duration_secs);
        let (mut lines, mut bytes) = (0u64, 0u64);
        let mut buf = Vec::with_capacity(1 << 20);
        let mut error = None;
        while start.elapsed() < limit {
            let due = args.rate.map_or(u64::MAX, |r| {
                (r as f64 * start.elapsed().as_secs_f64()) as u64
            });
            if due <= lines {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            let k = (due - lines).min(8192);
            buf.clear();
            for _ in 0..k {
                generator.push_line(&mut buf);
            }
            if let Err(e) = conn.write_all(&buf) {
                error = Some(e);
                break;
            }
            lines += k;
            bytes += buf.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        drop(conn);
        println!(
            "RESULT source peer={peer} lines={lines} bytes={bytes} secs={secs:.1} lines_per_sec={:.0}{}",
            lines as f64 / secs,
            error.map_or(String::new(), |e| format!(" error=\"{e}\""))
        );
    }
    Ok(())
}
