//! An emulator of Vast.ai's REST API (`/api/v0`), written from its public
//! documentation, because the real service cannot run here. It keeps the
//! shapes and quirks plugboard has to handle: bearer keys (401), the
//! offer search (`POST /bundles/` with `{"gpu_name": {"eq": …},
//! "num_gpus": {"eq": …}, "reliability": {"gte": …}, "order": …}`,
//! answering `{"offers": […]}`), renting an offer (`PUT /asks/{id}/`
//! answering `{"success": true, "new_contract": ID}`),
//! `GET /instances/{id}/` answering `{"instances": {…}}` (an object, not a
//! list), `GET /instances/` answering a list, `actual_status` `null` then
//! `loading` then `running`, SSH on `public_ipaddr` and
//! `ports["22/tcp"][0].HostPort` (a string), and `DELETE /instances/{id}/`.
//! What Vast answers for a destroyed instance's id is not documented; the
//! emulator answers `{"instances": null}`.
//!
//! An instance's address is the test's own machine, its mapped 22 the
//! port of the test's sshd (its `ssh_host`/`ssh_port` proxy leads
//! nowhere); destroying it kills every process carrying its marker.
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
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Offer {
    pub id: u64,
    pub gpu_name: String,
    pub num_gpus: u64,
    pub dph_total: f64,
    pub reliability: f64,
}

pub struct Inst {
    pub id: u64,
    pub label: String,
    pub offer: Offer,
    pub reads: u32,
    pub request: Value,
    /// Milliseconds since the epoch when it was created, and when it
    /// first answered `running`.
    pub created_ms: i64,
    pub running_ms: Option<i64>,
}

/// What the emulator does, adjustable while it runs.
pub struct Behaviour {
    /// Reads answering `actual_status: null`, then reads answering
    /// `loading`, before `running`.
    pub null_reads: u32,
    pub loading_reads: u32,
    /// Hold the rent answer this long after creating the instance.
    pub create_answer_delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            null_reads: 2,
            loading_reads: 1,
            create_answer_delay: Duration::ZERO,
        }
    }
}

pub struct Shared {
    pub key: String,
    pub ip: String,
    pub ssh_port: u16,
    pub offers: Vec<Offer>,
    pub instances: BTreeMap<u64, Inst>,
    pub destroyed: Vec<u64>,
    pub behaviour: Behaviour,
    /// Every request, as `METHOD /path STATUS`.
    pub log: Vec<String>,
    /// Every offer search body.
    pub searches: Vec<Value>,
    pub next_id: u64,
}

pub struct VastEmulator {
    pub url: String,
    pub key: String,
    pub shared: Arc<Mutex<Shared>>,
    server: emulator_server::Served,
}

type S = Arc<Mutex<Shared>>;

fn lock(s: &S) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn error(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"success": false, "error": code, "msg": msg}))).into_response()
}

fn authorised(s: &S, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let want = format!("Bearer {}", lock(s).key);
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == want => Ok(()),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        ))),
    }
}

fn status_of(b: &Behaviour, i: &Inst) -> Value {
    if i.reads <= b.null_reads {
        Value::Null
    } else if i.reads <= b.null_reads + b.loading_reads {
        json!("loading")
    } else {
        json!("running")
    }
}

fn inst_json(sh: &Shared, i: &Inst) -> Value {
    let status = status_of(&sh.behaviour, i);
    let up = status == "running";
    json!({
        "id": i.id,
        "label": i.label,
        "actual_status": status,
        "intended_status": "running",
        "cur_state": "running",
        "image_uuid": i.request["image"],
        "public_ipaddr": if up { json!(sh.ip) } else { Value::Null },
        "ports": if up { json!({"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": sh.ssh_port.to_string()}]}) } else { json!({}) },
        "ssh_host": "ssh.emulated.invalid",
        "ssh_port": 1,
        "dph_total": i.offer.dph_total,
        "gpu_name": i.offer.gpu_name,
        "num_gpus": i.offer.num_gpus,
        "disk_space": i.request["disk"],
        "geolocation": "Sweden, SE",
        "onstart": i.request["onstart"],
    })
}

