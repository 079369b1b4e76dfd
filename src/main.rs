//! Command line: `serve` (the default), `migrate`, `sync` (repair
//! subscriptions from Stripe after missed webhooks), `prune`, `token` (a
//! session token for curl, signed with `AUTH_JWT_SECRET`) and
//! `client-reference` (a signed `client_reference_id` for a Payment Link).

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use billing_portal::billing::reference::{payment_links_accept, ReferenceKey};
use billing_portal::billing::resync::{resync, Progress};
use billing_portal::clock::Clock;
use billing_portal::config::Settings;
use billing_portal::context::{self, StripeTarget};
use billing_portal::db;
use billing_portal::http::auth::{issue_token, Claims};
use billing_portal::ids::UserId;
use billing_portal::startup::Application;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Re-read every customer's subscriptions from Stripe and apply them, so
    /// Postgres matches Stripe again after missed webhooks; forget customers
    /// Stripe no longer knows, as a `customer.deleted` webhook would.
    Sync {
        /// Print what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete recorded webhook events older than the retention
    /// (EVENT_RETENTION_DAYS, default 90), so `stripe_events` stays bounded.
    Prune {
        /// Override EVENT_RETENTION_DAYS for this run.
        #[arg(long)]
        days: Option<u32>,
    },
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
    /// Print the signed `client_reference_id` that links a Payment Link or
    /// pricing table checkout to USER_ID (signed with CLIENT_REFERENCE_SECRET,
    /// else a key derived from AUTH_JWT_SECRET).
    ClientReference {
        /// The app's user id (`sub`).
        user_id: String,
    },
}

#[actix_rt::main]
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
        Command::Sync { dry_run } => sync(settings, dry_run).await,
        Command::Prune { days } => {
            let days = days.unwrap_or(settings.event_retention_days);
            anyhow::ensure!(
                days >= 7,
                "--days must be at least 7: Stripe retries deliveries for up to 3 days"
            );
            let billing =
                context::build(&settings, StripeTarget::Configured, Clock::system()).await?;
            let cutoff = billing.clock.now() - chrono::Duration::days(i64::from(days));
            let deleted = db::run(&billing.pool, move |conn| {
                db::events::prune(conn, cutoff, 10_000)
            })
            .await?;
            println!(
                "pruned {deleted} webhook events received before {}",
                cutoff.format("%Y-%m-%d %H:%M UTC")
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
        Command::ClientReference { user_id } => {
            let user = UserId::parse(&user_id).map_err(anyhow::Error::msg)?;
            let key = ReferenceKey::from_secrets(
                settings.client_reference_secret.as_ref(),
                &settings.auth_jwt_secret,
            );
            let reference = key.sign(&user);
            if !payment_links_accept(&reference) {
                eprintln!(
                    "note: Payment Links and pricing tables drop a client_reference_id longer than \
                     200 characters or with characters other than letters, digits, - and _; link \
                     this user with metadata.user_id on a Checkout Session your backend creates"
                );
            }
            println!("{reference}");
            Ok(())
        }
    }
}

async fn sync(settings: Settings, dry_run: bool) -> anyhow::Result<()> {
    if settings.stripe.secret_key.is_none() {
        // The emulator's state lives inside a running service, and it never
        // runs in production: there is nothing here to sync against.
        anyhow::bail!("sync needs STRIPE_SECRET_KEY: it reads subscriptions from Stripe");
    }
    let billing = context::build(&settings, StripeTarget::Configured, Clock::system()).await?;
    // A progress bar on a terminal, plain lines otherwise (CI, cron, logs).
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} customers {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    let verb = if dry_run { "would change" } else { "changed" };
    let report = resync(&billing, dry_run, |event| match event {
        Progress::Start { customers } => match &bar {
            Some(bar) => bar.set_length(customers as u64),
            None => println!("checking {customers} customers"),
        },
        Progress::Change {
            user,
            subscription,
            before,
            after,
        } => say(format!(
            "{verb} {subscription} of {user}: {before} -> {after}"
        )),
        Progress::Failed {
            user,
            customer,
            reason,
        } => say(format!("FAILED {customer} of {user}: {reason}")),
        Progress::Forgotten { user, customer } => {
            say(format!(
                "customer {customer} no longer exists in Stripe: {} (user {user})",
                if dry_run {
                    "would be forgotten"
                } else {
                    "forgotten"
                }
            ));
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        Progress::Checked {
            customer,
            subscriptions,
            ..
        } => match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(customer.to_string());
            }
            None => println!("checked {customer}: {subscriptions} subscriptions"),
        },
    })
    .await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!(
        "{}customers checked: {}, subscriptions {verb}: {}, failures: {}, customers {}: {}",
        if dry_run {
            "dry run, nothing written. "
        } else {
            ""
        },
        report.customers,
        report.changed,
        report.failures.len(),
        if dry_run {
            "that would be forgotten"
        } else {
            "forgotten"
        },
        report.forgotten
    );
    if !report.failures.is_empty() {
        anyhow::bail!("{} customers could not be synced", report.failures.len());
    }
    Ok(())
}
