//! Secrets in the engine: checked, sealed, never answered, granted as placeholders.

use super::*;
use crate::error::ErrorCode;
use crate::store::Store;
use crate::testing;

const VALUE: &str = "sk-test-0123456789-hunter2";

fn create(name: &str, hosts: &[&str]) -> CreateSecret {
    CreateSecret {
        name: name.into(),
        value: VALUE.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_secret_is_answered_and_stored_without_its_value() {
    let (engine, store) = testing::engine().await;
    let s = engine
        .create_secret(create("openai", &["API.openai.com", "*.example.com."]))
        .await
        .unwrap();
    assert!(s.id.starts_with("sec_"));
    assert!(s.placeholder.starts_with(PLACEHOLDER_PREFIX) && s.placeholder.len() > 40);
    assert_eq!(s.hosts, vec!["api.openai.com", "*.example.com"]);
    assert_eq!(s.version, 1);
    let answered = serde_json::to_string(&(
        &s,
        engine.list_secrets().await.unwrap(),
        engine.get_secret("openai").await.unwrap(),
    ))
    .unwrap();
    assert!(!answered.contains(VALUE));
    let (row, sealed) = store.get_secret(&s.id).await.unwrap().unwrap();
    assert!(!serde_json::to_string(&row).unwrap().contains(VALUE));
    assert!(!sealed.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()));
    assert_eq!(
        engine.vault.open_value(&s.id, &sealed).unwrap().as_str(),
        VALUE
    );
    let other = create("other", &[]);
    assert!(!format!("{other:?}").contains(VALUE));
}

#[tokio::test]
async fn bad_secrets_are_refused_with_typed_errors() {
    let (engine, _) = testing::engine().await;
    engine.create_secret(create("taken", &[])).await.unwrap();
    let code = |r: Result<Secret>| r.unwrap_err().code();
    assert_eq!(
        code(engine.create_secret(create("taken", &[])).await),
        ErrorCode::Conflict
    );
    for name in ["", "sec_x", "a b", "{x}", &"n".repeat(129)] {
        assert_eq!(
            code(engine.create_secret(create(name, &[])).await),
            ErrorCode::InvalidRequest,
            "{name:?}"
        );
    }
    for host in [
        "localhost",
        "10.0.0.1",
        "a..b",
        "-a.com",
        "*",
        "http://a.com",
        "a.com/x",
    ] {
        assert_eq!(
            code(engine.create_secret(create("h", &[host])).await),
            ErrorCode::InvalidRequest,
            "{host:?}"
        );
    }
    for value in ["", "a\r\nX-Evil: 1", &"v".repeat(MAX_VALUE + 1)] {
        let req = CreateSecret {
            value: value.into(),
            ..create("v", &[])
        };
        assert_eq!(
            code(engine.create_secret(req).await),
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(
        code(engine.get_secret("missing").await),
        ErrorCode::SecretNotFound
    );
    assert_eq!(
        code(
            engine
                .update_secret("missing", UpdateSecret::default())
                .await
        ),
        ErrorCode::SecretNotFound
    );
}

#[tokio::test]
async fn updates_change_the_version_with_the_value_and_keep_the_placeholder() {
    let (engine, store) = testing::engine().await;
    let s = engine
        .create_secret(create("k", &["a.test"]))
        .await
        .unwrap();
    let hosts_only = UpdateSecret {
        hosts: Some(vec!["b.test".into()]),
        ..Default::default()
    };
    let u = engine.update_secret("k", hosts_only).await.unwrap();
    assert_eq!(
        (u.version, u.hosts.clone()),
        (1, vec!["b.test".to_string()])
    );
    let new_value = UpdateSecret {
        value: Some("second-value".into()),
        ..Default::default()
    };
    let u = engine.update_secret(&s.id, new_value).await.unwrap();
    assert_eq!(u.version, 2);
    assert_eq!(u.placeholder, s.placeholder);
    let (_, sealed) = store.get_secret(&s.id).await.unwrap().unwrap();
    assert_eq!(
        engine.vault.open_value(&s.id, &sealed).unwrap().as_str(),
        "second-value"
    );
}

#[tokio::test]
async fn a_grant_puts_the_placeholder_in_the_env_and_blocks_deletion() {
    let (engine, store) = testing::engine().await;
    let s = engine
        .create_secret(create("gh", &["api.github.com"]))
        .await
        .unwrap();
    let wanted = BTreeMap::from([("GH_TOKEN".to_string(), "gh".to_string())]);
    let (grants, vars) = engine
        .grant_secrets(&wanted, &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(vars.get("GH_TOKEN"), Some(&s.placeholder));
    assert_eq!(grants.get("GH_TOKEN"), Some(&s.id));
    let clash = BTreeMap::from([("GH_TOKEN".to_string(), "x".to_string())]);
    let code =
        |r: Result<(BTreeMap<String, String>, BTreeMap<String, String>)>| r.unwrap_err().code();
    assert_eq!(
        code(engine.grant_secrets(&wanted, &clash).await),
        ErrorCode::InvalidRequest
    );
    let missing = BTreeMap::from([("X".to_string(), "nope".to_string())]);
    assert_eq!(
        code(engine.grant_secrets(&missing, &BTreeMap::new()).await),
        ErrorCode::SecretNotFound
    );
    let bad_var = BTreeMap::from([("1X".to_string(), "gh".to_string())]);
    assert_eq!(
        code(engine.grant_secrets(&bad_var, &BTreeMap::new()).await),
        ErrorCode::InvalidRequest
    );

    store
        .insert_sandbox(&testing::sandbox("sbx1", SandboxState::Running))
        .await
        .unwrap();
    engine.store_grants("sbx1", &grants).await.unwrap();
    let held = engine.sandbox_secrets("sbx1").await.unwrap();
    assert_eq!(
        held.get("GH_TOKEN").map(|s| s.id.as_str()),
        Some(s.id.as_str())
    );
    assert_eq!(
        engine.delete_secret("gh").await.unwrap_err().code(),
        ErrorCode::Conflict
    );
    engine.forget_secrets("sbx1").await.unwrap();
    engine.delete_secret("gh").await.unwrap();
    assert_eq!(
        engine.get_secret(&s.id).await.unwrap_err().code(),
        ErrorCode::SecretNotFound
    );
}

#[tokio::test]
async fn only_a_running_sandbox_changes_its_secrets() {
    let (engine, store) = testing::engine().await;
    engine
        .create_secret(create("k", &["a.test"]))
        .await
        .unwrap();
    store
        .insert_sandbox(&testing::sandbox("sbx2", SandboxState::Stopped))
        .await
        .unwrap();
    let wanted = BTreeMap::from([("K".to_string(), "k".to_string())]);
    let e = engine
        .set_sandbox_secrets("sbx2", wanted)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    assert!(engine.sandbox_secrets("sbx2").await.unwrap().is_empty());
}
