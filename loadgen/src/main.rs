//! `aurum-loadgen`: a Socket.IO load generator for Aurum's benchmarks
//! (`make bench-ws`). It speaks Engine.IO v4 / Socket.IO v5 as raw text
//! frames over tokio-tungstenite with small buffers, or over Engine.IO
//! long-polling on hand-written HTTP/1.1 keep-alive (an `http://` URL), so
//! one process holds thousands of sockets; it only connects to loopback (127.0.0.0/8) and
//! every run is bounded in time. Reports are JSON lines on stdout.

mod chat;
mod idle;
mod poll;
mod proto;
mod replay;
mod socket;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aurum-loadgen",
    about = "Socket.IO load generator for Aurum (loopback only)"
)]
struct Cli {
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open authenticated sockets, answer pings, hold them, report.
    Idle(idle::IdleArgs),
    /// Sender/recipient pairs at an offered message rate; latency report.
    Chat(chat::ChatArgs),
    /// Sockets connect at once with `since`; each counts its replayed messages.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aurum-loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Idle(args) => idle::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Replay(args) => replay::run(args).await,
        }
    });
    // Sockets still held by tasks close with the process.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aurum-loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
