use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a scroll request allocates and frees
/// a few dozen small blocks and one page-sized buffer, and glibc's bin
/// handling (with its fastbin consolidation on the large request) was about
/// a tenth of the server's CPU. mimalloc took 10-15 % off the server's CPU
/// per request with the same start-up RSS and the same memory per idle
/// socket, given `.cargo/config.toml`'s on-demand arena commit
/// (docs/benchmarks.md, "The allocator and the decode path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = aurum::cli::Cli::parse();
    aurum::cli::init_tracing();
    match aurum::cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
