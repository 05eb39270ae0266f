//! `aurum serve | migrate | seed | token`.

mod migrate;
pub mod seed;
mod serve;
mod token;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "aurum", version, about = "Aurum realtime messaging engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve REST (BIND) and Socket.IO (WS_BIND).
    Serve(Box<Config>),
    /// Apply pending database migrations (or revert them all with --down-all).
    Migrate(migrate::MigrateArgs),
    /// Load realistic profiles for development and benchmarks.
    Seed(seed::SeedArgs),
    /// Print a development JWT for a user.
    Token(token::TokenArgs),
}

/// The database a maintenance command works on.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://localhost/aurum",
        hide_env_values = true
    )]
    pub url: String,
}

/// Any command's failure, as one message for the terminal.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(config) => serve::serve(*config),
        Command::Migrate(args) => migrate::migrate(&args),
        Command::Seed(args) => seed::seed(&args),
        Command::Token(args) => token::token(&args),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (as in tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
