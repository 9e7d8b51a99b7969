//! User administration, the audit trail and the `maas` identity commands.

use maas_tests::{TestApp, platform_command};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

async fn code(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn admins_create_list_and_manage_users_and_every_action_is_audited() {
    let app = TestApp::spawn().await;
    let (admin_id, admin) = app.user_with_token("root", &["admin"]).await;
    let post = |path: String, body: Value| {
        app.request(Method::POST, &path)
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    let (status, created) = code(post("/api/v1/users".into(), json!({"username": "Tara", "email": "t@example.com", "password": "initial password 1", "roles": ["developer"]})).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["username"], "tara");
    let tara = created["id"].as_str().unwrap().to_owned();

    let (status, dup) = code(
        post(
            "/api/v1/users".into(),
            json!({"username": "TARA", "password": "another password"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, dup["code"].as_str()),
        (StatusCode::CONFLICT, Some("username_taken"))
    );
    let (status, dup) = code(
        post(
            "/api/v1/users".into(),
            json!({"username": "tara2", "email": "T@EXAMPLE.com", "password": "another password"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, dup["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_taken"))
    );

    let (status, invalid) = code(
        post(
            "/api/v1/users".into(),
            json!({"username": "x", "email": "nope", "password": "short", "roles": ["emperor"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, invalid["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["username", "email", "password", "role"],
        "{invalid}"
    );

    let (status, page) = code(app.get_as(&admin, "/api/v1/users?limit=1").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["username"], "root");
    let next = page["next_cursor"].as_str().unwrap();
    let (_, rest) = code(
        app.get_as(&admin, &format!("/api/v1/users?limit=1&cursor={next}"))
            .await,
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["data"][0]["username"], "tara");
    assert!(rest["next_cursor"].is_null(), "two users in all: {rest}");

    let roles = app
        .request(Method::PUT, &format!("/api/v1/users/{tara}/roles"))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["user", "developer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(roles).await.1["roles"], json!(["developer", "user"]));
    assert_eq!(
        post(format!("/api/v1/users/{tara}/disable"), json!({}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        post(format!("/api/v1/users/{tara}/enable"), json!({}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let key = post(
        format!("/api/v1/users/{tara}/keys"),
        json!({"name": "provisioned"}),
    )
    .await
    .unwrap();
    assert_eq!(key.status(), StatusCode::CREATED);
    let secret = code(key).await.1["secret"].as_str().unwrap().to_owned();
    let deleted = app
        .request(Method::DELETE, &format!("/api/v1/users/{tara}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, gone) = code(app.get_as(&admin, &format!("/api/v1/users/{tara}")).await).await;
    assert_eq!(
        (status, gone["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
    let (status, dead) = code(app.get_as(&secret, "/api/v1/me").await).await;
    assert_eq!(
        (status, dead["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "a deleted user's keys die"
    );

    // Nobody disables their own account (the last admin rule is checked in the use case's
    // own tests, since only the operator can act on the last admin).
    let last = app
        .request(Method::POST, &format!("/api/v1/users/{admin_id}/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (status, last) = code(last).await;
    assert_eq!(
        (status, last["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("self_status_change"))
    );

    // Every admin action left one audit row, and none carries a secret.
    let db = app.db().await;
    let rows = db
        .query_all(sea_orm::Statement::from_string(sea_orm::DatabaseBackend::Postgres, "SELECT action, actor_id::text AS actor, details::text AS details, request_id FROM audit_events ORDER BY id"))
        .await
        .unwrap();
    let actions: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "action").unwrap(),
                r.try_get::<Option<String>>("", "actor").unwrap(),
            )
        })
        .collect();
    let by_admin = Some(admin_id.to_string());
    let expected: Vec<(String, Option<String>)> = [
        // The harness creates the admin as the operator would (no actor).
        ("user.create", None),
        ("user.create", by_admin.clone()),
        ("user.set_roles", by_admin.clone()),
        ("user.disable", by_admin.clone()),
        ("user.enable", by_admin.clone()),
        ("api_key.create", by_admin.clone()),
        ("user.delete", by_admin.clone()),
    ]
    .into_iter()
    .map(|(action, actor)| (action.to_owned(), actor))
    .collect();
    // Refused requests (duplicates, invalid input, disabling oneself) leave no row.
    assert_eq!(actions, expected);
    for row in &rows {
        let details: String = row.try_get("", "details").unwrap();
        for secret_text in ["initial password 1", "password_hash", &secret, "argon2"] {
            assert!(
                !details.contains(secret_text),
                "audit row leaks a secret: {details}"
            );
        }
    }
    // Each row made over HTTP names its request; the operator's has none.
    let with_request_id: Vec<bool> = rows
        .iter()
        .map(|r| {
            r.try_get::<Option<String>>("", "request_id")
                .unwrap()
                .is_some()
        })
        .collect();
    assert_eq!(with_request_id, [false, true, true, true, true, true, true]);
}

#[tokio::test]
async fn admins_cannot_disable_or_delete_their_own_account() {
    let app = TestApp::spawn().await;
    let (root_id, root) = app.user_with_token("root", &["admin"]).await;
    let (alice_id, alice) = app.user_with_token("alice", &["admin"]).await;
    let send = |method: Method, path: String| app.request(method, &path).bearer_auth(&root).send();
    let problem = |status: StatusCode, code: &str, body: &Value| {
        assert_eq!(body["status"], status.as_u16(), "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["type"], format!("https://docs.maas.dev/errors#{code}"));
    };

    // Refused like a change of one's own roles: 403 with a stable code of its own.
    let resp = send(Method::POST, format!("/api/v1/users/{root_id}/disable"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let (status, body) = code(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    problem(status, "self_status_change", &body);
    assert_eq!(
        body["detail"],
        "you cannot disable or delete your own account"
    );
    let (status, body) = code(
        send(Method::DELETE, format!("/api/v1/users/{root_id}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    problem(status, "self_status_change", &body);
    let roles = app
        .request(Method::PUT, &format!("/api/v1/users/{root_id}/roles"))
        .bearer_auth(&root)
        .json(&json!({"roles": ["user"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = code(roles).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    problem(status, "self_role_change", &body);
    // Enabling oneself changes nothing and stays allowed.
    let (status, me) = code(
        send(Method::POST, format!("/api/v1/users/{root_id}/enable"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, me["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    // The account is untouched: still active, its token still works.
    let (status, me) = code(app.get_as(&root, "/api/v1/me").await).await;
    assert_eq!(
        (status, me["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    // Another admin may be disabled and deleted as before.
    let (status, body) = code(
        send(Method::POST, format!("/api/v1/users/{alice_id}/disable"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );
    let deleted = send(Method::DELETE, format!("/api/v1/users/{alice_id}"))
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_as(&alice, "/api/v1/me").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The refusals left no audit row.
    let db = app.db().await;
    let rows = db
        .query_all(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT action, target_id FROM audit_events WHERE actor_id IS NOT NULL ORDER BY id",
        ))
        .await
        .unwrap();
    let actions: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "action").unwrap(),
                r.try_get("", "target_id").unwrap(),
            )
        })
        .collect();
    let alice_id = Some(alice_id.to_string());
    assert_eq!(
        actions,
        [
            ("user.enable".to_owned(), Some(root_id.to_string())),
            ("user.disable".to_owned(), alice_id.clone()),
            ("user.delete".to_owned(), alice_id),
        ]
    );
}

#[tokio::test]
async fn non_admins_get_403_on_admin_routes() {
    let app = TestApp::spawn().await;
    let (_, user) = app.user_with_token("vic", &["developer"]).await;
    for (method, path) in [
        (Method::GET, "/api/v1/users"),
        (Method::POST, "/api/v1/users"),
    ] {
        let resp = app
            .request(method, path)
            .bearer_auth(&user)
            .json(&json!({"username": "zz", "password": "long enough pw"}))
            .send()
            .await
            .unwrap();
        let (status, body) = code(resp).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{path}"
        );
    }
    // Nothing was created.
    let db = app.db().await;
    let row = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT count(*)::bigint AS n FROM users WHERE username = 'zz'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 0);
}

fn maas(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = platform_command("maas", &app.db.url, app.keyspace.prefix());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn seed_is_idempotent_and_never_uses_a_fixed_password() {
    let app = TestApp::spawn().await;
    let (ok, out, err) = maas(&app, &["seed"], &[("MAAS_ADMIN_USERNAME", "boss")]);
    assert!(ok, "{err}");
    let password = out
        .lines()
        .find_map(|l| l.split_once("store it now): "))
        .map(|(_, p)| p.trim().to_owned())
        .expect(&out);
    assert_eq!(password.len(), 24, "{password}");
    let (ok, again, _) = maas(&app, &["seed"], &[("MAAS_ADMIN_USERNAME", "boss")]);
    assert!(ok, "{again}");
    let again = again.trim_end();
    assert!(
        again.starts_with("admin `boss` already present (") && again.ends_with("); nothing to do"),
        "{again}"
    );
    let resp = app
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"login": "boss", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let db = app.db().await;
    let row = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT count(*)::bigint AS n FROM users",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);

    // A given password is used as is, and never printed.
    let other = TestApp::spawn().await;
    let (ok, out, _) = maas(
        &other,
        &["seed"],
        &[
            ("MAAS_ADMIN_USERNAME", "chief"),
            ("MAAS_ADMIN_PASSWORD", "chosen by the operator"),
        ],
    );
    assert!(ok && !out.contains("chosen by the operator"), "{out}");
    assert!(
        out.trim_end().ends_with(") with the given password"),
        "{out}"
    );
    let resp = other
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"login": "chief", "password": "chosen by the operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn cli_manages_users_keys_and_quotas_through_the_same_services() {
    let app = TestApp::spawn().await;
    let (ok, out, err) = maas(
        &app,
        &["user", "create", "wendy", "--role", "developer"],
        &[],
    );
    assert!(ok, "{err}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("generated password (shown once, store it now): "))
        .expect(&out)
        .trim()
        .to_owned();
    let login = app
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"login": "wendy", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK, "the printed password works");
    let (ok, out, err) = maas(
        &app,
        &[
            "key",
            "create",
            "--user",
            "wendy",
            "--name",
            "cli",
            "--scopes",
            "inference",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let secret = out
        .lines()
        .find_map(|l| l.split_once("store it now): "))
        .map(|(_, s)| s.trim().to_owned())
        .expect(&out);
    assert_eq!(
        app.get_as(&secret, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    let (ok, _, err) = maas(
        &app,
        &["quota", "set", "wendy", "--requests-total-quota", "1"],
        &[],
    );
    assert!(ok, "{err}");
    // The running API hears about the change and applies it.
    let refused = maas_tests::eventually(std::time::Duration::from_secs(2), || async {
        let resp = app.get_as(&secret, "/api/v1/me").await;
        if resp.status() == StatusCode::OK {
            return None;
        }
        let (status, body) = code(resp).await;
        Some((status, body["code"].as_str().map(str::to_owned)))
    })
    .await;
    assert_eq!(
        refused,
        Some((StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded".into())))
    );
    let (ok, out, err) = maas(&app, &["user", "set-role", "wendy", "user"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "`wendy` now has roles user");
    let (ok, out, _) = maas(&app, &["user", "list"], &[]);
    assert!(ok, "{out}");
    let wendy: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&"wendy"))
        .unwrap_or_else(|| panic!("wendy not listed: {out}"))[2..]
        .to_vec();
    assert_eq!(wendy, ["active", "user"], "{out}");
    let (ok, out, err) = maas(&app, &["user", "disable", "wendy"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "disabled `wendy`");
    let (ok, _, err) = maas(&app, &["user", "create", "x"], &[]);
    assert!(!ok && err.contains("username"), "{err}");
}

#[tokio::test]
async fn admins_read_the_audit_trail_and_others_cannot() {
    let app = TestApp::spawn().await;
    let (admin_id, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, dev) = app.user_with_token("dev", &["developer"]).await;
    let created = app
        .request(Method::POST, "/api/v1/users")
        .bearer_auth(&admin)
        .json(&json!({"username": "newbie", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let (status, page) = code(
        app.get_as(
            &admin,
            &format!("/api/v1/audit?actor={admin_id}&target_type=user"),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = page["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["action"], "user.create");
    assert_eq!(events[0]["details"]["username"], "newbie");
    assert!(events[0]["request_id"].is_string());
    // Page through everything one event at a time: the users created by the test harness are
    // audited too, newest first.
    let mut seen = Vec::new();
    let mut path = "/api/v1/audit?limit=1".to_owned();
    loop {
        let (status, page) = code(app.get_as(&admin, &path).await).await;
        assert_eq!(status, StatusCode::OK);
        let events = page["data"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{page}");
        seen.push((
            events[0]["action"].as_str().unwrap().to_owned(),
            events[0]["details"]["username"].as_str().map(str::to_owned),
        ));
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/audit?limit=1&cursor={next}"),
            None => break,
        }
        assert!(seen.len() < 10, "{seen:?}");
    }
    let created = |name: &str| ("user.create".to_owned(), Some(name.to_owned()));
    assert_eq!(seen, [created("newbie"), created("dev"), created("root")]);
    let (status, body) = code(app.get_as(&dev, "/api/v1/audit").await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}

/// Sets `target`'s roles as `admin` (a request in flight until awaited).
async fn set_roles(app: &TestApp, admin: &str, target: uuid::Uuid, roles: Value) -> StatusCode {
    app.request(Method::PUT, &format!("/api/v1/users/{target}/roles"))
        .bearer_auth(admin)
        .json(&json!({ "roles": roles }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_exactly_one() {
    let app = TestApp::spawn().await;
    let active_admins = "SELECT count(*) FROM users u JOIN user_roles r ON r.user_id = u.id \
                         WHERE u.status = 'active' AND r.role = 'admin'";
    let (mut survivor, mut survivor_token) = app.user_with_token("admin0", &["admin"]).await;
    for round in 1..=8 {
        // A second admin, promoted by the one that is left.
        let other = app.create_user(&format!("admin{round}"), &["user"]).await;
        let promoted = set_roles(&app, &survivor_token, other, json!(["admin"])).await;
        assert_eq!(promoted, StatusCode::OK);
        let other_token = app.login(&format!("admin{round}")).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.count(active_admins).await, 2);
        // Each demotes the other at the same moment: exactly one wins, the other is refused
        // (409 `last_admin`, or 403 when the winner's change reached it first).
        let (first, second) = tokio::join!(
            set_roles(&app, &survivor_token, other, json!(["user"])),
            set_roles(&app, &other_token, survivor, json!(["user"])),
        );
        let refused = |s: StatusCode| s == StatusCode::CONFLICT || s == StatusCode::FORBIDDEN;
        assert!(
            (first == StatusCode::OK && refused(second))
                || (second == StatusCode::OK && refused(first)),
            "round {round}: {first} / {second}"
        );
        assert_eq!(app.count(active_admins).await, 1, "round {round}");
        if second == StatusCode::OK {
            (survivor, survivor_token) = (other, other_token);
        }
    }
}

#[tokio::test]
async fn audit_filters_and_cursors_that_cannot_match_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    for (query, field) in [
        ("target_type=%13P%00W", "target_type"),
        ("target_type=User", "target_type"),
        ("target_id=a%00b", "target_id"),
        ("cursor=djE6eA", "cursor"),
    ] {
        let resp = app.get_as(&admin, &format!("/api/v1/audit?{query}")).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed", "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    // Any id is a position: the page after an id nobody has is the rest of the list.
    let resp = app
        .get_as(
            &admin,
            "/api/v1/audit?cursor=ffffffff-ffff-7fff-bfff-ffffffffffff&target_type=user",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}
