//! The docker backend: plugins in containers on a Docker Engine API
//! (Docker itself, or Podman's compatible service), through bollard.
//!
//! The engine is found the standard way: `DOCKER_HOST` (`unix://…` or
//! `tcp://…`), else `/var/run/docker.sock`. A container carries labels
//! naming the plugin, this installation's ledger and its row (the marker);
//! its ledger row exists before the create call. The worker speaks the
//! same protocol: the host's socket directory is bind-mounted at the same
//! path, so `PLUGBOARD_LISTEN`, the token and the manifest check work as
//! for a subprocess. Its stdin is attached with `StdinOnce`: when the host
//! dies the attach connection closes, the engine closes the container's
//! stdin and an SDK worker exits; gc then removes what is left by label.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{
    Backend, BackendError, ExitInfo, LISTEN_ENV, LaunchContext, Launched, Marked, Observation, OutputStream,
    PLUGIN_ID_ENV, Plan, Stopped, Target,
};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{MARKER_ENV, ResourceHandle, ResourceKind};
use crate::manifest::Manifest;

/// Label naming the plugin.
pub const LABEL_PLUGIN: &str = "io.plugboard.plugin";
/// Label naming this installation's ledger.
pub const LABEL_LEDGER: &str = "io.plugboard.ledger";
/// Label holding the marker (`{ledger id}:{row id}`).
pub const LABEL_MARKER: &str = "io.plugboard.marker";

/// How long an engine may take to answer a ping before it counts as absent.
const PING_LIMIT: Duration = Duration::from_secs(5);

const KEYS: &str = "image, command, args, env, ports, volumes, gpus, memory_mb, cpus, user, workdir, pull, network";

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    Never,
    Missing,
    Always,
}

#[derive(Debug, Clone)]
struct DockerSpec {
    image: String,
    cmd: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    /// container port (`8000/tcp`) → host port (0: ephemeral), on 127.0.0.1
    ports: Vec<(String, u16)>,
    volumes: Vec<String>,
    gpus: Option<DeviceRequest>,
    memory_bytes: Option<i64>,
    nano_cpus: Option<i64>,
    user: Option<String>,
    workdir: Option<String>,
    pull: Pull,
    network: Option<String>,
}

/// The docker backend.
#[derive(Debug, Clone, Default)]
pub struct DockerBackend;

/// The engine address this host uses: `DOCKER_HOST`, else the default socket.
pub fn engine_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

