//! An emulator of RunPod's serverless endpoint API (`/v2/{endpoint}/…`),
//! written from its public documentation because the service cannot run
//! here: bearer keys, `POST /run` answering a job id `IN_QUEUE`, `GET
//! /status/{job}` (`IN_QUEUE` → `IN_PROGRESS` → `COMPLETED` / `FAILED` /
//! `CANCELLED`, with `output`, `error`, `executionTime` and `delayTime` in
//! ms), `GET /stream/{job}` (the items produced since the last read),
//! `POST /cancel/{job}`, `GET /health`.
//!
//! Its one endpoint runs a stand-in handler on a thread: input
//! `{"steps": N, "step_ms": M}` streams `{"progress", "message"}` per step
//! and outputs `{"steps_done": N}`; `{"fail": "why"}` fails with that
//! error; anything else fails as RunPod reports a handler's exception.
#![allow(dead_code)]

// Each emulator is standalone (included by path where needed), so two in
// one test binary each bring their own copy.
#[allow(clippy::duplicate_mod)]
#[path = "emulator_server.rs"]
mod emulator_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub struct Job {
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub stream: Vec<Value>,
    pub read: usize,
    pub execution_ms: u64,
    pub cancel: Arc<AtomicBool>,
    /// When the handler began (execution time runs from here).
    pub started: Option<Instant>,
}

pub struct Shared {
    pub key: String,
    pub endpoint: String,
    pub jobs: HashMap<String, Job>,
    pub next: u64,
    pub log: Vec<String>,
    /// Answer the next N status and stream reads with 503 (a worker pool
    /// restarting, as RunPod does now and then).
    pub fail_reads: u32,
}

pub struct ServerlessEmulator {
    pub url: String,
    pub key: String,
    pub endpoint: String,
    pub shared: Arc<Mutex<Shared>>,
    server: emulator_server::Served,
}

type S = Arc<Mutex<Shared>>;

fn lock(s: &S) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

fn check(s: &S, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
    let sh = lock(s);
    let want = format!("Bearer {}", sh.key);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return Some(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if endpoint != sh.endpoint {
        return Some(refuse(StatusCode::NOT_FOUND, "endpoint not found"));
    }
    None
}

/// The stand-in handler: runs on its own thread, like a RunPod worker.
fn handle(s: S, id: String, input: Value, cancel: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20)); // queue delay
        let started = Instant::now();
        if let Some(j) = lock(&s).jobs.get_mut(&id) {
            if j.status == "CANCELLED" {
                return;
            }
            j.status = "IN_PROGRESS".into();
            j.started = Some(started);
        }
        let finish = |status: &str, output: Option<Value>, error: Option<String>| {
            if let Some(j) = lock(&s).jobs.get_mut(&id)
                && j.status == "IN_PROGRESS"
            {
                j.status = status.into();
                j.output = output;
                j.error = error;
                j.execution_ms = started.elapsed().as_millis() as u64;
            }
        };
        if let Some(why) = input.get("fail").and_then(Value::as_str) {
            finish("FAILED", None, Some(why.to_owned()));
            return;
        }
        let (Some(steps), Some(step_ms)) = (
            input.get("steps").and_then(Value::as_u64),
            input.get("step_ms").and_then(Value::as_u64).or(Some(10)),
        ) else {
            finish(
                "FAILED",
                None,
                Some("handler error: KeyError: 'steps' must be a whole number".into()),
            );
            return;
        };
        for i in 1..=steps {
            if cancel.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(step_ms));
            if let Some(j) = lock(&s).jobs.get_mut(&id) {
                j.stream
                    .push(json!({ "output": { "progress": i as f64 / steps as f64, "message": format!("step {i}") } }));
            }
        }
        finish("COMPLETED", Some(json!({ "steps_done": steps })), None);
    });
}

async fn run(State(s): State<S>, headers: HeaderMap, UrlPath(endpoint): UrlPath<String>, body: String) -> Response {
    if let Some(r) = check(&s, &headers, &endpoint) {
        return r;
    }
    let Some(input) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| b.get("input").cloned())
    else {
        return refuse(StatusCode::BAD_REQUEST, "body must be {\"input\": ...}");
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let id = {
        let mut sh = lock(&s);
        sh.next += 1;
        let id = format!("job-{}-u1", sh.next);
        sh.jobs.insert(
            id.clone(),
            Job {
                status: "IN_QUEUE".into(),
                output: None,
                error: None,
                stream: Vec::new(),
                read: 0,
                execution_ms: 0,
                cancel: Arc::clone(&cancel),
                started: None,
            },
        );
        sh.log.push(format!("POST /run {id}"));
        id
    };
    handle(Arc::clone(&s), id.clone(), input, cancel);
    axum::Json(json!({ "id": id, "status": "IN_QUEUE" })).into_response()
}

