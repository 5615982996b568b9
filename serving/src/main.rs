//! The `lamina` binary. All logic lives in the library so that it can be
//! tested; this file only hands over the process's arguments and exit code.

// mimalloc instead of the system allocator: the engine allocates many small
// strings (keys, records); size-class pages keep them dense and make
// malloc/free cheap (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lamina_serving::cli::main()
}
