//! The plugin page and its routes, driven through the real router with a
//! real host: the call route's refusals (bad JSON, oversize input, unknown
//! plugin, missing CSRF token, a plugin not running), a streamed call with
//! progress, a cancel, a call whose browser goes away, the call form for
//! browsers without JavaScript, the live state events, the log's follow and
//! download, the schema table, and escaping and secrets on the page.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use plugboard_core::Violation;
use plugboard_host::{DataDir, Host, HostConfig, Manifest};
use plugboard_protocol::{CallContext, Capabilities, ExecError, Executor, PROTOCOL_VERSION, WorkerManifest};
use plugboard_web::api::{ApiState, app};
use plugboard_web::dashboard::try_it::MAX_CALL_INPUT_BYTES;
use serde_json::{Value, json};
use tower::ServiceExt;

/// An in-process plugin: echoes its input; `{"slow": true}` reports
/// progress every 20 ms for up to 10 s and honours cancel; `{"fail": true}`
/// rejects its input.
struct Echo {
    saw_cancel: Arc<AtomicBool>,
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "level": {"type": "integer", "minimum": 1, "maximum": 9, "default": 3, "description": "How <b>loud</b>"},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "api_key": {"type": "string", "writeOnly": true, "default": "DEFAULT-SECRET-XYZ"}
        }
    })
}

impl Executor for Echo {
    fn manifest(&self) -> WorkerManifest {
        WorkerManifest {
            protocol_version: PROTOCOL_VERSION,
            name: "echo".into(),
            version: None,
            config_schema: schema(),
            capabilities: Capabilities {
                streaming: true,
                cancel: true,
            },
            input_example: Some(json!({"from": "the-worker-manifest"})),
        }
    }

    fn validate_config(&self, _config: &Value) -> Vec<Violation> {
        Vec::new()
    }

    fn apply_config(&self, _config: Value) -> Result<(), Vec<Violation>> {
        Ok(())
    }

