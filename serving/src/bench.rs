//! `lamina bench`: the server measured from outside, as a user would.
//!
//! Both benchmarks start a real `lamina serve` (this binary) in a temporary
//! directory with a generated config — one text stream `lines` fed by the
//! TCP listener, the `word_counts` view (count of the words of `line`), the
//! write-ahead log on, scheduled batch runs off — and drive it over TCP and
//! REST from the same machine (the load generator shares the cores).
//!
//! # `lamina bench stream`: sustained ingest, latency, exact counts
//!
//! The load is realistic text ([`text`]): a vocabulary of `--vocab` distinct
//! words (default 100,000) with English-like lengths (1–15 letters, mean
//! ≈ 5), words drawn Zipf(`--zipf-s`, default 1) over the frequency rank or
//! uniformly, 8–12 words a line, every line generated afresh (never a cycled
//! corpus: the cost of a micro-batch is per distinct key in it, and a small
//! cycled corpus would hide it). Lines go over `--connections` connections
//! paced to the target rate; each sender counts every word it sent.
//!
//! - **Sustained rate**: a rate is sustained when the generator actually sent
//!   it (≥ 95 %) and the records taken into micro-batches kept up: the lag
//!   (sent − processed, sampled every second) at the end stays under two
//!   intervals' worth plus 0.5 s of input, and the average lag of the last
//!   third of the run is at most 1.25 × that of the first third plus one
//!   interval's input. Without `--rate`, rates double from 50k lines/s until
//!   one fails, then the best is confirmed for the full duration, and a run
//!   at half of it measures the latency.
//! - **Latency**: a line with a unique marker word (`zzmark…`, outside the
//!   vocabulary, not counted) is sent on its own connection; the marker's key
//!   is queried (every 0.5 ms) until it reads 1, and the time from send to
//!   that answer is the end-to-end latency (sent → counted and visible to a
//!   query). The next marker follows after a random pause of up to one
//!   interval, so that markers fall at every phase of the micro-batch clock.
//! - **Micro-batches**: processing time and the first record's wait, from
//!   `GET /v1/streams/lines/batches` polled every second (it keeps only the
//!   most recent batches) and merged by id.
//! - **Distinct keys**: the distinct words sent per run and during the
//!   server's life, and the expected distinct words per micro-batch.
//! - **Exact counts**: once the server has taken in every line sent, the
//!   counts of 2,000 random vocabulary words and of the 100 most sent ones
//!   are read back and compared with what was sent during the server's
//!   life; a mismatch makes the command fail.
//! - **Peak RSS** of the server process (`VmHWM`).
//!
//! `--vocabs 10000,100000,1000000` repeats all of it per size, each against
//! a fresh server, with one `RESULT` line per size.
//!
//! `--server-bin BIN` benchmarks a binary that embeds the server and serves
//! `word_counts` as a Rust DStream program (e.g. the example
//! `served_word_count`) instead of the config view, on the same load.
//!
//! # `lamina bench batch`: a batch recompute against DuckDB
//!
//! [`batch`]: `word_counts` over 10M generated lines and a count-and-sum by
//! URL over 10M events, as batch runs of a read-only server, and DuckDB's
//! equivalent GROUP BY over the same Parquet files (and, with `--s3`, both
//! from an S3-compatible server); medians, ratios, peak RSS, and a check
//! that both engines agree.
//!
//! # `lamina bench source`: the load for programs that read a socket
//!
//! [`source`] listens and sends the same text to whoever connects, paced
//! or as fast as it is read — e.g. for `examples/network_word_count`.
//!
//! # `lamina bench keys`: the cost of many distinct keys
//!
//! [`keys`] sends `--keys` lines each holding one new key, paced, waits until
//! all are taken into micro-batches, and reports the RSS per distinct key
//! (`/proc/PID/status` `VmRSS` after − before, over the keys), micro-batch
//! processing times, `GET /v1/views` and point-query latencies (keep-alive
//! client), a batch run's duration and peak RSS (sampled every 50 ms) over
//! the RSS before it, and the time to answer again after SIGKILL and a
//! restart on the same data — with random keys checked to read exactly 1
//! before and after the restart.

mod batch;
mod duckdb;
mod flume;
mod http;
mod kafka;
mod keys;
mod server;
mod source;
mod stream;
pub mod text;

pub use batch::{BatchBench, batch};
pub use flume::{FlumeBench, flume};
pub use kafka::{KafkaBench, kafka};
pub use keys::{KeysBench, keys};
pub use source::{SourceBench, source};
pub use stream::{DistributionArg, StreamBench, stream};
