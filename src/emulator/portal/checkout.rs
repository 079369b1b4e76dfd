//! The emulator's hosted Checkout page, at a Checkout Session's `url`:
//! `/stripe-emulator/c/pay/{id}`, shaped like Stripe's
//! `https://checkout.stripe.com/c/pay/cs_test_…`. Plain HTML forms, no
//! JavaScript, the portal's style:
//!
//! - `GET /c/pay/{id}`: the plan's name and price, a card form (`number`,
//!   `exp` as MM/YY, `cvc`) posting to the same URL, and "← Back" to the
//!   session's `cancel_url` (none without one, as at Stripe). `?error=` shows
//!   a refusal.
//! - `POST /c/pay/{id}`: the card is checked as Stripe.js and Stripe check it
//!   (docs.stripe.com/testing). 4242 4242 4242 4242 pays: the session
//!   completes as the test helper completes it (the subscription created
//!   `incomplete`, then `active` with its first invoice paid, and
//!   `checkout.session.completed`, all in one second) and the browser goes
//!   (303) to `success_url`, `{CHECKOUT_SESSION_ID}` replaced by the id. A
//!   3-D Secure card (4000 0027 6000 3184) goes to the authentication step.
//!   Any other card is refused with Stripe's message, back on the page
//!   (303 to `?error=`), the session still open and nothing created.
//! - `GET /c/pay/{id}/authenticate`: Stripe's test 3-D Secure page,
//!   "Complete authentication" or "Fail authentication"
//!   (`POST … outcome=complete|fail`); failing goes back to the form with
//!   Stripe's message.
//!
//! A paid session answers every one of these with the redirect to its
//! `success_url` again, so a double submit buys once: the account's lock
//! makes the second wait for the first, which it then finds complete. An
//! unknown session is a page leading back to the app; one past its
//! `expires_at` (24 hours by default, as at Stripe) a page leading back to
//! its `cancel_url`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::pages::{message, money, portal_page};
use super::{encoded, see_other, unavailable, AppPage, NoSession};
use crate::emulator::account::Emulator;
use crate::emulator::model::*;

/// Stripe's message when the customer fails 3-D Secure
/// (`payment_intent_authentication_failure`, docs.stripe.com/error-codes).
pub(crate) const AUTHENTICATION_FAILED: &str = "We are unable to authenticate your payment \
     method. Please choose a different payment method and try again.";

/// The hosted page's routes, under `/stripe-emulator`.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/c/pay/{id}", web::get().to(checkout_page))
        .route("/c/pay/{id}", web::post().to(pay))
        .route("/c/pay/{id}/authenticate", web::get().to(authenticate_page))
        .route("/c/pay/{id}/authenticate", web::post().to(authenticate));
}

/// What a card entered on the page leads to, before any charge.
#[derive(Debug, PartialEq)]
enum CardCheck {
    Pays(Card),
    Authenticate(Card),
}

/// Whether a card number passes the Luhn check every real card number passes.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| match (i % 2, d * 2) {
            (0, _) => d,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The card as Stripe.js checks the fields, then as Stripe answers its test