    fn execute(&self, input: Value, ctx: &CallContext) -> Result<Value, ExecError> {
        if input.get("fail").is_some() {
            return Err(ExecError::InvalidInput("no good <i>input</i>".into()));
        }
        if input.get("slow").is_some() {
            for i in 0..500 {
                if ctx.is_cancelled() {
                    self.saw_cancel.store(true, Ordering::SeqCst);
                    return Err(ExecError::Cancelled);
                }
                ctx.progress(f64::from(i) / 500.0, format!("step {i}"));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(json!({ "echo": input }))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    host: Arc<Host>,
    saw_cancel: Arc<AtomicBool>,
}

fn write(dir: &Path, name: &str, toml: &str) {
    let d = dir.join("plugins").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("plugin.toml"), toml).unwrap();
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let schema_toml = "[config_schema]\ntype = \"object\"\n[config_schema.properties.level]\ntype = \"integer\"\nminimum = 1\nmaximum = 9\ndefault = 3\ndescription = \"How <b>loud</b>\"\n[config_schema.properties.mode]\ntype = \"string\"\nenum = [\"a\", \"b\"]\ndefault = \"a\"\n[config_schema.properties.api_key]\ntype = \"string\"\nwriteOnly = true\ndefault = \"DEFAULT-SECRET-XYZ\"\n";
    // Two in-process plugins with the same code: one whose plugin.toml has
    // an example (with HTML in it), one that relies on the worker's manifest.
    write(
        dir.path(),
        "echo",
        &format!(
            "name = \"echo\"\ncategory = \"demo\"\ntitle = \"Echo <script>alert(1)</script>\"\nexecution_mode = \"in_process\"\n[launch]\nbuiltin = \"echo\"\n[examples]\ninput = {{ text = \"<img src=x onerror=alert(2)>\", n = 3 }}\n{schema_toml}"
        ),
    );
    write(
        dir.path(),
        "echo2",
        &format!(
            "name = \"echo2\"\ncategory = \"demo\"\ntitle = \"Echo two\"\nexecution_mode = \"in_process\"\n[launch]\nbuiltin = \"echo\"\n{schema_toml}"
        ),
    );
    let host = Host::open(HostConfig {
        reap_all_orphans: false,
        plugin_dirs: vec![dir.path().join("plugins")],
        config_dir: dir.path().join("configs"),
        data: DataDir::new(dir.path().join("data")),
        launch_vars: Default::default(),
    })
    .unwrap();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    for id in ["demo_echo", "demo_echo2"] {
        host.register_in_process(
            id,
            Arc::new(Echo {
                saw_cancel: Arc::clone(&saw_cancel),
            }),
        );
    }
    Fixture {
        _dir: dir,
        host: Arc::new(host),
        saw_cancel,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl Fixture {
    fn router(&self) -> axum::Router {
        app(ApiState::new(Arc::clone(&self.host), None))
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
        Answer { status, headers, body }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// A CSRF token as a browser gets it: the cookie set by a page.
    async fn csrf(&self) -> String {
        let a = self.get("/running").await;
        let cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
        cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("plugboard_csrf=")
            .unwrap()
            .to_owned()
    }

    /// A JSON POST as the page's script sends it (cookie and header token).
    fn json_post(&self, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
        let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            b = b
                .header(header::COOKIE, format!("plugboard_csrf={t}"))
                .header("x-csrf-token", t);
        }
        b.body(body.into()).unwrap()
    }

    async fn start(&self, id: &str) {
        self.host.start(id).await.unwrap();
    }
}

/// The NDJSON lines of a call answer.
fn lines(body: &str) -> Vec<Value> {
    body.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn the_call_route_refuses_what_it_must() {
    let f = fixture();
    let t = f.csrf().await;
    let call = "/plugins/demo_echo/call";

    // Bad JSON.
    let a = f.send(f.json_post(call, Some(&t), "{\"input\": ")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.code(), "bad_json");
    // JSON of the wrong shape.
    let a = f.send(f.json_post(call, Some(&t), "{\"inptu\": 1}")).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(a.code(), "bad_body");
    // Oversize input: refused before anything else is looked at.
    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(MAX_CALL_INPUT_BYTES));
    let a = f.send(f.json_post(call, Some(&t), big)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.code(), "too_large");
    assert!(
        a.json()["error"]["message"].as_str().unwrap().contains("1 MiB"),
        "{}",
        a.body
    );
    // Unknown plugin.
    let a = f
        .send(f.json_post("/plugins/nope_nope/call", Some(&t), "{\"input\": {}}"))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.code(), "not_found");
    // Missing CSRF token; a header token without the cookie; a forged token.
    let a = f.send(f.json_post(call, None, "{\"input\": {}}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.code(), "csrf");
    let a = f
        .send(
            Request::post(call)
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-csrf-token", &t)
                .body(Body::from("{\"input\": {}}"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let forged = "0".repeat(64);
    let a = f.send(f.json_post(call, Some(&forged), "{\"input\": {}}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // From another origin, even with a good token.
    let mut req = f.json_post(call, Some(&t), "{\"input\": {}}");
    req.headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    let a = f.send(req).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Not JSON at all.
    let a = f
        .send(
            Request::post(call)
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::COOKIE, format!("plugboard_csrf={t}"))
                .header("x-csrf-token", &t)
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A plugin that is not running says so.
    let a = f.send(f.json_post(call, Some(&t), "{\"input\": {}}")).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.code(), "not_running");
    assert!(
        a.json()["error"]["message"].as_str().unwrap().contains("not running"),
        "{}",
        a.body
    );
    // Cancel has the same guards.
    let a = f
        .send(f.json_post("/plugins/demo_echo/cancel", None, "{\"request_id\": \"x\"}"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = f
        .send(f.json_post("/plugins/demo_echo/cancel", Some(&t), "{\"request_id\": \"x\"}"))
        .await;
    assert_eq!(a.code(), "not_running");
}

#[tokio::test]
async fn a_call_streams_its_events_and_ends_with_output_and_duration() {
    let f = fixture();
    f.start("demo_echo").await;
    let t = f.csrf().await;
    let a = f
        .send(f.json_post("/plugins/demo_echo/call", Some(&t), "{\"input\": {\"a\": [1, 2]}}"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let ev = lines(&a.body);
    assert_eq!(ev[0]["type"], "started");
    assert!(ev[0]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "result", "{}", a.body);
    assert_eq!(last["output"], json!({"echo": {"a": [1, 2]}}));
    assert!(last["duration_ms"].as_u64().is_some());
    // The worker's error: its code and its message.
    let a = f
        .send(f.json_post("/plugins/demo_echo/call", Some(&t), "{\"input\": {\"fail\": 1}}"))
        .await;
    let last = lines(&a.body).pop().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["code"], "invalid_input");
    assert_eq!(last["error"]["message"], "invalid input: no good <i>input</i>");
}

#[tokio::test]
async fn a_streaming_call_shows_progress_and_can_be_cancelled() {
    let f = fixture();
    f.start("demo_echo").await;
    let t = f.csrf().await;
    let resp = f
        .router()
        .oneshot(f.json_post("/plugins/demo_echo/call", Some(&t), "{\"input\": {\"slow\": true}}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut request_id = None;
    let mut progress = 0;
    // Read until the call started and two progress events came.
    while progress < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
        for l in text.lines() {
            let v: Value = match serde_json::from_str(l) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["type"] == "started" {
                request_id = v["request_id"].as_str().map(str::to_owned);
            }
        }
        progress = text.matches("\"type\":\"progress\"").count();
    }
    let rid = request_id.expect("a started event");
    let a = f
        .send(f.json_post(
            "/plugins/demo_echo/cancel",
            Some(&t),
            json!({"request_id": rid}).to_string(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json(), json!({"cancelled": true}));
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the call did not end after its cancel")
        .unwrap()
        .to_bytes();
    text.push_str(&String::from_utf8_lossy(&rest));
    let last = lines(&text).pop().unwrap();
    assert_eq!(last["type"], "error", "{text}");
    assert_eq!(last["error"]["code"], "cancelled");
    assert!(f.saw_cancel.load(Ordering::SeqCst));
    // A bad request id is refused; an unknown one is simply not cancelled.
    let a = f
        .send(f.json_post("/plugins/demo_echo/cancel", Some(&t), "{\"request_id\": \"\"}"))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = f
        .send(f.json_post("/plugins/demo_echo/cancel", Some(&t), "{\"request_id\": \"nope\"}"))
        .await;
    assert_eq!(a.json(), json!({"cancelled": false}));
}

#[tokio::test]
async fn a_call_whose_browser_goes_away_is_cancelled() {
    let f = fixture();
    f.start("demo_echo").await;
    let t = f.csrf().await;
    let resp = f
        .router()
        .oneshot(f.json_post("/plugins/demo_echo/call", Some(&t), "{\"input\": {\"slow\": true}}"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let _ = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap();
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f.saw_cancel.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the call was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_javascript_the_call_form_answers_a_page() {
    let f = fixture();
    let t = f.csrf().await;
    let form = |body: String| {
        Request::post("/plugins/demo_echo/call")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("plugboard_csrf={t}"))
            .body(Body::from(body))
            .unwrap()
    };
    // Not running: says so, offers Start.
    let a = f.send(form(format!("csrf={t}&input=%7B%7D"))).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("not running") && a.body.contains("/plugins/demo_echo/start"));
    f.start("demo_echo").await;
    let a = f
        .send(form(format!("csrf={t}&input=%7B%22q%22%3A%22%3Cb%3E%22%7D")))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("id=\"call-output\""), "{}", a.body);
    assert!(a.body.contains("&lt;b&gt;") && !a.body.contains("<b>\""), "{}", a.body);
    let a = f.send(form(format!("csrf={t}&input=%7Bnope"))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("not JSON"));
    let a = f.send(form("input=%7B%7D".into())).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_plugin_page_has_state_controls_call_panel_log_and_schema() {
    let f = fixture();
    // A saved secret must never reach the page.
    f.host
        .save_config(
            "demo_echo",
            json!({"level": 5, "api_key": "SAVED-SECRET-123"}).as_object().unwrap(),
        )
        .unwrap();
    let a = f.get("/plugins/demo_echo").await;
    assert_eq!(a.status, StatusCode::OK);
    let page = &a.body;
    for needle in [
        "id=\"state-panel\"",
        "data-sse=\"/events/plugins/demo_echo?sig=",
        "data-state=\"stopped\"",
        "action=\"/plugins/demo_echo/start\"",
        "name=\"back\" value=\"plugin\"",
        "id=\"try-it\"",
        "id=\"call-not-running\"",
        "id=\"plugin-log\"",
        "href=\"/plugins/demo_echo/logs/download\"",
        "id=\"schema-table\"",
        "href=\"/plugins/demo_echo/config\"",
        "minimum 1",
        "one of &quot;a&quot;, &quot;b&quot;",
        "/assets/plugin.js",
    ] {
        assert!(page.contains(needle), "missing {needle}: {page}");
    }
    // Plugin-provided strings are text: title, example input, description.
    assert!(page.contains("Echo &lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"), "{page}");
    assert!(page.contains("How &lt;b&gt;loud&lt;/b&gt;"));
    // Secrets: neither the saved value nor the schema's default.
    assert!(
        !page.contains("SAVED-SECRET-123") && !page.contains("DEFAULT-SECRET-XYZ"),
        "{page}"
    );
    // Running: the config in force, the secret shown as set, and the
    // example from the worker's manifest where the plugin.toml has none.
    f.start("demo_echo").await;
    f.start("demo_echo2").await;
    let page = f.get("/plugins/demo_echo").await.body;
    assert!(page.contains("data-state=\"running\""), "{page}");
    assert!(page.contains("Config in force") && page.contains("id=\"config-in-force\""));
    assert!(page.contains("<span class=\"muted secret\">set</span>"), "{page}");
    assert!(!page.contains("SAVED-SECRET-123"));
    assert!(page.contains("can be cancelled"), "{page}");
    let page = f.get("/plugins/demo_echo2").await.body;
    assert!(
        page.contains("the-worker-manifest") && page.contains("the worker's manifest"),
        "{page}"
    );
    // A saved config that changed since the start is flagged.
    f.host
        .save_config("demo_echo", json!({"level": 7}).as_object().unwrap())
        .unwrap();
    let page = f.get("/plugins/demo_echo").await.body;
    assert!(page.contains("id=\"config-differs\""), "{page}");
    assert_eq!(f.get("/plugins/nope_nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lifecycle_forms_from_the_plugin_page_come_back_to_it() {
    let f = fixture();
    let t = f.csrf().await;
    let post = |verb: &str| {
        Request::post(format!("/plugins/demo_echo/{verb}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("plugboard_csrf={t}"))
            .body(Body::from(format!("csrf={t}&back=plugin")))
            .unwrap()
    };
    let a = f.send(post("start")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/plugins/demo_echo");
    // A failure renders the plugin page with the reason.
    let a = f.send(post("start")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(
        a.body.contains("id=\"flash\"") && a.body.contains("id=\"state-panel\""),
        "{}",
        a.body
    );
    let a = f.send(post("stop")).await;
    assert_eq!(a.headers[header::LOCATION], "/plugins/demo_echo");
}

/// The data of the next server-sent event.
async fn next_event(body: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("no event within 10 s")
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned()
}

#[tokio::test]
async fn the_state_panel_is_live() {
    let f = fixture();
    let resp = f
        .router()
        .oneshot(Request::get("/events/plugins/demo_echo").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = next_event(&mut body).await;
    assert!(
        first.starts_with("event: plugin") && first.contains("data-state=\"stopped\""),
        "{first}"
    );
    // With the signature of what the page shows, nothing is sent until it changes.
    let page = f.get("/plugins/demo_echo").await.body;
    let sig = page
        .split("?sig=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let resp = f
        .router()
        .oneshot(
            Request::get(format!("/events/plugins/demo_echo?sig={sig}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut quiet = resp.into_body();
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), quiet.frame())
            .await
            .is_err(),
        "an event was sent for an unchanged panel"
    );
    f.start("demo_echo").await;
    let mut text = String::new();
    while !text.contains("data-state=\"running\"") {
        text = next_event(&mut body).await;
    }
    assert_eq!(f.get("/events/plugins/nope_nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_log_follows_filters_and_downloads() {
    let f = fixture();
    let path = f.host.config().data.log_path("demo_echo");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "out| hello <b>\nerr| oops\n").unwrap();
    let resp = f
        .router()
        .oneshot(
            Request::get("/events/plugins/demo_echo/logs")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let reset = next_event(&mut body).await;
    assert!(reset.starts_with("event: reset"), "{reset}");
    assert!(
        reset.contains("out| hello <b>") && reset.contains("err| oops"),
        "{reset}"
    );
    let mut w = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut w, b"out| a new line\n").unwrap();
    let mut text = String::new();
    while !text.contains("a new line") {
        text = next_event(&mut body).await;
    }
    assert!(text.starts_with("event: lines"), "{text}");
    // The page escapes lines; filters keep one stream.
    let page = f.get("/plugins/demo_echo/logs?stream=stderr").await;
    assert!(
        page.body.contains("err| oops") && !page.body.contains("hello"),
        "{}",
        page.body
    );
    let page = f.get("/plugins/demo_echo").await.body;
    assert!(page.contains("out| hello &lt;b&gt;"), "{page}");
    let a = f.get("/plugins/demo_echo/logs/download").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"demo_echo.log\""
    );
    assert!(
        a.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(a.body, "out| hello <b>\nerr| oops\nout| a new line\n");
    let a = f.get("/plugins/demo_echo/logs/download?stream=stdout").await;
    assert!(!a.body.contains("oops"));
    assert_eq!(
        f.get("/plugins/nope_nope/logs/download").await.status,
        StatusCode::NOT_FOUND
    );
    // htmx gets the fragment the running page swaps in.
    let a = f
        .send(
            Request::get("/plugins/demo_echo/logs")
                .header("hx-request", "true")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(a.body.starts_with("<pre id=\"log\""), "{}", a.body);
}

#[test]
fn the_examples_table_is_json_and_checked() {
    let m = Manifest::parse(
        Path::new("/x/plugin.toml"),
        "name = \"a\"\ncategory = \"b\"\n[examples]\ninput = { text = \"hi\", n = [1, 2], deep = { ok = true } }\n",
    )
    .unwrap();
    assert_eq!(
        m.examples.input,
        Some(json!({"text": "hi", "n": [1, 2], "deep": {"ok": true}}))
    );
    let m = Manifest::parse(Path::new("/x/plugin.toml"), "name = \"a\"\ncategory = \"b\"\n").unwrap();
    assert_eq!(m.examples.input, None);
    let e = Manifest::parse(
        Path::new("/x/plugin.toml"),
        "name = \"a\"\ncategory = \"b\"\n[examples]\ninptu = 1\n",
    )
    .unwrap_err();
    assert!(e.reason.contains("inptu"), "{e}");
}
