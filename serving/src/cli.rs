//! The command line.

use std::process::ExitCode;

use clap::Parser;

/// Lamina: one binary for batch views, streaming views and serving their
/// exact merge over REST.
#[derive(Debug, Parser)]
#[command(name = "lamina", version)]
pub struct Cli {
    /// Number of worker threads for CPU work (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
}

/// Parses the process's arguments and runs the command. Exit code 0 on
/// success, 2 on a usage error (clap's convention).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = match cli.threads {
        Some(n) => lamina::Context::builder().threads(n).build(),
        None => lamina::Context::builder().build(),
    };
    match ctx {
        Ok(ctx) => {
            println!(
                "lamina {}: engine ready with {} worker threads; the server arrives with the serving layer (see `lamina --help`)",
                env!("CARGO_PKG_VERSION"),
                ctx.default_parallelism()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lamina: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
