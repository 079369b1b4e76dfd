//! Command line: `serve` (the default), `migrate`, `sync` (repair
//! subscriptions from Stripe after missed webhooks), `catchup` (apply the
//! events no delivery brought, from the Events API), `prune`, `token` (a
//! session token for curl, signed with `AUTH_JWT_SECRET`),
//! `client-reference` (a signed `client_reference_id` for a Payment Link)
//! and, in builds with the emulator, `emulator-reset` (start the demo over).

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use billing_portal::billing::catchup::{self, Since};
use billing_portal::billing::healing::HealingLock;
use billing_portal::billing::reference::{payment_links_accept, ReferenceKey};
use billing_portal::billing::resync::{resync, Progress};
use billing_portal::billing::sync::Outcome;
use billing_portal::billing::Billing;
use billing_portal::clock::Clock;
use billing_portal::config::Settings;
use billing_portal::context::{self, StripeTarget};
use billing_portal::db;
use billing_portal::http::auth::{issue_token, Claims};
use billing_portal::ids::AccountId;
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
    /// List the events Stripe created since a point in time (Events API,
    /// at most 30 days back) and apply those no webhook delivery brought, as
    /// the service does at start-up and every STRIPE_CATCHUP_INTERVAL_SECS.
    Catchup {
        /// Where to start: an RFC 3339 time (2026-12-01T00:00:00Z) or a
        /// duration back from now (90m, 6h, 3d). Default: where the last
        /// catch-up left off, minus a 10-minute margin.
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
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
        /// Act for this organisation (`org_id`).
        #[arg(long)]
        org_id: Option<String>,
        /// The user's role in it (`org_role`; see BILLING_MANAGER_ROLES).
        #[arg(long, requires = "org_id")]
        org_role: Option<String>,
        /// The organisation's name (`org_name`).
        #[arg(long, requires = "org_id")]
        org_name: Option<String>,
    },
    /// Print the signed `client_reference_id` that links a Payment Link or
    /// pricing table checkout to USER_ID (signed with CLIENT_REFERENCE_SECRET,
    /// else a key derived from AUTH_JWT_SECRET).
    ClientReference {
        /// The app's user id (`sub`), or `org:<org id>` for an organisation.
        user_id: String,
    },
    /// Start the local Stripe emulator's demo over: empty its account (kept
    /// in Postgres, schema stripe_emulator) and forget the customers and
    /// subscriptions this database holds from it, in one transaction. Only
    /// without STRIPE_SECRET_KEY.
    #[cfg(feature = "emulator")]
    EmulatorReset,
}

