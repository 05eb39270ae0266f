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
    #[command(after_help = TRACES_HELP)]
    Serve(Box<Config>),
    /// Apply pending database migrations (or revert them all with --down-all).
    Migrate(migrate::MigrateArgs),
    /// Load realistic profiles for development and benchmarks.
    Seed(seed::SeedArgs),
    /// Print a development JWT for a user.
    Token(token::TokenArgs),
}

/// The tracing variables, read by the OpenTelemetry SDK rather than by a flag.
const TRACES_HELP: &str = "\
Traces (OpenTelemetry, OTLP/HTTP protobuf; off unless an endpoint is set):
  OTEL_EXPORTER_OTLP_ENDPOINT         collector base URL, e.g. http://otel-collector:4318
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  full traces URL (overrides the base + /v1/traces)
  OTEL_SERVICE_NAME                   service.name (default aurum); NODE_ID is service.instance.id
  OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT,
  OTEL_TRACES_SAMPLER / _ARG, OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE: as the spec says
  OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: no export";

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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), and exports
/// spans over OTLP/HTTP when the standard `OTEL_*` variables ask for it
/// (see [`crate::telemetry`]). Keep the answer until the process ends: its
/// drop sends the spans still buffered.
pub fn init_tracing(cli: &Cli) -> crate::telemetry::Telemetry {
    let node = match &cli.command {
        Command::Serve(config) => Some(config.node()),
        _ => None,
    };
    crate::telemetry::init(node)
}
