//! HTTP requests to the host API from a client: any method, path, query,
//! content type and body get a JSON answer with a status, never a panic or
//! a hang. The host behind it has the bundled example plugins' manifests
//! (nothing is started: start/stop/call paths answer errors or run the
//! in-process examples). Input: `METHOD PATH\nCONTENT-TYPE\nBODY`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use plugboard_host::{DataDir, Host, HostConfig};
use plugboard_web::api::{ApiState, app};
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    state: ApiState,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins");
        let host = rt.block_on(async {
            Host::open(HostConfig {
                plugin_dirs: vec![examples],
                config_dir: dir.path().join("configs"),
                data: DataDir::new(dir.path().join("data")),
                launch_vars: Default::default(),
                reap_all_orphans: false,
            })
            .unwrap_or_else(|e| panic!("host: {e}"))
        });
        Fixture {
            rt,
            state: ApiState::new(Arc::new(host), None),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let (Some(head), ctype, body) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("")) else {
        return;
    };
    let (method, path) = head.split_once(' ').unwrap_or(("GET", head));
    // Starting plugins would spawn processes; the API's start/restart
    // paths are exercised by the host tests, not by the fuzzer.
    if path.contains("/start") || path.contains("/restart") {
        return;
    }
    let Ok(req) = Request::builder()
        .method(method)
        .uri(format!("/api/v1/{}", path.trim_start_matches('/')))
        .header("content-type", ctype)
        .body(Body::from(body.to_owned()))
    else {
        return;
    };
    let f = fixture();
    let resp = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), app(f.state.clone()).oneshot(req)).await
    });
    let resp = resp.unwrap_or_else(|_| panic!("the API hung on {method} {path}"));
    let Ok(resp) = resp;
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if status.is_client_error() || status.is_server_error() {
        assert!(ct.contains("json"), "{method} {path} answered {status} as {ct:?}");
    }
});