fn connect() -> Result<Docker, String> {
    let addr = engine_address();
    let r = if let Some(path) = addr.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if addr.starts_with("tcp://") || addr.starts_with("http://") {
        Docker::connect_with_http(&addr, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(format!("DOCKER_HOST {addr:?} is neither unix:// nor tcp://"));
    };
    r.map_err(|e| format!("cannot use the container engine at {addr}: {e}"))
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine_error(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { status_code, message } => format!("HTTP {status_code}: {message}"),
        other => other.to_string(),
    }
}

fn unavailable(reason: String) -> BackendError {
    BackendError::Unavailable {
        backend: "docker",
        reason,
    }
}

fn plan_spec(m: &Manifest) -> Result<DockerSpec, HostError> {
    let bad = |key: &str, reason: String| HostError::BadLaunch {
        plugin: m.unique_id(),
        manifest: m.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let l = &m.launch;
    if l.cwd.is_some() {
        return Err(bad(
            "cwd",
            "is not used by docker plugins; use launch.workdir (a path inside the container)".into(),
        ));
    }
    if l.conda_env.is_some() {
        return Err(bad("conda_env", format!("is not a docker launch key ({KEYS})")));
    }
    for key in l.extra.keys() {
        if !KEYS.split(", ").any(|k| k == key) {
            return Err(bad(key, format!("is not a docker launch key ({KEYS})")));
        }
    }
    let string = |key: &str| -> Result<Option<String>, HostError> {
        match l.extra.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| bad(key, "must be a non-empty string".into())),
        }
    };
    let image = string("image")?.ok_or_else(|| HostError::MissingLaunch {
        plugin: m.unique_id(),
        field: "image",
        mode: m.execution_mode,
        manifest: m.path.clone(),
    })?;
    let cmd = match (&l.command, l.args.is_empty()) {
        (Some(c), _) => Some(std::iter::once(c.clone()).chain(l.args.iter().cloned()).collect()),
        (None, false) => {
            return Err(bad(
                "args",
                "needs launch.command (absent, the image's own command runs)".into(),
            ));
        }
        (None, true) => None,
    };
    let mut ports = Vec::new();
    if let Some(v) = l.extra.get("ports") {
        let t = v.as_table().ok_or_else(|| {
            bad(
                "ports",
                "must be a table of container port = host port (0 for any free port)".into(),
            )
        })?;
        for (cport, hport) in t {
            let (num, proto) = cport.split_once('/').unwrap_or((cport, "tcp"));
            if num.parse::<u16>().is_err() || !["tcp", "udp"].contains(&proto) {
                return Err(bad(
                    "ports",
                    format!("{cport:?} is not a container port such as \"8000\" or \"8000/tcp\""),
                ));
            }
            let h = hport
                .as_integer()
                .and_then(|h| u16::try_from(h).ok())
                .ok_or_else(|| bad("ports", format!("{cport}: the host port must be 0 to 65535")))?;
            ports.push((format!("{num}/{proto}"), h));
        }
    }
    let mut volumes = Vec::new();
    if let Some(v) = l.extra.get("volumes") {
        let a = v
            .as_array()
            .ok_or_else(|| bad("volumes", "must be a list of \"HOST:CONTAINER[:ro]\"".into()))?;
        for item in a {
            let s = item
                .as_str()
                .ok_or_else(|| bad("volumes", "must be a list of \"HOST:CONTAINER[:ro]\"".into()))?;
            let parts: Vec<&str> = s.split(':').collect();
            if !(2..=3).contains(&parts.len()) || parts[1].is_empty() || !parts[1].starts_with('/') {
                return Err(bad("volumes", format!("{s:?} is not \"HOST:CONTAINER[:ro]\"")));
            }
            let host = if parts[0].starts_with('/') {
                parts[0].to_owned()
            } else {
                m.dir.join(parts[0]).to_string_lossy().into_owned()
            };
            volumes.push(
                std::iter::once(host.as_str())
                    .chain(parts[1..].iter().copied())
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
    }
    let gpus = match l.extra.get("gpus") {
        None => None,
        Some(v) => {
            let mut req = DeviceRequest {
                driver: Some("nvidia".into()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            };
            if let Some(n) = v.as_integer() {
                req.count = Some(n.max(0));
            } else if v.as_str() == Some("all") {
                req.count = Some(-1);
            } else if let Some(ids) = v.as_array() {
                req.device_ids = Some(
                    ids.iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("gpus", "a list of GPU ids must hold strings".into()))?,
                );
            } else {
                return Err(bad("gpus", "must be a count, \"all\", or a list of GPU ids".into()));
            }
            Some(req)
        }
    };
    let memory_bytes = match l.extra.get("memory_mb") {
        None => None,
        Some(v) => Some(
            v.as_integer()
                .filter(|m| *m > 0)
                .ok_or_else(|| bad("memory_mb", "must be a positive whole number of MiB".into()))?
                * 1024
                * 1024,
        ),
    };
    let nano_cpus = match l.extra.get("cpus") {
        None => None,
        Some(v) => Some(
            (v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .filter(|c| *c > 0.0 && *c <= 4096.0)
                .ok_or_else(|| bad("cpus", "must be a number of cores above 0".into()))?
                * 1e9) as i64,
        ),
    };
    let pull = match string("pull")?.as_deref() {
        None | Some("missing") => Pull::Missing,
        Some("never") => Pull::Never,
        Some("always") => Pull::Always,
        Some(other) => return Err(bad("pull", format!("must be never, missing or always, not {other:?}"))),
    };
    Ok(DockerSpec {
        image,
        cmd,
        env: l.env.clone(),
        ports,
        volumes,
        gpus,
        memory_bytes,
        nano_cpus,
        user: string("user")?,
        workdir: string("workdir")?,
        pull,
        network: string("network")?,
    })
}

/// Makes sure the image is there per the pull policy, before anything is created.
async fn ensure_image(docker: &Docker, plugin: &str, spec: &DockerSpec) -> Result<(), HostError> {
    let fail = |reason: String| HostError::Engine {
        plugin: plugin.to_owned(),
        address: engine_address(),
        reason,
    };
    let present = match docker.inspect_image(&spec.image).await {
        Ok(_) => true,
        Err(e) if status_of(&e) == Some(404) => false,
        Err(e) => return Err(fail(engine_error(&e))),
    };
    if present && spec.pull != Pull::Always {
        return Ok(());
    }
    if spec.pull == Pull::Never {
        return Err(fail(format!(
            "image {} is not present and launch.pull = \"never\"; nothing was created",
            spec.image
        )));
    }
    let opts = CreateImageOptionsBuilder::new().from_image(&spec.image).build();
    let mut s = docker.create_image(Some(opts), None, None);
    while let Some(item) = s.next().await {
        if let Err(e) = item {
            return Err(fail(format!("cannot pull image {}: {}", spec.image, engine_error(&e))));
        }
    }
    Ok(())
}

fn labels_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])])
}

