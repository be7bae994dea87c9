//! An emulator of Lambda Cloud's REST API (`/api/v1`), written from its
//! public documentation, because the real service cannot run here. It
//! keeps Lambda's shapes and quirks: the `{"data": …}` and
//! `{"error": {"code", "message", "suggestion"}}` envelopes, bearer keys
//! (401 `global/invalid-api-key`), prices in cents per hour, capacity per
//! region (`instance-operations/launch/insufficient-capacity`), a launch
//! rate limit (429 with `Retry-After`), `booting` → `active` and
//! `terminating` → `terminated`, 404 `global/object-does-not-exist`.
//!
//! An instance's address is the test's own machine (where the test's sshd
//! listens), its user data runs as its "first boot" (in a process group of
//! its own, with stand-in `shutdown`/`poweroff` that record a power-off),
//! and terminating it kills that group and every process carrying its
//! marker, as a machine going away would.
#![allow(dead_code)]

// Each emulator is standalone (included by path where needed), so two in
// one test binary each bring their own copy.
#[allow(clippy::duplicate_mod)]
#[path = "emulator_server.rs"]
mod emulator_server;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// An instance type the emulator offers.
#[derive(Clone)]
pub struct TypeSpec {
    pub name: String,
    pub cents_per_hour: u64,
    pub gpus: u32,
    pub gpu_description: String,
    pub regions: Vec<String>,
}

pub struct Inst {
    pub id: String,
    pub name: String,
    pub region: String,
    pub type_name: String,
    pub status: String,
    pub polls: u32,
    pub user_data: Option<String>,
    pub boot_pgid: Option<i32>,
    pub powered_off: bool,
}

/// What the emulator does, adjustable while it runs.
pub struct Behaviour {
    /// Regions whose launches answer "insufficient capacity".
    pub no_capacity: HashSet<String>,
    /// Still list those regions as having capacity (capacity went between
    /// the listing and the launch, as it does).
    pub listed_anyway: bool,
    /// The least time between two launches (else 429).
    pub launch_interval: Duration,
    /// Answer the next N terminate requests with 500.
    pub fail_terminates: u32,
    /// GETs of a booting instance before it is active.
    pub boot_polls: u32,
    /// GETs of a terminating instance before it is terminated.
    pub terminate_polls: u32,
    /// Hold the launch answer this long after creating the instance.
    pub launch_answer_delay: Duration,
    /// Create the instance, then answer the next N launches with 500 (the
    /// answer is lost, the instance exists).
    pub lose_launch_answers: u32,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            no_capacity: HashSet::new(),
            listed_anyway: false,
            launch_interval: Duration::ZERO,
            fail_terminates: 0,
            boot_polls: 2,
            terminate_polls: 1,
            launch_answer_delay: Duration::ZERO,
            lose_launch_answers: 0,
        }
    }
}

pub struct Shared {
    pub key: String,
    pub ip: String,
    pub types: Vec<TypeSpec>,
    pub instances: BTreeMap<String, Inst>,
    pub behaviour: Behaviour,
    pub last_launch: Option<Instant>,
    /// Every request, as `METHOD /path STATUS`.
    pub log: Vec<String>,
    /// Every Authorization header value seen that was not the key.
    pub next_id: u64,
    pub dir: PathBuf,
}

pub struct LambdaEmulator {
    pub url: String,
    pub key: String,
    pub shared: Arc<Mutex<Shared>>,
    server: emulator_server::Served,
}

type S = Arc<Mutex<Shared>>;

fn lock(s: &S) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message, "suggestion": ""}})),
    )
        .into_response()
}

fn authorised(s: &S, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let want = format!("Bearer {}", lock(s).key);
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == want => Ok(()),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "global/invalid-api-key",
            "API key was invalid, expired, or deleted.",
        ))),
    }
}

fn note(s: &S, line: String) {
    lock(s).log.push(line);
}

