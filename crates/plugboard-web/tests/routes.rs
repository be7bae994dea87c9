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

/// A plugin whose schema is a JSON file (`config_schema_file`).
fn write_json_schema(dir: &Path, folder: &str, name: &str, category: &str, schema: &Value) {
    let d = dir.join("plugins").join(folder);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("schema.json"), serde_json::to_vec_pretty(schema).unwrap()).unwrap();
    std::fs::write(
        d.join("plugin.toml"),
        format!(
            "name = \"{name}\"\ncategory = \"{category}\"\ntitle = \"{name}\"\nexecution_mode = \"subprocess\"\nconfig_schema_file = \"schema.json\"\n"
        ),
    )
    .unwrap();
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(extra: impl FnOnce(&Path)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    extra(dir.path());
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
        let r = app(ApiState::new(Arc::clone(&self.host), token.map(str::to_owned)));
        if tcp { r.layer(Extension(OverTcp)) } else { r }
    }

    /// A CSRF token as a browser gets it: the cookie set by a page.
    async fn csrf(&self) -> String {
        let (_, h, _) = self.get("/running").await;
        let cookie = h[header::SET_COOKIE].to_str().unwrap();
        cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("plugboard_csrf=")
            .unwrap()
            .to_owned()
    }

    /// `(cookie header, form field)` for a fresh token.
    async fn tokens(&self) -> (String, String) {
        let t = self.csrf().await;
        (format!("plugboard_csrf={t}"), format!("csrf={t}"))
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
    let (cookie, _) = f.tokens().await;
    let body = "model=tiny&device=cpu&beam=3";
    let csrf_field = "csrf=0123456789abcdef0123456789abcdef";
    assert_eq!(
        f.post_form("/plugins/speech_to_text_whisper/config", body, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.post_form(
            "/plugins/speech_to_text_whisper/config",
            &format!("{body}&{csrf_field}"),
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
            &format!("{body}&{csrf_field}"),
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
            f.post_form(path, "", Some(&cookie)).await.0,
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
    let (cookie, csrf) = f.tokens().await;
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
                &format!("{form}&{csrf}"),
                Some(&cookie),
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
                .header(header::COOKIE, &cookie)
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
    let (cookie, csrf) = f.tokens().await;
    let (s, h, _) = f
        .post_form(
            "/plugins/speech_to_text_whisper/config",
            &format!("model=large&device=cuda&beam=4&stream~present=1&stream=on&api_key=&{csrf}"),
            Some(&cookie),
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
        .post_form("/plugins/speech_to_text_whisper/config/delete", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(!f.config_file().exists());
    assert_eq!(
        f.post_form("/plugins/nope_nope/config/delete", &csrf, Some(&cookie))
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
    let (cookie, csrf) = f.tokens().await;
    let (s, _, body) = f.get("/running").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("data-sse=\"/events/running\"") && body.contains("data-action=\"start\""));
    let (s, h, _) = f
        .post_form("/plugins/speech_to_text_whisper/start", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{h:?}");
    let pid = f.host.status("speech_to_text_whisper").unwrap().pid.unwrap();
    let (_, _, body) = f.get("/running").await;
    assert!(
        body.contains(&pid.to_string()) && body.contains("state running"),
        "{body}"
    );
    let (s, _, _) = f
        .post_form("/plugins/speech_to_text_whisper/restart", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = f
        .post_form("/plugins/speech_to_text_whisper/stop", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(plugboard_core::process::read_process(pid).is_none_or(|p| !p.is_live()));
    // Stopping again, and starting a plugin with no backend, show an error on the page.
    let (s, _, body) = f
        .post_form("/plugins/speech_to_text_whisper/stop", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("not running"));
    let (s, _, body) = f
        .post_form("/plugins/speech_to_text_llama/start", &csrf, Some(&cookie))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("cloud_gpu"), "{body}");
    assert_eq!(
        f.post_form("/plugins/nope_nope/start", &csrf, Some(&cookie)).await.0,
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

/// A real server (Unix socket and loopback TCP) on its own thread and
/// runtime, so that a handler that never returns cannot hang the test.
struct RealServer {
    addr: std::net::SocketAddr,
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // Not joined: if a handler hangs, the test fails instead of hanging.
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn real_server(f: &Fixture, timeouts: plugboard_web::Timeouts) -> RealServer {
    let socket = f.dir.path().join("data/host.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = Arc::clone(&f.host);
    let sock = socket.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let bound = plugboard_web::bind(plugboard_web::ServeOptions {
                socket: sock,
                bind: Some("127.0.0.1:0".parse().unwrap()),
                token: None,
                timeouts,
            })
            .await
            .unwrap();
            addr_tx.send(bound.tcp_addr().unwrap()).unwrap();
            let _ = bound
                .serve(host, async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let addr = addr_rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    RealServer {
        addr,
        socket,
        stop: Some(stop_tx),
    }
}

/// One HTTP/1.1 GET over TCP: `(status, body)`, or why it failed (a read
/// timeout included).
fn http_get(addr: std::net::SocketAddr, path: &str, timeout: std::time::Duration) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn self_referencing_schemas_do_not_hang_the_dashboard_defect_2() {
    let f = fixture_with(|d| {
        // Each property refers to the whole schema and has a default: filling
        // defaults or building a form naively never ends.
        write_json_schema(
            d,
            "a_lr",
            "lr",
            "s",
            &json!({"type": "object", "properties": {
                "l": {"$ref": "#", "default": {}},
                "r": {"$ref": "#", "default": {}}
            }}),
        );
        write_json_schema(
            d,
            "b_loop",
            "loop",
            "s",
            &json!({"type": "object", "allOf": [{"$ref": "#"}, {"$ref": "#"}]}),
        );
        // Twelve self-references per level: 12^8 fields with a depth limit alone.
        let props: serde_json::Map<String, Value> = (0..12)
            .map(|i| (format!("p{i}"), json!({"$ref": "#"})))
            .chain([("name".to_owned(), json!({"type": "string", "default": "x"}))])
            .collect();
        write_json_schema(
            d,
            "c_wide",
            "wide",
            "s",
            &json!({"type": "object", "properties": props}),
        );
    });
    let server = real_server(&f, plugboard_web::Timeouts::default());
    let limit = std::time::Duration::from_secs(20);
    for path in [
        "/category/s",
        "/fragments/card?id=s_lr",
        "/plugins/s_lr",
        "/plugins/s_lr/config",
        "/plugins/s_loop/config",
        "/plugins/s_wide/config",
        "/fragments/card?id=s_wide",
    ] {
        let started = std::time::Instant::now();
        let (status, body) = http_get(server.addr, path, limit).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
        // The form is bounded in total, not just per branch.
        let inputs = body.matches("<input").count() + body.matches("<textarea").count();
        assert!(
            inputs <= plugboard_web::dashboard::form::MAX_FIELDS * 2 + 10,
            "{path}: {inputs} inputs"
        );
    }
    let (_, wide) = http_get(server.addr, "/plugins/s_wide/config", limit).unwrap();
    assert!(wide.contains("name=\"name\"") && wide.contains("value=\"x\""), "{wide}");
    // Every other request is still served.
    assert_eq!(http_get(server.addr, "/api/v1/health", limit).unwrap().0, 200);
    let fields = plugboard_web::dashboard::form::fields(&json!({"type": "object", "properties": {
        "l": {"$ref": "#", "default": {}}, "r": {"$ref": "#", "default": {}}
    }}));
    let all = plugboard_web::dashboard::form::all_fields(&fields).len();
    assert!(all <= plugboard_web::dashboard::form::MAX_FIELDS, "{all} fields");
}

#[tokio::test]
async fn csrf_rejects_foreign_origin_and_planted_cookies_defect_10() {
    let f = fixture();
    std::fs::create_dir_all(f.config_file().parent().unwrap()).unwrap();
    std::fs::write(f.config_file(), "{\"model\": \"base\"}").unwrap();
    let post = |uri: &str, headers: &[(header::HeaderName, &str)], body: &str| {
        let mut b = Request::post(uri)
            .header(header::HOST, "127.0.0.1:7878")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            b = b.header(k.clone(), *v);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    };
    let start = "/plugins/speech_to_text_whisper/start";
    // The issue's request: a foreign Origin and a cookie of the attacker's choosing.
    for tcp in [true, false] {
        let resp = f
            .router(None, tcp)
            .oneshot(post(
                start,
                &[
                    (header::ORIGIN, "http://evil.com"),
                    (header::COOKIE, "plugboard_csrf=abc"),
                ],
                "csrf=abc",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "tcp={tcp}");
    }
    // A cookie planted by another local port, with no Origin or Referer: not signed here.
    let planted = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let resp = f
        .router(None, true)
        .oneshot(post(
            start,
            &[(header::COOKIE, &format!("plugboard_csrf={planted}"))],
            &format!("csrf={planted}"),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(f.host.status("speech_to_text_whisper").is_none(), "the plugin started");
    // A real token does not help a foreign page: Origin, or Referer without Origin.
    let (cookie, csrf) = f.tokens().await;
    for foreign in [
        (header::ORIGIN, "http://127.0.0.1:9999"),
        (header::ORIGIN, "null"),
        (header::REFERER, "http://localhost:9999/attack.html"),
    ] {
        let resp = f
            .router(None, true)
            .oneshot(post(
                "/plugins/speech_to_text_whisper/config/delete",
                &[foreign.clone(), (header::COOKIE, &cookie)],
                &csrf,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{foreign:?}");
    }
    // The API refuses foreign origins too, JSON or not.
    let resp = f
        .router(None, true)
        .oneshot(
            Request::put("/api/v1/plugins/speech_to_text_whisper/config")
                .header(header::HOST, "127.0.0.1:7878")
                .header(header::ORIGIN, "http://evil.com")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"model\": \"evil\"}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "foreign_origin");
    assert!(f.config_file().exists());
    // The page's own origin (or Referer), with the signed token, works.
    for own in [
        (header::ORIGIN, "http://127.0.0.1:7878"),
        (
            header::REFERER,
            "http://127.0.0.1:7878/plugins/speech_to_text_whisper/config",
        ),
    ] {
        std::fs::write(f.config_file(), "{\"model\": \"base\"}").unwrap();
        let resp = f
            .router(None, true)
            .oneshot(post(
                "/plugins/speech_to_text_whisper/config/delete",
                &[own.clone(), (header::COOKIE, &cookie)],
                &csrf,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{own:?}");
        assert!(!f.config_file().exists());
    }
}

#[tokio::test]
async fn secrets_are_never_rendered_defect_6() {
    let f = fixture_with(|d| {
        write_json_schema(
            d,
            "vault",
            "vault",
            "sec",
            &json!({
                "type": "object",
                "properties": {
                    "model": {"type": "string"},
                    "pin": {"type": "integer", "writeOnly": true},
                    "keys": {"type": "array", "items": {"type": "string"}, "writeOnly": true},
                    "creds": {"$ref": "#/$defs/Secret"},
                    "tokens": {"type": "array", "items": {"$ref": "#/$defs/Secret"}},
                    "extra": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": true}},
                    "pw": {"type": "string", "format": "password", "minLength": 12}
                },
                "$defs": {"Secret": {"type": "string", "writeOnly": true}}
            }),
        );
    });
    let file = f.dir.path().join("configs/sec_vault.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // Saved before the schema asked for 12 characters: "PW-SHORT-77" no longer fits.
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "model": "visible-model",
            "pin": 987_654_321,
            "keys": ["KEY-AAA-111", "KEY-BBB-222"],
            "creds": "CREDS-SECRET-1",
            "tokens": ["TOKEN-SECRET-1"],
            "extra": {"x": "EXTRA-SECRET-1"},
            "pw": "PW-SHORT-77"
        }))
        .unwrap(),
    )
    .unwrap();
    let secrets = [
        "987654321",
        "KEY-AAA-111",
        "KEY-BBB-222",
        "CREDS-SECRET-1",
        "TOKEN-SECRET-1",
        "EXTRA-SECRET-1",
        "PW-SHORT-77",
    ];
    let leaks = |body: &str| {
        secrets
            .iter()
            .filter(|s| body.contains(*s))
            .copied()
            .collect::<Vec<_>>()
    };
    let (s, _, page) = f.get("/plugins/sec_vault/config").await;
    assert_eq!(s, StatusCode::OK);
    assert!(leaks(&page).is_empty(), "leaked {:?}", leaks(&page));
    assert!(page.contains("visible-model"), "{page}");
    assert!(page.contains("id=\"saved-config\"") && page.contains("(set)"), "{page}");
    for name in ["pin", "keys", "creds", "tokens", "extra", "pw"] {
        assert!(
            page.contains(&format!("name=\"{name}\" autocomplete=\"off\" data-secret=\"1\"")),
            "{name} is not a secret input: {page}"
        );
    }
    for path in ["/plugins/sec_vault", "/fragments/card?id=sec_vault", "/category/sec"] {
        let (_, _, body) = f.get(path).await;
        assert!(leaks(&body).is_empty(), "{path} leaked {:?}", leaks(&body));
    }
    // Submitting with the secrets left empty keeps them, and the saved
    // password fails the newer schema: the error must not echo it.
    let (cookie, csrf) = f.tokens().await;
    let (s, _, body) = f
        .post_form(
            "/plugins/sec_vault/config",
            &format!("model=m2&pin=&keys=&creds=&tokens=&extra=&pw=&{csrf}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("data-field=\"pw\""), "{body}");
    assert!(leaks(&body).is_empty(), "leaked {:?}: {body}", leaks(&body));
    // A typed secret that fails is not echoed either.
    let (s, _, body) = f
        .post_form(
            "/plugins/sec_vault/config",
            &format!("model=m2&pin=NEW-PIN-SECRET&pw=NEW-PW-SHORT&{csrf}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !body.contains("NEW-PIN-SECRET") && !body.contains("NEW-PW-SHORT"),
        "{body}"
    );
    assert!(leaks(&body).is_empty(), "leaked {:?}", leaks(&body));
    // A valid new password is saved; every other secret is kept.
    let (s, _, _) = f
        .post_form(
            "/plugins/sec_vault/config",
            &format!("model=m3&pw=a-long-enough-password&{csrf}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["pw"], "a-long-enough-password");
    assert_eq!(saved["pin"], 987_654_321);
    assert_eq!(saved["keys"], json!(["KEY-AAA-111", "KEY-BBB-222"]));
    assert_eq!(saved["extra"], json!({"x": "EXTRA-SECRET-1"}));
    assert_eq!(saved["model"], "m3");
}

#[tokio::test]
async fn dotted_property_names_round_trip_defect_12() {
    let f = fixture_with(|d| {
        write_json_schema(
            d,
            "dots",
            "dots",
            "ml",
            &json!({
                "type": "object",
                "properties": {
                    "torch.dtype": {"type": "string", "enum": ["float16", "float32"]},
                    "a~b": {"type": "string"},
                    "torch": {"type": "object", "properties": {"dtype": {"type": "string"}}},
                    "outer": {"type": "object", "properties": {"x.y": {"type": "integer", "maximum": 5}}}
                }
            }),
        );
    });
    let (_, _, page) = f.get("/plugins/ml_dots/config").await;
    for name in ["torch~1dtype", "a~0b", "torch.dtype", "outer.x~1y"] {
        assert!(page.contains(&format!("name=\"{name}\"")), "{name}: {page}");
    }
    let (cookie, csrf) = f.tokens().await;
    let (s, _, body) = f
        .post_form(
            "/plugins/ml_dots/config",
            &format!("torch~1dtype=float16&a~0b=tilde&torch.dtype=bf16&outer.x~1y=3&{csrf}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let file = f.dir.path().join("configs/ml_dots.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"torch.dtype": "float16", "a~b": "tilde", "torch": {"dtype": "bf16"}, "outer": {"x.y": 3}})
    );
    // Shown back in the right inputs.
    let (_, _, page) = f.get("/plugins/ml_dots/config").await;
    assert!(page.contains("<option value=\"float16\" selected>"), "{page}");
    assert!(page.contains("name=\"torch.dtype\" value=\"bf16\""), "{page}");
    assert!(page.contains("name=\"outer.x~1y\"") && page.contains("value=\"3\""));
    // A violation under a dotted name lands on its field.
    let (s, _, body) = f
        .post_form(
            "/plugins/ml_dots/config",
            &format!("outer.x~1y=9&{csrf}"),
            Some(&cookie),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("data-field=\"outer.x~1y\""), "{body}");
}

async fn json_error(f: &Fixture, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (s, h, body) = f.send(req).await;
    assert!(
        h.get(header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
        "{s}: {h:?} {body:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
    (s, h, v)
}

#[tokio::test]
async fn api_rejections_answer_the_documented_json_error_defect_13() {
    let f = fixture();
    let put = |body: &'static str, ct: Option<&str>| {
        let mut b = Request::put("/api/v1/plugins/speech_to_text_whisper/config");
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    let (s, _, v) = json_error(&f, put("{oops", Some("application/json"))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_json"))
    );
    let (s, _, v) = json_error(&f, put("{}", None)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("json_required"))
    );
    let call = Request::post("/api/v1/plugins/speech_to_text_whisper/call")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"nope\": 1}"))
        .unwrap();
    let (s, _, v) = json_error(&f, call).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_body"))
    );
    let logs = Request::get("/api/v1/plugins/speech_to_text_whisper/logs?lines=many")
        .body(Body::empty())
        .unwrap();
    let (s, _, v) = json_error(&f, logs).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let stream = Request::post("/api/v1/plugins/speech_to_text_whisper/call?stream=maybe")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"input\": 1}"))
        .unwrap();
    let (s, _, v) = json_error(&f, stream).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let bad_path = Request::get("/api/v1/plugins/%FF%FE").body(Body::empty()).unwrap();
    let (s, _, v) = json_error(&f, bad_path).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_path"))
    );
    let wrong_method = Request::delete("/api/v1/plugins").body(Body::empty()).unwrap();
    let (s, h, v) = json_error(&f, wrong_method).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    assert!(h[header::ALLOW].to_str().unwrap().contains("GET"), "{h:?}");
    let (s, _, v) = json_error(
        &f,
        Request::get("/api/v1/plugins/speech_to_text_whisper/start")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (s, _, v) = json_error(&f, Request::get("/api/v1/nothing/here").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let huge = Request::put("/api/v1/plugins/speech_to_text_whisper/config")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; plugboard_protocol::MAX_REQUEST_BYTES + 1]))
        .unwrap();
    let (s, _, v) = json_error(&f, huge).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    // Dashboard pages that do not exist get a page, not JSON.
    let (s, h, _) = f.get("/no/such/page").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
}

/// Reads until the peer closes; the time it took, or an error (a timeout).
fn closed_within(s: &mut impl std::io::Read, limit: std::time::Duration) -> Result<std::time::Duration, String> {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(started.elapsed()),
            Err(e) => return Err(format!("still open after {:?}: {e}", started.elapsed())),
        }
        if started.elapsed() > limit {
            return Err(format!("still open after {:?}", started.elapsed()));
        }
    }
}

#[test]
fn slow_and_idle_clients_are_disconnected() {
    use std::io::Write;
    let f = fixture();
    let timeouts = plugboard_web::Timeouts {
        header_read: std::time::Duration::from_secs(1),
        body_read: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let server = real_server(&f, timeouts);
    let limit = std::time::Duration::from_secs(8);
    // A partial request line over TCP (slowloris).
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    tcp.write_all(b"GET / HT").unwrap();
    let took = closed_within(&mut tcp, limit).unwrap();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // Headers that never end.
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        .unwrap();
    closed_within(&mut tcp, limit).unwrap();
    // A connection that says nothing, and one idle after its answer.
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    closed_within(&mut tcp, limit).unwrap();
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    write!(
        tcp,
        "GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.addr.port()
    )
    .unwrap();
    closed_within(&mut tcp, limit).unwrap();
    // The same on the Unix socket.
    let mut unix = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    unix.set_read_timeout(Some(limit)).unwrap();
    unix.write_all(b"GET /api/v1/hea").unwrap();
    closed_within(&mut unix, limit).unwrap();
    // A body that never arrives: 408, and the connection is closed.
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(limit)).unwrap();
    write!(
        tcp,
        "PUT /api/v1/plugins/speech_to_text_whisper/config HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"mo",
        server.addr.port()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    // Meanwhile the server answers everyone else.
    assert_eq!(http_get(server.addr, "/api/v1/health", limit).unwrap().0, 200);
}

#[tokio::test]
async fn category_pages_are_paged_and_searched_on_the_server() {
    let f = fixture();
    let (s, _, body) = f.get("/category/speech_to_text?per=1").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("1–1 of 2") && body.contains("id=\"next-page\""), "{body}");
    assert!(!body.contains("id=\"prev-page\""));
    assert_eq!(body.matches("<option value=").count(), 1, "one plugin on the page");
    let (_, _, page2) = f.get("/category/speech_to_text?per=1&page=2").await;
    assert!(
        page2.contains("2–2 of 2") && page2.contains("id=\"prev-page\""),
        "{page2}"
    );
    assert_ne!(body, page2);
    // A search narrows it, case-insensitively, over name, title and description.
    let (_, _, found) = f.get("/category/speech_to_text?q=LLAMA").await;
    assert!(found.contains("1–1 of 1") && found.contains("Llama on GPU"), "{found}");
    let (_, _, found) = f.get("/category/speech_to_text?q=transcribes").await;
    assert!(found.contains("1–1 of 1"), "{found}");
    // The search text is shown escaped; no match is a page saying so.
    let (s, _, none) = f.get("/category/speech_to_text?q=%3Ci%3Enowhere").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        none.contains("id=\"no-match\"") && none.contains("&lt;i&gt;nowhere"),
        "{none}"
    );
    assert!(!none.contains("<i>nowhere"));
    // Out-of-range and odd values never fail.
    let (s, _, far) = f.get(&format!("/category/speech_to_text?page={}", usize::MAX)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(far.contains("of 2"), "{far}");
    assert_eq!(f.get("/category/speech_to_text?per=0").await.0, StatusCode::OK);
    assert_eq!(
        f.get("/category/speech_to_text?page=x").await.0,
        StatusCode::BAD_REQUEST
    );
    let long = "a".repeat(201);
    assert_eq!(
        f.get(&format!("/category/speech_to_text?q={long}")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(f.get("/category/nope").await.0, StatusCode::NOT_FOUND);
}