/// cards (docs.stripe.com/testing), in Stripe's words. `now` is the
/// emulator's clock: an expiry before its month is in the past.
fn check_card(number: &str, exp: &str, cvc: &str, now: i64) -> Result<CardCheck, &'static str> {
    let well_formed = number
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    if !well_formed || !(13..=19).contains(&digits.len()) || !luhn(&digits) {
        return Err("Your card number is invalid.");
    }
    let (month, year) = exp
        .split_once('/')
        .and_then(|(m, y)| Some((m.trim().parse::<u32>().ok()?, y.trim())))
        .and_then(|(m, y)| match y.len() {
            2 => Some((m, 2000 + y.parse::<u32>().ok()?)),
            4 => Some((m, y.parse::<u32>().ok()?)),
            _ => None,
        })
        .ok_or("Your card's expiration date is incomplete.")?;
    if !(1..=12).contains(&month) {
        return Err("Your card's expiration month is invalid.");
    }
    let today = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let (this_year, this_month) = (
        chrono::Datelike::year(&today) as u32,
        chrono::Datelike::month(&today),
    );
    if year < this_year {
        return Err("Your card's expiration year is in the past.");
    }
    if (year, month) < (this_year, this_month) {
        return Err("Your card's expiration date is in the past.");
    }
    let cvc = cvc.trim();
    if !(3..=4).contains(&cvc.len()) || !cvc.chars().all(|c| c.is_ascii_digit()) {
        return Err("Your card's security code is incomplete.");
    }
    let card = Card {
        last4: digits[digits.len() - 4..].to_string(),
        exp_month: month,
        exp_year: year,
        charges_fail: false,
    };
    match digits.as_str() {
        TEST_CARD_OK => Ok(CardCheck::Pays(card)),
        // Authentication required on every payment; 3155 on a payment that
        // sets the card up for later ones, as a subscription's first does.
        TEST_CARD_3DS | "4000002500003155" | "4000000000003220" => {
            Ok(CardCheck::Authenticate(card))
        }
        // 0341 attaches to a customer, but Checkout charges it at once.
        TEST_CARD_DECLINED | TEST_CARD_CHARGE_FAILS => Err("Your card was declined."),
        "4000000000009995" => Err("Your card has insufficient funds."),
        "4000000000000069" => Err("Your card has expired."),
        "4000000000000127" => Err("Your card's security code is incorrect."),
        _ => Err(
            "Your card was declined. Your request was in test mode, but used a non test card. \
             For a list of valid test cards, visit: https://stripe.com/docs/testing.",
        ),
    }
}

/// Where a paid session sends the browser: its `success_url` with
/// `{CHECKOUT_SESSION_ID}` replaced by its id
/// (docs.stripe.com/payments/checkout/custom-success-page).
fn success_url(session: &CheckoutSession) -> Option<String> {
    session
        .success_url
        .as_ref()
        .map(|url| url.replace("{CHECKOUT_SESSION_ID}", &session.id))
}

/// The session `id` names, while it can be shown: unknown and expired ones
/// are pages that say so, leading back to the app (the session's
/// `cancel_url` when it has one).
fn find(state: &State, id: &str, now: i64, app_page: &str) -> Result<CheckoutSession, NoSession> {
    let Some(session) = state.checkout_sessions.get(id) else {
        return Err(NoSession {
            status: 404,
            title: "Checkout session not found",
            message: "This checkout link is not valid. Return to the app and choose your plan \
                      again."
                .into(),
            back: app_page.to_string(),
        });
    };
    if session.status_at(now) == "expired" {
        return Err(NoSession {
            status: 410,
            title: "This checkout session has expired",
            message: "Checkout sessions end 24 hours after they are created. Return to the app \
                      and choose your plan again."
                .into(),
            back: session.cancel_url.clone().unwrap_or(app_page.to_string()),
        });
    }
    Ok(session.clone())
}

/// What an action on the page comes to.
enum Step {
    /// Paid, now or before: on to its success URL, filled in.
    Paid(Option<String>),
    Authenticate,
    /// Refused with Stripe's message: back to the form.
    Refused(String),
}

/// Pays the open session `id` with `card`: the subscription and its events
/// exactly as the test helper makes them. The card becomes the customer's
/// card on file, which the subscription's renewals charge (at Stripe it
/// becomes the subscription's default payment method; the customer object
/// does not change, so no `customer.updated`).
fn complete(emu: &Emulator, state: &mut State, id: &str, card: Card) -> Step {
    let session = state.checkout_sessions[id].clone();
    if let Some(customer) = state.customers.get_mut(&session.customer) {
        customer.card = Some(card);
    }
    match emu.create_subscription(
        state,
        &session.customer,
        &session.price,
        session.subscription_metadata,
        BillingMode::Flexible,
        Some(id),
    ) {
        Ok(_) => Step::Paid(success_url(&state.checkout_sessions[id])),
        Err(e) => Step::Refused(e.message),
    }
}