/// Applies recorded power-offs (files the stand-in `shutdown` wrote).
fn apply_power_offs(sh: &mut Shared) {
    for inst in sh.instances.values_mut() {
        if !inst.powered_off && sh.dir.join(format!("poweroff-{}", inst.id)).exists() {
            inst.powered_off = true;
        }
    }
}

fn instance_json(sh: &Shared, i: &Inst) -> Value {
    let t = sh.types.iter().find(|t| t.name == i.type_name);
    json!({
        "id": i.id,
        "name": i.name,
        "ip": if i.status == "booting" { Value::Null } else { json!(sh.ip) },
        "private_ip": "10.0.0.2",
        "status": i.status,
        "ssh_key_names": ["test-key"],
        "file_system_names": [],
        "region": { "name": i.region, "description": "emulated" },
        "instance_type": {
            "name": i.type_name,
            "description": t.map(|t| t.gpu_description.clone()),
            "gpu_description": t.map(|t| t.gpu_description.clone()),
            "price_cents_per_hour": t.map(|t| t.cents_per_hour),
            "specs": { "vcpus": 8, "memory_gib": 64, "storage_gib": 512, "gpus": t.map(|t| t.gpus) }
        },
        "hostname": format!("{}.emulated", i.id),
        "jupyter_token": "emulated-token-not-for-plugboard",
        "is_reserved": false
    })
}

/// Moves an instance's state on as it is polled.
fn advance(i: &mut Inst, b: &Behaviour) {
    i.polls += 1;
    if i.status == "booting" && i.polls > b.boot_polls {
        i.status = "active".into();
    }
    if i.status == "terminating" && i.polls > b.terminate_polls {
        i.status = "terminated".into();
    }
}

async fn instance_types(State(s): State<S>, headers: HeaderMap) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    note(&s, "GET /instance-types".into());
    let sh = lock(&s);
    let mut data = serde_json::Map::new();
    for t in &sh.types {
        data.insert(
            t.name.clone(),
            json!({
                "instance_type": {
                    "name": t.name,
                    "description": t.gpu_description,
                    "gpu_description": t.gpu_description,
                    "price_cents_per_hour": t.cents_per_hour,
                    "specs": { "vcpus": 8, "memory_gib": 64, "storage_gib": 512, "gpus": t.gpus }
                },
                "regions_with_capacity_available": t.regions.iter()
                    .filter(|r| sh.behaviour.listed_anyway || !sh.behaviour.no_capacity.contains(*r))
                    .map(|r| json!({"name": r, "description": "emulated"})).collect::<Vec<_>>()
            }),
        );
    }
    axum::Json(json!({ "data": data })).into_response()
}

