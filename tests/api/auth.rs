//! Login, lockout, JWT tampering, refresh rotation and reuse detection, password change.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maas_api::ExtraRoutes;
use maas_tests::{TEST_PASSWORD, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The JWT secret test apps run with: the development default.
fn jwt_secret(_: &TestApp) -> Vec<u8> {
    maas_platform::settings::DEV_JWT_SECRET.as_bytes().to_vec()
}

async fn login(app: &TestApp, login: &str, password: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn login_by_username_or_email_gives_working_tokens() {
    let app = TestApp::spawn().await;
    app.create_user("alice", &["developer"]).await;
    for name in ["alice", "ALICE@example.com"] {
        let resp = login(&app, name, TEST_PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let tokens: Value = resp.json().await.unwrap();
        assert_eq!(tokens["token_type"], "Bearer");
        // The default 900 s lifetime, counted from the answer (whole seconds, rounded down).
        let expires_in = tokens["expires_in"].as_i64().unwrap();
        assert!((899..=900).contains(&expires_in), "{expires_in}");
        let me: Value = app
            .get_as(tokens["access_token"].as_str().unwrap(), "/api/v1/me")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["username"], "alice");
        assert_eq!(me["roles"], json!(["developer"]));
        assert!(me.get("password_hash").is_none());
    }
}

#[tokio::test]
async fn unknown_user_and_wrong_password_are_indistinguishable() {
    let app = TestApp::spawn().await;
    app.create_user("bob", &[]).await;
    let wrong: Value = login(&app, "bob", "not the password")
        .await
        .json()
        .await
        .unwrap();
    let unknown: Value = login(&app, "nobody", "not the password")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["code"], "invalid_credentials");
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn logins_are_limited_per_name_and_address() {
    let app = TestApp::spawn().await;
    app.create_user("carol", &[]).await;
    for _ in 0..5 {
        assert_eq!(
            code(login(&app, "carol", "wrong password!").await).await,
            (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
        );
    }
    let blocked = login(&app, "carol", TEST_PASSWORD).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(code(blocked).await.1, "login_rate_limited");
    // Another login name from the same address is not affected.
    app.create_user("dave", &[]).await;
    assert_eq!(
        login(&app, "dave", TEST_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn disabled_accounts_cannot_log_in() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let erin = app.create_user("erin", &[]).await;
    let resp = app
        .request(Method::POST, &format!("/api/v1/users/{erin}/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        code(login(&app, "erin", TEST_PASSWORD).await).await,
        (StatusCode::FORBIDDEN, "account_disabled".into())
    );
}

fn sign(claims: &Value, key: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let (id, token) = app.user_with_token("frank", &["admin"]).await;
    assert_eq!(
        app.get_as(&token, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    let secret = jwt_secret(&app);
    let now = maas_shared::clock::Clock::now(&maas_shared::clock::SystemClock).timestamp();
    // The session of the real token: access tokens are valid only while their session lives.
    let real: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let good = json!({"sub": id.to_string(), "sid": real["sid"], "iat": now, "nbf": now,
        "exp": now + 600, "aud": "maas-api", "iss": "maas", "jti": "x", "typ": "access"});
    // The forged token with the right key is accepted, proving the variants below fail for their flaw.
    assert_eq!(
        app.get_as(&sign(&good, &secret, Algorithm::HS256), "/api/v1/me")
            .await
            .status(),
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = Vec::new();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    cases.push(("alg none", format!("{header}.{payload}.")));
    cases.push((
        "wrong key",
        sign(
            &good,
            b"another-secret-that-is-long-enough-000",
            Algorithm::HS256,
        ),
    ));
    cases.push(("other hmac alg", sign(&good, &secret, Algorithm::HS512)));
    let mut expired = good.clone();
    expired["exp"] = json!(now - 120);
    cases.push(("expired", sign(&expired, &secret, Algorithm::HS256)));
    let mut refresh_typ = good.clone();
    refresh_typ["typ"] = json!("refresh");
    cases.push(("wrong type", sign(&refresh_typ, &secret, Algorithm::HS256)));
    let mut bad_exp = good.clone();
    bad_exp["exp"] = json!("tomorrow");
    cases.push(("malformed exp", sign(&bad_exp, &secret, Algorithm::HS256)));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("missing exp", sign(&no_exp, &secret, Algorithm::HS256)));
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    cases.push((
        "wrong audience",
        sign(&wrong_aud, &secret, Algorithm::HS256),
    ));
    let mut future = good.clone();
    future["nbf"] = json!(now + 3600);
    cases.push(("not yet valid", sign(&future, &secret, Algorithm::HS256)));
    let mut no_session = good.clone();
    no_session["sid"] = json!(uuid::Uuid::now_v7().to_string());
    cases.push((
        "unknown session",
        sign(&no_session, &secret, Algorithm::HS256),
    ));
    cases.push(("garbage", "not.a.jwt".to_owned()));
    cases.push((
        "flipped signature",
        format!("{}x", &token[..token.len() - 1]),
    ));

    for (name, forged) in cases {
        let resp = app.get_as(&forged, "/api/v1/me").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{name}");
        let body: Value = resp.json().await.unwrap();
        let expected = if name == "expired" {
            "token_expired"
        } else {
            "invalid_token"
        };
        assert_eq!(body["code"], expected, "{name}");
    }
    let missing = app.get("/api/v1/me").await;
    assert_eq!(
        code(missing).await,
        (StatusCode::UNAUTHORIZED, "unauthenticated".into())
    );
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/auth/refresh")
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = TestApp::spawn().await;
    app.create_user("gina", &[]).await;
    let first = app.login("gina").await;
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();

    let second: Value = refresh(&app, &first_refresh).await.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(
        app.get_as(second["access_token"].as_str().unwrap(), "/api/v1/me")
            .await
            .status(),
        StatusCode::OK
    );

    // The spent token comes back: reuse. The whole family dies, the legitimate successor too.
    assert_eq!(
        code(refresh(&app, &first_refresh).await).await,
        (StatusCode::UNAUTHORIZED, "refresh_token_reused".into())
    );
    assert_eq!(
        code(refresh(&app, &second_refresh).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert_eq!(
        code(refresh(&app, "made-up-token").await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );

    // A new login starts a new, healthy family.
    let again = app.login("gina").await;
    assert_eq!(
        refresh(&app, again["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = TestApp::spawn().await;
    app.create_user("hank", &[]).await;
    let tokens = app.login("hank").await;
    let other = app.login("hank").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let me = |token: &Value| {
        app.request(Method::GET, "/api/v1/me")
            .bearer_auth(token.as_str().unwrap())
            .send()
    };
    assert_eq!(
        me(&tokens["access_token"]).await.unwrap().status(),
        StatusCode::OK
    );
    let resp = app
        .request(Method::POST, "/api/v1/auth/logout")
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        code(refresh(&app, refresh_token).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    // The session's access token ends with it, before it expires; another session goes on.
    assert_eq!(
        code(me(&tokens["access_token"]).await.unwrap()).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert_eq!(
        me(&other["access_token"]).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn password_change_checks_the_old_one_and_ends_sessions() {
    let app = TestApp::spawn().await;
    app.create_user("iris", &[]).await;
    let tokens = app.login("iris").await;
    let access = tokens["access_token"].as_str().unwrap();
    let change = |current: &str, new: &str| {
        app.request(Method::POST, "/api/v1/me/password")
            .bearer_auth(access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    assert_eq!(
        code(
            change("wrong wrong wrong", "a brand new password")
                .await
                .unwrap()
        )
        .await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    let short = change(TEST_PASSWORD, "short").await.unwrap();
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = short.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["new_password"], "{body}");
    assert_eq!(
        change(TEST_PASSWORD, "a brand new password")
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        code(refresh(&app, tokens["refresh_token"].as_str().unwrap()).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    // Every session ends, access tokens included.
    let me = app
        .request(Method::GET, "/api/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(me).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    // The old password no longer works.
    assert_eq!(
        code(login(&app, "iris", TEST_PASSWORD).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    assert_eq!(
        login(&app, "iris", "a brand new password").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn self_registration_is_off_by_default_and_gives_the_user_role_when_on() {
    let closed = TestApp::spawn().await;
    let body = json!({"username": "joe", "password": "long enough password", "roles": ["admin"]});
    let resp = closed
        .request(Method::POST, "/api/v1/auth/register")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::FORBIDDEN, "registration_closed".into())
    );

    let open = TestApp::spawn_with(
        |s| s.sections.identity.allow_self_registration = true,
        ExtraRoutes::default(),
    )
    .await;
    let resp = open
        .request(Method::POST, "/api/v1/auth/register")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let user: Value = resp.json().await.unwrap();
    assert_eq!(
        user["roles"],
        json!(["user"]),
        "registration never grants more than `user`"
    );
}
