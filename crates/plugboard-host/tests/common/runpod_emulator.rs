//! An emulator of RunPod's REST API for pods (`/v1/pods`), written from
//! its public documentation, because the real service cannot run here.
//! It keeps the shapes and quirks plugboard has to handle: bearer keys
//! (401), `POST /pods` answering the pod, `GET /pods?name=…`,
//! `GET /pods/{id}`, `DELETE /pods/{id}` answering an empty body,
//! 404 for a pod that is gone, `costPerHr` as a string (or a number),
//! and an empty `publicIp` with empty `portMappings` until the pod is up.
//!
//! A pod's address is the test's own machine, and its `portMappings`
//! map the container's 22 to the port where the test's sshd listens;
//! deleting a pod kills every process carrying its marker, as a machine
//! going away would.
#![allow(dead_code)]

// Each emulator is standalone (included by path where needed), so two in
// one test binary each bring their own copy.
#[allow(clippy::duplicate_mod)]
#[path = "emulator_server.rs"]
mod emulator_server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub struct Pod {
    pub id: String,
    pub name: String,
    pub gpu: String,
    pub gpu_count: u64,
    pub status: String,
    pub reads: u32,
    pub request: Value,
}

/// What the emulator does, adjustable while it runs.
pub struct Behaviour {
    /// Reads of a pod that answer an empty `publicIp` and empty
    /// `portMappings` before it has an address.
    pub unreachable_reads: u32,
    /// Never give a pod an address.
    pub never_reachable: bool,
    /// Send `costPerHr` as a JSON number instead of a string.
    pub cost_as_number: bool,
    /// Hold the create answer this long after creating the pod.
    pub create_answer_delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            unreachable_reads: 2,
            never_reachable: false,
            cost_as_number: false,
            create_answer_delay: Duration::ZERO,
        }
    }
}

pub struct Shared {
    pub key: String,
    pub ip: String,
    pub ssh_port: u16,
    /// GPU type id → USD per hour.
    pub prices: BTreeMap<String, f64>,
    pub pods: BTreeMap<String, Pod>,
    /// Pods deleted, by id.
    pub deleted: Vec<String>,
    pub behaviour: Behaviour,
    /// Every request, as `METHOD /path STATUS`.
    pub log: Vec<String>,
    pub next_id: u64,
}

pub struct RunPodEmulator {
    pub url: String,
    pub key: String,
    pub shared: Arc<Mutex<Shared>>,
    server: emulator_server::Served,
}

type S = Arc<Mutex<Shared>>;

fn lock(s: &S) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message, "status": status.as_u16()}))).into_response()
}

fn authorised(s: &S, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let want = format!("Bearer {}", lock(s).key);
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == want => Ok(()),
        _ => Err(Box::new(error(StatusCode::UNAUTHORIZED, "invalid api key"))),
    }
}

fn pod_json(sh: &Shared, p: &Pod) -> Value {
    let up = p.status == "RUNNING" && !sh.behaviour.never_reachable && p.reads > sh.behaviour.unreachable_reads;
    let price = sh.prices.get(&p.gpu).copied().unwrap_or(0.0) * p.gpu_count as f64;
    let cost = if sh.behaviour.cost_as_number {
        json!(price)
    } else {
        json!(format!("{price}"))
    };
    json!({
        "id": p.id,
        "name": p.name,
        "desiredStatus": p.status,
        "costPerHr": cost,
        "publicIp": if up { json!(sh.ip) } else { json!("") },
        "portMappings": if up { json!({"22": sh.ssh_port}) } else { json!({}) },
        "image": p.request["imageName"],
        "gpu": { "id": p.gpu, "count": p.gpu_count, "displayName": p.gpu },
        "machine": { "dataCenterId": "EU-RO-1", "gpuTypeId": p.gpu },
        "containerDiskInGb": p.request["containerDiskInGb"],
        "env": p.request["env"],
        "lastStatusChange": "Rented by User: emulated"
    })
}

