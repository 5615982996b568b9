//! The server's views: the program that computes them (config views,
//! `last` and windowed views, then the Rust program's), what the REST API
//! and the batch layer know of them, and the state of their stateful
//! operators handed back at start-up.

use lamina::Context;
use lamina::view::ViewSpec;
use lamina_batch::{BatchView, ProgramView, ViewInput};
use lamina_speed::format::{ColumnDef, Format, FormatKind};
use lamina_speed::microbatch::StreamDef;
use lamina_speed::program::Program;
use tracing::{info, warn};

use crate::api::{ViewInfo, ViewKind, WindowInfo};
use crate::config::{self, Config, StreamFormat};
use crate::server::{ProgramFn, ServeError, startup};
use crate::store::ViewStore;

/// The speed layer's record format of a configured stream.
fn format_of(stream: &config::StreamConfig) -> Result<Format, ServeError> {
    let columns: Vec<ColumnDef> = stream
        .format_columns()
        .iter()
        .map(|f| ColumnDef {
            name: f.name.clone(),
            ty: f.ty,
            nullable: f.nullable,
        })
        .collect();
    let (kind, columns) = match stream.format {
        // A text stream's one column is implied by the format.
        StreamFormat::Text => (FormatKind::Text, Vec::new()),
        StreamFormat::Json => (FormatKind::Json, columns),
        StreamFormat::Csv => (FormatKind::Csv, columns),
    };
    Format::new(kind, columns).map_err(|e| startup(format!("stream `{}`", stream.name), e))
}

/// The program every micro-batch runs: the config's views (aggregate,
/// `last`, windowed), then the Rust program's. Also the streams, and how
/// many served views are the config's.
///
/// # Errors
///
/// [`ServeError`] naming a config or program problem.
pub fn build_program(
    ctx: &Context,
    config: &Config,
    define: Option<&ProgramFn>,
) -> Result<(Program, Vec<StreamDef>, usize), ServeError> {
    let views = config.view_specs().map_err(|e| startup("view", e))?;
    let mut streams = Vec::new();
    for s in &config.streams {
        streams.push(StreamDef {
            name: s.name.clone(),
            format: format_of(s)?,
            views: views
                .iter()
                .filter(|(stream, _)| *stream == s.name)
                .map(|(_, v)| v.clone())
                .collect(),
        });
    }
    let program = Program::from_streams(ctx, config.speed.batch_interval(), &streams)
        .map_err(|e| startup("view", e))?;
    for s in &config.streams {
        if s.has_source_columns() {
            program
                .set_source_columns(&s.name)
                .map_err(|e| startup("stream", e))?;
        }
        if let Some(column) = &s.event_time {
            let policy = match s.late_records {
                config::LatePolicy::Aside => lamina_speed::event_time::LatePolicy::Aside,
                config::LatePolicy::Fold => lamina_speed::event_time::LatePolicy::Fold,
            };
            program
                .set_event_time(
                    &s.name,
                    lamina_speed::event_time::EventTime::new(
                        column.clone(),
                        (s.allowed_lateness_secs as i64).saturating_mul(1_000_000),
                        policy,
                    ),
                )
                .map_err(|e| startup("stream", e))?;
        }
    }
    for v in config.last_views() {
        let stream = program.stream(&v.stream).map_err(|e| startup("view", e))?;
        lamina_speed::last::serve_last(&stream, &v.name, v.key, v.column, v.ttl, v.event_time)
            .map_err(|e| startup("view", e))?;
    }
    for w in config.windowed_views().map_err(|e| startup("view", e))? {
        program
            .add_windowed_view(&w.stream, &w.spec, w.window, &w.time_column)
            .map_err(|e| startup("view", e))?;
    }
    let config_views = program.served_views().len();
    if let Some(define) = define {
        define(&program).map_err(|e| startup("program", e))?;
    }
    Ok((program, streams, config_views))
}

