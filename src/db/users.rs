//! The `users` table: the app's users as identified by their JWT `sub`, their
//! Stripe customer id and their paid flag.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use super::schema::users;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub paid: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts the user on first sight and keeps the email current, in one round
/// trip. An unchanged row is not rewritten, so reads (status) cause no writes.
pub fn upsert(conn: &mut PgConnection, id: &str, email: Option<&str>) -> QueryResult<User> {
    diesel::sql_query(
        "WITH up AS ( \
             INSERT INTO users (id, email) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, updated_at = now() \
             WHERE EXCLUDED.email IS NOT NULL AND users.email IS DISTINCT FROM EXCLUDED.email \
             RETURNING * \
         ) \
         SELECT * FROM up \
         UNION ALL \
         SELECT * FROM users WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM up)",
    )
    .bind::<Text, _>(id)
    .bind::<Nullable<Text>, _>(email)
    .get_result(conn)
}

/// Locks the user's row for the rest of the transaction and returns its
/// customer id; concurrent first requests for one user queue here, so only
/// one of them ever asks Stripe for a customer.
pub fn lock_customer_id(conn: &mut PgConnection, id: &str) -> QueryResult<Option<String>> {
    users::table
        .find(id)
        .select(users::stripe_customer_id)
        .for_update()
        .get_result(conn)
}

pub fn set_customer_id(conn: &mut PgConnection, id: &str, customer_id: &str) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set((
            users::stripe_customer_id.eq(customer_id),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn find(conn: &mut PgConnection, id: &str) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
}
