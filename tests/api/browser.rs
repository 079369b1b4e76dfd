//! The Billing Settings page in a real browser: Debian's Chromium driven
//! through chromedriver (WebDriver), against the real service and a fake
//! Stripe on loopback. Screenshots go to `target/screenshots/`.
//!
//! Without Chromium these tests skip, unless `BROWSER_TESTS_REQUIRED=1` (set
//! by `.ci/run`), where they fail instead. A skipped test still counts as
//! passed (libtest cannot mark a test skipped once it runs), so it says so in
//! the test output: a `SKIPPED <test>: …` line, which `cargo test` shows.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use wiremock::matchers::{method, path};
use wiremock::Mock;

use crate::support::*;

/// Two cores: more browsers at once only makes each slower.
static BROWSERS: Semaphore = Semaphore::const_new(2);
const WAIT: Duration = Duration::from_secs(15);

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempdir::Dir,
    _permit: tokio::sync::SemaphorePermit<'static>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn installed(program: &str) -> bool {
    Command::new("which")
        .arg(program)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// `None` (and a line saying so in the test output) when Chromium is absent outside CI.
    async fn start() -> Option<Self> {
        if !installed("chromium") || !installed("chromedriver") {
            if std::env::var("BROWSER_TESTS_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("BROWSER_TESTS_REQUIRED=1 but chromium/chromedriver are not installed");
            }
            // libtest captures `eprintln!` and shows it only for a failed test: this
            // test passes, so the line goes to the process's stderr itself, which the
            // harness does not capture.
            let test = std::thread::current()
                .name()
                .unwrap_or("a browser test")
                .to_string();
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED {test}: chromium and chromedriver are not installed \
                 (apt-get install chromium chromium-driver); with BROWSER_TESTS_REQUIRED=1 \
                 (as in CI) this fails instead"
            );
            return None;
        }
        let permit = BROWSERS.acquire().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempdir::Dir::new();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--no-first-run",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        });
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities.as_object().unwrap().clone());
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        for _ in 0..50 {
            match builder.connect(&url).await {
                Ok(client) => {
                    return Some(Self {
                        client,
                        driver,
                        _profile: profile,
                        _permit: permit,
                    })
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromedriver did not start: {last_error:?}");
    }

    async fn sign_in(&self, app: &TestApp, user: &str) {
        self.sign_in_with_email(app, user, "ada@example.com").await;
    }

    async fn sign_in_with_email(&self, app: &TestApp, user: &str, email: &str) {
        self.sign_in_with_token(app, &token_for(user, Some(email)))
            .await;
    }

    async fn sign_in_with_token(&self, app: &TestApp, token: &str) {
        // A cookie can only be set for the origin the browser is on.
        self.client.goto(&app.url("/healthz")).await.unwrap();
        // What the host app's Set-Cookie would do (chromedriver refuses
        // cookies for a bare IP through add_cookie).
        self.client
            .execute(
                "document.cookie = 'billing_session=' + arguments[0] + '; path=/; SameSite=Lax'",
                vec![json!(token)],
            )
            .await
            .unwrap();
    }

    async fn open_billing(&self, app: &TestApp) {
        self.client
            .goto(&app.url("/settings/billing"))
            .await
            .unwrap();
    }

    async fn wait_for_state(&self, state: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&format!("main#billing[data-state='{state}']")))
            .await
            .unwrap_or_else(|e| panic!("page never reached state {state}: {e}"));
    }

    /// The first of `states` the page reaches (the page may settle in a
    /// state the test does not want; the test then says which).
    async fn state_among(&self, states: &[&str]) -> String {
        let css = states
            .iter()
            .map(|s| format!("main#billing[data-state='{s}']"))
            .collect::<Vec<_>>()
            .join(", ");
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("page reached none of {states:?}: {e}"))
            .attr("data-state")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn session_token_in_storage(&self) -> Value {
        self.client
            .execute("return sessionStorage.getItem('billing_token')", vec![])
            .await
            .unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .attr(name)
            .await
            .unwrap()
    }

    /// The page's URL without its query and fragment once that equals `expected`, or
    /// whatever it is after 10 s.
    #[cfg(feature = "emulator")]
    async fn page_once_it_is(&self, expected: &str) -> String {
        let mut page = String::new();
        for _ in 0..100 {
            let mut url = self.client.current_url().await.unwrap();
            url.set_query(None);
            url.set_fragment(None);
            page = url.to_string();
            if page == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        page
    }

    /// The page's URL once it equals `expected`, or whatever it is after 10 s.
    async fn url_once_it_is(&self, expected: &str) -> String {
        let mut url = String::new();
        for _ in 0..100 {
            url = self.client.current_url().await.unwrap().to_string();
            if url == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        url
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Also when a test fails before `close`: no chromedriver outlives its test.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A user with an active subscription to Pro ($29.00 a month), stored through the real
/// webhook path (the product and price events first, as Stripe sends them when they are made).
async fn paid_user(app: &TestApp, user: &str, cancel_at_period_end: bool) {
    app.given()
        .user(user)
        .with_customer(&format!("cus_{user}"))
        .store();
    // Delivered once per test app, whichever paid user comes first.
    for plan_event in pro_plan_events(now() - 3600) {
        assert_eq!(app.deliver(&plan_event).await.status(), 200);
    }
    let mut sub = current_subscription(
        &format!("sub_{user}"),
        &format!("cus_{user}"),
        "active",
        now() + 30 * 86_400,
    );
    sub["cancel_at_period_end"] = json!(cancel_at_period_end);
    let delivered = app
        .deliver(&event(
            &format!("evt_{user}"),
            "customer.subscription.created",
            now(),
            sub,
        ))
        .await;
    assert_eq!(delivered.status(), 200);
}

#[actix_rt::test]
async fn a_paid_user_sees_the_manage_subscription_button_and_renewal_date() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;

    assert!(browser.has("button#manage-subscription").await);
    assert_eq!(
        browser.text("button#manage-subscription").await.trim(),
        "Manage Subscription"
    );
    let page = browser.text("main#billing").await;
    assert!(page.contains("Active"), "{page}");
    assert!(page.contains("Renews on"), "{page}");
    assert_eq!(
        browser.attr("main#billing", "aria-busy").await.as_deref(),
        Some("false")
    );
    browser.screenshot("paid-desktop").await;
    browser.close().await;
}

#[actix_rt::test]
async fn a_subscription_ending_at_period_end_says_when_it_ends() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", true).await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;

    let page = browser.text("main#billing").await;
    assert!(page.contains("Ends on"), "{page}");
    assert!(!page.contains("Renews on"), "{page}");
    assert!(!browser.has("#cancel-subscription").await);
    browser.close().await;
}

/// Flexible billing mode, the default for new subscriptions since API
/// 2025-09-30, sets `cancel_at` and leaves `cancel_at_period_end` false.
#[actix_rt::test]
async fn a_subscription_set_to_end_in_flexible_mode_says_when_it_ends() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let end = now() + 10 * 86_400;
    let mut sub = current_subscription("sub_1", "cus_1", "active", end);
    sub["cancel_at"] = json!(end);
    app.deliver(&event(
        "evt_flex",
        "customer.subscription.updated",
        now(),
        sub,
    ))
    .await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;

    let page = browser.text("main#billing").await;
    assert!(page.contains("Ends on"), "{page}");
    assert!(!page.contains("Renews on"), "{page}");
    assert!(!browser.has("#cancel-subscription").await);
    browser.close().await;
}

