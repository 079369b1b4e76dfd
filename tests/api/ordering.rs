//! Property: whatever order Stripe delivers a subscription's events in — with
//! several events in one second (Stripe's `created` has one-second
//! resolution and one action often emits several; docs.stripe.com/webhooks,
//! "Event ordering"), and with duplicates — the stored state and paid flag end
//! as the state after the last event in Stripe's true order. Ties that
//! neither lifecycle order nor `previous_attributes` can settle are re-read
//! from Stripe, which the fake answers with the current (final) state.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const PERIOD_END_OFFSET: i64 = 20 * 86_400;

/// One state of a subscription, over the fields the ordering rule reads.
#[derive(Debug, Clone, PartialEq)]
struct State {
    status: &'static str,
    /// `None`: renews. `Some(true)`: classic cancel (`cancel_at_period_end` and
    /// `cancel_at`); `Some(false)`: flexible cancel (`cancel_at` only).
    cancel: Option<bool>,
    price: u8,
    paused: bool,
}

const LIVE: &[&str] = &["active", "trialing", "past_due", "unpaid", "paused"];

impl State {
    fn rank(&self) -> u8 {
        match self.status {
            "incomplete" => 0,
            "canceled" | "incomplete_expired" => 2,
            _ => 1,
        }
    }

    /// The next state Stripe could move to, chosen by `seed`; `None` once terminal.
    fn next(&self, seed: u32) -> Option<State> {
        if self.rank() == 2 {
            return None;
        }
        let mut next = self.clone();
        match seed % 6 {
            0 | 1 => {
                next.status = if self.status == "incomplete" && seed % 12 < 2 {
                    "incomplete_expired"
                } else if seed.is_multiple_of(24) {
                    "canceled"
                } else {
                    LIVE[(seed / 6) as usize % LIVE.len()]
                }
            }
            2 => next.cancel = [None, Some(true), Some(false)][(seed / 6) as usize % 3],
            3 => next.price = ((seed / 6) % 3) as u8,
            4 => next.paused = !self.paused,
            _ => {
                next.status = "canceled";
                next.cancel = None;
            }
        }
        if self.status == "incomplete" && next.status == "incomplete" && seed.is_multiple_of(2) {
            next.status = "active";
        }
        (next != *self).then_some(next)
    }

    fn object(&self, id: &str, customer: &str, base: i64) -> Value {
        let period_end = base + PERIOD_END_OFFSET;
        let mut sub = current_subscription(id, customer, self.status, period_end);
        sub["cancel_at_period_end"] = json!(self.cancel == Some(true));
        sub["cancel_at"] = match self.cancel {
            Some(_) => json!(period_end),
            None => Value::Null,
        };
        sub["items"]["data"][0]["price"]["id"] = json!(format!("price_{}", self.price));
        sub["pause_collection"] = if self.paused {
            json!({"behavior": "void", "resumes_at": null})
        } else {
            Value::Null
        };
        sub
    }

    /// What Stripe puts in `previous_attributes` for the move `before` → `self`:
    /// the changed fields, with their values before.
    fn previous(&self, before: &State, id: &str, customer: &str, base: i64) -> Value {
        let (old, new) = (
            before.object(id, customer, base),
            self.object(id, customer, base),
        );
        let mut previous = serde_json::Map::new();
        for key in [
            "status",
            "cancel_at_period_end",
            "cancel_at",
            "pause_collection",
        ] {
            if old[key] != new[key] {
                previous.insert(key.into(), old[key].clone());
            }
        }
        if old["items"] != new["items"] {
            previous.insert("items".into(), old["items"].clone());
        }
        Value::Object(previous)
    }
}

