//! `lamina serve`: wires the layers into one process.
//!
//! Start-up order matters for exactness: the write-ahead log and the state
//! store open first, and every record the log holds beyond the committed
//! position is processed *before* any receiver or the REST API starts, so
//! that a retried request finds its idempotency key committed.
//!
//! Running, the process has:
//! - the micro-batch thread (`lamina-microbatch`): CPU work off the runtime;
//! - the sealer task: seals closed epochs into the master dataset;
//! - the batch worker task and the cron task: batch runs, one at a time;
//! - the receivers' tasks and the REST server.
//!
//! Shutdown (SIGINT or SIGTERM): the REST server and the receivers stop
//! taking input, the micro-batch thread runs one last micro-batch so that
//! everything acknowledged is committed, the store is flushed, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lamina::Context;
use lamina::master::MasterStore;
use lamina_batch::{BatchRuns, RunRecord};
use lamina_speed::commit::{CommitSink, RecordLog};
use lamina_speed::format::Format;
use lamina_speed::microbatch::seal::{SealState, Sealer};
use lamina_speed::microbatch::{Clock, MicroBatcher, StatsLog, run_loop};
use lamina_speed::program::Program;
use lamina_speed::wal::{Wal, WalConfig, WalError};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::api::{self, ApiState, IngestState};
use crate::config::{self, Config};
use crate::store::ViewStore;
use crate::views;
use lamina::view::AggregateKind;

/// Why the server could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid.
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    /// Something named could not be opened or bound.
    #[error("{what}: {detail}")]
    Startup {
        /// What failed.
        what: String,
        /// Why.
        detail: String,
    },
}