fn power_down(i: &Inst) {
    if let Some(marker) = plugboard_host::cloud::marker_from_name(&i.label) {
        for (pid, _) in plugboard_host::tree::marked(|m| m == marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn eq<'a>(q: &'a Value, k: &str) -> Option<&'a Value> {
    q.get(k).and_then(|f| f.get("eq"))
}

async fn search(State(s): State<S>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let q: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut sh = lock(&s);
    sh.log.push("POST /bundles/".into());
    sh.searches.push(q.clone());
    let min_rel = q.get("reliability").and_then(|f| f.get("gte")).and_then(Value::as_f64);
    let max_dph = q.get("dph_total").and_then(|f| f.get("lte")).and_then(Value::as_f64);
    let mut offers: Vec<Offer> = sh
        .offers
        .iter()
        .filter(|o| eq(&q, "gpu_name").is_none_or(|g| g == o.gpu_name.as_str()))
        .filter(|o| {
            eq(&q, "num_gpus")
                .and_then(Value::as_u64)
                .is_none_or(|n| n == o.num_gpus)
        })
        .filter(|o| min_rel.is_none_or(|r| o.reliability >= r))
        .filter(|o| max_dph.is_none_or(|m| o.dph_total <= m))
        .cloned()
        .collect();
    offers.sort_by(|a, b| a.dph_total.total_cmp(&b.dph_total));
    let offers: Vec<Value> = offers
        .iter()
        .map(|o| {
            json!({
                "id": o.id, "ask_contract_id": o.id, "gpu_name": o.gpu_name, "num_gpus": o.num_gpus,
                "dph_total": o.dph_total, "reliability2": o.reliability, "rentable": true,
                "geolocation": "Sweden, SE"
            })
        })
        .collect();
    axum::Json(json!({ "offers": offers })).into_response()
}

async fn rent(State(s): State<S>, headers: HeaderMap, UrlPath(ask): UrlPath<u64>, body: String) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (id, delay) = {
        let mut sh = lock(&s);
        let Some(pos) = sh.offers.iter().position(|o| o.id == ask) else {
            sh.log.push(format!("PUT /asks/{ask}/ 400"));
            return error(
                StatusCode::BAD_REQUEST,
                "no_such_ask",
                "Instance type no longer available",
            );
        };
        if req["image"].as_str().is_none_or(str::is_empty) {
            return error(StatusCode::BAD_REQUEST, "invalid_args", "image is required");
        }
        let offer = sh.offers.remove(pos);
        sh.next_id += 1;
        let id = 7_000_000 + sh.next_id;
        sh.instances.insert(
            id,
            Inst {
                id,
                label: req["label"].as_str().unwrap_or_default().to_owned(),
                offer,
                reads: 0,
                request: req,
                created_ms: now_ms(),
                running_ms: None,
            },
        );
        sh.log.push(format!("PUT /asks/{ask}/ 200 {id}"));
        (id, sh.behaviour.create_answer_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    axum::Json(json!({ "success": true, "new_contract": id })).into_response()
}

async fn list(State(s): State<S>, headers: HeaderMap) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push("GET /instances/".into());
    let all: Vec<Value> = sh.instances.values().map(|i| inst_json(&sh, i)).collect();
    axum::Json(json!({ "instances": all })).into_response()
}

async fn show(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<u64>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push(format!("GET /instances/{id}/"));
    if let Some(i) = sh.instances.get_mut(&id) {
        i.reads += 1;
    }
    let Some(i) = sh.instances.get(&id) else {
        return axum::Json(json!({ "instances": null })).into_response();
    };
    let v = inst_json(&sh, i);
    if v["actual_status"] == "running"
        && let Some(i) = sh.instances.get_mut(&id)
    {
        i.running_ms.get_or_insert_with(now_ms);
    }
    // One object, not a list.
    axum::Json(json!({ "instances": v })).into_response()
}

async fn destroy(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<u64>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    match sh.instances.remove(&id) {
        Some(i) => {
            power_down(&i);
            sh.destroyed.push(id);
            sh.log.push(format!("DELETE /instances/{id}/ 200"));
            axum::Json(json!({ "success": true })).into_response()
        }
        None => {
            sh.log.push(format!("DELETE /instances/{id}/ 404"));
            error(StatusCode::NOT_FOUND, "no_such_instance", "Instance not found")
        }
    }
}

impl VastEmulator {
    /// Starts the emulator on a free loopback port; instances answer with
    /// address `ip` and 22/tcp mapped to `ssh_port`.
    pub fn start(ip: &str, ssh_port: u16) -> VastEmulator {
        let key = format!("vast_emulated_{}_{}", std::process::id(), now_ms());
        let offer = |id, gpu: &str, n, dph, rel| Offer {
            id,
            gpu_name: gpu.into(),
            num_gpus: n,
            dph_total: dph,
            reliability: rel,
        };
        let shared = Arc::new(Mutex::new(Shared {
            key: key.clone(),
            ip: ip.to_owned(),
            ssh_port,
            offers: vec![
                offer(101, "RTX 4090", 1, 0.55, 0.999),
                // The cheapest 4090, but an unreliable host.
                offer(102, "RTX 4090", 1, 0.21, 0.80),
                // The cheapest reliable 4090.
                offer(103, "RTX 4090", 1, 0.38, 0.990),
                offer(104, "RTX 4090", 1, 0.42, 0.995),
                offer(105, "RTX 3090", 1, 0.12, 0.999),
                offer(106, "RTX 4090", 2, 0.70, 0.999),
            ],
            instances: BTreeMap::new(),
            destroyed: Vec::new(),
            behaviour: Behaviour::default(),
            log: Vec::new(),
            searches: Vec::new(),
            next_id: 0,
        }));
        let app = Router::new()
            .route("/api/v0/bundles/", post(search))
            .route("/api/v0/asks/{id}/", put(rent))
            .route("/api/v0/instances/", get(list))
            .route("/api/v0/instances/{id}/", get(show).delete(destroy))
            .with_state(Arc::clone(&shared));
        let server = emulator_server::Served::start(app);
        VastEmulator {
            url: format!("{}/api/v0", server.base),
            key,
            shared,
            server,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut lock(&self.shared))
    }

    /// The instances that exist, by id.
    pub fn live(&self) -> Vec<u64> {
        self.with(|sh| sh.instances.keys().copied().collect())
    }

    pub fn log(&self) -> Vec<String> {
        self.with(|sh| sh.log.clone())
    }

    /// A client of this emulator.
    pub fn client(&self) -> plugboard_host::cloud::vast::Vast {
        plugboard_host::cloud::vast::Vast::new(&self.url, plugboard_host::cloud::ApiKey::new(self.key.clone()))
            .expect("client")
    }
}

impl Drop for VastEmulator {
    fn drop(&mut self) {
        if let Ok(sh) = self.shared.lock() {
            for i in sh.instances.values() {
                power_down(i);
            }
        }
    }
}