/// An open session that already has a subscription was paid through the
/// test helper with a card whose charge failed: it cannot be paid again.
fn already_paid(session: &CheckoutSession) -> bool {
    session.subscription.is_some()
}

/// Runs `action` on the session the path names, under the account's lock,
/// and answers the browser.
async fn act(
    emu: &Arc<Emulator>,
    app: &AppPage,
    id: &str,
    action: impl FnOnce(&Emulator, &mut State, CheckoutSession) -> Step,
) -> HttpResponse {
    let result = emu.with_state(|emu, state| {
        let session = find(state, id, emu.now(state), &app.0)?;
        if session.status == "complete" {
            return Ok::<_, NoSession>(Step::Paid(success_url(&session)));
        }
        if already_paid(&session) {
            return Ok(Step::Refused(
                "This Checkout Session was already paid.".into(),
            ));
        }
        Ok(action(emu, state, session))
    });
    match result.await {
        Err(e) => unavailable(&e, &app.0),
        Ok(Err(no_session)) => actix_web::ResponseError::error_response(&no_session),
        Ok(Ok(step)) => answer(emu, app, id, step),
    }
}

fn answer(emu: &Emulator, app: &AppPage, id: &str, step: Step) -> HttpResponse {
    let page = emu.checkout_url(id);
    match step {
        Step::Paid(success) => paid(app, success),
        Step::Authenticate => see_other(&format!("{page}/authenticate")),
        Step::Refused(why) => see_other(&format!("{page}?error={}", encoded(&why))),
    }
}

/// A paid session: on to its `success_url`, or (without one) a page that
/// says so.
fn paid(app: &AppPage, success_url: Option<String>) -> HttpResponse {
    match success_url {
        Some(url) => see_other(&url),
        None => message(
            200,
            "Thanks for your payment",
            "Your subscription is active.",
            &app.0,
        ),
    }
}

/// The session for a page view (nothing changes), or the answer instead.
async fn view(emu: &Emulator, app: &AppPage, id: &str) -> Result<CheckoutSession, HttpResponse> {
    let found = emu.read(|state| find(state, id, emu.clock.unix(), &app.0));
    match found.await {
        Err(e) => Err(unavailable(&e, &app.0)),
        Ok(Err(no_session)) => Err(actix_web::ResponseError::error_response(&no_session)),
        Ok(Ok(session)) if session.status == "complete" => Err(paid(app, success_url(&session))),
        Ok(Ok(session)) => Ok(session),
    }
}

#[derive(Template)]
#[template(path = "checkout.html", config = "src/emulator/askama.toml")]
struct CheckoutPage<'a> {
    title: &'a str,
    cancel_url: Option<&'a str>,
    url: &'a str,
    error: Option<&'a str>,
    plan: &'static str,
    amount: String,
}

#[derive(Template)]
#[template(path = "authenticate.html", config = "src/emulator/askama.toml")]
struct AuthenticatePage<'a> {
    title: &'a str,
    cancel_url: Option<&'a str>,
    url: &'a str,
    amount: String,
    last4: &'a str,
}

fn amount(session: &CheckoutSession) -> (&'static str, String) {
    let price = Emulator::price(&session.price).expect("sessions only hold seeded prices");
    (price.product_name, money(price.unit_amount))
}

#[derive(Deserialize)]
pub(super) struct ErrorQuery {
    error: Option<String>,
}

async fn checkout_page(
    path: web::Path<String>,
    q: web::Query<ErrorQuery>,
    emu: web::Data<Arc<Emulator>>,
    app: web::Data<AppPage>,
) -> HttpResponse {
    let session = match view(&emu, &app, &path).await {
        Ok(session) => session,
        Err(answer) => return answer,
    };
    let (plan, amount) = amount(&session);
    portal_page(&CheckoutPage {
        title: &format!("Subscribe to {plan}"),
        cancel_url: session.cancel_url.as_deref(),
        url: &emu.checkout_url(&session.id),
        error: q.error.as_deref(),
        plan,
        amount,
    })
}

#[derive(Deserialize)]
pub(super) struct CardForm {
    number: String,
    exp: String,
    cvc: String,
}

