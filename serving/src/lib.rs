//! Lamina's serving layer and the `lamina` binary.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`lamina --help`). The server itself and the
//!   client subcommands (`serve`, `query`, `top`, `ingest`, `batch run`,
//!   `status`) arrive with the serving layer; see `docs/architecture.md`.

pub mod api;
pub mod cli;
pub mod config;
pub mod store;
