//! Lamina's serving layer and the `lamina` binary.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration and its embedded default.
//! - [`store`]: batch generations and real-time deltas in sled, merged in
//!   memory for queries (the exact merge).
//! - [`api`]: the REST API on warp.
//! - [`server`]: `lamina serve`, wiring the layers into one process.
//! - [`bench`]: `lamina bench stream` and `lamina bench keys`, the speed and serving layers measured from outside with realistic text and millions of keys.
//! - [`app`]: [`app::App`], a server binary of your own with views written
//!   as DStream programs in Rust and the whole of `lamina serve`.
//! - [`cli`]: the command line; [`client`] is the small HTTP client its
//!   client subcommands use; [`wal_cli`]: `lamina wal check` and
//!   `lamina wal salvage`.

pub mod api;
pub mod app;
mod batch_steps;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod health;
mod publishing;
pub mod rebuild;
pub mod server;
mod sources;
pub mod store;
pub mod views;
pub mod wal_cli;
