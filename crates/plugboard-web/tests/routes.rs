//! Every dashboard and API route, driven through the real router: good
//! requests, bad form input, missing or wrong CSRF tokens, escaping, secrets,
//! and the token on TCP.

use std::path::Path;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use plugboard_host::{DataDir, Host, HostConfig};
use plugboard_web::api::{ApiState, OverTcp, app};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<Host>,
}

fn write(dir: &Path, name: &str, toml: &str) {
    let d = dir.join("plugins").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("plugin.toml"), toml).unwrap();
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "stt",
        r#"
name = "whisper"
category = "speech_to_text"
title = "Whisper <script>alert('x')</script>"
description = "Transcribes <b>audio</b>"
version = "1.0"
execution_mode = "subprocess"
ready = "none"
stop_grace_s = 0.2
[launch]
command = "sleep"
args = ["30"]
[config_schema]
type = "object"
required = ["model"]
[config_schema.properties.model]
type = "string"
description = "Model name"
[config_schema.properties.device]
type = "string"
enum = ["cpu", "cuda"]
default = "cpu"
[config_schema.properties.beam]
type = "integer"
minimum = 1
maximum = 10
default = 5
[config_schema.properties.stream]
type = "boolean"
default = false
[config_schema.properties.api_key]
type = "string"
"#,
    );
    write(
        dir.path(),
        "gpu",
        "name = \"llama\"\ncategory = \"speech_to_text\"\ntitle = \"Llama on GPU\"\nexecution_mode = \"cloud_gpu\"\n[resources]\ngpu_count = 2\ngpu_type = \"A100\"\nestimated_cost_per_hour = 3.5\n",
    );
    let host = Host::open(HostConfig {
        reap_all_orphans: false,
        plugin_dirs: vec![dir.path().join("plugins")],
        config_dir: dir.path().join("configs"),
        data: DataDir::new(dir.path().join("data")),
        launch_vars: Default::default(),
    })
    .unwrap();
    Fixture {
        dir,
        host: Arc::new(host),
    }
}

impl Fixture {
    fn router(&self, token: Option<&str>, tcp: bool) -> axum::Router {
        let r = app(ApiState {
            host: Arc::clone(&self.host),
            token: token.map(str::to_owned),
        });
        if tcp { r.layer(Extension(OverTcp)) } else { r }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = self.router(None, false).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
        (status, headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post_form(
        &self,
        uri: &str,
        body: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        self.send(b.body(Body::from(body.to_owned())).unwrap()).await
    }

    fn config_file(&self) -> std::path::PathBuf {
        self.dir.path().join("configs/speech_to_text_whisper.json")
    }
}

const COOKIE: &str = "plugboard_csrf=0123456789abcdef0123456789abcdef";
const CSRF: &str = "csrf=0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn overview_category_card_and_plugin_pages() {
    let f = fixture();
    let (s, h, body) = f.get("/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h.get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("SameSite=Strict")
    );
    assert!(body.contains("Speech_To_Text") && body.contains("2 plugins"), "{body}");
    let (s, _, body) = f.get("/category/speech_to_text").await;
    assert_eq!(s, StatusCode::OK);
    // Plugin-provided strings are text, never markup.
    assert!(
        body.contains("Whisper &lt;script&gt;alert('x')&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"));
    assert!(body.contains("Transcribes &lt;b&gt;audio&lt;/b&gt;"));
    assert!(body.contains("id=\"plugin-select\"") && body.contains("hx-get=\"/fragments/card\""));
    assert!(body.contains("class=\"compare\""));
    let (s, _, card) = f.get("/fragments/card?id=speech_to_text_llama").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        card.contains("badge cloud") && card.contains("$3.50") && card.contains("2× A100"),
        "{card}"
    );
    let (s, _, card) = f.get("/fragments/card?id=speech_to_text_whisper").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        card.contains("badge local") && card.contains("streaming") && card.contains("not configured"),
        "{card}"
    );
    assert_eq!(f.get("/fragments/card?id=nope_nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/fragments/card").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/category/nothing").await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/plugins/speech_to_text_whisper").await.0, StatusCode::OK);
    assert_eq!(f.get("/plugins/nope_nope").await.0, StatusCode::NOT_FOUND);
    for (path, kind) in [
        ("/assets/htmx.min.js", "javascript"),
        ("/assets/app.js", "javascript"),
        ("/assets/style.css", "css"),
    ] {
        let (s, h, _) = f.get(path).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().contains(kind));
    }
    assert_eq!(f.get("/no/such/page").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_config_form_is_generated_from_the_schema() {
    let f = fixture();
    let (s, _, body) = f.get("/plugins/speech_to_text_whisper/config").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("name=\"model\"") && body.contains("required"), "{body}");
    assert!(body.contains("<select id=\"f-device\" name=\"device\">"), "{body}");
    assert!(
        body.contains("type=\"number\"")
            && body.contains("min=\"1\"")
            && body.contains("max=\"10\"")
            && body.contains("step=\"1\"")
    );
    assert!(body.contains("type=\"checkbox\""));
    assert!(body.contains("type=\"password\""));
    assert!(body.contains("Model name"));
    assert!(body.contains("name=\"csrf\""));
}