/// What the batch layer runs: config views by their definition, the
/// program's views (those after the first `config_views`) by their program.
pub(crate) fn batch_views(
    program: &Program,
    views: &[(String, ViewSpec)],
    config_views: usize,
) -> Vec<BatchView> {
    let served = program.served_views();
    views
        .iter()
        .map(|(stream, spec)| {
            BatchView::Config(ViewInput {
                stream: stream.clone(),
                spec: spec.clone(),
            })
        })
        .chain(served[config_views..].iter().map(|v| {
            BatchView::Program(ProgramView {
                view: v.clone(),
                streams: v
                    .input_ids()
                    .iter()
                    .zip(program.streams_of(v))
                    .map(|(id, name)| (*id, name))
                    .collect(),
            })
        }))
        .collect()
}

/// What the REST API knows of every served view, after checking the names
/// the Rust program chose.
///
/// # Errors
///
/// [`ServeError`] naming a view of the program with an invalid name.
pub(crate) fn view_infos(
    config: &Config,
    program: &Program,
    config_views: usize,
) -> Result<Vec<ViewInfo>, ServeError> {
    let served = program.served_views();
    let served_states = program.served_states();
    let names = served[config_views..]
        .iter()
        .map(|v| v.name())
        .chain(served_states.iter().map(|v| v.name()));
    for name in names {
        if let Some(problem) = config::name_problem(name) {
            return Err(startup("program", format!("view {problem}")));
        }
    }
    let windowed = program.windowed_views();
    Ok(served
        .iter()
        .map(|v| ViewInfo {
            name: v.name().to_owned(),
            stream: program.streams_of(v).join(","),
            kind: ViewKind::Aggregate(v.aggregate().clone()),
        })
        .chain(served_states.iter().map(|v| {
            let view_config = config.views.iter().find(|c| c.name == v.name());
            let kind = match (
                windowed.iter().find(|w| w.served().name() == v.name()),
                view_config,
            ) {
                (Some(w), Some(c)) => ViewKind::Window(WindowInfo {
                    aggregate: w.aggregate().clone(),
                    window: w.window(),
                    tuple_key: matches!(c.key, lamina::view::KeySpec::Tuple(_)),
                    event_time: config
                        .streams
                        .iter()
                        .any(|s| s.name == c.stream && s.event_time.is_some()),
                }),
                (None, Some(c)) if c.aggregate == config::AggregateName::Last => ViewKind::Last,
                _ => ViewKind::State,
            };
            ViewInfo {
                name: v.name().to_owned(),
                stream: program.streams_of_state(v).join(","),
                kind,
            }
        }))
        .collect())
}

/// Hands every stateful operator of the program its committed state,
/// before the first micro-batch replays the log (what start-up does; public
/// for `benches/restore.rs`).
///
/// # Errors
///
/// [`ServeError`] naming the operator whose state does not decode, or the
/// store's error.
pub fn restore_state(program: &Program, store: &ViewStore) -> Result<(), ServeError> {
    let ssc = program.streaming_context();
    let operators = ssc.stateful_operators();
    for op in &operators {
        let started = std::time::Instant::now();
        let mut failed = None;
        let mut entries = store.state_entries(&op.name).map_while(|row| match row {
            Ok(entry) => Some(entry),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let restored = ssc.restore_state(&op.name, &mut entries);
        drop(entries);
        if let Some(e) = failed {
            return Err(startup("state store", e));
        }
        let keys = restored.map_err(|e| {
            startup(
                "state",
                format!(
                    "{e}\nStart the build that wrote this state, or with the server stopped run \
                     `lamina state drop {name}` (same --config) so that the operator starts \
                     empty; see docs/streaming.md, \"State across restarts and upgrades\".",
                    name = op.name
                ),
            )
        })?;
        if keys > 0 {
            info!(
                operator = %op.name,
                kind = op.kind,
                keys,
                "restored the operator's state in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let stored = store
        .state_operators()
        .map_err(|e| startup("state store", e))?;
    for (name, keys) in stored {
        if !operators.iter().any(|o| o.name == name) {
            warn!(
                operator = %name,
                keys,
                "the state store holds the state of an operator the program no longer has; it is kept, unused (`lamina state drop {name}` deletes it)"
            );
        }
    }
    Ok(())
}