/// Ends what ran "on" a pod: every process carrying its marker.
fn power_down(p: &Pod) {
    if let Some(marker) = plugboard_host::cloud::marker_from_name(&p.name) {
        for (pid, _) in plugboard_host::tree::marked(|m| m == marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn create(State(s): State<S>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let (answer, delay) = {
        let mut sh = lock(&s);
        let name = req["name"].as_str().unwrap_or_default().to_owned();
        let image = req["imageName"].as_str().unwrap_or_default();
        let gpu = req["gpuTypeIds"][0].as_str().unwrap_or_default().to_owned();
        let ports_ok = req["ports"].as_array().is_some_and(|a| a.iter().any(|p| p == "22/tcp"));
        if image.is_empty() || !ports_ok || !["SECURE", "COMMUNITY"].contains(&req["cloudType"].as_str().unwrap_or(""))
        {
            sh.log.push("POST /pods 400".into());
            return error(
                StatusCode::BAD_REQUEST,
                "imageName, cloudType and ports 22/tcp are required",
            );
        }
        if !sh.prices.contains_key(&gpu) {
            sh.log.push("POST /pods 400 gpu".into());
            return error(StatusCode::BAD_REQUEST, &format!("unknown gpu type id {gpu}"));
        }
        sh.next_id += 1;
        let id = format!("pod{:010x}", 0xabc000 + sh.next_id);
        let pod = Pod {
            id: id.clone(),
            name,
            gpu,
            gpu_count: req["gpuCount"].as_u64().unwrap_or(1),
            status: "RUNNING".into(),
            reads: 0,
            request: req.clone(),
        };
        let answer = pod_json(&sh, &pod);
        sh.pods.insert(id.clone(), pod);
        sh.log.push(format!("POST /pods 201 {id}"));
        (answer, sh.behaviour.create_answer_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn list(State(s): State<S>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push(format!("GET /pods name={:?}", q.get("name")));
    let pods: Vec<Value> = sh
        .pods
        .values()
        .filter(|p| q.get("name").is_none_or(|n| *n == p.name))
        .map(|p| pod_json(&sh, p))
        .collect();
    axum::Json(Value::Array(pods)).into_response()
}

async fn get_one(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push(format!("GET /pods/{id}"));
    if let Some(p) = sh.pods.get_mut(&id) {
        p.reads += 1;
    }
    match sh.pods.get(&id) {
        Some(p) => axum::Json(pod_json(&sh, p)).into_response(),
        None => error(StatusCode::NOT_FOUND, "pod not found"),
    }
}

async fn delete(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    match sh.pods.remove(&id) {
        Some(p) => {
            power_down(&p);
            sh.deleted.push(id.clone());
            sh.log.push(format!("DELETE /pods/{id} 204"));
            // RunPod answers a delete with no body at all.
            StatusCode::NO_CONTENT.into_response()
        }
        None => {
            sh.log.push(format!("DELETE /pods/{id} 404"));
            error(StatusCode::NOT_FOUND, "pod not found")
        }
    }
}

async fn stop_pod(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    match sh.pods.get_mut(&id) {
        Some(p) => {
            p.status = "EXITED".into();
            let v = {
                let p = &sh.pods[&id];
                pod_json(&sh, p)
            };
            axum::Json(v).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "pod not found"),
    }
}

impl RunPodEmulator {
    /// Starts the emulator on a free loopback port; pods answer with
    /// address `ip` and SSH mapped to `ssh_port`.
    pub fn start(ip: &str, ssh_port: u16) -> RunPodEmulator {
        let key = format!("rpa_emulated_{}_{}", std::process::id(), nanos());
        let shared = Arc::new(Mutex::new(Shared {
            key: key.clone(),
            ip: ip.to_owned(),
            ssh_port,
            prices: BTreeMap::from([
                ("NVIDIA RTX A4000".to_string(), 0.17),
                ("NVIDIA A100 80GB PCIe".to_string(), 1.64),
            ]),
            pods: BTreeMap::new(),
            deleted: Vec::new(),
            behaviour: Behaviour::default(),
            log: Vec::new(),
            next_id: 0,
        }));
        let app = Router::new()
            .route("/v1/pods", get(list).post(create))
            .route("/v1/pods/{id}", get(get_one).delete(delete))
            .route("/v1/pods/{id}/stop", axum::routing::post(stop_pod))
            .with_state(Arc::clone(&shared));
        let server = emulator_server::Served::start(app);
        RunPodEmulator {
            url: format!("{}/v1", server.base),
            key,
            shared,
            server,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut lock(&self.shared))
    }

    /// The pods that exist, by id.
    pub fn live(&self) -> Vec<String> {
        self.with(|sh| sh.pods.keys().cloned().collect())
    }

    pub fn log(&self) -> Vec<String> {
        self.with(|sh| sh.log.clone())
    }

    /// A client of this emulator.
    pub fn client(&self) -> plugboard_host::cloud::runpod::RunPod {
        plugboard_host::cloud::runpod::RunPod::new(&self.url, plugboard_host::cloud::ApiKey::new(self.key.clone()))
            .expect("client")
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for RunPodEmulator {
    fn drop(&mut self) {
        if let Ok(sh) = self.shared.lock() {
            for p in sh.pods.values() {
                power_down(p);
            }
        }
    }
}