/// The events Stripe sends for `states`, the i-th stamped `created[i]`:
/// `created` for the first, `deleted` for a cancellation, else `updated` with
/// `previous_attributes` describing the state before. Ids `evt_{tag}_{i}`.
fn events_of(
    states: &[State],
    created: &[i64],
    base: i64,
    (id, customer): (&str, &str),
    tag: &str,
) -> Vec<Value> {
    states
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let object = state.object(id, customer, base);
            let (type_, previous) = match i {
                0 => ("customer.subscription.created", json!({})),
                _ if state.status == "canceled" => ("customer.subscription.deleted", json!({})),
                _ => (
                    "customer.subscription.updated",
                    state.previous(&states[i - 1], id, customer, base),
                ),
            };
            event_with_previous(
                &format!("evt_{tag}_{i}"),
                type_,
                created[i],
                object,
                previous,
            )
        })
        .collect()
}

/// A lifecycle of 2–6 states and the `created` gap before each (mostly 0 s).
fn lifecycles() -> impl Strategy<Value = (Vec<State>, Vec<i64>)> {
    (
        0u32..3,
        prop::collection::vec(any::<u32>(), 1..6),
        prop::collection::vec(prop::sample::select(vec![0i64, 0, 0, 1, 4]), 6),
    )
        .prop_map(|(first, seeds, gaps)| {
            let mut states = vec![State {
                status: ["incomplete", "active", "trialing"][first as usize],
                cancel: None,
                price: 0,
                paused: false,
            }];
            for seed in seeds {
                if let Some(next) = states.last().unwrap().next(seed) {
                    states.push(next);
                }
            }
            let n = states.len();
            (states, gaps[..n].to_vec())
        })
}

fn orders(n: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        prop::collection::vec(0..n, 0..4),
    )
}

/// (status, price, cancel_at set, cancel_at_period_end, pause_behavior set, paid)
type Stored = (String, Option<String>, bool, bool, bool, bool);

fn stored(app: &TestApp, user: &str, sub: &str) -> Stored {
    let mut conn = app.db();
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        price_id: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ending: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        cancel_at_period_end: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        paused: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        paid: bool,
    }
    let row: Row = diesel::sql_query(
        "SELECT s.status, s.price_id, s.cancel_at IS NOT NULL AS ending, s.cancel_at_period_end, \
                s.pause_behavior IS NOT NULL AS paused, u.paid \
         FROM subscriptions s JOIN users u ON u.id = $1 WHERE s.id = $2",
    )
    .bind::<diesel::sql_types::Text, _>(user)
    .bind::<diesel::sql_types::Text, _>(sub)
    .get_result(&mut conn)
    .unwrap();
    (
        row.status,
        row.price_id,
        row.ending,
        row.cancel_at_period_end,
        row.paused,
        row.paid,
    )
}

fn expected(state: &State) -> Stored {
    // Defaults: 14 days of past-due grace (the events are minutes old) and
    // paused collection still paid.
    let paid = matches!(state.status, "active" | "trialing" | "past_due");
    (
        state.status.to_string(),
        Some(format!("price_{}", state.price)),
        state.cancel.is_some(),
        state.cancel == Some(true),
        state.paused,
        paid,
    )
}

