//! Stripe Entitlements, emulated (docs.stripe.com/billing/entitlements):
//! features (`POST /v1/entitlements/features`), attached to products
//! (`POST /v1/products/{id}/features`), and each customer's active
//! entitlements (`GET /v1/entitlements/active_entitlements`, paged as Stripe
//! pages). The seeded products come with features of their own.
//!
//! At the end of every operation (and of every step of a test clock
//! advance) each customer's active entitlements are worked out again: the
//! features of the products of its `active`, `trialing` and `past_due`
//! subscriptions. When that set changed, the customer's entitlements change
//! and `entitlements.active_entitlement_summary.updated` is sent, its summary
//! holding the first ten only, with `has_more`, as Stripe's does
//! (docs.stripe.com/api/entitlements/active-entitlement-summary). An active
//! entitlement keeps its id for as long as the customer keeps the feature.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::account::Emulator;
use super::model::{State, StripeApiError};

/// The subscription statuses that entitle a customer to its products'
/// features: Stripe keeps entitlements while a subscription is live and
/// being paid for or retried, and ends them when it ends.
const ENTITLING: [&str; 3] = ["active", "trialing", "past_due"];

/// How many entitlements a summary event carries at most.
const SUMMARY_LIMIT: usize = 10;

/// A feature (docs.stripe.com/api/entitlements/feature/object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Feature {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) lookup_key: String,
}

/// A feature attached to a product (docs.stripe.com/api/product-feature).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProductFeature {
    pub(crate) id: String,
    pub(crate) feature: String,
}

/// One of a customer's active entitlements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ActiveEntitlement {
    pub(crate) id: String,
    pub(crate) feature: String,
}

/// The seeded catalogue's features: (product, feature id, name, lookup key).
/// `api_access` is one feature on both products, as a Dashboard user would
/// attach it.
const SEEDED: [(&str, &str, &str, &str); 5] = [
    (
        "prod_emu_starter",
        "feat_emu_api_access",
        "API access",
        "api_access",
    ),
    (
        "prod_emu_starter",
        "feat_emu_basic_reports",
        "Basic reports",
        "basic_reports",
    ),
    (
        "prod_emu_pro",
        "feat_emu_api_access",
        "API access",
        "api_access",
    ),
    (
        "prod_emu_pro",
        "feat_emu_advanced_reports",
        "Advanced reports",
        "advanced_reports",
    ),
    (
        "prod_emu_pro",
        "feat_emu_priority_support",
        "Priority support",
        "priority_support",
    ),
];

fn seeded(id: &str) -> Option<Feature> {
    SEEDED
        .iter()
        .find(|(_, f, _, _)| *f == id)
        .map(|(_, id, name, key)| Feature {
            id: id.to_string(),
            name: name.to_string(),
            lookup_key: key.to_string(),
        })
}

/// The feature `id`, seeded or made through the API.
fn feature(state: &State, id: &str) -> Option<Feature> {
    seeded(id).or_else(|| state.features.get(id).cloned())
}

/// Whether `product` is one the account sells.
fn product_exists(product: &str) -> bool {
    Emulator::prices().iter().any(|p| p.product == product)
}

/// `product`'s features, as (product feature id, feature): the seeded ones,
/// then those attached through the API, in the order attached.
fn product_features(state: &State, product: &str) -> Vec<(String, Feature)> {
    let seeded = SEEDED
        .iter()
        .filter(|(p, _, _, _)| *p == product)
        .filter_map(|(p, f, _, _)| Some((format!("prodft_emu_{p}_{f}"), seeded(f)?)));
    let attached = state
        .product_features
        .get(product)
        .into_iter()
        .flatten()
        .filter_map(|pf| Some((pf.id.clone(), feature(state, &pf.feature)?)));
    seeded.chain(attached).collect()
}

pub(crate) fn feature_json(f: &Feature) -> Value {
    json!({"id": f.id, "object": "entitlements.feature", "active": true, "livemode": false,
           "lookup_key": f.lookup_key, "metadata": {}, "name": f.name})
}

fn product_feature_json(id: &str, f: &Feature) -> Value {
    json!({"id": id, "object": "product_feature", "entitlement_feature": feature_json(f),
           "livemode": false})
}

fn active_entitlement_json(state: &State, e: &ActiveEntitlement) -> Value {
    let lookup_key = feature(state, &e.feature).map(|f| f.lookup_key);
    json!({"id": e.id, "object": "entitlements.active_entitlement", "feature": e.feature,
           "livemode": false, "lookup_key": lookup_key})
}

/// A customer's summary, its first [`SUMMARY_LIMIT`] entitlements only.
fn summary_json(state: &State, customer: &str, all: &[ActiveEntitlement]) -> Value {
    let data: Vec<Value> = all
        .iter()
        .take(SUMMARY_LIMIT)
        .map(|e| active_entitlement_json(state, e))
        .collect();
    json!({"object": "entitlements.active_entitlement_summary", "customer": customer,
           "livemode": false,
           "entitlements": {"object": "list", "data": data, "has_more": all.len() > SUMMARY_LIMIT,
                            "url": format!("/v1/customer/{customer}/entitlements")}})
}