pub(crate) fn startup(what: impl Into<String>, detail: impl std::fmt::Display) -> ServeError {
    ServeError::Startup {
        what: what.into(),
        detail: detail.to_string(),
    }
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The saved batch-run history.
fn load_runs(store: &ViewStore) -> Vec<RunRecord> {
    store.load_runs().unwrap_or_else(|e| {
        warn!("{e}; starting a new batch-run history");
        Vec::new()
    })
}

/// Saves the batch-run history (durably).
pub(crate) fn save_runs(store: &ViewStore, runs: &[RunRecord]) {
    if let Err(e) = store.save_runs(runs) {
        warn!("cannot save the batch-run history: {e}");
    }
}

/// Serves the REST routes on `listener` until `shutdown`, then lets the
/// requests in flight finish (graceful shutdown).
///
/// warp's own server loop (`warp::serve`) gives hyper no timer, so hyper's
/// header read timeout never applies there and a client that never
/// finishes its request headers holds its connection for ever. This loop
/// is that one plus a timer: the request line and headers must arrive
/// within `header_timeout` (the connection is closed otherwise, without an
/// answer: hyper writes none for it), which also closes keep-alive
/// connections idle that long.
async fn serve_http<F>(
    listener: tokio::net::TcpListener,
    routes: F,
    header_timeout: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _peer)) => socket,
            Err(e) => {
                // Out of file descriptors, say: do not spin while it lasts.
                debug!("REST accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(socket), service);
            if let Err(e) = watcher.watch(conn).await {
                debug!("REST connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Defines the views of a server written in Rust: called once at start-up
/// with the program, whose configured streams it reads
/// ([`Program::stream`], [`Program::text_stream`]) and whose views it
/// serves (`DStream::serve`). See [`crate::app::App`].
pub type ProgramFn = dyn Fn(&Program) -> lamina::Result<()> + Send + Sync;

/// Runs the server until SIGINT or SIGTERM.
///
/// # Errors
///
/// [`ServeError`] naming what could not start.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    serve_with(config, None).await
}

/// Runs the server with the views of the config and those `program`
/// defines, until SIGINT or SIGTERM.
///
/// # Errors
///
/// [`ServeError`] naming what could not start; a program error (an unknown
/// stream, a view name used twice) is one.
pub async fn serve_with(config: Config, define: Option<&ProgramFn>) -> Result<(), ServeError> {
    serve_with_receivers(config, define, Vec::new()).await
}

/// [`serve_with`], with receivers the embedding program registered
/// ([`crate::app::App::receiver`]) feeding the streams they name.
///
/// # Errors
///
/// As [`serve_with`]; a receiver for a stream the config does not have is
/// one.
pub async fn serve_with_receivers(
    config: Config,
    define: Option<&ProgramFn>,
    extra: Vec<crate::app::ExtraReceiver>,
) -> Result<(), ServeError> {
    crate::sources::check_extra(&config, &extra)?;
    let listen: SocketAddr = config
        .server
        .listen_addr()
        .map_err(|e| startup("server.listen", e))?;
    let token = config.auth.bearer_token().map_err(|e| startup("auth", e))?;
    let schedule = config
        .batch
        .build_schedule()
        .map_err(|e| startup("batch.schedule", e))?;
    let view_specs = config.view_specs().map_err(|e| startup("view", e))?;
    let ctx = Context::new();
    let (program, streams, config_views) = views::build_program(&ctx, &config, define)?;
    let served = program.served_views();
    let view_kinds: Vec<(String, AggregateKind)> = served
        .iter()
        .map(|v| (v.name().to_owned(), v.aggregate().clone()))
        .collect();
    let batch_views = views::batch_views(&program, &view_specs, config_views);
    let view_infos = views::view_infos(&config, &program, config_views)?;
    let program = Arc::new(program);

    let state_dir = PathBuf::from(&config.storage.state_dir);
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| startup(format!("storage.state_dir {}", state_dir.display()), e))?;
    let mut wal_config = WalConfig::new(state_dir.join("wal"));
    wal_config.segment_bytes = config.speed.wal_segment_bytes;
    let (wal, recovery) = Wal::open(wal_config).map_err(|e| match e {
        // Damage to acknowledged data: nothing was cut or deleted; say what
        // to do about it.
        WalError::Corrupt { .. } => startup(
            "write-ahead log",
            format!(
                "{e}\nThis is damage to acknowledged data, not an entry cut by a crash; the \
                 server changed no file. Inspect it with `lamina wal check`, then with the \
                 server stopped run `lamina wal salvage` (same --config) to keep every \
                 intact entry; it moves the damaged segments aside and reports what was lost."
            ),
        ),
        e => startup("write-ahead log", e),
    })?;
    if let Some(torn) = &recovery.torn {
        warn!(
            path = %torn.path.display(),
            discarded_bytes = recovery.discarded_bytes,
            "write-ahead log: cut an incomplete entry left by a crash ({}); it was never acknowledged",
            torn.reason
        );
    }
    let store = Arc::new(
        ViewStore::open(&state_dir.join("views"), &view_kinds)
            .map_err(|e| startup("state store", e))?,
    );
    // CPU work (decoding every stored key): off the async workers.
    {
        let (program, store) = (Arc::clone(&program), Arc::clone(&store));
        tokio::task::spawn_blocking(move || views::restore_state(&program, &store))
            .await
            .map_err(|e| startup("state", e))??;
    }
    let master =
        MasterStore::open_with(&config.storage.master_url, &config.storage.store_options())
            .map_err(|e| startup("storage.master_url", e))?;
    // One writer per master dataset: refuse to start beside another one.
    // A reader takes no lease and writes nothing.
    let read_only = config.storage.master_read_only;
    if config.batch.retention_generations
        != crate::config::BatchConfig::default().retention_generations
    {
        warn!(
            "[batch] retention_generations has no effect: a view's previous generation has no readers once the next one is published, and is deleted then"
        );
    }
    let lease = if read_only {
        master.set_read_only();
        info!(master = %config.storage.master_url, "master dataset opened read-only: no ingest, no sealing");
        None
    } else {
        let owner = server_id(&state_dir).map_err(|e| startup("storage.state_dir", e))?;
        Some(
            master
                .acquire_writer_lease(
                    &owner,
                    &std::fs::canonicalize(&state_dir)
                        .unwrap_or_else(|_| state_dir.clone())
                        .display()
                        .to_string(),
                    LEASE_TTL,
                )
                .await
                .map_err(|e| startup("storage.master_url", e))?,
        )
    };
    let stream_names: Vec<String> = streams.iter().map(|s| s.name.clone()).collect();
    let stats = Arc::new(StatsLog::new(config.speed.batch_history, &stream_names));
    let clock = Clock {
        interval: config.speed.batch_interval(),
        epoch: config.speed.epoch(),
        max_records: config.speed.max_batch_records,
        max_bytes: config.speed.max_batch_bytes,
    };
    let log: Arc<dyn RecordLog> = Arc::new(wal.clone());
    let sink: Arc<dyn CommitSink> = Arc::clone(&store) as Arc<dyn CommitSink>;
    let formats: Vec<(String, Format)> = streams
        .iter()
        .map(|s| (s.name.clone(), s.format.clone()))
        .collect();
    let histories = histories(&config, &formats)?;
    let mut batcher = MicroBatcher::resume(
        Arc::clone(&program),
        Arc::clone(&log),
        Arc::clone(&sink),
        Arc::clone(&stats),
        clock,
    )
    .map_err(|e| startup("speed layer", e))?;
    let input_budget = Arc::new(lamina_speed::backlog::Backlog::new(
        wal.clone(),
        config.speed.max_backlog_records,
        config.speed.max_backlog_bytes,
        batcher.next_seq(),
    ));
    batcher.set_backlog(Arc::clone(&input_budget));

    // A sealed epoch never takes records again, whatever the clock says.
    let sealed = master
        .manifest()
        .await
        .map_err(|e| startup("master dataset manifest", e))?
        .sealed_through;
    let epoch_floor = batcher.epoch_floor();
    if let Some(s) = sealed {
        epoch_floor.fetch_max(s + 1, Ordering::AcqRel);
    }
    // Replay what the log holds beyond the committed position before
    // anything can ingest: keys of retried requests must be committed.
    let backlog = wal.durable_seq().saturating_sub(batcher.next_seq());
    let batcher = tokio::task::spawn_blocking(move || {
        while !batcher.caught_up() {
            batcher.run_once(now_us())?;
        }
        Ok::<_, lamina_speed::microbatch::LoopError>(batcher)
    })
    .await
    .map_err(|e| startup("replay", e))?
    .map_err(|e| startup("replaying the write-ahead log", e))?;
    if backlog > 0 {
        info!(
            records = backlog,
            "replayed records that were acknowledged but not yet processed"
        );
    }
    let (sealed_tx, sealed_rx) = watch::channel(SealState {
        sealed_through: sealed,
        ..Default::default()
    });
    // The log position committed through, after every micro-batch.
    let (committed_tx, committed_rx) = watch::channel(batcher.next_seq());

    // Background work.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let current_epoch = clock.epoch_of(now_us());
    let (epoch_tx, epoch_rx) = watch::channel(current_epoch);
    let source_columns = (0..formats.len())
        .map(|i| program.has_source_columns(i))
        .collect();
    let sealer = Sealer::new(master.clone(), Arc::clone(&log), Arc::clone(&sink), formats)
        .with_source_columns(source_columns);
    // What /healthz reports.
    let health = Arc::new(crate::health::Health::default());
    if !read_only {
        tasks.spawn(seal_loop(
            sealer,
            epoch_rx,
            sealed_tx,
            Arc::clone(&health),
            shutdown_rx.clone(),
        ));
    }

    let history = load_runs(&store);
    let runs = Arc::new(BatchRuns::new(config.batch.history, history));
    tasks.spawn(lamina_batch::run_worker(
        Arc::clone(&runs),
        Arc::new(lamina_batch::EngineBackend::new(ctx.clone())),
        crate::batch_steps::BatchWorker {
            master: master.clone(),
            views: batch_views,
            histories,
            store: Arc::clone(&store),
            clock,
            epoch_floor: Arc::clone(&epoch_floor),
            sealed: sealed_rx,
            committed: committed_rx,
            wal: wal.clone(),
            read_only,
        },
        // A reader of another server's dataset writes nothing to it.
        config
            .batch
            .compaction_policy()
            .filter(|_| !read_only)
            .map(|policy| lamina_batch::Compaction {
                master: master.clone(),
                policy,
            }),
        shutdown_rx.clone(),
    ));
    if let Some(schedule) = schedule {
        tasks.spawn(cron_loop(schedule, Arc::clone(&runs), shutdown_rx.clone()));
    }
    if let Some(lease) = &lease {
        tasks.spawn(renew_lease(lease.clone(), shutdown_rx.clone()));
    }

    // The watchdog that restarts the process once storage that failed for
    // good works again.
    tasks.spawn(crate::health::watchdog(
        Arc::clone(&health),
        wal.clone(),
        state_dir.clone(),
        shutdown_rx.clone(),
    ));

    // The micro-batch thread.
    let stop = Arc::new(AtomicBool::new(false));
    let microbatch = {
        let stop = Arc::clone(&stop);
        let (ok_health, err_health) = (Arc::clone(&health), Arc::clone(&health));
        std::thread::Builder::new()
            .name("lamina-microbatch".into())
            .spawn(move || {
                run_loop(
                    batcher,
                    &stop,
                    |epoch, committed| {
                        ok_health.clear("micro_batches");
                        committed_tx.send_if_modified(|c| {
                            let changed = *c != committed;
                            *c = committed;
                            changed
                        });
                        epoch_tx.send_if_modified(|e| {
                            let changed = *e != epoch;
                            *e = epoch;
                            changed
                        });
                    },
                    |e| {
                        let message = e.to_string();
                        // An I/O failure of the state store does not heal in
                        // place; anything else may at the next tick.
                        let storage = ["os error", "No space left", "Input/output error"]
                            .iter()
                            .any(|m| message.contains(m));
                        err_health.report("micro_batches", message.clone(), storage);
                        error!("{message}; retrying at the next tick")
                    },
                )
            })
            .map_err(|e| startup("micro-batch thread", e))?
    };

    // Receivers.
    let ingest_streams: Vec<(String, usize)> = config
        .streams
        .iter()
        .map(|s| (s.name.clone(), s.max_record_bytes as usize))
        .collect();
    let (stream_infos, http_counters) = crate::sources::start_receivers(
        &config,
        read_only,
        extra,
        crate::sources::Ingest {
            wal: &wal,
            backlog: &input_budget,
            positions: &sink,
        },
        &shutdown_rx,
        &mut tasks,
    )
    .await?;

    // REST.
    let state = Arc::new(ApiState {
        store: Arc::clone(&store),
        runs: Arc::clone(&runs),
        views: view_infos,
        token,
        permits: Semaphore::new(config.server.max_concurrent_requests),
        streams: stream_infos,
        stats,
        ingest: Some(IngestState {
            wal: wal.clone(),
            streams: ingest_streams,
            idempotency_window_us: config.speed.idempotency_window().as_micros() as i64,
            in_flight: Default::default(),
            recent: Default::default(),
            backlog: Some(Arc::clone(&input_budget)),
            read_only,
            counters: http_counters,
        }),
        max_body_bytes: config.server.max_body_bytes,
        request_timeout: config.server.request_timeout(),
        health: Arc::clone(&health),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| startup(format!("server.listen {listen}"), e))?;
    info!(
        address = %listener.local_addr().map_or(listen, |a| a),
        views = view_kinds.len(),
        "lamina is serving; send SIGINT or SIGTERM to stop"
    );
    let rest = tokio::spawn(serve_http(
        listener,
        api::routes(state),
        config.server.request_timeout(),
        shutdown_rx.clone(),
    ));

    wait_for_signal().await;
    info!("shutting down: finishing the current micro-batch");
    let _ = shutdown_tx.send(true);
    // Input has stopped once the receivers and the REST server have.
    let grace = config.server.shutdown_timeout();
    if tokio::time::timeout(grace, rest).await.is_err() {
        warn!("requests still in flight after {grace:?}; closing them");
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        warn!("background tasks still running after {grace:?}; stopping them");
        tasks.abort_all();
    }
    stop.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || microbatch.join())
        .await
        .ok();
    store
        .flush()
        .map_err(|e| startup("flushing the state store", e))?;
    save_runs(&store, &runs.list());
    // Last: the final seals are written. Another server may take the
    // dataset from now on.
    if let Some(lease) = &lease
        && let Err(e) = lease.release().await
    {
        warn!(
            "could not release the master dataset's writer lease ({e}); it expires {LEASE_TTL:?} after its last renewal"
        );
    }
    info!("stopped");
    Ok(())
}

/// How long the master dataset's writer lease stays valid after a renewal;
/// it is renewed every third of that.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// This server's stable id (see [`lamina::master::lease`]): made at the
/// first start and kept in the state directory.
fn server_id(state_dir: &std::path::Path) -> std::io::Result<String> {
    let path = state_dir.join("server_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    let id = format!("{a:016x}{:016x}", h.finish());
    let tmp = state_dir.join("server_id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Renews the writer lease until shutdown. A lease found taken over stops
/// every write to the dataset (the sealer then fails loudly each time it
/// tries); a store that cannot be reached is retried at the next renewal.
async fn renew_lease(
    lease: lamina::master::lease::WriterLease,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(LEASE_TTL / 3) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = lease.renew().await {
            if lease.is_held() {
                warn!("renewing the master dataset's writer lease: {e}; retrying");
            } else {
                error!("{e}");
            }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!("cannot listen for SIGTERM ({e}); stop with SIGINT");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Each stream's `history` datasets (not contacted yet), read as the
/// stream's schema.
fn histories(
    config: &Config,
    formats: &[(String, Format)],
) -> Result<lamina_batch::Histories, ServeError> {
    let options = config.storage.store_options();
    let mut histories = lamina_batch::Histories::new();
    for (i, stream) in config.streams.iter().enumerate() {
        if stream.history.is_empty() {
            continue;
        }
        let Some((_, format)) = formats.iter().find(|(name, _)| *name == stream.name) else {
            continue;
        };
        let datasets = stream
            .history
            .iter()
            .enumerate()
            .map(|(j, url)| {
                lamina::master::history::HistoryDataset::open(url, &options)
                    .map_err(|e| startup(format!("stream[{i}].history[{j}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        histories.insert(
            stream.name.clone(),
            lamina_batch::StreamHistory {
                datasets,
                schema: format.arrow_schema(),
            },
        );
    }
    Ok(histories)
}

/// Seals every closed epoch whenever the micro-batch clock enters a new one
/// (and once at start, for epochs a restart left unsealed).
async fn seal_loop(
    sealer: Sealer,
    mut epochs: watch::Receiver<u64>,
    sealed: watch::Sender<SealState>,
    health: Arc<crate::health::Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let current = *epochs.borrow_and_update();
        let result = sealer.seal_before(current).await;
        match &result {
            Ok(_) => health.clear("sealing"),
            Err(e) => health.report(
                "sealing",
                format!("sealing epochs before {current}: {e}"),
                false,
            ),
        }
        let target = current.saturating_sub(1);
        match result {
            Ok(Some(report)) => {
                if !report.files.is_empty() {
                    info!(
                        sealed_through = report.sealed_through,
                        files = report.files.len(),
                        "sealed epochs into the master dataset"
                    );
                }
                sealed.send_modify(|s| s.record(target, Ok(Some(report.sealed_through))));
            }
            Ok(None) => {}
            Err(e) => {
                error!("sealing epochs before {current} failed: {e}; retrying at the next epoch");
                sealed.send_modify(|s| s.record(target, Err(&e)));
            }
        }
        tokio::select! {
            changed = epochs.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Requests a batch run at every time the schedule names.
async fn cron_loop(
    schedule: config::BatchSchedule,
    runs: Arc<BatchRuns>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = SystemTime::now();
        let Some(next) = schedule.next_run_after(now) else {
            return;
        };
        let wait = next.duration_since(now).unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => { runs.request("schedule"); }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[stream]]\nname = \"lines\"\nformat = \"text\"\n\n\
             [[view]]\nname = \"word_counts\"\nstream = \"lines\"\nkey = { words = \"line\" }\naggregate = \"count\"\n",
            "test",
        )
        .unwrap()
    }

    /// A state whose type changed stops the start-up naming the operator,
    /// the types and the command that drops it; a state of the old type
    /// restores.
    #[test]
    fn a_state_that_no_longer_decodes_is_a_start_up_error_naming_the_operator() {
        use lamina::streaming::durable::{StateChange, encode};
        let dir = std::env::temp_dir().join(format!("lamina-restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ViewStore::open(&dir, &[]).unwrap();
        store
            .commit(lamina_speed::commit::MicroBatchCommit {
                batch_id: 1,
                epoch: 1,
                positions: vec![],
                deltas: vec![],
                dead_letters: vec![],
                state: vec![lamina::streaming::StateDelta {
                    operator: "totals".into(),
                    changes: vec![StateChange {
                        key: encode("be").unwrap(),
                        state: Some(encode(&(3i64, 100i64)).unwrap()),
                    }],
                }],
            })
            .unwrap();
        let program = |as_text: bool| {
            let p = Program::new(
                &Context::builder().threads(1).build().unwrap(),
                Duration::from_millis(100),
                &[("lines".to_string(), Format::Text)],
            )
            .unwrap();
            let pairs = p.text_stream("lines").unwrap().map(|l| (l, 1i64));
            if as_text {
                pairs
                    .update_state_by_key(|_: Vec<i64>, s: Option<String>| s)
                    .name_state("totals")
                    .unwrap();
            } else {
                pairs
                    .update_state_by_key(|v: Vec<i64>, s: Option<i64>| {
                        Some(s.unwrap_or(0) + v.len() as i64)
                    })
                    .name_state("totals")
                    .unwrap();
            }
            p
        };
        views::restore_state(&program(false), &store).unwrap();
        let err = views::restore_state(&program(true), &store)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operator `totals` (update_state_by_key)")
                && err.contains("not a `alloc::string::String`")
                && err.contains("lamina state drop totals"),
            "{err}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The program is checked before anything is opened: these fail with
    /// no state directory or port touched.
    #[tokio::test]
    async fn program_errors_stop_the_start_up_naming_the_problem() {
        let cases: Vec<(Box<ProgramFn>, &str)> = vec![
            (
                Box::new(|p: &Program| {
                    p.text_stream("events")?;
                    Ok(())
                }),
                "no stream `events` is configured (configured: lines)",
            ),
            (
                Box::new(|p: &Program| {
                    p.text_stream("lines")?
                        .map(|l| (l, 1i64))
                        .serve("word_counts")?;
                    Ok(())
                }),
                "view `word_counts` is served twice",
            ),
            (
                Box::new(|p: &Program| {
                    p.text_stream("lines")?
                        .map(|l| (l, 1i64))
                        .serve("_hidden")?;
                    Ok(())
                }),
                "must start with a letter or a digit",
            ),
        ];
        for (define, expected) in cases {
            let err = serve_with(config(), Some(define.as_ref()))
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("program: ") && text.contains(expected),
                "{text}"
            );
        }
    }
}
