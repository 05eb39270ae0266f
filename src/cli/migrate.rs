use aurum_schema::migrations::{self, Direction};
use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: super::DatabaseArgs,
    /// Revert every migration instead of applying them.
    #[arg(long)]
    down_all: bool,
    /// Create the database first when it does not exist.
    #[arg(long)]
    create_database: bool,
}

pub fn migrate(args: &MigrateArgs) -> Result<(), CliError> {
    if args.create_database {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        if runtime.block_on(migrations::ensure_database(&args.database.url))? {
            println!("created the database");
        }
    }
    let direction = if args.down_all {
        Direction::DownAll
    } else {
        Direction::Up
    };
    let versions = migrations::run(&args.database.url, direction)?;
    if versions.is_empty() {
        println!("database is up to date");
    }
    for version in versions {
        println!("{} {version}", if args.down_all { "reverted" } else { "applied" });
    }
    Ok(())
}
