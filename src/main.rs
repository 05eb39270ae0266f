use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc and free were a tenth of a scroll request's server CPU;
/// mimalloc takes 10-15 % off it, and `.cargo/config.toml` keeps its memory
/// where glibc's was (docs/benchmarks.md, "The allocator and the decode path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = aurum::cli::Cli::parse();
    let telemetry = aurum::cli::init_tracing(&cli);
    let outcome = match aurum::cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    };
    // The spans still buffered go out before the process ends.
    drop(telemetry);
    outcome
}