#[actix_rt::test]
async fn an_organisations_page_says_whose_billing_it_is_and_shows_manage_only_to_managers() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "org:acme", false).await;

    browser
        .sign_in_with_token(
            &app,
            &org_token("ada", "acme", Some("owner"), Some("Acme Inc.")),
        )
        .await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;
    assert_eq!(
        browser.text("#billing-for").await.trim(),
        "Billing for Acme Inc."
    );
    assert!(browser.has("button#manage-subscription").await);

    browser
        .sign_in_with_token(
            &app,
            &org_token("linus", "acme", Some("member"), Some("Acme Inc.")),
        )
        .await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;
    assert_eq!(
        browser.text("#billing-for").await.trim(),
        "Billing for Acme Inc."
    );
    assert!(!browser.has("#manage-subscription").await);
    assert!(!browser.has("[data-portal-flow]").await);
    let page = browser.text("main#billing").await;
    assert!(
        page.contains(
            "Only members with the role owner or admin of Acme Inc. can manage its billing"
        ),
        "{page}"
    );
    browser.screenshot("organisation-member").await;
    browser.close().await;
}

#[actix_rt::test]
async fn an_unpaid_user_never_sees_the_button() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;

    browser.sign_in(&app, "user_2").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;

    assert!(!browser.has("#manage-subscription").await);
    let page = browser.text("main#billing").await;
    assert!(page.contains("No active subscription"), "{page}");
    browser.screenshot("unpaid-desktop").await;
    browser.close().await;
}

#[actix_rt::test]
async fn clicking_the_button_shows_the_loading_state_and_lands_on_the_portal() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;
    mount_loopback_portal(&app.stripe, Duration::from_millis(1500)).await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;
    let button = browser
        .client
        .find(Locator::Css("#manage-subscription"))
        .await
        .unwrap();
    button.click().await.unwrap();

    // Stripe answers after 1.5 s: the loading state is visible meanwhile.
    assert!(button.attr("disabled").await.unwrap().is_some());
    assert_eq!(
        button.attr("aria-busy").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(button.text().await.unwrap().contains("Opening portal"));
    browser.screenshot("paid-loading").await;
    // A second click while pending sends nothing more.
    let _ = button.click().await;
    let portal = format!("{}/portal/cus_user_1", app.stripe.uri());
    assert_eq!(browser.url_once_it_is(&portal).await, portal);
    assert_eq!(
        app.stripe_requests("POST", "/v1/billing_portal/sessions")
            .await
            .len(),
        1
    );
    browser.close().await;
}

#[actix_rt::test]
async fn a_stripe_failure_shows_the_message_and_enables_the_button_again() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(stripe_error(500, "api_error", None, "boom"))
        .mount(&app.stripe)
        .await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;
    browser
        .client
        .find(Locator::Css("#manage-subscription"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#portal-error"))
        .await
        .unwrap();

    let message = browser.text("#portal-error").await;
    assert!(
        message.contains("Stripe could not process the request"),
        "{message}"
    );
    assert!(browser
        .attr("#manage-subscription", "disabled")
        .await
        .is_none());
    browser.screenshot("paid-portal-error").await;
    browser.close().await;
}

#[actix_rt::test]
async fn a_visitor_without_a_session_is_asked_to_sign_in() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;

    browser.open_billing(&app).await;
    browser.wait_for_state("signed-out").await;

    assert!(!browser.has("#manage-subscription").await);
    let page = browser.text("main#billing").await;
    assert!(page.contains("Sign in"), "{page}");
    browser.screenshot("signed-out").await;
    browser.close().await;
}

#[actix_rt::test]
async fn a_failed_status_request_offers_a_retry_that_recovers() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|vars| route_database_through(vars, &proxy)).await;
    paid_user(&app, "user_1", false).await;

    browser.sign_in(&app, "user_1").await;
    proxy.cut();
    browser.open_billing(&app).await;
    browser.wait_for_state("error").await;
    browser.screenshot("status-error").await;
    proxy.restore();
    browser
        .client
        .find(Locator::Css("#retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    browser.wait_for_state("paid").await;
    browser.close().await;
}

#[actix_rt::test]
async fn the_page_fits_a_360_pixel_wide_screen() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;

    browser.client.set_window_size(360, 800).await.unwrap();
    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;

    let widths: Value = browser
        .client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
    assert!(scroll <= inner, "horizontal scroll: {scroll} > {inner}");
    let page = browser.text("main#billing").await;
    // In whatever language the browser has: the plan's line fits too.
    assert!(page.contains("Pro · ") && page.contains("29"), "{page}");
    browser.screenshot("paid-360").await;
    browser.close().await;
}

