//! Start-up behaviour of the real binary: database creation, an unreachable
//! Postgres, production refusing unsafe settings, development defaults kept to
//! loopback.

use std::process::Command;

use crate::support::*;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billing-portal"));
    // Start from a clean slate: nothing from the developer's shell leaks in.
    for var in [
        "APP_ENV",
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "AUTH_JWT_SECRET",
        "APP_BASE_URL",
        "STRIPE_API_BASE",
        "PORT",
        "HOST",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "off");
    // A build without the emulator needs a Stripe key for every command.
    #[cfg(not(feature = "emulator"))]
    cmd.env("STRIPE_SECRET_KEY", STRIPE_KEY);
    cmd
}

#[actix_rt::test]
async fn a_missing_database_is_created_and_migrated() {
    // spawn_app points at a database name that does not exist yet.
    let app = spawn_app().await;

    assert_eq!(app.count("users"), 0);
    assert_eq!(app.count("subscriptions"), 0);
    assert_eq!(app.count("stripe_events"), 0);
}

#[test]
fn the_migrate_command_creates_and_migrates_the_database() {
    let name = format!("billing_test_{}", uuid::Uuid::new_v4().simple());
    let output = binary()
        .arg("migrate")
        .env("DATABASE_URL", format!("{}/{name}", admin_url()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);

    let mut admin = <diesel::PgConnection as diesel::Connection>::establish(&format!(
        "{}/postgres",
        admin_url()
    ))
    .unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
        &mut admin,
    )
    .unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("up to date"), "{stdout}");
}

#[test]
fn an_unreachable_postgres_is_reported_in_one_line_and_exits_non_zero() {
    let output = binary()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/billing")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to Postgres at 127.0.0.1:1/billing"),
        "{stderr}"
    );
}

#[test]
fn production_without_a_stripe_key_refuses_to_start_and_names_it() {
    let output = binary()
        .env_remove("STRIPE_SECRET_KEY")
        .env("APP_ENV", "production")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .env("APP_BASE_URL", "https://app.example.com")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success());
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    assert!(!stderr.contains(JWT_SECRET), "{stderr}");
}

#[test]
fn the_token_command_prints_a_token_the_service_accepts() {
    let output = binary()
        .args(["token", "--sub", "user_42", "--email", "a@example.com"])
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap();

    let verifier =
        billing_portal::http::auth::JwtVerifier::new(&secrecy::SecretString::from(JWT_SECRET), &[]);
    let identity = verifier.verify(token.trim()).unwrap();
    assert_eq!(identity.user.as_str(), "user_42");
    assert_eq!(identity.account.as_str(), "user_42");
    assert_eq!(identity.email.as_deref(), Some("a@example.com"));
}

#[test]
fn the_token_command_prints_an_organisation_members_token() {
    let output = binary()
        .args(["token", "--sub", "user_42", "--org-id", "acme"])
        .args(["--org-role", "admin", "--org-name", "Acme Inc."])
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap();

    let verifier = billing_portal::http::auth::JwtVerifier::new(
        &secrecy::SecretString::from(JWT_SECRET),
        &["admin".to_owned()],
    );
    let identity = verifier.verify(token.trim()).unwrap();
    assert_eq!(identity.account.as_str(), "org:acme");
    assert_eq!(identity.role.as_deref(), Some("admin"));
    assert_eq!(identity.org_name.as_deref(), Some("Acme Inc."));
    assert!(identity.can_manage);
}

/// The refusal a start-up ends with, as `main` prints it.
async fn start_up_error(
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> String {
    match try_spawn_app_with(customize).await {
        Ok(_) => panic!("the service started"),
        Err(err) => format!("{err:#}"),
    }
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_emulator_refuses_a_non_loopback_address_unless_told_to_allow_it() {
    let err = start_up_error(|vars| {
        vars.remove("STRIPE_SECRET_KEY");
        vars.remove("STRIPE_API_BASE");
        vars.insert("HOST".into(), "0.0.0.0".into());
    })
    .await;

    for named in [
        "0.0.0.0",
        "emulator",
        "loopback",
        "HOST=127.0.0.1",
        "STRIPE_SECRET_KEY",
        "EMULATOR_ALLOW_PUBLIC=true",
    ] {
        assert!(err.contains(named), "{named}: {err}");
    }
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn with_emulator_allow_public_the_emulator_serves_every_interface() {
    let app = spawn_emulated_app_with(|vars| {
        vars.insert("HOST".into(), "0.0.0.0".into());
        vars.insert("EMULATOR_ALLOW_PUBLIC".into(), "true".into());
    })
    .await;

    // 0.0.0.0 includes loopback, where the emulator delivers its webhooks.
    let customer = emulator_post(&app, "customers", &[("email", "a@example.com")], None).await;
    assert_eq!(customer.0, 200, "{}", customer.1);
}

#[actix_rt::test]
async fn development_default_secrets_are_refused_on_a_non_loopback_address() {
    for unset in ["AUTH_JWT_SECRET", "STRIPE_WEBHOOK_SECRET"] {
        let err = start_up_error(|vars| {
            vars.remove(unset);
            vars.insert("HOST".into(), "0.0.0.0".into());
        })
        .await;

        for named in [unset, "0.0.0.0", "development default", "loopback"] {
            assert!(err.contains(named), "{named}: {err}");
        }
    }
    // On loopback they still stand in, so `cargo run` needs no set-up.
    spawn_app_with(|vars| {
        vars.remove("AUTH_JWT_SECRET");
        vars.remove("STRIPE_WEBHOOK_SECRET");
    })
    .await;
}

#[test]
fn the_client_reference_command_prints_the_reference_the_readme_documents() {
    let output = binary()
        .args(["client-reference", "user_42"])
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();

    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), signed_reference("user_42", None));
    assert!(!stdout.contains(JWT_SECRET));
}

/// `APP_BASE_URL=http://localhost:8080` left in a shell while the service runs on another
/// port: "Return to app" would lead to 8080, so start-up says so once, naming both.
#[actix_rt::test]
async fn an_app_base_url_on_another_local_port_is_warned_about_once_naming_both() {
    let app = spawn_app().await;
    let instance = Instance::start_logging(
        &app,
        &[
            ("APP_BASE_URL", "http://localhost:8080"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let port = instance.base.rsplit(':').next().unwrap().to_string();

    let log = instance.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("APP_BASE_URL") && l.contains("WARN"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("http://localhost:8080"), "{log}");
    assert!(warnings[0].contains(&format!("port {port}")), "{log}");
    assert!(warnings[0].contains("PORT"), "{log}");

    // Unset, it follows the port: nothing to warn about.
    let unset = Instance::start_logging(&app, &[("APP_BASE_URL", ""), ("RUST_LOG", "warn")]).await;
    assert!(!unset.log().contains("APP_BASE_URL"), "{}", unset.log());
}
