//! A receiver of your own, complete: lines read from the process's standard
//! input feed the stream `lines` — `tail -F app.log | stdin_receiver`. The
//! pattern of every receiver (docs/receivers.md): read a batch, hand it to
//! the stream's `StreamIngest`, and only once the append returned (the
//! lines are durable) read more; stop at shutdown.
//!
//! ```text
//! printf 'to be or not to be\n' | cargo run --release --example stdin_receiver
//! curl -s http://127.0.0.1:8080/v1/views/word_counts/keys/be
//! ```
//!
//! It serves `lamina serve`'s defaults (REST on 127.0.0.1:8080, the view
//! `word_counts`, TCP lines on 127.0.0.1:9999 too); `--config FILE` as for
//! `lamina serve`, with a text stream `lines`. At the end of the input the
//! receiver stops; the server keeps serving until SIGINT or SIGTERM.

use std::pin::Pin;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use lamina_serving::app::App;
use lamina_speed::receivers::{LineFramer, Receiver, ReceiverError, StreamIngest};
use tokio::sync::watch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lines of standard input.
#[derive(Debug)]
struct StdinReceiver;

impl Receiver for StdinReceiver {
    fn describe(&self) -> String {
        "stdin".to_owned()
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(async move {
            // Bounded memory whatever the input: a line longer than the
            // stream's max_record_bytes is kept as a dead letter, not
            // buffered.
            let mut framer = LineFramer::new(tokio::io::stdin(), ingest.max_record_bytes());
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|&stop| stop) => return Ok(()),
                    frame = framer.next() => frame,
                };
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                match frame {
                    // Durable when this returns: only then read on.
                    Ok(Some(frame)) => {
                        ingest.append_frame(frame, now_us).await.map_err(|source| {
                            ReceiverError::Wal {
                                receiver: "stdin".into(),
                                source,
                            }
                        })?
                    }
                    // End of input (or it failed): this receiver is done.
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        })
    }
}

fn main() -> ExitCode {
    App::new("stdin_receiver")
        .receiver("lines", StdinReceiver)
        .main()
}