fn status_json(id: &str, j: &Job) -> Value {
    let mut v = json!({ "id": id, "status": j.status, "delayTime": 20, "executionTime": j.execution_ms });
    if let Some(o) = &j.output {
        v["output"] = o.clone();
    }
    if let Some(e) = &j.error {
        v["error"] = json!(e);
    }
    v
}

async fn status(
    State(s): State<S>,
    headers: HeaderMap,
    UrlPath((endpoint, id)): UrlPath<(String, String)>,
) -> Response {
    if let Some(r) = check(&s, &headers, &endpoint) {
        return r;
    }
    {
        let mut sh = lock(&s);
        if sh.fail_reads > 0 {
            sh.fail_reads -= 1;
            sh.log.push(format!("GET read {id} 503"));
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "worker pool restarting");
        }
    }
    let sh = lock(&s);
    match sh.jobs.get(&id) {
        Some(j) => axum::Json(status_json(&id, j)).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "job not found"),
    }
}

async fn stream(
    State(s): State<S>,
    headers: HeaderMap,
    UrlPath((endpoint, id)): UrlPath<(String, String)>,
) -> Response {
    if let Some(r) = check(&s, &headers, &endpoint) {
        return r;
    }
    {
        let mut sh = lock(&s);
        if sh.fail_reads > 0 {
            sh.fail_reads -= 1;
            sh.log.push(format!("GET read {id} 503"));
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "worker pool restarting");
        }
    }
    let mut sh = lock(&s);
    match sh.jobs.get_mut(&id) {
        Some(j) => {
            let items: Vec<Value> = j.stream[j.read..].to_vec();
            j.read = j.stream.len();
            axum::Json(json!({ "status": j.status, "stream": items })).into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, "job not found"),
    }
}

async fn cancel(
    State(s): State<S>,
    headers: HeaderMap,
    UrlPath((endpoint, id)): UrlPath<(String, String)>,
) -> Response {
    if let Some(r) = check(&s, &headers, &endpoint) {
        return r;
    }
    let mut sh = lock(&s);
    sh.log.push(format!("POST /cancel {id}"));
    match sh.jobs.get_mut(&id) {
        Some(j) => {
            if j.status == "IN_QUEUE" || j.status == "IN_PROGRESS" {
                j.status = "CANCELLED".into();
                j.cancel.store(true, Ordering::SeqCst);
                // RunPod bills a cancelled job for the time it ran.
                j.execution_ms = j.started.map_or(0, |t| t.elapsed().as_millis() as u64);
            }
            axum::Json(json!({ "id": id, "status": j.status })).into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, "job not found"),
    }
}

async fn health(State(s): State<S>, headers: HeaderMap, UrlPath(endpoint): UrlPath<String>) -> Response {
    if let Some(r) = check(&s, &headers, &endpoint) {
        return r;
    }
    let sh = lock(&s);
    let count = |st: &str| sh.jobs.values().filter(|j| j.status == st).count();
    axum::Json(json!({
        "jobs": { "completed": count("COMPLETED"), "failed": count("FAILED"), "inProgress": count("IN_PROGRESS"), "inQueue": count("IN_QUEUE"), "retried": 0 },
        "workers": { "idle": 1, "running": count("IN_PROGRESS") }
    }))
    .into_response()
}

impl ServerlessEmulator {
    pub fn start() -> ServerlessEmulator {
        let key = format!("rp_serverless_key_{}", std::process::id());
        let endpoint = "abc123xyz".to_owned();
        let shared = Arc::new(Mutex::new(Shared {
            key: key.clone(),
            endpoint: endpoint.clone(),
            jobs: HashMap::new(),
            next: 0,
            log: Vec::new(),
            fail_reads: 0,
        }));
        let app = Router::new()
            .route("/v2/{endpoint}/run", post(run))
            .route("/v2/{endpoint}/status/{id}", get(status))
            .route("/v2/{endpoint}/stream/{id}", get(stream))
            .route("/v2/{endpoint}/cancel/{id}", post(cancel))
            .route("/v2/{endpoint}/health", get(health))
            .with_state(Arc::clone(&shared));
        let server = emulator_server::Served::start(app);
        ServerlessEmulator {
            url: format!("{}/v2", server.base),
            key,
            endpoint,
            shared,
            server,
        }
    }

    pub fn job_statuses(&self) -> Vec<String> {
        let sh = lock(&self.shared);
        let mut v: Vec<(String, String)> = sh.jobs.iter().map(|(k, j)| (k.clone(), j.status.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, s)| s).collect()
    }

    pub fn log(&self) -> Vec<String> {
        lock(&self.shared).log.clone()
    }

    pub fn execution_ms(&self) -> u64 {
        lock(&self.shared)
            .jobs
            .values()
            .filter(|j| j.status == "COMPLETED" || j.status == "CANCELLED")
            .map(|j| j.execution_ms)
            .sum()
    }
}
