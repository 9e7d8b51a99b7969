//! API keys: secret once, listing, isolation between users, scopes that never widen, revocation
//! and rotation, `x-api-key`.

use std::time::Duration;

use maas_tests::{TestApp, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_secret_and_authenticates() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_with_token("kim", &["developer"]).await;
    let resp = app
        .request(Method::POST, "/api/v1/me/keys")
        .bearer_auth(&token)
        .json(&json!({"name": "ci", "scopes": ["inference", "knowledge"], "allowed_models": ["smollm2"],
                      "limits": {"requests_per_minute": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(
        secret.starts_with("sk-") && secret.starts_with(prefix),
        "{secret}"
    );
    assert_eq!((prefix.len(), secret.len()), (11, 43), "{secret}");
    assert_eq!(created["scopes"], json!(["inference", "knowledge"]));
    assert_eq!(created["limits"]["requests_per_minute"], 100);

    let list: Value = app
        .get_as(&token, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["prefix"], prefix);
    assert!(
        !list.to_string().contains(secret),
        "the secret is never listed"
    );

    // The key authenticates as its owner, by bearer and by x-api-key.
    let me: Value = app.get_as(secret, "/api/v1/me").await.json().await.unwrap();
    assert_eq!(me["username"], "kim");
    let via_header = app
        .request(Method::GET, "/api/v1/me")
        .header("x-api-key", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(via_header.status(), StatusCode::OK);
    // The stored digest is not the secret.
    let db = app.db().await;
    use sea_orm::ConnectionTrait as _;
    let rows = db
        .query_all(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT encode(key_digest, 'hex') AS d FROM api_keys",
        ))
        .await
        .unwrap();
    let digest: String = rows[0].try_get("", "d").unwrap();
    assert_eq!(digest.len(), 64);
    assert!(!secret.contains(&digest));
}

#[tokio::test]
async fn users_cannot_see_use_or_revoke_each_others_keys() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.user_with_token("alice", &["developer"]).await;
    let (bob_id, bob) = app.user_with_token("bob", &["developer"]).await;
    let (bob_key, _) = app.create_key(&bob, json!({"name": "bob's"})).await;

    let listed: Value = app
        .get_as(&alice, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["data"].as_array().unwrap().is_empty());
    let revoke = app
        .request(Method::DELETE, &format!("/api/v1/me/keys/{bob_key}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(revoke).await,
        (StatusCode::NOT_FOUND, "api_key_not_found".into())
    );
    let rotate = app
        .request(Method::POST, &format!("/api/v1/me/keys/{bob_key}/rotate"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(rotate).await,
        (StatusCode::NOT_FOUND, "api_key_not_found".into())
    );
    let admin_route = app
        .get_as(&alice, &format!("/api/v1/users/{bob_id}/keys"))
        .await;
    assert_eq!(
        code(admin_route).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    // Bob's key is untouched.
    let still: Value = app
        .get_as(&bob, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["data"].as_array().unwrap().len(), 1, "{still}");
    assert_eq!(still["data"][0]["id"], bob_key.to_string());
    assert!(still["data"][0]["revoked_at"].is_null());
}

#[tokio::test]
async fn keys_never_carry_more_rights_than_their_owner() {
    let app = TestApp::spawn().await;
    let (user_id, user) = app.user_with_token("uma", &["user"]).await;

    // A `user` may not mint fine-tuning rights it does not have.
    let resp = app
        .request(Method::POST, "/api/v1/me/keys")
        .bearer_auth(&user)
        .json(&json!({"name": "x", "scopes": ["finetune"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "scope_not_allowed".into())
    );

    // `manage` on a user's key grants only the user's own rights: no user administration.
    let (_, manage_key) = app
        .create_key(&user, json!({"name": "m", "scopes": ["manage"]}))
        .await;
    assert_eq!(
        code(app.get_as(&manage_key, "/api/v1/users").await).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );

    // An inference-only key cannot manage keys at all.
    let (_, inference_key) = app
        .create_key(&user, json!({"name": "i", "scopes": ["inference"]}))
        .await;
    let resp = app
        .request(Method::POST, "/api/v1/me/keys")
        .bearer_auth(&inference_key)
        .json(&json!({"name": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );

    // A developer's `manage` key cannot mint a scope it lacks, even one the owner has.
    let (_, dev) = app.user_with_token("dev", &["developer"]).await;
    let (_, narrow) = app
        .create_key(&dev, json!({"name": "n", "scopes": ["manage"]}))
        .await;
    let (_, only_inference) = app
        .create_key(
            &dev,
            json!({"name": "o", "scopes": ["inference", "manage"]}),
        )
        .await;
    let resp = app
        .request(Method::POST, "/api/v1/me/keys")
        .bearer_auth(&only_inference)
        .json(&json!({"name": "z", "scopes": ["finetune"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "scope_not_allowed".into())
    );
    let ok = app
        .request(Method::POST, "/api/v1/me/keys")
        .bearer_auth(&narrow)
        .json(&json!({"name": "w", "scopes": ["manage"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);

    // Nobody raises their own role: a user cannot reach the roles endpoint, an admin cannot change itself.
    let resp = app
        .request(Method::PUT, &format!("/api/v1/users/{user_id}/roles"))
        .bearer_auth(&user)
        .json(&json!({"roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let (admin_id, admin) = app.user_with_token("root", &["admin"]).await;
    let resp = app
        .request(Method::PUT, &format!("/api/v1/users/{admin_id}/roles"))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["user"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "self_role_change".into())
    );
    let me: Value = app.get_as(&user, "/api/v1/me").await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["user"]));
}

#[tokio::test]
async fn revoked_and_rotated_keys_stop_working() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_with_token("lee", &["developer"]).await;
    let (id, secret) = app.create_key(&token, json!({"name": "k"})).await;
    assert_eq!(
        app.get_as(&secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );

    let rotated: Value = app
        .request(Method::POST, &format!("/api/v1/me/keys/{id}/rotate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["id"], id.to_string());
    assert_eq!(
        code(app.get_as(&secret, "/api/v1/me").await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert_eq!(
        app.get_as(new_secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );

    let revoked = app
        .request(Method::DELETE, &format!("/api/v1/me/keys/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        code(app.get_as(new_secret, "/api/v1/me").await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert_eq!(
        code(app.get_as("sk-not-a-real-key", "/api/v1/me").await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
}

#[tokio::test]
async fn revocation_is_seen_by_another_replica_within_a_second() {
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let (_, token) = app.user_with_token("max", &["developer"]).await;
    let (id, secret) = app.create_key(&token, json!({"name": "k"})).await;
    // Warm the replica's cache: from now on it answers from memory.
    assert_eq!(
        replica.get_as(&secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        replica.get_as(&secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );

    let resp = app
        .request(Method::DELETE, &format!("/api/v1/me/keys/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let refused = eventually(Duration::from_secs(1), || async {
        let resp = replica.get_as(&secret, "/api/v1/me").await;
        (resp.status() != StatusCode::OK).then_some(code(resp).await)
    })
    .await;
    assert_eq!(
        refused,
        Some((StatusCode::UNAUTHORIZED, "invalid_token".into())),
        "the replica still accepts the revoked key after a second"
    );
}

#[tokio::test]
async fn disabling_a_user_stops_keys_and_tokens_on_every_replica() {
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (nina_id, nina) = app.user_with_token("nina", &["developer"]).await;
    let (_, secret) = app.create_key(&nina, json!({"name": "k"})).await;
    assert_eq!(
        replica.get_as(&secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        replica.get_as(&nina, "/api/v1/me").await.status(),
        StatusCode::OK
    );

    let resp = app
        .request(Method::POST, &format!("/api/v1/users/{nina_id}/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let refused = eventually(Duration::from_secs(1), || async {
        let key = replica.get_as(&secret, "/api/v1/me").await;
        let jwt = replica.get_as(&nina, "/api/v1/me").await;
        if key.status() == StatusCode::OK || jwt.status() == StatusCode::OK {
            return None;
        }
        Some((code(key).await, code(jwt).await))
    })
    .await;
    // A disabled user's credentials are simply invalid (the authenticator says no more).
    let disabled = (StatusCode::UNAUTHORIZED, "invalid_token".to_owned());
    assert_eq!(
        refused,
        Some((disabled.clone(), disabled)),
        "the replica still serves the disabled user after a second"
    );
    // Re-enabled, the key works again.
    let enabled = app
        .request(Method::POST, &format!("/api/v1/users/{nina_id}/enable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), StatusCode::OK);
    let back = eventually(Duration::from_secs(1), || async {
        (replica.get_as(&secret, "/api/v1/me").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(back, Some(()), "the re-enabled user's key still refused");
}