/// Containers carrying `label=value` on the engine at [`engine_address`],
/// as `(id, labels)`, from the engine's
/// list endpoint read as plain JSON: Podman reports states the Docker API
/// does not have (`"stopped"`), which a typed client refuses to parse, and
/// a list that fails to parse would hide exactly the leftovers gc is for.
pub async fn list_by_label(label: &str, value: &str) -> Result<Vec<(String, HashMap<String, String>)>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let addr = engine_address();
    let filters = serde_json::to_string(&labels_filter(label, value)).map_err(|e| e.to_string())?;
    let mut enc = String::new();
    for b in filters.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    let path = format!("/v1.41/containers/json?all=true&filters={enc}");
    let fail = |e: String| format!("cannot list containers at {addr}: {e}");
    let request = async {
        let req = hyper::Request::get(&path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = if let Some(p) = addr.strip_prefix("unix://") {
            let io = tokio::net::UnixStream::connect(p).await.map_err(|e| e.to_string())?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            tx.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let hostport = addr
                .trim_start_matches("tcp://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let io = tokio::net::TcpStream::connect(hostport)
                .await
                .map_err(|e| e.to_string())?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            tx.send_request(req).await.map_err(|e| e.to_string())?
        };
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 64 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice::<Vec<Value>>(&body).map_err(|e| format!("not a container list: {e}"))
    };
    let list = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .map_err(|_| fail("no answer within 60 s".into()))?
        .map_err(fail)?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let id = c.get("Id")?.as_str()?.to_owned();
            let labels = c
                .get("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            Some((id, labels))
        })
        .collect())
}