#[actix_rt::test]
async fn the_secondary_actions_open_their_portal_flows() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;
    mount_loopback_portal(&app.stripe, Duration::from_millis(0)).await;

    for (button, flow) in [
        ("#update-payment-method", "payment_method_update"),
        ("#cancel-subscription", "subscription_cancel"),
    ] {
        browser.sign_in(&app, "user_1").await;
        browser.open_billing(&app).await;
        browser.wait_for_state("paid").await;
        assert!(browser.has("#manage-subscription").await);
        browser
            .client
            .find(Locator::Css(button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let portal = format!("{}/portal/cus_user_1", app.stripe.uri());
        assert_eq!(browser.url_once_it_is(&portal).await, portal);
        let sessions = app
            .stripe_requests("POST", "/v1/billing_portal/sessions")
            .await;
        let fields = form(sessions.last().unwrap());
        assert_eq!(fields["flow_data[type]"], flow, "{button}");
    }
    browser.close().await;
}

#[actix_rt::test]
async fn a_subscription_already_ending_offers_no_cancel_action() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", true).await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;

    assert!(browser.has("#update-payment-method").await);
    assert!(!browser.has("#cancel-subscription").await);
    browser.screenshot("paid-ending").await;
    browser.close().await;
}

async fn click_now(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The customer of the last portal session Stripe was asked for.
async fn last_portal_customer(app: &TestApp) -> String {
    let sessions = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    form(sessions.last().expect("a portal session was created"))["customer"].clone()
}

/// The attack of issue 15, item 4: a signed-in victim opens a link carrying
/// the attacker's own (valid) token. Before, the page adopted it, sent it as
/// a bearer token that beat the cookie, and "Update payment method" stored
/// the victim's card on the attacker's customer.
#[actix_rt::test]
async fn a_link_with_another_accounts_token_never_switches_a_signed_in_user_silently() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "victim", false).await;
    paid_user(&app, "attacker", false).await;
    mount_loopback_portal(&app.stripe, Duration::from_millis(0)).await;
    let attackers = token_for("attacker", Some("mallory@evil.example"));

    browser
        .sign_in_with_email(&app, "victim", "victim@example.com")
        .await;
    let page = app.url("/settings/billing");
    browser
        .client
        .goto(&format!("{page}#token={attackers}"))
        .await
        .unwrap();

    let state = browser
        .state_among(&["confirm-switch", "paid", "unpaid"])
        .await;
    assert_eq!(
        state, "confirm-switch",
        "the link switched accounts without asking"
    );
    // The token left the address bar at once, and is not kept unless chosen.
    assert_eq!(browser.client.current_url().await.unwrap().as_str(), page);
    assert_eq!(browser.session_token_in_storage().await, Value::Null);
    let question = browser.text("main#billing").await;
    assert!(question.contains("victim@example.com"), "{question}");
    assert!(question.contains("mallory@evil.example"), "{question}");
    browser.screenshot("link-confirm-switch").await;

    click_now(&browser, "#stay-signed-in").await;
    browser.wait_for_state("paid").await;
    let identity = browser.text("#signed-in-as").await;
    assert!(identity.contains("victim@example.com"), "{identity}");
    assert!(!identity.contains("mallory"), "{identity}");
    click_now(&browser, "#update-payment-method").await;
    let portal = format!("{}/portal/cus_victim", app.stripe.uri());
    assert_eq!(browser.url_once_it_is(&portal).await, portal);
    assert_eq!(last_portal_customer(&app).await, "cus_victim");
    browser.close().await;
}

#[actix_rt::test]
async fn switching_to_the_account_of_a_link_takes_a_click_and_the_page_then_names_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_a", false).await;
    paid_user(&app, "user_b", false).await;
    mount_loopback_portal(&app.stripe, Duration::from_millis(0)).await;

    browser
        .sign_in_with_email(&app, "user_a", "a@example.com")
        .await;
    let link = token_for("user_b", Some("b@example.com"));
    browser
        .client
        .goto(&format!("{}#token={link}", app.url("/settings/billing")))
        .await
        .unwrap();
    browser.wait_for_state("confirm-switch").await;
    click_now(&browser, "#switch-account").await;

    // The page now speaks for B (its token, without the cookie, so the
    // server never sees two users in one request), and says so.
    browser.wait_for_state("paid").await;
    let identity = browser.text("#signed-in-as").await;
    assert!(identity.contains("b@example.com"), "{identity}");
    assert!(identity.contains("user_b"), "{identity}");
    click_now(&browser, "#update-payment-method").await;
    let portal = format!("{}/portal/cus_user_b", app.stripe.uri());
    assert_eq!(browser.url_once_it_is(&portal).await, portal);
    assert_eq!(last_portal_customer(&app).await, "cus_user_b");
    browser.close().await;
}

#[actix_rt::test]
async fn a_link_without_a_session_signs_in_and_the_page_says_as_whom() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;

    let link = token_for("user_1", Some("ada@example.com"));
    let page = app.url("/settings/billing");
    browser
        .client
        .goto(&format!("{page}#token={link}"))
        .await
        .unwrap();

    browser.wait_for_state("paid").await;
    assert_eq!(browser.client.current_url().await.unwrap().as_str(), page);
    let identity = browser.text("#signed-in-as").await;
    assert!(identity.contains("ada@example.com"), "{identity}");
    assert!(identity.contains("user_1"), "{identity}");
    browser.screenshot("paid-signed-in-as").await;
    browser.close().await;
}