#[tokio::test]
async fn config_posts_need_a_csrf_token() {
    let f = fixture();
    let body = "model=tiny&device=cpu&beam=3";
    assert_eq!(
        f.post_form("/plugins/speech_to_text_whisper/config", body, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.post_form(
            "/plugins/speech_to_text_whisper/config",
            &format!("{body}&{CSRF}"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let wrong = "plugboard_csrf=ffffffffffffffffffffffffffffffff";
    assert_eq!(
        f.post_form(
            "/plugins/speech_to_text_whisper/config",
            &format!("{body}&{CSRF}"),
            Some(wrong)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert!(!f.config_file().exists());
    for path in [
        "/plugins/speech_to_text_whisper/config/delete",
        "/plugins/speech_to_text_whisper/start",
        "/plugins/speech_to_text_whisper/stop",
        "/plugins/speech_to_text_whisper/restart",
    ] {
        assert_eq!(
            f.post_form(path, "", Some(COOKIE)).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert!(f.host.status("speech_to_text_whisper").is_none());
}

#[tokio::test]
async fn invalid_input_shows_inline_errors_and_saves_nothing() {
    let f = fixture();
    std::fs::create_dir_all(f.config_file().parent().unwrap()).unwrap();
    std::fs::write(
        f.config_file(),
        "{\"model\": \"base\", \"api_key\": \"SECRET-VALUE-123\"}",
    )
    .unwrap();
    let before = std::fs::read(f.config_file()).unwrap();
    // Not a number, out of range, not a choice, required missing.
    for (form, field) in [
        ("model=tiny&beam=abc", "beam"),
        ("model=tiny&beam=11", "beam"),
        ("model=tiny&device=tpu", "device"),
        ("model=&beam=2", "model"),
    ] {
        let (s, _, body) = f
            .post_form(
                "/plugins/speech_to_text_whisper/config",
                &format!("{form}&{CSRF}"),
                Some(COOKIE),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{form}");
        assert!(body.contains(&format!("data-field=\"{field}\"")), "{form}: {body}");
        assert!(body.contains("Not saved"));
        assert!(!body.contains("SECRET-VALUE-123"), "a secret was rendered");
        assert_eq!(std::fs::read(f.config_file()).unwrap(), before);
    }
    // Malformed form encoding is refused too.
    let (s, _, _) = f
        .send(
            Request::post("/plugins/speech_to_text_whisper/config")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::COOKIE, COOKIE)
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    assert_eq!(std::fs::read(f.config_file()).unwrap(), before);
}

#[tokio::test]
async fn a_valid_config_is_saved_and_secrets_are_kept_not_shown() {
    let f = fixture();
    std::fs::create_dir_all(f.config_file().parent().unwrap()).unwrap();
    std::fs::write(
        f.config_file(),
        "{\"model\": \"base\", \"api_key\": \"SECRET-VALUE-123\"}",
    )
    .unwrap();
    let (s, h, _) = f
        .post_form(
            "/plugins/speech_to_text_whisper/config",
            &format!("model=large&device=cuda&beam=4&stream.__present=1&stream=on&api_key=&{CSRF}"),
            Some(COOKIE),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/plugins/speech_to_text_whisper/config?saved=1");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(f.config_file()).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"model": "large", "device": "cuda", "beam": 4, "stream": true, "api_key": "SECRET-VALUE-123"})
    );
    let (_, _, page) = f.get("/plugins/speech_to_text_whisper/config?saved=1").await;
    assert!(page.contains("id=\"saved\""));
    assert!(!page.contains("SECRET-VALUE-123"), "a secret was rendered");
    assert!(page.contains("value=\"large\""));
    // Reset shows defaults without saving; delete removes the file.
    let (_, _, reset) = f.get("/plugins/speech_to_text_whisper/config?defaults=1").await;
    assert!(reset.contains("<option value=\"cpu\" selected>"), "{reset}");
    assert!(f.config_file().exists());
    let (s, _, _) = f
        .post_form("/plugins/speech_to_text_whisper/config/delete", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(!f.config_file().exists());
    assert_eq!(
        f.post_form("/plugins/nope_nope/config/delete", CSRF, Some(COOKIE))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_page_starts_and_stops_plugins() {
    let f = fixture();
    std::fs::create_dir_all(f.config_file().parent().unwrap()).unwrap();
    std::fs::write(f.config_file(), "{\"model\": \"base\"}").unwrap();
    let (s, _, body) = f.get("/running").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("data-sse=\"/events/running\"") && body.contains("data-action=\"start\""));
    let (s, h, _) = f
        .post_form("/plugins/speech_to_text_whisper/start", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{h:?}");
    let pid = f.host.status("speech_to_text_whisper").unwrap().pid.unwrap();
    let (_, _, body) = f.get("/running").await;
    assert!(
        body.contains(&pid.to_string()) && body.contains("state running"),
        "{body}"
    );
    let (s, _, _) = f
        .post_form("/plugins/speech_to_text_whisper/restart", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = f
        .post_form("/plugins/speech_to_text_whisper/stop", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(plugboard_core::process::read_process(pid).is_none_or(|p| !p.is_live()));
    // Stopping again, and starting a plugin with no backend, show an error on the page.
    let (s, _, body) = f
        .post_form("/plugins/speech_to_text_whisper/stop", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("not running"));
    let (s, _, body) = f
        .post_form("/plugins/speech_to_text_llama/start", CSRF, Some(COOKIE))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("cloud_gpu"), "{body}");
    assert_eq!(
        f.post_form("/plugins/nope_nope/start", CSRF, Some(COOKIE)).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _, log) = f.get("/plugins/speech_to_text_whisper/logs").await;
    assert_eq!(s, StatusCode::OK);
    assert!(log.contains("id=\"log\""));
    assert_eq!(f.get("/plugins/nope_nope/logs").await.0, StatusCode::NOT_FOUND);
    // The live list is an event stream.
    let resp = f
        .router(None, false)
        .oneshot(Request::get("/events/running").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    assert!(
        text.starts_with("event: running") && text.contains("running-table"),
        "{text}"
    );
}

#[tokio::test]
async fn api_routes_answer_json_and_errors() {
    let f = fixture();
    let (s, _, body) = f.get("/api/v1/plugins").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(f.get("/api/v1/plugins/nope_nope").await.0, StatusCode::NOT_FOUND);
    let (s, _, body) = f
        .send(
            Request::put("/api/v1/plugins/speech_to_text_whisper/config")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"beam": 0}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["violations"].as_array().unwrap().len(), 2, "{v}");
    let (s, _, _) = f
        .send(
            Request::put("/api/v1/plugins/speech_to_text_whisper/config")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{oops"))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/api/v1/health").await.0, StatusCode::OK);
    assert_eq!(f.get("/api/v1/ps").await.0, StatusCode::OK);
    assert_eq!(f.get("/api/v1/problems").await.0, StatusCode::OK);
    let (s, _, body) = f.get("/api/v1/plugins/speech_to_text_whisper/status").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn tcp_requests_need_the_token() {
    let f = fixture();
    let r = f.router(Some("s3cret"), true);
    let resp = r
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = r
        .clone()
        .oneshot(
            Request::get("/api/v1/plugins")
                .header(header::AUTHORIZATION, "Bearer nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = r
        .clone()
        .oneshot(
            Request::get("/api/v1/plugins")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A browser's first visit with ?token= gets an HttpOnly cookie, then the cookie works.
    let resp = r
        .clone()
        .oneshot(Request::get("/running?token=s3cret").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let resp = r
        .clone()
        .oneshot(
            Request::get("/running")
                .header(header::COOKIE, "plugboard_token=s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The Unix socket needs no token (it is 0600).
    let resp = f
        .router(Some("s3cret"), false)
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn loopback_tcp_without_a_token_resists_rebinding_and_form_csrf() {
    let f = fixture();
    let r = f.router(None, true);
    let get = |host: &str| {
        Request::get("/api/v1/plugins")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for host in ["127.0.0.1:8080", "localhost:9", "[::1]:80", "localhost"] {
        assert_eq!(
            r.clone().oneshot(get(host)).await.unwrap().status(),
            StatusCode::OK,
            "{host}"
        );
    }
    for host in ["evil.example:8080", "127.0.0.1.evil.example", ""] {
        assert_eq!(
            r.clone().oneshot(get(host)).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{host}"
        );
    }
    // A cross-site form cannot drive the API.
    let form = Request::post("/api/v1/plugins/speech_to_text_whisper/start")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        r.clone().oneshot(form).await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(f.host.status("speech_to_text_whisper").is_none());
}
