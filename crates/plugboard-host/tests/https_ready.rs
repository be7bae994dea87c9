//! Readiness over HTTPS with a real TLS client: an external plugin whose
//! `ready.http_get` is an `https://` URL served by a test server with its
//! own certificate authority. Trusted through `SSL_CERT_FILE`, it is ready;
//! a server whose certificate nobody trusts fails the start with the TLS
//! error. (One test in its own binary: it sets `SSL_CERT_FILE` before the
//! HTTPS client is first built.)

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use plugboard_host::RunState;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "openssl is required under CI");
        eprintln!("SKIP: openssl not found");
    }
    ok
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let st = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A certificate authority of its own and a server certificate for
/// 127.0.0.1 signed by it: `(ca.pem, leaf.pem, leaf.key)`.
fn pki(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let (ca, ca_key, leaf, leaf_key, csr, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("leaf.pem"),
        p("leaf.key"),
        p("leaf.csr"),
        p("ext.cnf"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    let s = |x: &str| std::ffi::OsString::from(x);
    openssl(&[
        &s("req"),
        &s("-x509"),
        &s("-newkey"),
        &s("rsa:2048"),
        &s("-nodes"),
        &s("-days"),
        &s("1"),
        &s("-subj"),
        &s(&format!("/CN={name} test CA")),
        &s("-keyout"),
        ca_key.as_os_str(),
        &s("-out"),
        ca.as_os_str(),
    ]);
    openssl(&[
        &s("req"),
        &s("-newkey"),
        &s("rsa:2048"),
        &s("-nodes"),
        &s("-subj"),
        &s("/CN=127.0.0.1"),
        &s("-keyout"),
        leaf_key.as_os_str(),
        &s("-out"),
        csr.as_os_str(),
    ]);
    openssl(&[
        &s("x509"),
        &s("-req"),
        &s("-in"),
        csr.as_os_str(),
        &s("-CA"),
        ca.as_os_str(),
        &s("-CAkey"),
        ca_key.as_os_str(),
        &s("-CAcreateserial"),
        &s("-days"),
        &s("1"),
        &s("-extfile"),
        ext.as_os_str(),
        &s("-out"),
        leaf.as_os_str(),
    ]);
    (ca, leaf, leaf_key)
}

fn https_server(port: u16, cert: &Path, key: &Path, dir: &Path) -> Server {
    let script = format!(
        "import http.server, ssl\n\
         srv = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain({:?}, {:?})\n\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         srv.serve_forever()\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until_blocking(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    Server(child)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_readiness_trusts_ssl_cert_file_and_refuses_unknown_certificates() {
    if !python_available() || !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (trusted_ca, trusted_cert, trusted_key) = pki(tmp.path(), "trusted");
    let (_, other_cert, other_key) = pki(tmp.path(), "other");
    // SAFETY: the only test of this binary, before any thread reads the
    // variable or the HTTPS client exists.
    unsafe { std::env::set_var("SSL_CERT_FILE", &trusted_ca) };
    let (good, bad) = (free_port(), free_port());
    let _s1 = https_server(good, &trusted_cert, &trusted_key, tmp.path());
    let _s2 = https_server(bad, &other_cert, &other_key, tmp.path());
    let sup = supervisor(&tmp.path().join("data"));
    let manifest = |name: &str, port: u16| {
        manifest_in(
            tmp.path(),
            name,
            &format!(
                "name = \"{name}\"\ncategory = \"tls\"\nexecution_mode = \"external\"\nready_timeout_s = 2\nready = {{ http_get = \"https://127.0.0.1:{port}/\" }}\n[launch]\nendpoint = \"https://127.0.0.1:{port}\"\n"
            ),
        )
    };
    let st = sup.start(manifest("good", good)).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    assert_eq!(
        st.endpoint.as_deref(),
        Some(format!("https://127.0.0.1:{good}").as_str())
    );
    let e = sup.start(manifest("bad", bad)).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // An https endpoint can be probed but not called with the protocol: said clearly.
    let e = sup.handle("tls_good").unwrap_err().to_string();
    assert!(e.contains("does not speak the plugboard protocol"), "{e}");
    sup.stop("tls_good").await.unwrap();
}