impl Emulator {
    /// Works out every customer's active entitlements again and, for each
    /// whose set changed, stores it and emits the summary event.
    pub(super) fn sync_entitlements(&self, state: &mut State) {
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for sub in state.subscriptions.values() {
            if !ENTITLING.contains(&sub.status.as_str()) {
                continue;
            }
            let Some(price) = Emulator::price(&sub.price) else {
                continue;
            };
            let features = wanted.entry(sub.customer.clone()).or_default();
            for (_, f) in product_features(state, price.product) {
                if !features.contains(&f.id) {
                    features.push(f.id);
                }
            }
        }
        let customers: BTreeSet<String> = wanted
            .keys()
            .chain(state.entitlements.keys())
            .cloned()
            .collect();
        for customer in customers {
            let want = wanted.remove(&customer).unwrap_or_default();
            let have = state.entitlements.remove(&customer).unwrap_or_default();
            let same = want.len() == have.len() && have.iter().all(|e| want.contains(&e.feature));
            if !state.customers.contains_key(&customer) {
                // A deleted customer entitles nobody; Stripe sends nothing.
                continue;
            }
            let now: Vec<ActiveEntitlement> = match same {
                true => have,
                false => want
                    .into_iter()
                    .map(|feature| match have.iter().find(|e| e.feature == feature) {
                        Some(kept) => kept.clone(),
                        None => ActiveEntitlement {
                            id: self.new_id("ent"),
                            feature,
                        },
                    })
                    .collect(),
            };
            if !same {
                let summary = summary_json(state, &customer, &now);
                self.emit(
                    state,
                    "entitlements.active_entitlement_summary.updated",
                    summary,
                    None,
                );
            }
            if !now.is_empty() {
                state.entitlements.insert(customer, now);
            }
        }
    }

    /// `POST /v1/entitlements/features`: `name` and a `lookup_key` no other
    /// feature has.
    pub(crate) fn create_feature(
        &self,
        state: &mut State,
        name: Option<String>,
        lookup_key: Option<String>,
    ) -> Result<Value, StripeApiError> {
        let name = name.ok_or_else(|| {
            StripeApiError::invalid("Missing required param: name.", Some("name"))
        })?;
        let lookup_key = lookup_key.ok_or_else(|| {
            StripeApiError::invalid("Missing required param: lookup_key.", Some("lookup_key"))
        })?;
        let taken = SEEDED.iter().any(|(_, _, _, k)| *k == lookup_key)
            || state.features.values().any(|f| f.lookup_key == lookup_key);
        if taken {
            return Err(StripeApiError::invalid(
                format!("A feature with lookup_key '{lookup_key}' already exists."),
                Some("lookup_key"),
            ));
        }
        let f = Feature {
            id: self.new_id("feat"),
            name,
            lookup_key,
        };
        state.features.insert(f.id.clone(), f.clone());
        Ok(feature_json(&f))
    }

    /// `POST /v1/products/{id}/features`: attaches `entitlement_feature`.
    pub(crate) fn attach_feature(
        &self,
        state: &mut State,
        product: &str,
        feature_id: Option<String>,
    ) -> Result<Value, StripeApiError> {
        if !product_exists(product) {
            return Err(StripeApiError::missing("product", product, "product"));
        }
        let feature_id = feature_id.ok_or_else(|| {
            StripeApiError::invalid(
                "Missing required param: entitlement_feature.",
                Some("entitlement_feature"),
            )
        })?;
        let f = feature(state, &feature_id).ok_or_else(|| {
            StripeApiError::missing("feature", &feature_id, "entitlement_feature")
        })?;
        if product_features(state, product)
            .iter()
            .any(|(_, attached)| attached.id == f.id)
        {
            return Err(StripeApiError::invalid(
                format!("The feature {feature_id} is already attached to {product}."),
                Some("entitlement_feature"),
            ));
        }
        let attached = ProductFeature {
            id: self.new_id("prodft"),
            feature: f.id.clone(),
        };
        let json = product_feature_json(&attached.id, &f);
        state
            .product_features
            .entry(product.to_string())
            .or_default()
            .push(attached);
        Ok(json)
    }
}

/// `GET /v1/products/{id}/features`, as (id, object) for a list page.
pub(crate) fn list_product_features(
    state: &State,
    product: &str,
) -> Result<Vec<(String, Value)>, StripeApiError> {
    if !product_exists(product) {
        return Err(StripeApiError::missing("product", product, "product"));
    }
    Ok(product_features(state, product)
        .iter()
        .map(|(id, f)| (id.clone(), product_feature_json(id, f)))
        .collect())
}

/// `GET /v1/entitlements/features`: the seeded features, then those made.
pub(crate) fn list_features(state: &State) -> Vec<(String, Value)> {
    let mut seen = BTreeSet::new();
    SEEDED
        .iter()
        .filter_map(|(_, id, _, _)| seeded(id))
        .chain(state.features.values().cloned())
        .filter(|f| seen.insert(f.id.clone()))
        .map(|f| (f.id.clone(), feature_json(&f)))
        .collect()
}

/// `GET /v1/entitlements/active_entitlements?customer=…`, as (id, object).
pub(crate) fn list_active_entitlements(
    state: &State,
    customer: Option<&String>,
) -> Result<Vec<(String, Value)>, StripeApiError> {
    let customer = customer.ok_or_else(|| {
        StripeApiError::invalid("Missing required param: customer.", Some("customer"))
    })?;
    if !state.customers.contains_key(customer) {
        return Err(StripeApiError::missing("customer", customer, "customer"));
    }
    Ok(state
        .entitlements
        .get(customer)
        .into_iter()
        .flatten()
        .map(|e| (e.id.clone(), active_entitlement_json(state, e)))
        .collect())
}