#[actix_rt::main]
async fn main() {
    billing_portal::memory::limit_arenas();
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
        Command::Catchup { since } => catchup(settings, since).await,
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
        Command::Token {
            sub,
            email,
            ttl,
            org_id,
            org_role,
            org_name,
        } => {
            let claims = Claims {
                org_id,
                org_role,
                org_name,
                ..Claims::user(sub, chrono::Utc::now().timestamp() + ttl, email)
            };
            println!("{}", issue_token(&settings.auth_jwt_secret, &claims));
            Ok(())
        }
        #[cfg(feature = "emulator")]
        Command::EmulatorReset => emulator_reset(&settings),
        Command::ClientReference { user_id } => {
            let user = AccountId::parse(&user_id).map_err(anyhow::Error::msg)?;
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

/// Empties the emulator's account and forgets the service's links to it, in
/// one transaction, and says what went.
#[cfg(feature = "emulator")]
fn emulator_reset(settings: &Settings) -> anyhow::Result<()> {
    use billing_portal::billing::PaidRule;
    use billing_portal::db::subscriptions::RuleParams;
    use billing_portal::emulator;
    use diesel::Connection;

    anyhow::ensure!(
        settings.stripe.secret_key.is_none(),
        "emulator-reset empties the local Stripe emulator, which runs only without \
         STRIPE_SECRET_KEY; with STRIPE_SECRET_KEY set this database's customers are Stripe's: \
         nothing was changed"
    );
    anyhow::ensure!(
        settings.app_env != billing_portal::config::AppEnv::Production,
        "emulator-reset does not run with APP_ENV=production: nothing was changed"
    );
    db::prepare_database(&settings.database)?;
    let mut conn = db::connect(&settings.database)?;
    // Never creates the emulator's schema in a database that has none.
    anyhow::ensure!(
        emulator::has_account(&mut conn)?,
        "{} holds no emulator account (schema {}): nothing to reset, nothing was changed",
        settings.database.display_target(),
        emulator::SCHEMA
    );
    let rule = PaidRule::new(
        settings.billing_past_due_grace_days,
        settings.billing_collection_paused_is_paid,
    );
    let (cleared, forgotten) = conn.transaction(|conn| {
        let cleared = emulator::reset(conn)?;
        // The paid flags are judged on the emulator's clock, as the service
        // running it judges them.
        let now = chrono::Utc::now() + chrono::Duration::seconds(cleared.clock_offset_secs);
        let params = RuleParams {
            now,
            grace_secs: rule.grace_secs(),
            collection_paused_is_paid: rule.collection_paused_is_paid,
        };
        let forgotten = db::accounts::forget_customers(conn, &cleared.customer_ids, &params)?;
        db::entitlements::forget_all(conn, &cleared.customer_ids)?;
        Ok::<_, diesel::result::Error>((cleared, forgotten))
    })?;
    println!(
        "emulator reset: removed {}, {}, {} and {} from its account (schema {} in {})",
        counted(cleared.customers, "customer"),
        counted(cleared.subscriptions, "subscription"),
        counted(cleared.invoices, "invoice"),
        counted(cleared.events, "event"),
        emulator::SCHEMA,
        settings.database.display_target(),
    );
    println!(
        "the service forgot the Stripe customer of {} and deleted {} it held from the emulator: \
         the next demo starts clean (a new customer at the next portal or checkout)",
        counted(forgotten.users as i64, "user"),
        counted(forgotten.subscriptions as i64, "stored subscription"),
    );
    let days = cleared.clock_offset_secs / 86_400;
    if cleared.clock_offset_secs > 0 {
        println!(
            "the test clock stays {days} days ahead: time never runs back (stored dates are on it)"
        );
    }
    println!("a running service picks this up at its next emulator request; no restart needed");
    Ok(())
}

/// "1 customer", "2 customers".
#[cfg(feature = "emulator")]
fn counted(n: i64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `--since`: an RFC 3339 instant, or a duration back from now.
fn parse_since(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let back = humantime::parse_duration(value).map_err(|e| {
        format!("expected an RFC 3339 time (2026-12-01T00:00:00Z) or a duration (90m, 6h, 3d): {e}")
    })?;
    let back = chrono::Duration::from_std(back).map_err(|e| e.to_string())?;
    Ok(chrono::Utc::now() - back)
}

/// The Stripe context of a command that reads from Stripe.
async fn stripe_command(settings: &Settings, name: &str) -> anyhow::Result<Billing> {
    if settings.stripe.secret_key.is_none() {
        // The emulator's API is served by a running service (its account is
        // in Postgres, but nothing here serves it), and it never runs in
        // production. The running service catches up with it on its own.
        anyhow::bail!("{name} needs STRIPE_SECRET_KEY: it reads from Stripe");
    }
    context::build(settings, StripeTarget::Configured, Clock::system()).await
}

/// A progress bar on a terminal, plain lines otherwise (CI, cron, logs), and
/// how to print a line beside it.
fn progress_bar(unit: &str) -> (Option<ProgressBar>, impl Fn(String) + Clone) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {unit} {{msg}}"))
                .expect("a valid template"),
        );
        bar
    });
    let printer = bar.clone();
    let say = move |line: String| match &printer {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    (bar, say)
}

async fn catchup(
    settings: Settings,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let billing = stripe_command(&settings, "catchup").await?;
    let Some(lock) = HealingLock::try_acquire(&billing).await? else {
        anyhow::bail!(
            "another instance is catching up right now; nothing done (run it again once that run \
             is over, usually within a minute)"
        );
    };
    let (bar, say) = progress_bar("events");
    let since = since.map_or(Since::Auto, Since::At);
    let result = catchup::run(&billing, since, |event| match event {
        catchup::Progress::Start { since, clamped } => {
            say(format!(
                "listing events created since {}{}",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                if clamped {
                    " (Stripe lists events for 30 days; older ones are gone)"
                } else {
                    ""
                }
            ));
            if let Some(bar) = &bar {
                bar.set_length(0);
            }
        }
        catchup::Progress::Event { id, type_, outcome } => {
            if outcome == Outcome::Applied {
                say(format!("applied {id} {type_}"));
            }
            match &bar {
                Some(bar) => {
                    bar.inc_length(1);
                    bar.inc(1);
                    bar.set_message(id.to_string());
                }
                None if outcome != Outcome::Applied => {
                    println!("checked {id} {type_}: {}", outcome.as_str())
                }
                None => {}
            }
        }
        catchup::Progress::Skipped { id, reason } => say(format!(
            "SKIPPED {}: {reason}",
            id.unwrap_or("an event without an id")
        )),
    })
    .await;
    lock.release().await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    println!(
        "events listed: {}, applied: {}, already stored or older: {}, skipped: {}",
        report.listed, report.applied, report.unchanged, report.skipped
    );
    Ok(())
}

async fn sync(settings: Settings, dry_run: bool) -> anyhow::Result<()> {
    let billing = stripe_command(&settings, "sync").await?;
    let (bar, say) = progress_bar("customers");
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
