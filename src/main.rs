//! Command line: `serve` (the default), `migrate`, and `token` (a session
//! token for curl, signed with `AUTH_JWT_SECRET`).

use clap::{Parser, Subcommand};

use billing_portal::auth::{issue_token, Claims};
use billing_portal::config::Settings;
use billing_portal::db;
use billing_portal::startup::Application;

#[derive(Parser)]
#[command(version, about = "Stripe Customer Portal service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default). Applies pending migrations first.
    Serve,
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Print a session token (JWT, HS256) for trying the API with curl.
    Token {
        /// The app's user id (`sub`).
        #[arg(long)]
        sub: String,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[actix_web::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(err) = run(Cli::parse()).await {
        // One line a person can act on; libpq's messages span several.
        let line = format!("{err:#}")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Application::build(settings)
            .await?
            .run_until_stopped()
            .await
            .map_err(Into::into),
        Command::Migrate => {
            db::prepare_database(&settings.database)?;
            println!(
                "database {} is up to date",
                settings.database.display_target()
            );
            Ok(())
        }
        Command::Token { sub, email, ttl } => {
            let claims = Claims {
                sub,
                email,
                exp: chrono::Utc::now().timestamp() + ttl,
            };
            println!("{}", issue_token(&settings.auth_jwt_secret, &claims));
            Ok(())
        }
    }
}
