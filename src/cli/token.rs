use aurum_schema::ids::UserId;
use clap::Args;

use super::CliError;
use crate::auth::JwtKeys;
use crate::config::DEV_JWT_SECRET;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user (profile) id the token speaks for.
    #[arg(long)]
    user: i64,
    /// Grant the admin role.
    #[arg(long)]
    admin: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Written as `iss`, for a node that checks JWT_ISSUER.
    #[arg(long, env = "JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Written as `aud`, for a node that checks JWT_AUDIENCE.
    #[arg(long, env = "JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Sign with the development key when JWT_SECRET is unset.
    #[arg(long)]
    dev: bool,
}

pub fn token(args: &TokenArgs) -> Result<(), CliError> {
    let user = UserId::parse(&args.user.to_string()).ok_or("--user must be a positive id")?;
    let secret = match (&args.jwt_secret, args.dev) {
        (Some(secret), _) => secret.as_str(),
        (None, true) => DEV_JWT_SECRET,
        (None, false) => return Err("JWT_SECRET is required (or pass --dev)".into()),
    };
    println!(
        "{}",
        JwtKeys::new(secret.as_bytes())
            .expecting(args.jwt_issuer.as_deref(), args.jwt_audience.as_deref())
            .issue(user, args.admin, args.ttl)?
    );
    Ok(())
}
