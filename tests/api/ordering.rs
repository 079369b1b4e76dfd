//! Property: any permutation of a subscription's event stream (distinct
//! `created` times), with duplicates, ends in the same stored state and paid
//! flag as in-order delivery. Each case delivers the in-order stream for one
//! user and the shuffled stream for another, through the real HTTP endpoint,
//! and compares the two.

use diesel::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::events::*;
use crate::helpers::*;

const STATUSES: &[&str] = &[
    "active",
    "trialing",
    "past_due",
    "canceled",
    "unpaid",
    "incomplete",
    "incomplete_expired",
    "paused",
];

#[derive(Debug, Clone)]
struct Change {
    status: &'static str,
    cancel_at_period_end: bool,
    price: u8,
}

fn changes() -> impl Strategy<Value = (Vec<Change>, Vec<usize>, Vec<usize>)> {
    let change = (prop::sample::select(STATUSES), any::<bool>(), 0u8..3).prop_map(
        |(status, cancel_at_period_end, price)| Change {
            status,
            cancel_at_period_end,
            price,
        },
    );
    prop::collection::vec(change, 2..7).prop_flat_map(|changes| {
        let n = changes.len();
        (
            Just(changes),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(0..n, 0..4),
        )
    })
}

#[derive(Debug, PartialEq, QueryableByName)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    price_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    current_period_end: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    cancel_at_period_end: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    paid: bool,
}

fn stored(app: &TestApp, sub: &str) -> Stored {
    diesel::sql_query(
        "SELECT s.status, s.price_id, s.current_period_end, s.cancel_at_period_end, u.paid \
         FROM subscriptions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
    )
    .bind::<diesel::sql_types::Text, _>(sub)
    .get_result(&mut app.db())
    .unwrap()
}

#[test]
fn any_delivery_order_with_duplicates_ends_in_the_in_order_state() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app());
    let mut runner = TestRunner::new(Config {
        cases: 40,
        ..Config::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);

    runner
        .run(&changes(), |(changes, shuffled, duplicates)| {
            let case = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let base = now() - 10_000;
            let event_for = |stream: &str, i: usize| {
                let change = &changes[i];
                let created = base + 10 * i as i64;
                let mut sub = current_subscription(
                    &format!("sub_{stream}_{case}"),
                    &format!("cus_{stream}_{case}"),
                    change.status,
                    created + 30 * 86_400,
                );
                sub["cancel_at_period_end"] = json!(change.cancel_at_period_end);
                sub["items"]["data"][0]["price"]["id"] = json!(format!("price_{}", change.price));
                event(
                    &format!("evt_{stream}_{case}_{i}"),
                    "customer.subscription.updated",
                    created,
                    sub,
                )
            };
            for stream in ["ordered", "shuffled"] {
                app.execute(&format!(
                    "INSERT INTO users (id, stripe_customer_id) \
                     VALUES ('user_{stream}_{case}', 'cus_{stream}_{case}')"
                ));
            }
            let mut order = shuffled.clone();
            for (k, d) in duplicates.iter().enumerate() {
                order.insert((k * 7 + d) % (order.len() + 1), *d);
            }

            runtime.block_on(async {
                for i in 0..changes.len() {
                    assert_eq!(app.deliver(&event_for("ordered", i)).await.status(), 200);
                }
                for &i in &order {
                    assert_eq!(app.deliver(&event_for("shuffled", i)).await.status(), 200);
                }
            });

            let ordered = stored(&app, &format!("sub_ordered_{case}"));
            let shuffled = stored(&app, &format!("sub_shuffled_{case}"));
            prop_assert_eq!(&shuffled, &ordered, "delivery order {:?}", order);
            let last = changes.last().unwrap();
            prop_assert_eq!(&ordered.status, last.status);
            Ok(())
        })
        .unwrap();
}
