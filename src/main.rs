use std::process::ExitCode;

use clap::Parser;

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
