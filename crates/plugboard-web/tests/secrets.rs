//! `GET /api/v1/secrets`: names, whether set and where from — never a value.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use plugboard_host::secrets::SecretStore;
use plugboard_host::{DataDir, Host, HostConfig};
use plugboard_web::api::{ApiState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const VALUE: &str = "pb-api-VALUE-3e8f61";

async fn get(host: &Arc<Host>, uri: &str) -> (StatusCode, String) {
    let resp = app(ApiState::new(Arc::clone(host), None))
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_secrets_answer_names_what_is_set_and_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let host = Arc::new(
        Host::open(HostConfig {
            plugin_dirs: vec![dir.path().join("plugins")],
            config_dir: dir.path().join("configs"),
            data: data.clone(),
            launch_vars: Default::default(),
            reap_all_orphans: false,
        })
        .unwrap(),
    );
    // No store yet: every known name is listed.
    let (s, body) = get(&host, "/api/v1/secrets").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"LAMBDA_API_KEY") && names.contains(&"AWS_SECRET_ACCESS_KEY"),
        "{v}"
    );

    let mut store = SecretStore::open(data.secrets_path()).unwrap();
    store.set("PLUGBOARD_TEST_API_KEY", VALUE).unwrap();
    let (s, body) = get(&host, "/api/v1/secrets").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(!body.contains(VALUE), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "PLUGBOARD_TEST_API_KEY")
        .unwrap();
    assert_eq!(
        row,
        &json!({"name": "PLUGBOARD_TEST_API_KEY", "set": true, "source": "secret store", "for": null})
    );
    for r in v.as_array().unwrap() {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "set", "source", "for"], "{r}");
    }

    // A store others can read is an error naming the fix, still no value.
    std::fs::set_permissions(data.secrets_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (s, body) = get(&host, "/api/v1/secrets").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(!body.contains(VALUE), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "secrets_unreadable");
    assert!(v["error"]["message"].as_str().unwrap().contains("chmod 600"), "{v}");
}