#[test]
fn any_delivery_order_with_same_second_ties_and_duplicates_ends_in_stripes_last_state() {
    let runtime = actix_rt::System::new();
    let app = runtime.block_on(spawn_app());
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let strategy = lifecycles()
        .prop_flat_map(|(states, gaps)| (Just(states.clone()), Just(gaps), orders(states.len())));

    runner
        .run(&strategy, |(states, gaps, (shuffled, duplicates))| {
            let case = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let base = now() - 3_000;
            let created: Vec<i64> = gaps
                .iter()
                .scan(base, |t, gap| {
                    *t += gap;
                    Some(*t)
                })
                .collect();
            let mut order = shuffled.clone();
            for (k, d) in duplicates.iter().enumerate() {
                order.insert((k * 7 + d) % (order.len() + 1), *d);
            }

            for stream in ["ordered", "shuffled"] {
                let (id, customer, user) = (
                    format!("sub_{stream}_{case}"),
                    format!("cus_{stream}_{case}"),
                    format!("user_{stream}_{case}"),
                );
                app.given().user(&user).with_customer(&customer).store();
                let events = events_of(
                    &states,
                    &created,
                    base,
                    (&id, &customer),
                    &format!("{stream}_{case}"),
                );
                let final_state = states.last().unwrap().object(&id, &customer, base);
                let delivery: Vec<usize> = if stream == "ordered" {
                    (0..states.len()).collect()
                } else {
                    order.clone()
                };
                runtime.block_on(async {
                    // Stripe, asked, answers the subscription as it is now.
                    Mock::given(method("GET"))
                        .and(path(format!("/v1/subscriptions/{id}")))
                        .respond_with(ResponseTemplate::new(200).set_body_json(&final_state))
                        .mount(&app.stripe)
                        .await;
                    for &i in &delivery {
                        let status = app.deliver(&events[i]).await.status();
                        assert_eq!(status, 200, "event {i} of {delivery:?}");
                    }
                });
                prop_assert_eq!(
                    stored(&app, &user, &id),
                    expected(states.last().unwrap()),
                    "{} delivery {:?} of {:?} created {:?}",
                    stream,
                    delivery,
                    states,
                    created
                );
            }
            Ok(())
        })
        .unwrap();
}

fn with_status(status: &'static str) -> State {
    State {
        status,
        cancel: None,
        price: 0,
        paused: false,
    }
}

