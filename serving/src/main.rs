//! The `lamina` binary. All logic lives in the library so that it can be
//! tested; this file only hands over the process's arguments and exit code.

fn main() -> std::process::ExitCode {
    lamina_serving::cli::main()
}
