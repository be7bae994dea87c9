//! The cost page and the cost/budget API over a host with a priced plugin
//! running: the chart has its line, the budget bar its level.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use plugboard_host::budget::{Budget, BudgetStore, Period, Scope};
use plugboard_host::{DataDir, Host, HostConfig};
use plugboard_web::api::{ApiState, app};
use serde_json::Value;
use tower::ServiceExt;

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
async fn the_cost_page_and_api_show_spend_budgets_and_burn() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins/burner");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("plugin.toml"),
        "name = \"burner\"\ncategory = \"gpu\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0.2\n\
         [resources]\nestimated_cost_per_hour = 3600\n[launch]\ncommand = \"sleep\"\nargs = [\"30\"]\n",
    )
    .unwrap();
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
    // Empty: no budgets, nothing billed.
    let (s, page) = get(&host, "/cost").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("No budgets") && page.contains("Nothing billed"), "{page}");

    let store = BudgetStore::new(data.budgets_path());
    store
        .set(Budget {
            scope: Scope::Category("gpu".into()),
            max_usd: None,
            period: Period::Day,
            max_usd_per_hour: Some(4000.0),
        })
        .unwrap();
    host.start("gpu_burner").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (s, page) = get(&host, "/cost").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<svg id=\"spend-chart\""), "{page}");
    assert!(page.contains("data-plugin=\"gpu_burner\""), "{page}");
    // 3600 of 4000 USD/h: 90 %, the warning level.
    assert!(
        page.contains("data-scope=\"category:gpu\" data-level=\"warning\"") && page.contains("width: 90.0%"),
        "{page}"
    );
    assert!(page.contains("id=\"burn-rate\""), "{page}");

    let (s, body) = get(&host, "/api/v1/cost?since=day&hours=2").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total_rate_usd_per_hour"], 3600.0);
    assert!(v["total_accrued_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(v["plugins"][0]["key"], "gpu_burner");
    assert_eq!(v["providers"][0]["key"], "process");
    let (s, body) = get(&host, "/api/v1/budgets").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["level"], "warning", "{v}");
    assert_eq!(v[0]["budget"]["scope"], "category:gpu");
    // Bad queries are clear errors.
    let (s, body) = get(&host, "/api/v1/cost?since=week").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("not a period"), "{body}");
    let (s, _) = get(&host, "/api/v1/cost?hours=-1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    host.stop("gpu_burner").await.unwrap();
}
