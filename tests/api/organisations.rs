//! Issue 20: billing an organisation. A token's `org_id` makes every billing
//! endpoint act for that organisation's account; `org_role` decides who may
//! manage it (`BILLING_MANAGER_ROLES`); webhooks link an organisation's
//! customer by the customer, then `metadata.org_id`; nothing crosses from one
//! account to another.

use serde_json::{json, Value};

use crate::support::*;

const PERIOD: i64 = 20 * 86_400;

#[derive(Debug, diesel::QueryableByName)]
struct AccountRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    name: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    stripe_customer_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    paid: bool,
}

fn account(app: &TestApp, id: &str) -> Option<AccountRow> {
    use diesel::{OptionalExtension, RunQueryDsl};
    diesel::sql_query("SELECT kind, name, stripe_customer_id, paid FROM accounts WHERE id = $1")
        .bind::<diesel::sql_types::Text, _>(id)
        .get_result(&mut app.db())
        .optional()
        .unwrap()
}

async fn create_checkout(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/billing/create-checkout"))
        .bearer_auth(token)
        .json(&json!({ "plan": "price_pro_monthly" }))
        .send()
        .await
        .unwrap()
}

/// `GET /billing/status` with the credentials `sign` adds: its status and error code.
async fn status_refusal(
    app: &TestApp,
    sign: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (u16, String) {
    let request = sign(app.client.get(app.url("/billing/status")));
    error_code(request.send().await.unwrap()).await
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

fn subscription_event(id: &str, sub: &str, customer: &str, metadata: Value) -> Value {
    let mut object = current_subscription(sub, customer, "active", now() + PERIOD);
    object["metadata"] = metadata;
    event(id, "customer.subscription.created", now(), object)
}

#[actix_rt::test]
async fn two_members_of_one_organisation_clicking_at_once_create_one_customer() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let owner = org_token("ada", "acme", Some("owner"), Some("Acme Inc."));
    let admin = org_token("grace", "acme", Some("admin"), Some("Acme Inc."));

    let clicks = (0..10).map(|n| app.create_portal(if n % 2 == 0 { &owner } else { &admin }));
    let responses = futures::future::join_all(clicks).await;

    for response in responses {
        assert_eq!(response.status(), 200);
    }
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 1, "one customer for the organisation");
    let sent = form(&created[0]);
    assert_eq!(
        sent.get("metadata[org_id]").map(String::as_str),
        Some("acme")
    );
    assert_eq!(sent.get("name").map(String::as_str), Some("Acme Inc."));
    assert!(!sent.contains_key("metadata[user_id]"), "{sent:?}");
    // Not a member's email: every manager's click sends the same request, so the same key.
    assert!(!sent.contains_key("email"), "{sent:?}");
    let org = account(&app, "org:acme").expect("the organisation's account");
    assert_eq!(org.kind, "organization");
    assert_eq!(org.name.as_deref(), Some("Acme Inc."));
    assert_eq!(org.stripe_customer_id.as_deref(), Some("cus_fake_1"));
    // The members' own accounts got nothing.
    for member in ["ada", "grace"] {
        assert!(app
            .user(member)
            .is_none_or(|u| u.stripe_customer_id.is_none()));
    }
}

#[actix_rt::test]
async fn a_member_without_a_manager_role_gets_403_and_creates_nothing() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    // A plain member, and a token with `org_id` but no `org_role` (treated as a plain member).
    for token in [
        org_token("linus", "acme", Some("member"), Some("Acme Inc.")),
        org_token("linus", "acme", None, None),
    ] {
        let (status, code) = error_code(app.create_portal(&token).await).await;
        assert_eq!((status, code.as_str()), (403, "not_billing_manager"));
        let (status, code) = error_code(create_checkout(&app, &token).await).await;
        assert_eq!((status, code.as_str()), (403, "not_billing_manager"));
    }

    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
    assert!(account(&app, "org:acme").is_none_or(|a| a.stripe_customer_id.is_none()));
}

#[actix_rt::test]
async fn a_member_reads_the_organisations_status_and_is_told_who_can_manage_it() {
    let app = spawn_app().await;
    let member = org_token("linus", "acme", Some("member"), Some("Acme Inc."));

    let body = app.status(&member).await;

    assert_eq!(
        body["data"]["account"],
        json!({"type": "organization", "id": "acme", "name": "Acme Inc.", "canManage": false,
               "managerRoles": ["owner", "admin"]})
    );
    assert_eq!(body["data"]["userId"], "linus");
    let own = app.status(&token_for("linus", None)).await;
    assert_eq!(
        own["data"]["account"],
        json!({"type": "user", "id": "linus", "name": null, "canManage": true,
               "managerRoles": []})
    );
}

