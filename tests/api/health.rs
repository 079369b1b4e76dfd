use serde_json::Value;

use crate::support::*;

#[actix_rt::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(response.status(), 200);
}

#[actix_rt::test]
async fn readyz_answers_ready_while_the_database_is_reachable() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/readyz")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[actix_rt::test]
async fn an_unknown_path_answers_a_json_404() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/nope")).send().await.unwrap();

    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}