#[actix_rt::test]
async fn an_invalid_link_changes_nothing_and_says_so() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;

    browser
        .sign_in_with_email(&app, "user_2", "bo@example.com")
        .await;
    browser
        .client
        .goto(&format!("{}#token=not.a.jwt", app.url("/settings/billing")))
        .await
        .unwrap();

    browser.wait_for_state("unpaid").await;
    let identity = browser.text("#signed-in-as").await;
    assert!(identity.contains("bo@example.com"), "{identity}");
    let notice = browser.text("#session-notice").await;
    assert!(notice.contains("not used"), "{notice}");
    assert_eq!(browser.session_token_in_storage().await, Value::Null);
    browser.close().await;
}

#[cfg(feature = "emulator")]
async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The page's Subscribe for the emulator's Pro plan, paid on the emulator's hosted checkout
/// page with the card `number`, as a buyer does.
#[cfg(feature = "emulator")]
async fn subscribe_on_the_page(browser: &Browser, card: &str) {
    click(browser, r#"[data-checkout-plan="price_emu_pro_monthly"]"#).await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#number"))
        .await
        .unwrap_or_else(|e| panic!("the browser never reached the checkout page: {e}"));
    let url = browser.client.current_url().await.unwrap();
    assert!(url.path().contains("/c/pay/cs_"), "{url}");
    enter_card(browser, card).await;
}

/// Issue 19: an unpaid user picks a plan on the page, pays, and is shown paid the moment they
/// come back, with every webhook held back.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn back_from_checkout_the_page_shows_paid_before_any_webhook() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("deliveries", "off")]).await;
    demo_sign_in(&browser, &app).await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(
            r#"[data-checkout-plan="price_emu_starter_monthly"]"#,
        ))
        .await
        .unwrap();
    browser.screenshot("checkout-plans").await;

    subscribe_on_the_page(&browser, "4242 4242 4242 4242").await;

    // Stripe's redirect: the success URL, with the session's id.
    browser.wait_for_state("paid").await;
    assert!(app.user("demo_user").unwrap().paid);
    assert_eq!(app.count("stripe_events"), 0, "no webhook was delivered");
    let url = browser.client.current_url().await.unwrap();
    assert!(
        url.query().is_none(),
        "the return marker left the address bar: {url}"
    );
    browser.screenshot("checkout-returned-paid").await;
    browser.close().await;
}

/// Signed out, the page offers the demo sign-in (emulator only); after it, the demo user is
/// unpaid.
#[cfg(feature = "emulator")]
async fn demo_sign_in(browser: &Browser, app: &TestApp) {
    browser.open_billing(app).await;
    browser.wait_for_state("signed-out").await;
    click(browser, "#demo-sign-in").await;
    browser.wait_for_state("unpaid").await;
}

/// Issue 19: the declining card leaves the user unpaid, with Stripe's message on the checkout
/// page; back on the billing page (Checkout's back link is the cancel URL), still unpaid.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_declined_card_at_checkout_leaves_the_user_unpaid() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    demo_sign_in(&browser, &app).await;

    subscribe_on_the_page(&browser, "4000 0000 0000 0002").await;

    let error = browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#error"))
        .await
        .unwrap();
    assert_eq!(error.text().await.unwrap(), "Your card was declined.");
    browser.screenshot("checkout-declined").await;
    assert!(!app.user("demo_user").unwrap().paid);
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(
            r#"[data-checkout-plan="price_emu_pro_monthly"]"#,
        ))
        .await
        .unwrap();
    assert_eq!(app.count("subscriptions WHERE status = 'active'"), 0);
    browser.close().await;
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_zero_config_loop_subscribe_manage_cancel_and_return_works_offline() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;

    // Signed out: the demo sign-in is offered.
    demo_sign_in(&browser, &app).await;
    assert!(!browser.has("#manage-subscription").await);
    browser.screenshot("demo-unpaid").await;

    // The page's Checkout: the emulator creates the subscription, the return
    // applies it, and the button appears.
    subscribe_on_the_page(&browser, "4242 4242 4242 4242").await;
    browser.wait_for_state("paid").await;
    browser.screenshot("demo-paid").await;

    // The emulator's hosted portal: cancel now, then return to the app.
    click(&browser, "#manage-subscription").await;
    click(&browser, "#cancel-plan").await;
    click(&browser, "#cancel-now").await;
    browser.screenshot("demo-portal-cancel").await;
    click(&browser, "#confirm-cancel").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap();
    click(&browser, "#return-to-app").await;

    // Back on the page: the cancellation arrived by webhook, no button.
    eventually("the cancellation webhook", || {
        !app.user("demo_user").unwrap().paid
    })
    .await;
    browser.client.refresh().await.unwrap();
    browser.wait_for_state("unpaid").await;
    assert!(!browser.has("#manage-subscription").await);
    browser.screenshot("demo-returned").await;
    // `created` (incomplete) and `updated` (active) share a second and arrive
    // in random order, as from Stripe: `created` is applied or seen as older.
    let created = app.event_outcome_of_type("customer.subscription.created");
    assert!(
        ["applied", "stale"].contains(&created.as_str()),
        "{created}"
    );
    assert_eq!(
        app.event_outcome_of_type("customer.subscription.deleted"),
        "applied"
    );
    browser.close().await;
}

#[cfg(feature = "emulator")]
/// Runs `source` in every document the browser opens from now on, before the
/// page's own scripts (Chrome DevTools' `Page.addScriptToEvaluateOnNewDocument`,
/// through chromedriver).
async fn before_every_page(browser: &Browser, source: &str) {
    #[derive(Debug)]
    struct Cdp(Value);
    impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
        fn endpoint(
            &self,
            base: &url::Url,
            session: Option<&str>,
        ) -> Result<url::Url, url::ParseError> {
            base.join(&format!(
                "session/{}/goog/cdp/execute",
                session.unwrap_or("")
            ))
        }
        fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
            (reqwest::Method::POST, Some(self.0.to_string()))
        }
    }
    browser
        .client
        .issue_cmd(Cdp(json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": {"source": source}
        })))
        .await
        .unwrap();
}