#[actix_rt::test]
async fn billing_manager_roles_names_the_roles_that_may_manage() {
    let app = spawn_app_with(|vars| {
        vars.insert("BILLING_MANAGER_ROLES".into(), "billing, owner".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;

    let billing = org_token("ada", "acme", Some("billing"), None);
    assert_eq!(app.create_portal(&billing).await.status(), 200);
    let admin = org_token("grace", "acme", Some("admin"), None);
    let (status, code) = error_code(app.create_portal(&admin).await).await;
    assert_eq!((status, code.as_str()), (403, "not_billing_manager"));
    assert_eq!(
        app.status(&admin).await["data"]["account"]["managerRoles"],
        json!(["billing", "owner"])
    );
}

#[actix_rt::test]
async fn switching_org_id_in_the_token_switches_the_billing_shown() {
    let app = spawn_app().await;
    app.given()
        .user("org:acme")
        .with_customer("cus_acme")
        .store();
    app.given()
        .user("org:globex")
        .with_customer("cus_globex")
        .store();
    app.given().user("ada").with_customer("cus_ada").store();
    let delivered = app
        .deliver(&subscription_event(
            "evt_1",
            "sub_acme",
            "cus_acme",
            json!({}),
        ))
        .await;
    assert_eq!(delivered.status(), 200);

    let acme = app
        .status(&org_token("ada", "acme", Some("owner"), None))
        .await;
    let globex = app
        .status(&org_token("ada", "globex", Some("owner"), None))
        .await;
    let own = app.status(&token_for("ada", None)).await;

    assert_eq!(
        (
            acme["data"]["paid"].clone(),
            acme["data"]["hasCustomer"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(acme["data"]["account"]["id"], "acme");
    assert_eq!(globex["data"]["paid"], false);
    assert_eq!(globex["data"]["account"]["id"], "globex");
    assert_eq!(own["data"]["paid"], false);
    assert_eq!(own["data"]["account"]["type"], "user");
}

#[actix_rt::test]
async fn an_event_for_an_organisations_customer_never_changes_a_user_account() {
    let app = spawn_app().await;
    app.given()
        .user("org:acme")
        .with_customer("cus_acme")
        .store();
    app.given().user("ada").with_customer("cus_ada").store();

    // Its metadata names a user: the customer's holder, the organisation, wins.
    let event = subscription_event("evt_1", "sub_1", "cus_acme", json!({"user_id": "ada"}));
    assert_eq!(app.deliver(&event).await.status(), 200);

    assert!(account(&app, "org:acme").unwrap().paid);
    let ada = app.user("ada").unwrap();
    assert!(!ada.paid);
    assert_eq!(ada.stripe_customer_id.as_deref(), Some("cus_ada"));
}

#[actix_rt::test]
async fn a_subscription_of_an_unknown_customer_is_linked_by_its_metadata_org_id() {
    let app = spawn_app().await;

    let event = subscription_event(
        "evt_1",
        "sub_1",
        "cus_new",
        json!({"org_id": "acme", "user_id": "ada"}),
    );
    assert_eq!(app.deliver(&event).await.status(), 200);

    let org = account(&app, "org:acme").expect("linked by metadata.org_id");
    assert_eq!(org.kind, "organization");
    assert_eq!(org.stripe_customer_id.as_deref(), Some("cus_new"));
    assert!(org.paid);
    assert!(app.user("ada").is_none(), "metadata.user_id came second");
    let status = app.status(&org_token("ada", "acme", None, None)).await;
    assert_eq!(status["data"]["paid"], true);
}

#[actix_rt::test]
async fn a_checkout_with_a_signed_org_reference_links_the_organisation() {
    let app = spawn_app().await;
    let session = json!({
        "id": "cs_test_1", "object": "checkout.session", "status": "complete",
        "customer": "cus_paid", "client_reference_id": signed_reference("org:acme", None),
        "metadata": {}, "subscription": "sub_1"
    });

    let delivered = app
        .deliver(&event(
            "evt_1",
            "checkout.session.completed",
            now(),
            session,
        ))
        .await;

    assert_eq!(delivered.status(), 200);
    let org = account(&app, "org:acme").expect("linked by the signed reference");
    assert_eq!(org.stripe_customer_id.as_deref(), Some("cus_paid"));
}

#[actix_rt::test]
async fn an_org_id_that_is_empty_too_long_or_has_control_characters_is_refused_with_401() {
    let app = spawn_app().await;
    let too_long = "a".repeat(256);
    for org in ["", too_long.as_str(), "acme\u{0}", "ac\u{202e}me"] {
        let token = org_token("ada", org, Some("owner"), None);
        let (status, code) = status_refusal(&app, |r| r.bearer_auth(token)).await;
        assert_eq!((status, code.as_str()), (401, "invalid_org_id"), "{org:?}");
    }
    assert_eq!(app.count("accounts"), 0);
}

#[actix_rt::test]
async fn a_user_id_that_would_name_an_organisations_account_is_refused() {
    let app = spawn_app().await;

    let (status, code) = status_refusal(&app, |r| r.bearer_auth(token_for("org:acme", None))).await;

    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    assert_eq!(app.count("accounts"), 0);
}

#[actix_rt::test]
async fn a_bearer_token_for_an_organisation_and_a_cookie_for_the_user_are_ambiguous() {
    let app = spawn_app().await;

    let (status, code) = status_refusal(&app, |r| {
        r.bearer_auth(org_token("ada", "acme", Some("owner"), None))
            .header(
                "cookie",
                format!("billing_session={}", token_for("ada", None)),
            )
    })
    .await;
    assert_eq!((status, code.as_str()), (400, "ambiguous_credentials"));
}

#[actix_rt::test]
async fn the_users_view_shows_only_users_and_the_organizations_view_only_organisations() {
    let app = spawn_app().await;
    app.given()
        .user("org:acme")
        .with_customer("cus_acme")
        .store();
    app.given().user("ada").store();

    assert_eq!(app.count("users"), 1);
    assert_eq!(app.count("organizations"), 1);
    assert_eq!(app.count("accounts"), 2);
    assert!(app.user("org:acme").is_none());
    #[derive(diesel::QueryableByName)]
    struct Org {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    use diesel::RunQueryDsl;
    let orgs: Vec<Org> = diesel::sql_query("SELECT id FROM organizations")
        .load(&mut app.db())
        .unwrap();
    assert_eq!(
        orgs.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        ["acme"]
    );
}
