//! API key management over `/v1/keys` against a real server (no VM is booted): create a key and
//! use it, E2B-form keys on the E2B control plane, rotate, revoke (also the key in use) -> 401,
//! listings never carry secrets, typed errors, and a changed `PLATINUM_API_KEY` revoking the
//! previous one across a restart.

use platinum_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const ENV_KEY_A: &str = "pt_env_A_0123456789abcdefghijklmnopqrstuv";
const ENV_KEY_B: &str = "pt_env_B_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210";

/// `GET /v1/keys` with `key`: (status, body).
async fn list_with(t: &TestServer, key: &str, all: bool) -> (u16, Value) {
    t.call(
        t.anon(Method::GET, "/v1/keys")
            .query(&[("include_revoked", all)])
            .bearer_auth(key),
    )
    .await
    .unwrap()
}

/// Status of the E2B control plane's sandbox listing with `key` as E2B's SDKs send it.
async fn e2b_status(t: &TestServer, key: &str) -> u16 {
    t.anon(Method::GET, "/sandboxes")
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn is_e2b_form(key: &str) -> bool {
    key.strip_prefix("e2b_")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_used_rotated_and_revoked() {
    let t = TestServer::start().await.unwrap();

    // Create a Platinum-form key; it works at once.
    let ci = t
        .expect(
            t.req(Method::POST, "/v1/keys").json(&json!({"name": "ci"})),
            201,
        )
        .await
        .unwrap();
    let ci_key = ci["key"].as_str().unwrap().to_string();
    let ci_id = ci["id"].as_str().unwrap().to_string();
    assert!(ci_key.starts_with("pt_") && ci_key.len() == 43, "{ci}");
    assert_eq!(ci["format"], "platinum");
    assert_eq!(ci["prefix"].as_str().unwrap(), &ci_key[..8]);
    assert_eq!(ci["revoked"], false);
    let (status, _) = list_with(&t, &ci_key, false).await;
    assert_eq!(status, 200);

    // An E2B-form key: `e2b_` + 40 hex, accepted by the E2B control plane and by /v1.
    let e2b = t
        .expect(
            t.req(Method::POST, "/v1/keys")
                .json(&json!({"name": "e2b-client", "format": "e2b"})),
            201,
        )
        .await
        .unwrap();
    let e2b_key = e2b["key"].as_str().unwrap().to_string();
    let e2b_id = e2b["id"].as_str().unwrap().to_string();
    assert!(is_e2b_form(&e2b_key), "{e2b_key}");
    assert_eq!(e2b["format"], "e2b");
    assert_eq!(e2b_status(&t, &e2b_key).await, 200);
    assert_eq!(list_with(&t, &e2b_key, false).await.0, 200);

    // The listing has every key, with last use, and no secret or hash anywhere.
    let (status, list) = list_with(&t, &t.key, false).await;
    assert_eq!(status, 200);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{list}");
    let text = list.to_string();
    for secret in [&t.key, &ci_key, &e2b_key] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is listed: {text}"
        );
    }
    assert!(
        keys.iter()
            .all(|k| k.get("key").is_none() && k.get("hash").is_none())
    );
    let ci_listed = keys.iter().find(|k| k["id"] == ci_id.as_str()).unwrap();
    assert_eq!(ci_listed["name"], "ci");
    assert!(ci_listed["last_used_at"].is_string(), "{ci_listed}");

    // Rotate: same name and format, new secret; the old secret is refused.
    let rotated = t
        .expect(
            t.req(Method::POST, &format!("/v1/keys/{e2b_id}/rotate")),
            201,
        )
        .await
        .unwrap();
    let new_e2b = rotated["key"].as_str().unwrap().to_string();
    assert!(is_e2b_form(&new_e2b) && new_e2b != e2b_key);
    assert_eq!(rotated["name"], "e2b-client");
    assert_ne!(rotated["id"], e2b_id.as_str());
    assert_eq!(list_with(&t, &e2b_key, false).await.0, 401);
    assert_eq!(e2b_status(&t, &e2b_key).await, 401);
    assert_eq!(e2b_status(&t, &new_e2b).await, 200);

    // Revoke: refused at once on every front end; listed only with include_revoked.
    let revoked = t
        .expect(t.req(Method::DELETE, &format!("/v1/keys/{ci_id}")), 200)
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    let (status, body) = list_with(&t, &ci_key, false).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(e2b_status(&t, &ci_key).await, 401);
    let (_, live) = list_with(&t, &t.key, false).await;
    assert!(
        live["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked"] == false)
    );
    let (_, all) = list_with(&t, &t.key, true).await;
    assert_eq!(all["keys"].as_array().unwrap().len(), 4, "{all}");

    // A key may revoke itself.
    let own_id = rotated["id"].as_str().unwrap();
    let (status, _) = t
        .call(
            t.anon(Method::DELETE, &format!("/v1/keys/{own_id}"))
                .bearer_auth(&new_e2b),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(list_with(&t, &new_e2b, false).await.0, 401);

    // Typed errors.
    t.expect_error(
        t.req(Method::DELETE, "/v1/keys/nosuchkey"),
        404,
        "api_key_not_found",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/keys/nosuchkey/rotate"),
        404,
        "api_key_not_found",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, &format!("/v1/keys/{ci_id}/rotate")),
        409,
        "conflict",
    )
    .await
    .unwrap();
    for bad in [
        json!({"name": "weak", "key": "hunter2hunter2"}),
        json!({"name": "weak", "key": "a".repeat(40)}),
        json!({"name": "x", "format": "rsa"}),
        json!({"name": ""}),
        json!({"name": "PLATINUM_API_KEY"}),
        json!({"name": "x", "secret": "unknown field"}),
    ] {
        t.expect_error(
            t.req(Method::POST, "/v1/keys").json(&bad),
            400,
            "invalid_request",
        )
        .await
        .unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
    // An own strong key is taken as is.
    let own = "3f2b9c0e8d7a41e6b5c4d3e2f1a09b8c";
    t.expect(
        t.req(Method::POST, "/v1/keys")
            .json(&json!({"name": "own", "key": own})),
        201,
    )
    .await
    .unwrap();
    assert_eq!(list_with(&t, own, false).await.0, 200);
    // Without a key the routes answer 401.
    t.expect_error(t.anon(Method::GET, "/v1/keys"), 401, "unauthorized")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_env_key_revokes_the_previous_one() {
    let t = TestServer::start_with(|c| c.api_key = Some(ENV_KEY_A.into()))
        .await
        .unwrap();
    assert_eq!(t.key, ENV_KEY_A);
    assert_eq!(list_with(&t, ENV_KEY_A, false).await.0, 200);
    let t = t
        .restart(|c| c.api_key = Some(ENV_KEY_B.into()))
        .await
        .unwrap();
    assert_eq!(t.key, ENV_KEY_B);
    assert_eq!(list_with(&t, ENV_KEY_A, false).await.0, 401);
    let (status, all) = list_with(&t, ENV_KEY_B, true).await;
    assert_eq!(status, 200);
    let env_keys: Vec<&Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "PLATINUM_API_KEY")
        .collect();
    assert_eq!(env_keys.len(), 2, "{all}");
    assert_eq!(env_keys.iter().filter(|k| k["revoked"] == true).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_env_key_stops_the_server_from_starting() {
    let err = TestServer::start_with(|c| c.api_key = Some("test-key-from-env".into()))
        .await
        .err()
        .expect("a weak PLATINUM_API_KEY is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("PLATINUM_API_KEY is too weak"), "{msg}");
    assert!(
        !msg.contains("test-key-from-env"),
        "the key is not echoed: {msg}"
    );
}
