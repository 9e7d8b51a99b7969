//! The PostgreSQL audit log adapter.

use std::sync::Arc;

use maas_shared::audit::{ActionContext, AuditFilter, AuditLog, NewAuditEvent};
use maas_shared::audit_pg::PgAuditLog;
use maas_shared::clock::SystemClock;
use maas_shared::paging::PageRequest;
use maas_tests::TestApp;
use serde_json::json;

fn event(actor: uuid::Uuid, action: &str, target: &str) -> NewAuditEvent {
    NewAuditEvent {
        context: ActionContext {
            actor: Some(actor),
            request_id: Some("req-1".into()),
            ip: Some("127.0.0.1".into()),
        },
        action: action.into(),
        target_type: "user".into(),
        target_id: Some(target.into()),
        details: json!({"role": "developer"}),
    }
}

#[tokio::test]
async fn events_are_stored_and_listed_newest_first_with_paging_and_filters() {
    let app = TestApp::spawn().await;
    let log = PgAuditLog::new(app.db().await, Arc::new(SystemClock));
    let alice = uuid::Uuid::now_v7();
    let bob = uuid::Uuid::now_v7();
    for i in 0..5 {
        log.record(event(alice, &format!("user.action{i}"), "t1"))
            .await
            .unwrap();
    }
    log.record(event(bob, "user.disable", "t2")).await.unwrap();

    let everything = log
        .list(&AuditFilter::default(), &PageRequest::first())
        .await
        .unwrap();
    let actions: Vec<_> = everything
        .items
        .iter()
        .map(|e| e.event.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "user.disable",
            "user.action4",
            "user.action3",
            "user.action2",
            "user.action1",
            "user.action0"
        ]
    );
    assert_eq!(everything.items[0].event.context.actor, Some(bob));
    assert_eq!(everything.items[0].event.target_id.as_deref(), Some("t2"));
    assert_eq!(
        everything.items[0].event.details,
        json!({"role": "developer"})
    );
    assert_eq!(
        everything.items[0].event.context.request_id.as_deref(),
        Some("req-1")
    );
    assert!(everything.next.is_none());

    let by_alice = AuditFilter {
        actor: Some(alice),
        ..AuditFilter::default()
    };
    let first = log
        .list(&by_alice, &PageRequest::parse(Some(3), None).unwrap())
        .await
        .unwrap();
    let actions: Vec<_> = first.items.iter().map(|e| e.event.action.clone()).collect();
    assert_eq!(actions, ["user.action4", "user.action3", "user.action2"]);
    let cursor = first.next.expect("more pages").encode();
    let second = log
        .list(
            &by_alice,
            &PageRequest::parse(Some(3), Some(&cursor)).unwrap(),
        )
        .await
        .unwrap();
    let actions: Vec<_> = second
        .items
        .iter()
        .map(|e| e.event.action.clone())
        .collect();
    assert_eq!(actions, ["user.action1", "user.action0"]);
    assert!(second.next.is_none());

    let on_t2 = AuditFilter {
        target_id: Some("t2".into()),
        ..AuditFilter::default()
    };
    let on_t2 = log.list(&on_t2, &PageRequest::first()).await.unwrap();
    let found: Vec<_> = on_t2
        .items
        .iter()
        .map(|e| (e.event.action.as_str(), e.event.context.actor))
        .collect();
    assert_eq!(found, [("user.disable", Some(bob))]);
    assert!(on_t2.next.is_none());
}

#[tokio::test]
async fn quota_set_is_audited_with_the_fields_it_sets_as_json() {
    let app = TestApp::spawn().await;
    let (admin_id, admin) = app.user_with_token("root", &["admin"]).await;
    let (wes, token) = app.user_with_token("wes", &["developer"]).await;
    let (key, _) = app.create_key(&token, json!({"name": "k"})).await;
    let put = |path: String, body: serde_json::Value| {
        app.request(reqwest::Method::PUT, &path)
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let user_policy = json!({"requests_per_minute": 3, "tokens_per_day_quota": 1000, "requests_total_quota": null});
    let resp = put(format!("/api/v1/users/{wes}/quota"), user_policy)
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let key_policy = json!({"tokens_total_quota": 9_223_372_036_854_775_807_u64});
    let resp = put(format!("/api/v1/users/{wes}/keys/{key}/quota"), key_policy)
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    // Clearing a policy sets nothing.
    let resp = put(format!("/api/v1/users/{wes}/quota"), json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);

    let page: serde_json::Value = app
        .get_as(&admin, "/api/v1/audit?target_type=quota")
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<(&str, &str, &serde_json::Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], admin_id.to_string(), "{e}");
            (
                e["action"].as_str().unwrap(),
                e["target_id"].as_str().unwrap(),
                &e["details"],
            )
        })
        .collect();
    let user_target = format!("user:{wes}");
    let key_target = format!("key:{key}");
    // Newest first; exactly the fields set, as JSON numbers (unset and null fields absent).
    assert_eq!(
        events,
        [
            ("quota.set", user_target.as_str(), &json!({})),
            (
                "quota.set",
                key_target.as_str(),
                &json!({"tokens_total_quota": 9_223_372_036_854_775_807_u64})
            ),
            (
                "quota.set",
                user_target.as_str(),
                &json!({"requests_per_minute": 3, "tokens_per_day_quota": 1000})
            ),
        ],
        "{page}"
    );
}
