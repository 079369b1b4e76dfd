//! The Billing Settings page in a real browser: Debian's Chromium driven
//! through chromedriver (WebDriver), against the real service and a fake
//! Stripe on loopback. Screenshots go to `target/screenshots/`.
//!
//! Without Chromium these tests skip, saying so, unless
//! `BROWSER_TESTS_REQUIRED=1` (set by `.ci/run`), where they fail instead.

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
    /// `None` (and a line saying why) when Chromium is absent outside CI.
    async fn start() -> Option<Self> {
        if !installed("chromium") || !installed("chromedriver") {
            if std::env::var("BROWSER_TESTS_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("BROWSER_TESTS_REQUIRED=1 but chromium/chromedriver are not installed");
            }
            eprintln!("skipping browser test: chromium and chromium-driver are not installed");
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
        // A cookie can only be set for the origin the browser is on.
        self.client.goto(&app.url("/healthz")).await.unwrap();
        // What the host app's Set-Cookie would do (chromedriver refuses
        // cookies for a bare IP through add_cookie).
        let token = token_for(user, Some(email));
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

/// A user with an active subscription, stored through the real webhook path.
async fn paid_user(app: &TestApp, user: &str, cancel_at_period_end: bool) {
    app.given()
        .user(user)
        .with_customer(&format!("cus_{user}"))
        .store();
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

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_zero_config_loop_subscribe_manage_cancel_and_return_works_offline() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_emulated_app_with(|_| {}).await;

    // Signed out: the demo sign-in is offered.
    browser.open_billing(&app).await;
    browser.wait_for_state("signed-out").await;
    click(&browser, "#demo-sign-in").await;
    browser.wait_for_state("unpaid").await;
    assert!(!browser.has("#manage-subscription").await);
    browser.screenshot("demo-unpaid").await;

    // Demo checkout: the emulator creates the subscription, its webhook makes
    // the user paid, and the button appears.
    click(&browser, "#demo-subscribe").await;
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
    click(&browser, "#demo-subscribe").await;
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
