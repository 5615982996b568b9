//! Embedding the server: a binary of your own whose views are DStream
//! programs written in Rust, with the whole of `lamina serve` — REST, the
//! client subcommands, the write-ahead log, batch runs and the exact merge.
//!
//! ```no_run
//! use lamina_serving::app::App;
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("my_server")
//!         .program(|p| {
//!             p.text_stream("lines")?
//!                 .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!                 .map(|w| (w, 1i64))
//!                 .serve("word_counts")?;
//!             Ok(())
//!         })
//!         .main()
//! }
//! ```
//!
//! The binary takes the same command line as `lamina`; without a
//! subcommand it serves (`my_server --config FILE` is `my_server serve
//! --config FILE`). The program runs in the speed layer every micro-batch
//! (each served view one engine job) and in the batch layer over the master
//! dataset, so its view merges exactly like a config view. A served view
//! must be a pure function of each batch's records (no clock, no
//! randomness): the batch layer recomputes it over the same records and the
//! two results must agree. State between batches belongs in stateful
//! operators (`update_state_by_key`, `map_with_state`), whose state the
//! server commits with every micro-batch and serves with `serve_state_as`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};

use crate::cli::Cli;
use crate::config::{Config, ConfigErrors, DEFAULT_CONFIG, DEFAULT_ORIGIN};
use crate::server::ProgramFn;
use lamina_speed::program::Program;

/// `lamina serve`'s embedded defaults without the view `word_counts`:
/// REST on 127.0.0.1:8080, the text stream `lines` fed by a TCP listener on
/// 127.0.0.1:9999, data under ./lamina-data, a batch run every 10 minutes —
/// for an app that defines its views in Rust
/// ([`with_default_config`](App::with_default_config)).
pub const TEXT_DEFAULTS: &str = r#"
[server]
listen = "127.0.0.1:8080"

[storage]
master_url = "file://./lamina-data/master"
state_dir = "./lamina-data/state"

[[stream]]
name = "lines"
format = "text"
  [[stream.receiver]]
  type = "tcp_listen"
  listen = "127.0.0.1:9999"

[batch]
schedule = "*/10 * * * *"
"#;

/// A server binary: a name, an embedded default config, and the program
/// that defines its Rust views.
#[derive(Clone)]
pub struct App {
    name: String,
    default_config: Option<String>,
    program: Option<Arc<ProgramFn>>,
    /// Receivers the program registered, taken by the server at start.
    receivers: Arc<std::sync::Mutex<Vec<ExtraReceiver>>>,
}

/// A receiver the embedding program registered for a stream
/// ([`App::receiver`]).
pub type ExtraReceiver = (String, Box<dyn lamina_speed::receivers::Receiver>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("program", &self.program.is_some())
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app named `name` (in messages) serving `lamina`'s embedded
    /// default config and no Rust views.
    pub fn new(name: impl Into<String>) -> Self {
        App {
            name: name.into(),
            default_config: None,
            program: None,
            receivers: Arc::default(),
        }
    }

    /// The config served when no `--config` is given (TOML, as in a file).
    pub fn with_default_config(mut self, toml: impl Into<String>) -> Self {
        self.default_config = Some(toml.into());
        self
    }

    /// The program that defines the Rust views, called once at start-up.
    /// Its error stops the start-up with a message naming it.
    pub fn program(
        mut self,
        define: impl Fn(&Program) -> lamina::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.program = Some(Arc::new(define));
        self
    }

    /// Feeds stream `stream` (of the config) from `receiver` besides the
    /// config's receivers: an in-process
    /// [`channel`](lamina_speed::receivers::channel) whose `store` returns
    /// once the records are durable, or any [`Receiver`] of your own (see
    /// docs/receivers.md). A stream the config does not have stops the
    /// start-up, naming it.
    ///
    /// [`Receiver`]: lamina_speed::receivers::Receiver
    pub fn receiver(
        self,
        stream: impl Into<String>,
        receiver: impl lamina_speed::receivers::Receiver,
    ) -> Self {
        self.receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((stream.into(), Box::new(receiver)));
        self
    }

    /// The registered receivers, taken (a server runs them; a second
    /// serve of the same app has none).
    pub(crate) fn take_receivers(&self) -> Vec<ExtraReceiver> {
        std::mem::take(&mut *self.receivers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config served without `--config`.
    ///
    /// # Errors
    ///
    /// The embedded default does not parse.
    pub fn default_config(&self) -> Result<Config, ConfigErrors> {
        match &self.default_config {
            Some(text) => {
                Config::from_toml_str(text, &format!("embedded default of {}", self.name))
            }
            None => Config::from_toml_str(DEFAULT_CONFIG, DEFAULT_ORIGIN),
        }
    }

    pub(crate) fn program_fn(&self) -> Option<&ProgramFn> {
        self.program.as_deref()
    }

    /// Parses the process's arguments like `lamina` (serving when no
    /// subcommand is given) and runs the command.
    pub fn main(self) -> ExitCode {
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let first = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
        let is_command = first.as_deref().is_some_and(|f| {
            subcommands.iter().any(|c| c == f)
                || ["-h", "--help", "-V", "--version", "help"].contains(&f)
        });
        if !is_command {
            args.insert(1, "serve".into());
        }
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        crate::cli::run(cli, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_defaults_are_lamina_serves_defaults_without_views() {
        let text = Config::from_toml_str(TEXT_DEFAULTS, "TEXT_DEFAULTS").unwrap();
        let full = Config::from_toml_str(DEFAULT_CONFIG, DEFAULT_ORIGIN).unwrap();
        assert!(text.view_specs().unwrap().is_empty());
        assert_eq!(full.view_specs().unwrap().len(), 1);
        assert_eq!(text.server.listen, full.server.listen);
        assert_eq!(text.storage.state_dir, full.storage.state_dir);
        assert_eq!(text.storage.master_url, full.storage.master_url);
        assert_eq!(text.streams.len(), 1);
        assert_eq!(text.streams[0].name, "lines");
    }
}