async fn pay(
    path: web::Path<String>,
    f: web::Form<CardForm>,
    emu: web::Data<Arc<Emulator>>,
    app: web::Data<AppPage>,
) -> HttpResponse {
    act(&emu, &app, &path, |emu, state, session| {
        let now = emu.now(state);
        let id = session.id.as_str();
        match check_card(&f.number, &f.exp, &f.cvc, now) {
            Err(why) => Step::Refused(why.into()),
            Ok(CardCheck::Pays(card)) => complete(emu, state, id, card),
            Ok(CardCheck::Authenticate(card)) => {
                if let Some(s) = state.checkout_sessions.get_mut(id) {
                    s.authenticating = Some(card);
                }
                Step::Authenticate
            }
        }
    })
    .await
}

async fn authenticate_page(
    path: web::Path<String>,
    emu: web::Data<Arc<Emulator>>,
    app: web::Data<AppPage>,
) -> HttpResponse {
    let session = match view(&emu, &app, &path).await {
        Ok(session) => session,
        Err(answer) => return answer,
    };
    let url = emu.checkout_url(&session.id);
    let Some(card) = &session.authenticating else {
        // Nothing to authenticate: the card form.
        return see_other(&url);
    };
    let (_, amount) = amount(&session);
    portal_page(&AuthenticatePage {
        title: "3D Secure authentication",
        cancel_url: session.cancel_url.as_deref(),
        url: &url,
        amount,
        last4: &card.last4,
    })
}

#[derive(Deserialize)]
pub(super) struct AuthenticateForm {
    outcome: String,
}

async fn authenticate(
    path: web::Path<String>,
    f: web::Form<AuthenticateForm>,
    emu: web::Data<Arc<Emulator>>,
    app: web::Data<AppPage>,
) -> HttpResponse {
    act(&emu, &app, &path, |emu, state, session| {
        let id = session.id.as_str();
        let Some(card) = state
            .checkout_sessions
            .get_mut(id)
            .and_then(|s| s.authenticating.take())
        else {
            return Step::Refused(AUTHENTICATION_FAILED.into());
        };
        match f.outcome.as_str() {
            "complete" => complete(emu, state, id, card),
            _ => Step::Refused(AUTHENTICATION_FAILED.into()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// December 4, 2026: the emulator's clock in these tests.
    const NOW: i64 = 1_796_400_000;

    #[test]
    fn the_test_cards_answer_as_stripe_documents_them() {
        let check = |number| check_card(number, "12/34", "123", NOW);

        assert!(matches!(
            check("4242 4242 4242 4242"),
            Ok(CardCheck::Pays(_))
        ));
        assert!(matches!(
            check("4000 0027 6000 3184"),
            Ok(CardCheck::Authenticate(_))
        ));
        assert_eq!(check("4000 0000 0000 0002"), Err("Your card was declined."));
        assert_eq!(
            check("4242 4242 4242 4241"),
            Err("Your card number is invalid.")
        );
        assert_eq!(check("4242 abcd"), Err("Your card number is invalid."));
        assert!(check("4111 1111 1111 1111")
            .unwrap_err()
            .contains("used a non test card"));
    }

    #[test]
    fn any_future_expiry_and_any_cvc_are_accepted_and_a_past_one_is_not() {
        let card = |exp, cvc| check_card("4242424242424242", exp, cvc, NOW);

        assert!(card("12/26", "000").is_ok(), "this month");
        assert!(card("01/2031", "9876").is_ok());
        assert_eq!(
            card("11/26", "123"),
            Err("Your card's expiration date is in the past.")
        );
        assert_eq!(
            card("12/25", "123"),
            Err("Your card's expiration year is in the past.")
        );
        assert_eq!(
            card("13/30", "123"),
            Err("Your card's expiration month is invalid.")
        );
        assert_eq!(
            card("1230", "123"),
            Err("Your card's expiration date is incomplete.")
        );
        assert_eq!(
            card("12/30", "12"),
            Err("Your card's security code is incomplete.")
        );
    }
}