async fn launch(State(s): State<S>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "global/invalid-parameters",
            "Body is not JSON.",
        );
    };
    let region = req["region_name"].as_str().unwrap_or_default().to_owned();
    let type_name = req["instance_type_name"].as_str().unwrap_or_default().to_owned();
    let name = req["name"].as_str().unwrap_or_default().to_owned();
    let (id, delay, boot) = {
        let mut sh = lock(&s);
        let now = Instant::now();
        if let Some(last) = sh.last_launch
            && now.duration_since(last) < sh.behaviour.launch_interval
        {
            let wait = sh.behaviour.launch_interval - now.duration_since(last);
            sh.log.push("POST /instance-operations/launch 429".into());
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "global/too-many-requests",
                "Too many launch requests; try again later.",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert(
                "retry-after",
                secs.to_string().parse().expect("a number is a header value"),
            );
            return r;
        }
        let Some(t) = sh.types.iter().find(|t| t.name == type_name).cloned() else {
            sh.log.push("POST /instance-operations/launch 400".into());
            return error(
                StatusCode::BAD_REQUEST,
                "global/invalid-parameters",
                &format!("Invalid instance type {type_name}."),
            );
        };
        if !t.regions.contains(&region) || sh.behaviour.no_capacity.contains(&region) {
            sh.log
                .push(format!("POST /instance-operations/launch 400 capacity {region}"));
            return error(
                StatusCode::BAD_REQUEST,
                "instance-operations/launch/insufficient-capacity",
                "Not enough capacity to fulfill launch request.",
            );
        }
        if req["ssh_key_names"].as_array().is_none_or(|a| a.len() != 1) {
            return error(
                StatusCode::BAD_REQUEST,
                "global/invalid-parameters",
                "Exactly one SSH key name must be given.",
            );
        }
        sh.last_launch = Some(now);
        sh.next_id += 1;
        let id = format!("{:032x}", 0x1a2b3c4d_u64 * 1000 + sh.next_id);
        let user_data = req["user_data"].as_str().map(str::to_owned);
        sh.instances.insert(
            id.clone(),
            Inst {
                id: id.clone(),
                name,
                region: region.clone(),
                type_name,
                status: "booting".into(),
                polls: 0,
                user_data: user_data.clone(),
                boot_pgid: None,
                powered_off: false,
            },
        );
        sh.log
            .push(format!("POST /instance-operations/launch 200 {region} {id}"));
        (id, sh.behaviour.launch_answer_delay, user_data)
    };
    if let Some(script) = boot {
        let pgid = first_boot(&lock(&s).dir, &id, &script);
        if let Some(i) = lock(&s).instances.get_mut(&id) {
            i.boot_pgid = pgid;
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    {
        let mut sh = lock(&s);
        if sh.behaviour.lose_launch_answers > 0 {
            sh.behaviour.lose_launch_answers -= 1;
            sh.log
                .push(format!("POST /instance-operations/launch 500 after creating {id}"));
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "global/unknown",
                "An unexpected error occurred.",
            );
        }
    }
    axum::Json(json!({ "data": { "instance_ids": [id] } })).into_response()
}

/// Runs the user data as the instance's first boot, with stand-in
/// power-off commands that record it.
fn first_boot(dir: &Path, id: &str, script: &str) -> Option<i32> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let bin = dir.join(format!("bin-{id}"));
    std::fs::create_dir_all(&bin).ok()?;
    let off = dir.join(format!("poweroff-{id}"));
    for name in ["shutdown", "poweroff"] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\n", off.display())).ok()?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).ok()?;
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let pgid = child.id() as i32;
    // The boot shell exits at once (the watchdog runs in the background);
    // reap it on a thread.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Some(pgid)
}

/// Ends what ran "on" an instance: its boot group and every process
/// carrying its marker.
fn power_down(i: &Inst) {
    if let Some(pgid) = i.boot_pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
    }
    if let Some(marker) = plugboard_host::cloud::marker_from_name(&i.name) {
        for (pid, _) in plugboard_host::tree::marked(|m| m == marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_file(plugboard_host::cloud::lease::lease_file(&marker));
    }
}

async fn list(State(s): State<S>, headers: HeaderMap) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push("GET /instances".into());
    apply_power_offs(&mut sh);
    let b = std::mem::take(&mut sh.behaviour);
    for i in sh.instances.values_mut() {
        advance(i, &b);
    }
    sh.behaviour = b;
    let data: Vec<Value> = sh
        .instances
        .values()
        .filter(|i| i.status != "terminated")
        .map(|i| instance_json(&sh, i))
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

async fn get_one(State(s): State<S>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut sh = lock(&s);
    sh.log.push(format!("GET /instances/{id}"));
    apply_power_offs(&mut sh);
    let b = std::mem::take(&mut sh.behaviour);
    let found = sh.instances.get_mut(&id).map(|i| {
        advance(i, &b);
    });
    sh.behaviour = b;
    match found.and_then(|_| sh.instances.get(&id)) {
        Some(i) => axum::Json(json!({ "data": instance_json(&sh, i) })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "global/object-does-not-exist",
            "Specified instance does not exist.",
        ),
    }
}