#[cfg(feature = "emulator")]
/// Records every state the Billing Settings card shows, from the first one:
/// `window.__renders`, a list of `state|text`.
const RECORD_RENDERS: &str = r#"
window.__renders = [];
new MutationObserver(() => {
  const main = document.getElementById('billing');
  if (!main) return;
  const seen = main.dataset.state + '|' + main.textContent.replace(/\s+/g, ' ');
  if (window.__renders[window.__renders.length - 1] !== seen) window.__renders.push(seen);
}).observe(document, { childList: true, subtree: true, attributes: true, characterData: true });
"#;

#[cfg(feature = "emulator")]
async fn renders(browser: &Browser) -> Vec<String> {
    let recorded = browser
        .client
        .execute("return window.__renders || []", vec![])
        .await
        .unwrap();
    serde_json::from_value(recorded).unwrap()
}

/// Stripe fails when the page asks for a refresh: it shows the stored status
/// with a notice, and a reload does not ask again.
#[actix_rt::test]
async fn back_from_the_portal_with_stripe_failing_the_page_shows_the_stored_status_and_says_so() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    paid_user(&app, "user_1", false).await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(
            // What Stripe sends with a 500 (stripe-node's retry comment): not retried.
            stripe_error(500, "api_error", None, "boom")
                .append_header("Stripe-Should-Retry", "false"),
        )
        .mount(&app.stripe)
        .await;

    browser.sign_in(&app, "user_1").await;
    browser
        .client
        .goto(&app.url("/settings/billing?from=portal"))
        .await
        .unwrap();
    browser.wait_for_state("paid").await;

    let page = browser.text("main#billing").await;
    assert!(page.contains("Renews on"), "{page}");
    let notice = browser.text("#refresh-notice").await;
    assert!(notice.contains("last known state"), "{notice}");
    assert_eq!(
        browser.url_once_it_is(&app.url("/settings/billing")).await,
        app.url("/settings/billing")
    );
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
    browser.screenshot("refresh-failed").await;
    browser.client.refresh().await.unwrap();
    browser.wait_for_state("paid").await;
    assert!(!browser.has("#refresh-notice").await);
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
    browser.close().await;
}

/// Issue 16: cancel in the portal, "Return to app", and the page says when the
/// plan ends at once, though no webhook ever comes; it never shows the stale
/// "Renews on" first.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn back_from_the_portal_the_page_shows_the_cancellation_at_once_without_a_webhook() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    let (customer, _) = emulated_paid_user(&app, "user_1").await;
    account_settings(&app, &[("deliveries", "off")]).await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("paid").await;
    let before = browser.text("main#billing").await;
    assert!(before.contains("Renews on"), "{before}");
    before_every_page(&browser, RECORD_RENDERS).await;

    // The emulator's hosted portal: cancel at the end of the period.
    click(&browser, "#manage-subscription").await;
    click(&browser, "#cancel-plan").await;
    click(&browser, "#confirm-cancel").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap();
    // Another read of this customer holds its fetch lock, so the page's
    // refresh waits: the page must keep its loading state meanwhile.
    let held = app.hold_lock(&format!(
        "SELECT pg_advisory_xact_lock(hashtextextended('billing-fetch:{customer}', 0))"
    ));
    click(&browser, "#return-to-app").await;
    eventually("the page's refresh to wait for the fetch lock", || {
        app.count(
            "pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == 1
    })
    .await;
    assert_eq!(
        browser.attr("main#billing", "data-state").await.as_deref(),
        Some("loading")
    );
    browser.screenshot("refresh-loading").await;
    held.release();

    browser.wait_for_state("paid").await;
    let after = browser.text("main#billing").await;
    assert!(after.contains("Ends on"), "{after}");
    assert!(!after.contains("Renews on"), "{after}");
    assert!(!browser.has("#refresh-notice").await);
    assert!(!browser.has("#cancel-subscription").await);
    let page = app.url("/settings/billing");
    assert_eq!(browser.url_once_it_is(&page).await, page);
    let shown = renders(&browser).await;
    assert!(
        shown.first().is_some_and(|s| s.starts_with("loading|")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().all(|s| !s.contains("Renews on")),
        "the stale status was shown: {shown:#?}"
    );
    // No webhook told the service: the page's refresh did.
    assert_eq!(
        app.count("stripe_events WHERE type = 'customer.subscription.updated'"),
        1,
        "only the activation's update ever arrived"
    );
    browser.screenshot("refresh-returned").await;
    browser.close().await;
}

// --- Skipped browser tests say so where people look: the test output (issue 17).

/// Runs one browser test of this very test binary in a child process where chromium and
/// chromedriver cannot be found: what `cargo test` shows for it, and whether it passed.
fn run_without_chromium(test: &str, required: bool) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--test-threads=1"])
        // `which` itself is not found either: nothing is installed.
        .env("PATH", "")
        .env_remove("BROWSER_TESTS_REQUIRED");
    if required {
        command.env("BROWSER_TESTS_REQUIRED", "1");
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn a_browser_test_without_chromium_says_in_the_test_output_that_it_skipped() {
    let test = "browser::an_unpaid_user_never_sees_the_button";

    let (passed, output) = run_without_chromium(test, false);

    assert!(passed, "{output}");
    let said = output
        .lines()
        .find(|l| l.contains("SKIPPED"))
        .unwrap_or_else(|| panic!("no SKIPPED line in what cargo test shows:\n{output}"));
    assert!(said.contains(test), "{said}");
    assert!(said.contains("chromium"), "{said}");
    assert!(said.contains("BROWSER_TESTS_REQUIRED=1"), "{said}");
}

#[test]
fn with_browser_tests_required_a_missing_chromium_fails_the_test() {
    let (passed, output) =
        run_without_chromium("browser::an_unpaid_user_never_sees_the_button", true);

    assert!(!passed, "{output}");
    assert!(output.contains("BROWSER_TESTS_REQUIRED=1"), "{output}");
}

// --- The emulator's hosted portal (issue 17).

/// A portal session for `user` on an emulated app, opened through the API.
#[cfg(feature = "emulator")]
async fn emulated_portal_url(app: &TestApp, user: &str) -> String {
    let response = app.create_portal(&token_for(user, None)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"]["portalUrl"].as_str().unwrap().to_string()
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn an_expired_portal_session_shows_a_page_whose_return_link_leads_to_the_billing_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    let url = emulated_portal_url(&app, "user_1").await;
    advance_billing_clock(&app.client, &app.address, 6 * 60).await;

    browser.client.goto(&url).await.unwrap();

    let page = browser.text("main").await;
    assert!(page.contains("expired"), "{page}");
    assert!(!page.contains("\"message\""), "{page}");
    browser.screenshot("portal-expired").await;
    click(&browser, "#return-to-app").await;
    let billing = app.url("/settings/billing");
    assert_eq!(browser.page_once_it_is(&billing).await, billing);
    browser.wait_for_state("signed-out").await;
    browser.close().await;
}

/// `PORT=8095 cargo run`, no `APP_BASE_URL`: "Return to app" comes back to that port.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn on_another_port_the_portals_return_link_comes_back_to_that_port() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|vars| {
        vars.remove("APP_BASE_URL");
    })
    .await;
    let port = app.address.rsplit(':').next().unwrap().to_string();
    let url = emulated_portal_url(&app, "user_1").await;

    browser.client.goto(&url).await.unwrap();
    click(&browser, "#return-to-app").await;

    let billing = format!("http://localhost:{port}/settings/billing");
    assert_eq!(browser.page_once_it_is(&billing).await, billing);
    browser.wait_for_state("signed-out").await;
    browser.close().await;
}