/// The ids of the containers a target names: its handle's, or those
/// carrying its marker.
async fn containers_of(target: &Target) -> Result<Vec<String>, BackendError> {
    let mut ids = Vec::new();
    if let Some(ResourceHandle::Container { id }) = &target.handle {
        ids.push(id.clone());
    }
    for (id, _) in list_by_label(LABEL_MARKER, &target.marker).await.map_err(unavailable)? {
        if !ids
            .iter()
            .any(|i| id.starts_with(i.as_str()) || i.starts_with(id.as_str()))
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let mut spec = plan_spec(manifest)?;
        let undefined = |name: String| HostError::UndefinedVariable {
            plugin: manifest.unique_id(),
            name,
            manifest: manifest.path.clone(),
        };
        spec.image = crate::launch::expand(&spec.image, vars).map_err(undefined)?;
        if let Some(c) = &mut spec.cmd {
            for a in c.iter_mut() {
                *a = crate::launch::expand(a, vars).map_err(undefined)?;
            }
        }
        for v in spec.env.values_mut() {
            *v = crate::launch::expand(v, vars).map_err(undefined)?;
        }
        for v in &mut spec.volumes {
            *v = crate::launch::expand(v, vars).map_err(undefined)?;
        }
        let details = json!({
            "image": spec.image,
            "command": spec.cmd,
            "ports": spec.ports.iter().map(|(c, h)| format!("127.0.0.1:{h}->{c}")).collect::<Vec<_>>(),
            "volumes": spec.volumes,
            "engine": engine_address(),
            "mode": manifest.execution_mode,
        });
        Ok(Plan {
            kind: ResourceKind::Container,
            owned: true,
            price: manifest.price_estimate(),
            details,
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(spec),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<DockerSpec>()
            .ok_or_else(|| HostError::Internal("docker backend given another backend's plan".into()))?;
        let engine = |reason: String| HostError::Engine {
            plugin: ctx.plugin_id.clone(),
            address: engine_address(),
            reason,
        };
        let docker = connect().map_err(engine)?;
        match tokio::time::timeout(PING_LIMIT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(engine(format!("the engine does not answer: {}", engine_error(&e)))),
            Err(_) => return Err(engine(format!("no answer to a ping within {} s", PING_LIMIT.as_secs()))),
        }
        ensure_image(&docker, &ctx.plugin_id, spec).await?;

        let ledger_id = ctx.marker.split(':').next().unwrap_or_default().to_owned();
        let labels = HashMap::from([
            (LABEL_PLUGIN.to_owned(), ctx.plugin_id.clone()),
            (LABEL_LEDGER.to_owned(), ledger_id),
            (LABEL_MARKER.to_owned(), ctx.marker.clone()),
        ]);
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("{MARKER_ENV}={}", ctx.marker));
        env.push(format!("{LISTEN_ENV}={}", ctx.listen.display()));
        env.push(format!("{PLUGIN_ID_ENV}={}", ctx.plugin_id));
        env.push(format!("{}={}", plugboard_protocol::TOKEN_ENV, ctx.token));
        let run_dir = ctx
            .listen
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut binds = spec.volumes.clone();
        binds.push(format!("{run_dir}:{run_dir}"));
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .ports
            .iter()
            .map(|(c, h)| {
                (
                    c.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(if *h == 0 { String::new() } else { h.to_string() }),
                    }]),
                )
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.cmd.clone(),
            env: Some(env),
            labels: Some(labels),
            user: spec.user.clone(),
            working_dir: spec.workdir.clone(),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            exposed_ports: Some(spec.ports.iter().map(|(c, _)| c.clone()).collect()),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                device_requests: spec.gpus.clone().map(|g| vec![g]),
                memory: spec.memory_bytes,
                nano_cpus: spec.nano_cpus,
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("plugboard-{}", crate::cgroup::dir_name(&ctx.marker));
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await
            .map_err(|e| engine(format!("cannot create the container: {}", engine_error(&e))))?;
        let id = created.id;
        let attached = docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| engine(format!("cannot attach to container {id}: {}", engine_error(&e))))?;
        // Split the engine's multiplexed output into the two log streams.
        let (out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let mut output = attached.output;
        tokio::spawn(async move {
            let (mut out_w, mut err_w) = (out_w, err_w);
            while let Some(Ok(chunk)) = output.next().await {
                let r = match chunk {
                    bollard::container::LogOutput::StdErr { message } => err_w.write_all(&message).await,
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => out_w.write_all(&message).await,
                    bollard::container::LogOutput::StdIn { .. } => Ok(()),
                };
                if r.is_err() {
                    break;
                }
            }
        });
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| engine(format!("cannot start container {id}: {}", engine_error(&e))))?;
        let (tx, rx) = watch::channel(None);
        {
            let docker = docker.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut w = docker.wait_container(&id, None);
                let exit = match w.next().await {
                    Some(Ok(r)) => ExitInfo {
                        code: i32::try_from(r.status_code).ok(),
                        signal: None,
                    },
                    Some(Err(DockerError::DockerContainerWaitError { code, .. })) => ExitInfo {
                        code: i32::try_from(code).ok(),
                        signal: None,
                    },
                    _ => ExitInfo {
                        code: None,
                        signal: None,
                    },
                };
                let _ = tx.send(Some(exit));
            });
        }
        Ok(Launched {
            handle: ResourceHandle::Container { id },
            endpoint: Endpoint::Unix(ctx.listen.clone()),
            token: Some(ctx.token.clone()),
            output: vec![
                OutputStream {
                    tag: "out",
                    reader: Box::new(out_r),
                },
                OutputStream {
                    tag: "err",
                    reader: Box::new(err_r),
                },
            ],
            notify: None,
            exit: Some(rx),
            keepalive: Some(Box::new(std::sync::Mutex::new(attached.input))),
            lost: None,
            price: None,
        })
    }

    async fn stop(&self, target: &Target, grace: Duration) -> Result<Stopped, BackendError> {
        let docker = connect().map_err(unavailable)?;
        let ids = containers_of(target).await?;
        let mut out = Stopped::default();
        let t = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        for id in ids {
            match docker
                .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(t).build()))
                .await
            {
                // 304: already stopped; 404: already gone.
                Ok(()) => out.ended.push(id.clone()),
                Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
                Err(e) => {
                    return Err(BackendError::NotGone {
                        what: format!("container {id}"),
                        reason: engine_error(&e),
                    });
                }
            }
            match docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    return Err(BackendError::NotGone {
                        what: format!("container {id}"),
                        reason: engine_error(&e),
                    });
                }
            }
            match docker.inspect_container(&id, None).await {
                Err(e) if status_of(&e) == Some(404) => {}
                Ok(_) | Err(DockerError::JsonDataError { .. }) => {
                    return Err(BackendError::NotGone {
                        what: format!("container {id}"),
                        reason: "still listed after remove".into(),
                    });
                }
                Err(e) => {
                    return Err(BackendError::NotGone {
                        what: format!("container {id}"),
                        reason: engine_error(&e),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn observe(&self, target: &Target) -> Observation {
        let Some(ResourceHandle::Container { id }) = &target.handle else {
            return Observation::Unknown;
        };
        let Ok(docker) = connect() else {
            return Observation::Unknown;
        };
        match docker.inspect_container(id, None).await {
            Ok(c) => {
                let s = c.state.unwrap_or_default();
                if s.running == Some(true) {
                    Observation::Alive
                } else {
                    Observation::Exited(ExitInfo {
                        code: s.exit_code.and_then(|c| i32::try_from(c).ok()),
                        signal: None,
                    })
                }
            }
            Err(e) if status_of(&e) == Some(404) => Observation::Exited(ExitInfo {
                code: None,
                signal: None,
            }),
            // Podman answers a stopped container's status as "stopped", a
            // value the Docker API does not have: it exists, not running.
            Err(DockerError::JsonDataError { message, .. }) if message.contains("`stopped`") => {
                Observation::Exited(ExitInfo {
                    code: None,
                    signal: None,
                })
            }
            Err(e) => Observation::Lost(engine_error(&e)),
        }
    }

    async fn sweep(&self, ledger_id: &str, _recorded: &[Value]) -> Result<Vec<Marked>, BackendError> {
        // No engine at the address (no socket, or no answer): nothing of
        // ours can be running on it.
        let docker = match connect() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(reason = %e, "no container engine to sweep");
                return Ok(Vec::new());
            }
        };
        if !matches!(tokio::time::timeout(PING_LIMIT, docker.ping()).await, Ok(Ok(_))) {
            // No engine answering: nothing of ours can be running on it.
            return Ok(Vec::new());
        }
        let found = list_by_label(LABEL_LEDGER, ledger_id).await.map_err(unavailable)?;
        let prefix = format!("{ledger_id}:");
        Ok(found
            .into_iter()
            .filter_map(|(id, labels)| {
                let row = labels.get(LABEL_MARKER)?.strip_prefix(&prefix)?.parse().ok()?;
                Some(Marked {
                    resource_id: row,
                    description: format!("container {}", id.get(..12).unwrap_or(&id)),
                })
            })
            .collect())
    }

    fn inspect(&self, target: &Target) -> Value {
        match &target.handle {
            Some(ResourceHandle::Container { id }) => json!({ "container_id": id, "engine": engine_address() }),
            _ => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(launch: &str) -> Result<DockerSpec, String> {
        let text = format!("name = \"d\"\ncategory = \"c\"\nexecution_mode = \"docker\"\n[launch]\n{launch}\n");
        let m = Manifest::parse(Path::new("/p/plugin.toml"), &text).map_err(|e| e.to_string())?;
        plan_spec(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_launch_table_plans() {
        let s = manifest(
            "image = \"whisper:1\"\ncommand = \"serve\"\nargs = [\"--x\"]\nports = { \"8000\" = 0, \"9000/udp\" = 9001 }\nvolumes = [\"models:/models:ro\"]\ngpus = 2\nmemory_mb = 512\ncpus = 1.5\npull = \"never\"\nuser = \"1000\"\nworkdir = \"/w\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.cmd, Some(vec!["serve".into(), "--x".into()]));
        assert_eq!(s.ports, vec![("8000/tcp".into(), 0), ("9000/udp".into(), 9001)]);
        assert_eq!(s.volumes, vec!["/p/models:/models:ro".to_owned()]);
        assert_eq!(s.gpus.and_then(|g| g.count), Some(2));
        assert_eq!(s.memory_bytes, Some(512 * 1024 * 1024));
        assert_eq!(s.nano_cpus, Some(1_500_000_000));
        assert_eq!(s.pull, Pull::Never);
    }

    #[test]
    fn bad_launch_tables_name_the_key() {
        for (launch, key) in [
            ("", "image"),
            ("image = \"x\"\nbogus = 1", "bogus"),
            ("image = \"x\"\npull = \"sometimes\"", "pull"),
            ("image = \"x\"\nports = { \"http\" = 1 }", "ports"),
            ("image = \"x\"\nvolumes = [\"nocolon\"]", "volumes"),
            ("image = \"x\"\ngpus = true", "gpus"),
            ("image = \"x\"\ncwd = \"a\"", "cwd"),
            ("image = \"x\"\nargs = [\"a\"]", "args"),
        ] {
            let e = manifest(launch).err().unwrap_or_default();
            assert!(e.contains(key), "{launch}: {e}");
        }
    }
}