/// Delivers the events of `states` (stamped `created`) in `order` for a new
/// user and subscription named by `tag`, with a fake Stripe that answers a
/// re-read with the last state; returns what is stored.
async fn deliver_lifecycle(
    app: &TestApp,
    states: &[State],
    created: &[i64],
    order: &[usize],
    tag: &str,
) -> Stored {
    let (id, customer, user) = (
        format!("sub_{tag}"),
        format!("cus_{tag}"),
        format!("user_{tag}"),
    );
    app.given().user(&user).with_customer(&customer).store();
    let base = created[0];
    let events = events_of(states, created, base, (&id, &customer), tag);
    let last = states.last().unwrap().object(&id, &customer, base);
    Mock::given(method("GET"))
        .and(path(format!("/v1/subscriptions/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(&last))
        .mount(&app.stripe)
        .await;
    for &i in order {
        assert_eq!(
            app.deliver(&events[i]).await.status(),
            200,
            "event {i} of {order:?}"
        );
    }
    stored(app, &user, &id)
}

/// The case the property test found: `trialing` → `paused` → `active` →
/// `trialing`, the last three in one second, delivered 1, 0, 3, 2. The
/// `paused` here is the status (`previous_attributes` of each update is
/// `{"status": <the one before>}`), and the last state equals the first.
/// When 3 arrives, the stored `paused` came right after a `trialing`, but
/// that `trialing` was 0, not 3: an equal state is not the same moment.
#[actix_rt::test]
async fn a_status_that_comes_back_within_one_second_ends_in_stripes_last_state_when_delivered_out_of_order(
) {
    let app = spawn_app().await;
    let t = now() - 3_000;
    let states = ["trialing", "paused", "active", "trialing"].map(with_status);
    let created = [t, t + 4, t + 4, t + 4];
    let events = events_of(&states, &created, t, ("sub_x", "cus_x"), "x");
    let previous: Vec<&Value> = events
        .iter()
        .map(|e| &e["data"]["previous_attributes"])
        .collect();
    assert_eq!(
        previous,
        [
            &json!({}),
            &json!({"status": "trialing"}),
            &json!({"status": "paused"}),
            &json!({"status": "active"})
        ]
    );

    let stored = deliver_lifecycle(&app, &states, &created, &[1, 0, 3, 2], "case").await;

    assert_eq!(stored, expected(&states[3]));
}

/// Every delivery order of three same-second changes that come back to the
/// state they started from (either way round), as Stripe sends them.
#[actix_rt::test]
async fn a_status_that_comes_back_within_one_second_ends_in_stripes_last_state_in_every_delivery_order(
) {
    let app = spawn_app().await;
    let t = now() - 3_000;
    let created = [t, t + 4, t + 4, t + 4];
    for (n, lifecycle) in [
        ["trialing", "paused", "active", "trialing"],
        ["trialing", "active", "paused", "trialing"],
    ]
    .into_iter()
    .enumerate()
    {
        let states = lifecycle.map(with_status);
        let mut wrong = Vec::new();
        for (case, order) in permutations(4).iter().enumerate() {
            let stored =
                deliver_lifecycle(&app, &states, &created, order, &format!("{n}_{case}")).await;
            if stored != expected(&states[3]) {
                wrong.push((order.clone(), stored.0));
            }
        }
        assert_eq!(wrong, [], "{lifecycle:?}: (delivery order, stored status)");
    }
}

/// Two changes in one second (a price change, then a cancellation) delivered
/// the other way round: each event's `previous_attributes` settle the order,
/// so Stripe is not asked.
#[actix_rt::test]
async fn two_changes_in_one_second_are_ordered_by_previous_attributes_without_asking_stripe() {
    let app = spawn_app().await;
    let t = now() - 3_000;
    let active = with_status("active");
    let repriced = State {
        price: 1,
        ..active.clone()
    };
    let canceling = State {
        cancel: Some(true),
        ..repriced.clone()
    };
    let states = [active, repriced, canceling];

    let stored = deliver_lifecycle(&app, &states, &[t, t + 4, t + 4], &[0, 2, 1], "two").await;

    assert_eq!(stored, expected(&states[2]));
    let reads = app
        .stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with("/v1/subscriptions/"))
        .count();
    assert_eq!(reads, 0);
}

/// A first purchase through Checkout: `customer.subscription.created`
/// (`incomplete`), `customer.subscription.updated` (`active`), `invoice.paid`
/// and `checkout.session.completed`, all stamped with one second and delivered
/// in any order (laravel/cashier-stripe PR #1466, pay-rails/pay #282).
#[actix_rt::test]
async fn a_checkout_in_one_second_ends_paid_in_every_delivery_order() {
    let app = spawn_app().await;
    let t = now() - 60;
    let permutations = permutations(4);
    for (case, order) in permutations.iter().enumerate() {
        let (id, customer, user) = (
            format!("sub_co_{case}"),
            format!("cus_co_{case}"),
            format!("user_co_{case}"),
        );
        let period_end = t + 30 * 86_400;
        let events = [
            event(
                &format!("evt_co_{case}_created"),
                "customer.subscription.created",
                t,
                current_subscription(&id, &customer, "incomplete", period_end),
            ),
            event_with_previous(
                &format!("evt_co_{case}_updated"),
                "customer.subscription.updated",
                t,
                current_subscription(&id, &customer, "active", period_end),
                json!({"status": "incomplete"}),
            ),
            event(
                &format!("evt_co_{case}_invoice"),
                "invoice.paid",
                t,
                json!({"id": format!("in_{case}"), "object": "invoice", "customer": customer,
                       "status": "paid"}),
            ),
            event(
                &format!("evt_co_{case}_checkout"),
                "checkout.session.completed",
                t,
                json!({"id": format!("cs_{case}"), "object": "checkout.session",
                       "mode": "subscription", "customer": customer,
                       "client_reference_id": signed_reference(&user, None),
                       "subscription": id}),
            ),
        ];

        for &i in order {
            assert_eq!(app.deliver(&events[i]).await.status(), 200);
        }

        let (status, .., paid) = stored(&app, &user, &id);
        assert_eq!(
            (status.as_str(), paid),
            ("active", true),
            "delivery order {order:?}"
        );
    }
    // Lifecycle order settled every tie: Stripe was never asked for a
    // subscription (its price, unknown here, is read in the background).
    let reads: Vec<_> = app
        .stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with("/v1/subscriptions"))
        .collect();
    assert!(reads.is_empty(), "{} Stripe calls", reads.len());
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}
