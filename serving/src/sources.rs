//! Starting the receivers of the configured streams (and those an
//! embedding program registered): each built, given its stream's
//! [`StreamIngest`] (the log, the backlog budget, the committed source
//! offsets) and run as a task until shutdown.

use std::sync::Arc;

use lamina_speed::backlog::Backlog;
use lamina_speed::commit::CommitSink;
use lamina_speed::receivers::IngestCounters;
use lamina_speed::wal::Wal;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::api::StreamInfo;
use crate::app::ExtraReceiver;
use crate::config::Config;
use crate::server::{ServeError, startup};

/// What every receiver's `StreamIngest` shares.
pub(crate) struct Ingest<'a> {
    pub wal: &'a Wal,
    pub backlog: &'a Arc<Backlog>,
    pub positions: &'a Arc<dyn CommitSink>,
}

/// A receiver registered for a stream the config does not have is a
/// start-up error naming it.
pub(crate) fn check_extra(config: &Config, extra: &[ExtraReceiver]) -> Result<(), ServeError> {
    for (stream, receiver) in extra {
        if !config.streams.iter().any(|s| &s.name == stream) {
            return Err(startup(
                format!("receiver {}", receiver.describe()),
                format!(
                    "no stream `{stream}` in the config (streams: {})",
                    config
                        .streams
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Builds and starts every receiver; returns what the API shows of each
/// stream, and HTTP ingest's counters per stream.
pub(crate) async fn start_receivers(
    config: &Config,
    read_only: bool,
    mut extra: Vec<ExtraReceiver>,
    ingest: Ingest<'_>,
    shutdown_rx: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(Vec<StreamInfo>, Vec<Arc<IngestCounters>>), ServeError> {
    let mut stream_infos = Vec::new();
    // HTTP ingest's counters per stream: receiver `http` in /metrics.
    let http_counters: Vec<Arc<lamina_speed::receivers::IngestCounters>> =
        config.streams.iter().map(|_| Arc::default()).collect();
    for (id, s) in config.streams.iter().enumerate() {
        let mut described = Vec::new();
        let mut receiver_counters = Vec::new();
        if !read_only {
            receiver_counters.push(("http".to_owned(), Arc::clone(&http_counters[id])));
        }
        // A reader of another server's dataset ingests nothing.
        let receivers = if read_only { &[][..] } else { &s.receivers[..] };
        let mut built = Vec::new();
        for r in receivers {
            built.push(r.build().await.map_err(|e| {
                startup(format!("stream `{}` receiver {}", s.name, r.type_name()), e)
            })?);
        }
        if !read_only {
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut extra)
                .into_iter()
                .partition(|(name, _)| *name == s.name);
            extra = others;
            built.extend(mine.into_iter().map(|(_, r)| r));
        }
        for receiver in built {
            described.push(receiver.describe());
            info!(stream = %s.name, receiver = %receiver.describe(), "receiver started");
            let ingest = lamina_speed::receivers::StreamIngest::new(
                ingest.wal.clone(),
                id as u32,
                s.name.as_str(),
                s.max_record_bytes as usize,
            )
            .with_backlog(Arc::clone(ingest.backlog))
            .with_positions(Arc::clone(ingest.positions));
            let counters = ingest.counters_handle();
            counters.set_label(&s.name, &receiver.describe());
            receiver_counters.push((receiver.describe(), counters));
            let rx = shutdown_rx.clone();
            tasks.spawn(async move {
                if let Err(e) = receiver.run(ingest, rx).await {
                    error!("receiver stopped: {e}");
                }
            });
        }
        stream_infos.push(StreamInfo {
            name: s.name.clone(),
            format: format!("{:?}", s.format).to_lowercase(),
            receivers: described,
            receiver_counters,
        });
    }

    Ok((stream_infos, http_counters))
}