async fn terminate(State(s): State<S>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let ids: Vec<String> = req["instance_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut sh = lock(&s);
    if sh.behaviour.fail_terminates > 0 {
        sh.behaviour.fail_terminates -= 1;
        sh.log.push("POST /instance-operations/terminate 500".into());
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
    }
    for id in &ids {
        if !sh.instances.contains_key(id) {
            sh.log.push("POST /instance-operations/terminate 404".into());
            return error(
                StatusCode::NOT_FOUND,
                "global/object-does-not-exist",
                "Specified instance does not exist.",
            );
        }
    }
    let mut out = Vec::new();
    for id in &ids {
        if let Some(i) = sh.instances.get_mut(id)
            && i.status != "terminated"
        {
            i.status = "terminating".into();
            i.polls = 0;
            power_down(i);
        }
        if let Some(i) = sh.instances.get(id) {
            out.push(instance_json(&sh, i));
        }
        sh.log.push(format!("POST /instance-operations/terminate 200 {id}"));
    }
    axum::Json(json!({ "data": { "terminated_instances": out } })).into_response()
}

impl LambdaEmulator {
    /// Starts the emulator on a free loopback port; instances answer with
    /// address `ip`.
    pub fn start(dir: &Path, ip: &str) -> LambdaEmulator {
        let key = format!("secret_lambda_{}_{}", std::process::id(), rand_suffix());
        let shared = Arc::new(Mutex::new(Shared {
            key: key.clone(),
            ip: ip.to_owned(),
            types: vec![
                TypeSpec {
                    name: "gpu_1x_a10".into(),
                    cents_per_hour: 75,
                    gpus: 1,
                    gpu_description: "A10 (24 GB PCIe)".into(),
                    regions: vec!["us-west-1".into(), "us-east-1".into()],
                },
                TypeSpec {
                    name: "gpu_4x_a100".into(),
                    cents_per_hour: 440,
                    gpus: 4,
                    gpu_description: "A100 (40 GB SXM4)".into(),
                    regions: vec!["us-west-1".into(), "us-east-1".into()],
                },
            ],
            instances: BTreeMap::new(),
            behaviour: Behaviour::default(),
            last_launch: None,
            log: Vec::new(),
            next_id: 0,
            dir: dir.to_path_buf(),
        }));
        std::fs::create_dir_all(dir).expect("emulator dir");
        let app = Router::new()
            .route("/api/v1/instance-types", get(instance_types))
            .route("/api/v1/instances", get(list))
            .route("/api/v1/instances/{id}", get(get_one))
            .route("/api/v1/instance-operations/launch", post(launch))
            .route("/api/v1/instance-operations/terminate", post(terminate))
            .with_state(Arc::clone(&shared));
        let server = emulator_server::Served::start(app);
        LambdaEmulator {
            url: format!("{}/api/v1", server.base),
            key,
            shared,
            server,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut sh = lock(&self.shared);
        apply_power_offs(&mut sh);
        f(&mut sh)
    }

    /// The instances not yet terminated, as `(id, region, status)`.
    pub fn live(&self) -> Vec<(String, String, String)> {
        self.with(|sh| {
            sh.instances
                .values()
                .filter(|i| i.status != "terminated" && i.status != "terminating")
                .map(|i| (i.id.clone(), i.region.clone(), i.status.clone()))
                .collect()
        })
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.with(|sh| sh.instances.get(id).map(|i| i.status.clone()))
    }

    pub fn powered_off(&self, id: &str) -> bool {
        self.with(|sh| sh.instances.get(id).is_some_and(|i| i.powered_off))
    }

    pub fn log(&self) -> Vec<String> {
        self.with(|sh| sh.log.clone())
    }

    /// A client of this emulator.
    pub fn client(&self) -> plugboard_host::cloud::lambda::Lambda {
        plugboard_host::cloud::lambda::Lambda::new(&self.url, plugboard_host::cloud::ApiKey::new(self.key.clone()))
            .expect("client")
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for LambdaEmulator {
    fn drop(&mut self) {
        // Everything "on" the emulated instances goes with them.
        if let Ok(sh) = self.shared.lock() {
            for i in sh.instances.values() {
                power_down(i);
            }
        }
    }
}
