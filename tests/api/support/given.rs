//! The rows a test starts with, arranged through builders that store them with the library's
//! own queries (`billing_portal::db`), so a test never writes SQL and a schema change is fixed
//! here once:
//!
//! ```ignore
//! app.given().user("user_1").with_customer("cus_1").store();
//! app.given().event("evt_old").received_days_ago(91).store();
//! ```
//!
//! Subscriptions are not arranged here: tests deliver them through the real webhook (see
//! [`super::events`]) or `billing::sync::apply_subscription`, the paths the service itself uses.

use billing_portal::db;
use billing_portal::ids::{AccountId, CustomerId, EventId};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;

use super::app::TestApp;

impl TestApp {
    /// Starts arranging this test's rows.
    pub fn given(&self) -> Given<'_> {
        Given { app: self }
    }
}

pub struct Given<'a> {
    app: &'a TestApp,
}

impl<'a> Given<'a> {
    /// A user as their JWT `sub` names them, with no email, customer or subscription yet (the
    /// service stores the email from the JWT on their first request).
    pub fn user(self, id: &str) -> UserBuilder<'a> {
        UserBuilder {
            app: self.app,
            id: id.to_owned(),
            customer: None,
        }
    }

    /// A recorded webhook event (type `x`, outcome `applied`) received just now.
    pub fn event(self, id: &str) -> EventBuilder<'a> {
        EventBuilder {
            app: self.app,
            id: id.to_owned(),
            received_at: Utc::now(),
        }
    }
}

#[must_use = "nothing is stored until `.store()`"]
pub struct UserBuilder<'a> {
    app: &'a TestApp,
    id: String,
    customer: Option<String>,
}

impl UserBuilder<'_> {
    /// The Stripe customer already stored on the user.
    pub fn with_customer(mut self, customer_id: &str) -> Self {
        self.customer = Some(customer_id.to_owned());
        self
    }

    pub fn store(self) {
        let mut conn = self.app.db();
        let id = AccountId::parse(&self.id).expect("a valid user id or org:<org id>");
        db::accounts::upsert(&mut conn, &id, Default::default()).expect("account stored");
        if let Some(customer) = &self.customer {
            db::accounts::set_customer_id(&mut conn, &id, &CustomerId::from(customer.as_str()))
                .expect("customer stored");
        }
    }
}

#[must_use = "nothing is stored until `.store()`"]
pub struct EventBuilder<'a> {
    app: &'a TestApp,
    id: String,
    received_at: DateTime<Utc>,
}

impl EventBuilder<'_> {
    pub fn received_days_ago(mut self, days: i64) -> Self {
        self.received_at = Utc::now() - TimeDelta::days(days);
        self
    }

    pub fn store(self) {
        let mut conn = self.app.db();
        let id = EventId::from(self.id.as_str());
        let claimed =
            db::events::claim(&mut conn, &id, "x", Utc::now(), "applied").expect("event stored");
        assert!(claimed, "event {} was already stored", self.id);
        // The service stamps `received_at` itself (a column default); only a test backdates it.
        diesel::sql_query("UPDATE stripe_events SET received_at = $2 WHERE id = $1")
            .bind::<diesel::sql_types::Text, _>(&self.id)
            .bind::<diesel::sql_types::Timestamptz, _>(self.received_at)
            .execute(&mut conn)
            .expect("received_at set");
    }
}
