//! Dashboard speed: server time to render a page of a 10,000-plugin
//! category (through the router, no network; unfiltered, and filtered by a
//! search) next to the trivial health handler, and requests per second for
//! that page under 64 concurrent keep-alive clients on loopback next to the
//! same load on the health route.
//!
//! Run pinned (server and clients share the CPU):
//! `taskset -c 0 cargo bench -p plugboard-web --bench dashboard`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use plugboard_host::{DataDir, Host, HostConfig};
use plugboard_web::api::{ApiState, app};
use tower::ServiceExt;

const PLUGINS: usize = 10_000;
const CLIENTS: usize = 64;

async fn server_time(router: &axum::Router, path: &str, n: usize) -> (Duration, usize) {
    let mut samples = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let resp = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap_or_default())
            .await;
        let body = match resp {
            Ok(r) => r.into_body().collect().await.map(|c| c.to_bytes().len()).unwrap_or(0),
            Err(e) => match e {},
        };
        samples.push(t.elapsed());
        bytes = body;
    }
    samples.sort();
    (samples[samples.len() / 2], bytes)
}

async fn load(addr: std::net::SocketAddr, path: &'static str, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return 0u64;
            };
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                return 0;
            };
            tokio::spawn(conn);
            let mut n = 0u64;
            // Bounded by time and count.
            while Instant::now() < deadline && n < 1_000_000 {
                let req = Request::get(path)
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap_or_default();
                let Ok(resp) = sender.send_request(req).await else {
                    break;
                };
                if resp.into_body().collect().await.is_err() {
                    break;
                }
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..PLUGINS {
        let d = tmp.path().join("plugins").join(format!("p{i:05}"));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        let mode = if i % 4 == 0 { "cloud_gpu" } else { "subprocess" };
        std::fs::write(
            d.join("plugin.toml"),
            format!(
                "name = \"plugin_{i}\"\ncategory = \"bench\"\ntitle = \"Plugin {i}\"\nversion = \"1.0.{i}\"\ndescription = \"Benchmark plugin number {i}.\"\nexecution_mode = \"{mode}\"\n[resources]\ngpu_count = 1\ngpu_type = \"A100\"\nestimated_cost_per_hour = 1.5\n[config_schema.properties.device]\ntype = \"string\"\nenum = [\"cpu\", \"cuda\"]\ndefault = \"cpu\"\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let host = Host::open(HostConfig {
        reap_all_orphans: false,
        plugin_dirs: vec![tmp.path().join("plugins")],
        config_dir: tmp.path().join("configs"),
        data: DataDir::new(tmp.path().join("data")),
        launch_vars: Default::default(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let state = ApiState::new(Arc::new(host), None);
    let router = app(state);
    rt.block_on(async {
        let (health, _) = server_time(&router, "/api/v1/health", 200).await;
        let (page, bytes) = server_time(&router, "/category/bench", 50).await;
        let (search, search_bytes) = server_time(&router, "/category/bench?q=number+99", 50).await;
        println!(
            "reference: health handler                         p50 {:>9.1} us",
            health.as_secs_f64() * 1e6
        );
        println!(
            "category page, {PLUGINS} plugins ({} KiB)           p50 {:>9.1} us  ({:.0}x health)",
            bytes / 1024,
            page.as_secs_f64() * 1e6,
            page.as_secs_f64() / health.as_secs_f64()
        );
        println!(
            "the same, searched (\"number 99\", {} KiB)          p50 {:>9.1} us  ({:.0}x health)",
            search_bytes / 1024,
            search.as_secs_f64() * 1e6,
            search.as_secs_f64() / health.as_secs_f64()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let r2 = router.clone();
        tokio::spawn(async move { axum::serve(listener, r2).await });
        let health_rps = load(addr, "/api/v1/health", 5).await;
        let page_rps = load(addr, "/category/bench", 5).await;
        println!("reference: health under {CLIENTS} clients                 {health_rps:>9.0} req/s");
        println!(
            "category page under {CLIENTS} clients                   {page_rps:>9.0} req/s  ({:.3}x health)",
            page_rps / health_rps
        );
    });
}
