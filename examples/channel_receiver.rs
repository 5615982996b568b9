//! A program that hands records to the server itself: an in-process
//! channel receiver (Spark's actor and queue receivers) with Spark's
//! *reliable* `store` contract — `store` returns once the records are
//! durable in the write-ahead log, so only then may the program acknowledge
//! its own source.
//!
//! ```text
//! cargo run --release --example channel_receiver                  # embedded config below
//! cargo run --release --example channel_receiver -- --config FILE # must have a json stream `readings`
//! curl -s http://127.0.0.1:8080/v1/views/readings_per_sensor/top
//! curl -s http://127.0.0.1:8080/v1/views/max_celsius/keys/s3
//! ```
//!
//! A simulated sensor gateway stores a batch of readings (five sensors,
//! JSON) every 50 ms — `READINGS=N` stops it after N readings — and prints
//! `stored N` after each acknowledged batch. The views come from the config,
//! like any stream's; the channel is just another receiver of `readings`.

use std::process::ExitCode;
use std::time::Duration;

use lamina_serving::app::App;
use lamina_speed::receivers::{StoreError, channel};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

[storage]
master_url = "file://./lamina-data/master"
state_dir = "./lamina-data/state"

[[stream]]
name = "readings"
format = "json"
schema = [ { name = "sensor", type = "string" }, { name = "celsius", type = "float64" } ]

[[view]]
name = "readings_per_sensor"
stream = "readings"
key = { column = "sensor" }
aggregate = "count"

[[view]]
name = "max_celsius"
stream = "readings"
key = { column = "sensor" }
aggregate = "max"
column = "celsius"
"#;

fn main() -> ExitCode {
    // At most 16 batches waiting: a gateway faster than the server waits.
    let (sender, receiver) = channel("sensor-gateway", 16);
    let limit: u64 = std::env::var("READINGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    std::thread::spawn(move || {
        let mut sent = 0u64;
        while sent < limit {
            let batch: Vec<Vec<u8>> = (0..limit.saturating_sub(sent).min(25))
                .map(|i| {
                    let n = sent + i;
                    let celsius = 15.0 + (n % 17) as f64 * 0.5;
                    format!(r#"{{"sensor":"s{}","celsius":{celsius}}}"#, n % 5).into_bytes()
                })
                .collect();
            let n = batch.len() as u64;
            match sender.store_blocking(batch) {
                // Durable: now the gateway may acknowledge its devices.
                Ok(_) => {
                    sent += n;
                    println!("stored {sent}");
                }
                // The server is not running yet (or stopping): try again.
                Err(StoreError::Closed) => {}
                Err(e) => {
                    eprintln!("cannot store: {e}");
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    App::new("channel_receiver")
        .with_default_config(CONFIG)
        .receiver("readings", receiver)
        .main()
}
