use aurum_schema::migrations::{self, Direction};
use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/aurum",
        hide_env_values = true
    )]
    database_url: String,
    /// Revert every migration instead of applying them.
    #[arg(long)]
    down_all: bool,
}

pub fn migrate(args: &MigrateArgs) -> Result<(), CliError> {
    let direction = if args.down_all {
        Direction::DownAll
    } else {
        Direction::Up
    };
    let versions = migrations::run(&args.database_url, direction)?;
    if versions.is_empty() {
        println!("database is up to date");
    }
    for version in versions {
        println!(
            "{} {version}",
            if args.down_all { "reverted" } else { "applied" }
        );
    }
    Ok(())
}