/// Whether the page now shown scrolls sideways: `(scrollWidth, clientWidth)`.
#[cfg(feature = "emulator")]
async fn horizontal_extent(browser: &Browser) -> (i64, i64) {
    let widths: Value = browser
        .client
        .execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
            vec![],
        )
        .await
        .unwrap();
    (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap())
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_emulator_portal_fits_a_320_pixel_wide_screen() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    emulated_portal_url(&app, "user_1").await;
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();
    let (status, sub) = emulator_post(
        &app,
        "subscriptions",
        &[
            ("customer", &customer),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{sub}");
    // A renewal: two invoices, the widest rows the home page has.
    advance_billing_clock(&app.client, &app.address, 32 * 86_400).await;
    let url = emulated_portal_url(&app, "user_1").await;

    browser.client.set_window_size(320, 800).await.unwrap();
    let sub_id = sub["id"].as_str().unwrap();
    for page in [
        url.clone(),
        format!("{url}/plan?subscription={sub_id}"),
        format!("{url}/cancel?subscription={sub_id}"),
        format!("{url}/payment-method"),
        format!("{url}/address"),
    ] {
        browser.client.goto(&page).await.unwrap();
        let (scroll, client) = horizontal_extent(&browser).await;
        assert!(client <= 320, "the window is not 320 px wide: {client}");
        assert!(
            scroll <= client,
            "{page}: horizontal scroll: {scroll} > {client}"
        );
    }
    browser.client.goto(&url).await.unwrap();
    let invoices = browser.text("section[aria-labelledby='ih']").await;
    assert!(invoices.contains("Paid"), "{invoices}");
    browser
        .client
        .execute(
            "document.querySelector(\"section[aria-labelledby='ih']\").scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot("portal-320-invoices").await;
    browser.close().await;
}

/// Types `text` into the field `css` of the page shown.
#[cfg(feature = "emulator")]
async fn type_into(browser: &Browser, css: &str, text: &str) {
    let field = browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Pays on the hosted checkout page shown with the card `number`.
#[cfg(feature = "emulator")]
async fn enter_card(browser: &Browser, number: &str) {
    type_into(browser, "#number", number).await;
    type_into(browser, "#exp", "12 / 34").await;
    type_into(browser, "#cvc", "123").await;
    click(browser, "#submit").await;
}

/// The hosted checkout page (issue 19) on a 320 px screen: every step of it (the card form,
/// a decline, the 3-D Secure step) fits without scrolling sideways, and it pays.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_emulator_checkout_page_fits_a_320_pixel_wide_screen_through_to_the_payment() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let url = session["url"].as_str().unwrap();
    browser.client.set_window_size(320, 800).await.unwrap();
    let fits = |step: &'static str| {
        let browser = &browser;
        async move {
            let (scroll, client) = horizontal_extent(browser).await;
            assert!(client <= 320, "the window is not 320 px wide: {client}");
            assert!(
                scroll <= client,
                "{step}: horizontal scroll: {scroll} > {client}"
            );
        }
    };

    browser.client.goto(url).await.unwrap();
    fits("the card form").await;
    browser.screenshot("checkout-320").await;
    enter_card(&browser, "4000 0000 0000 0002").await;
    let error = browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#error"))
        .await
        .unwrap();
    assert_eq!(error.text().await.unwrap(), "Your card was declined.");
    fits("the decline").await;
    enter_card(&browser, "4000 0027 6000 3184").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#complete-authentication"))
        .await
        .unwrap();
    fits("the 3-D Secure step").await;
    click(&browser, "#complete-authentication").await;

    let billing = app.url("/settings/billing");
    assert_eq!(browser.page_once_it_is(&billing).await, billing);
    let paid = emulator_get(
        &app,
        &format!("checkout/sessions/{}", session["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(paid["payment_status"], "paid", "{paid}");
    browser.close().await;
}

/// `user` subscribed to Pro through the emulator's API and stored by the service as paid; the
/// subscription's id.
#[cfg(feature = "emulator")]
async fn emulated_subscriber(app: &TestApp, user: &str) -> String {
    let token = token_for(user, Some("ada@example.com"));
    assert_eq!(app.create_portal(&token).await.status(), 200);
    let customer = app.user(user).unwrap().stripe_customer_id.unwrap();
    let (status, sub) = emulator_post(
        app,
        "subscriptions",
        &[
            ("customer", &customer),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{sub}");
    eventually("the subscription stored as paid", || {
        app.user(user).unwrap().paid
    })
    .await;
    sub["id"].as_str().unwrap().to_string()
}

/// Makes every page the browser opens from now on see `language` as `navigator.language`.
#[cfg(feature = "emulator")]
async fn browser_language(browser: &Browser, language: &str) {
    before_every_page(
        browser,
        &format!(
            "Object.defineProperty(navigator, 'language', {{ get: () => '{language}', configurable: true }});"
        ),
    )
    .await;
}

/// The paid card's text once it names the plan: its name reaches the service by webhook (or
/// a read of Stripe) a moment after the subscription, so the page is loaded again until then.
#[cfg(feature = "emulator")]
async fn paid_card_naming(browser: &Browser, app: &TestApp, name: &str) -> String {
    let mut card = String::new();
    for _ in 0..100 {
        browser.open_billing(app).await;
        browser.wait_for_state("paid").await;
        card = browser.text("main#billing").await;
        if card.contains(name) {
            return card;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the page never named the plan {name}: {card}");
}

/// Issue 17: "Pro · $29.00 per month" where the page used to show "Plan: price_… · Product:
/// prod_…", formatted in the reader's locale, and no Stripe id anywhere on the page.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_paid_user_sees_the_plan_name_and_its_price_in_their_locale_and_no_stripe_id() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    emulated_subscriber(&app, "user_1").await;
    browser.sign_in(&app, "user_1").await;
    browser_language(&browser, "en-US").await;

    let card = paid_card_naming(&browser, &app, "Pro").await;

    assert!(card.contains("Pro · $29.00 per month"), "{card}");
    let html: Value = browser
        .client
        .execute("return document.documentElement.outerHTML", vec![])
        .await
        .unwrap();
    let html = html.as_str().unwrap();
    assert!(
        !html.contains("price_") && !html.contains("prod_"),
        "a Stripe id on the page: {html}"
    );
    browser.screenshot("paid-plan").await;

    browser_language(&browser, "de-DE").await;
    let card = paid_card_naming(&browser, &app, "Pro").await;
    assert!(card.contains("29,00"), "{card}");
    assert!(!card.contains("$29.00"), "{card}");
    browser.close().await;
}

/// Issue 17: a former customer (subscription canceled) reaches their invoices and saved card
/// through "Billing history", the portal's home page; "Manage Subscription" is for paid users.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_former_customer_sees_billing_history_and_it_opens_the_portal_home() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;
    let sub = emulated_subscriber(&app, "user_1").await;
    let canceled = app
        .client
        .delete(app.url(&format!("/stripe-emulator/v1/subscriptions/{sub}")))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    eventually("the cancellation stored", || {
        !app.user("user_1").unwrap().paid
    })
    .await;

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;

    assert!(!browser.has("#manage-subscription").await);
    assert_eq!(
        browser.text("button#billing-history").await.trim(),
        "Billing history"
    );
    let card = browser.text("main#billing").await;
    assert!(!card.contains("nothing to manage here yet"), "{card}");
    browser.screenshot("former-customer-demo").await;
    click_now(&browser, "#billing-history").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("h2#ih"))
        .await
        .unwrap_or_else(|e| panic!("not the portal's home page: {e}"));
    let url = browser.client.current_url().await.unwrap();
    assert!(
        url.path().starts_with("/stripe-emulator/p/session/")
            && url.path().matches('/').count() == 4,
        "{url}"
    );
    let portal = browser.text("body").await;
    assert!(portal.contains("Invoice history"), "{portal}");
    browser.close().await;
}

/// A user whose customer's subscription was canceled, through the real webhook path.
async fn former_customer(app: &TestApp, user: &str) {
    paid_user(app, user, false).await;
    let sub = current_subscription(
        &format!("sub_{user}"),
        &format!("cus_{user}"),
        "canceled",
        now() + 30 * 86_400,
    );
    let delivered = app
        .deliver(&event(
            &format!("evt_{user}_ended"),
            "customer.subscription.deleted",
            now() + 1,
            sub,
        ))
        .await;
    assert_eq!(delivered.status(), 200);
}

/// The service offering the Pro plan (`price_pro_monthly`, $29 a month), which the fake Stripe
/// knows before the service starts and reads it.
async fn app_offering_pro() -> TestApp {
    let stripe = wiremock::MockServer::start().await;
    let mut price = price_object("price_pro_monthly", "prod_pro", 2900);
    price["product"] = product_object("prod_pro", "Pro");
    Mock::given(method("GET"))
        .and(path("/v1/prices/price_pro_monthly"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(price))
        .mount(&stripe)
        .await;
    let mut app = spawn_app_with(|vars| {
        vars.insert("BILLING_PLANS".into(), "price_pro_monthly".into());
        vars.insert("STRIPE_MAX_NETWORK_RETRIES".into(), "0".into());
        vars.insert("STRIPE_API_BASE".into(), stripe.uri());
    })
    .await;
    app.stripe = stripe;
    mount_working_stripe(&app.stripe).await;
    app
}

/// A subscription that still exists but grants no access (`unpaid` after its failed renewals):
/// the service refuses a second one (409 `already_subscribed`), so the page offers no plan and
/// sends the user to the portal to fix the one they have.
#[actix_rt::test]
async fn an_unpaid_subscription_is_fixed_in_the_portal_and_no_plan_is_offered() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = app_offering_pro().await;
    paid_user(&app, "user_1", false).await;
    let sub = current_subscription("sub_user_1", "cus_user_1", "unpaid", now() + 86_400);
    let delivered = app
        .deliver(&event(
            "evt_user_1_unpaid",
            "customer.subscription.updated",
            now() + 1,
            sub,
        ))
        .await;
    assert_eq!(delivered.status(), 200);

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(
            r#"[data-field="fix-subscription"]:not([hidden])"#,
        ))
        .await
        .unwrap();

    let page = browser.text("main#billing").await;
    assert!(page.contains("Billing history"), "{page}");
    assert!(
        browser
            .client
            .find_all(Locator::Css("[data-checkout-plan]"))
            .await
            .unwrap()
            .is_empty(),
        "{page}"
    );
}

/// The same busy and error states as "Manage Subscription", and the portal opens without a flow.
#[actix_rt::test]
async fn billing_history_waits_for_stripe_then_shows_its_failure_and_can_be_clicked_again() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let gated = GatedStripe::start().await;
    let app = spawn_app_with(|vars| gated.route(vars)).await;
    former_customer(&app, "user_1").await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(
            // What Stripe sends with a 500 (stripe-node's retry comment): not retried.
            stripe_error(500, "api_error", None, "boom")
                .append_header("Stripe-Should-Retry", "false"),
        )
        .mount(&app.stripe)
        .await;
    let sessions = gated.gate(|path, _| path == "/v1/billing_portal/sessions");

    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;
    browser.screenshot("former-customer").await;
    let button = browser
        .client
        .find(Locator::Css("#billing-history"))
        .await
        .unwrap();
    button.click().await.unwrap();
    sessions.arrived(1).await;

    // Stripe has not answered yet: the button says so and takes no second click.
    assert!(button.attr("disabled").await.unwrap().is_some());
    assert_eq!(
        button.attr("aria-busy").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(button.text().await.unwrap().contains("Opening portal"));
    sessions.open();
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#portal-error"))
        .await
        .unwrap();

    let message = browser.text("#portal-error").await;
    assert!(
        message.contains("Stripe could not process the request"),
        "{message}"
    );
    assert!(browser.attr("#billing-history", "disabled").await.is_none());
    let requests = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    assert_eq!(requests.len(), 1);
    let fields = form(&requests[0]);
    assert_eq!(fields["customer"], "cus_user_1");
    assert!(!fields.contains_key("flow_data[type]"), "{fields:?}");
    browser.screenshot("former-customer-portal-error").await;
    browser.close().await;
}

/// Issue 17: `cargo run` again (after every code change) in the middle of the demo loop, and
/// the portal still knows the subscription. The service runs as its own process, restarted on
/// the same port and database, so the browser keeps its page and its session.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn after_a_restart_in_the_middle_of_the_demo_loop_the_portal_still_knows_the_subscription() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let port = free_port();
    let mut first = Instance::start_emulated_on(&app, port).await;
    let page = format!("{}/settings/billing", first.base);
    browser.client.goto(&page).await.unwrap();
    browser.wait_for_state("signed-out").await;
    click(&browser, "#demo-sign-in").await;
    browser.wait_for_state("unpaid").await;
    subscribe_on_the_page(&browser, "4242 4242 4242 4242").await;
    browser.wait_for_state("paid").await;
    let subscription = app.subscription_ids().pop().unwrap();

    first.kill();
    let _second = Instance::start_emulated_on(&app, port).await;
    browser.client.goto(&page).await.unwrap();
    browser.wait_for_state("paid").await;
    click(&browser, "#manage-subscription").await;

    let cancel = browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#cancel-plan"))
        .await
        .unwrap_or_else(|e| panic!("the portal shows no subscription to cancel: {e}"));
    let href = cancel.attr("href").await.unwrap().unwrap_or_default();
    assert!(
        href.ends_with(&format!("subscription={subscription}")),
        "{href}"
    );
    browser.screenshot("demo-portal-after-restart").await;
    browser.close().await;
}

/// Issue 19: a Subscribe that Stripe refuses says why under its plan, and the button is usable
/// again; without `BILLING_PLANS` the card says to contact the app instead of listing plans.
#[actix_rt::test]
async fn a_refused_subscribe_shows_its_error_and_no_plans_means_contact_us() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = app_offering_pro().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(stripe_error(400, "invalid_request_error", None, "bad"))
        .mount(&app.stripe)
        .await;
    browser.sign_in(&app, "user_1").await;
    browser.open_billing(&app).await;
    browser.wait_for_state("unpaid").await;
    let subscribe = r#"[data-checkout-plan="price_pro_monthly"]"#;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(subscribe))
        .await
        .unwrap();
    assert_eq!(browser.text(".plan-name").await, "Pro");
    assert_eq!(browser.text(".plan-price").await, "$29.00 per month");

    browser
        .client
        .find(Locator::Css(subscribe))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(
            ".plan-item + #portal-error, .plan-item #portal-error",
        ))
        .await
        .unwrap();
    let error = browser.text("#portal-error").await;
    assert!(
        error.contains("Stripe could not process the request"),
        "{error}"
    );
    assert_eq!(
        browser.attr(subscribe, "aria-busy").await.as_deref(),
        Some("false")
    );
    browser.screenshot("checkout-refused").await;

    let bare = spawn_app().await;
    browser.sign_in(&bare, "user_1").await;
    browser.open_billing(&bare).await;
    browser.wait_for_state("unpaid").await;
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(r#"[data-field="no-plans"]:not([hidden])"#))
        .await
        .unwrap();
    assert!(browser
        .text(r#"[data-field="no-plans"]"#)
        .await
        .contains("Please contact us to subscribe."));
    assert!(!browser.has("[data-checkout-plan]").await);
    browser.screenshot("checkout-no-plans").await;
    browser.close().await;
}
