//! The dashboard in real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against a real `plugboard serve`. Screenshots
//! of each page are saved under target/screenshots/.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let driver = ["/usr/bin/chromedriver"].iter().map(PathBuf::from).find(|p| p.exists());
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (chromium, driver, python) {
        (Some(c), Some(d), true) => Some((c, d)),
        _ if std::env::var_os("CI").is_some() => panic!("chromium, chromedriver and python3 are required under CI"),
        _ => {
            eprintln!("SKIP: chromium, chromedriver or python3 is missing (apt-get install chromium chromium-driver)");
            None
        }
    }
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Clicks the element matching `css`, retrying while the live list replaces
/// it (server-sent events swap the running table).
async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let st = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("Z");
        st != "Z" && st != "X"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let Some((chromium, driver)) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // An extra plugin whose title is HTML: it must show as text.
    let extra = tmp.path().join("extra/html_title");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("plugin.toml"),
        "name = \"tricky\"\ncategory = \"html\"\ntitle = \"<b>bold</b> & <img src=x onerror=alert(1)>\"\nexecution_mode = \"subprocess\"\n",
    )
    .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let configs = tmp.path().join("configs");
    let http = free_port();
    let _host = Kill(
        Command::new(assert_cmd::cargo::cargo_bin("plugboard"))
            .arg("--plugins")
            .arg(&examples)
            .arg("--plugins")
            .arg(tmp.path().join("extra"))
            .arg("--config-dir")
            .arg(&configs)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["serve", "--bind", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wd = free_port();
    let _driver = Kill(
        Command::new(driver)
            .arg(format!("--port={wd}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(http);
    wait_port(wd);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", tmp.path().join("chrome").display()), "--window-size=1280,1000"
            ]
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd}"))
        .await
        .expect("cannot start a WebDriver session");
    let base = format!("http://127.0.0.1:{http}");

    // Overview.
    c.goto(&format!("{base}/")).await.unwrap();
    let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "Plugins");
    shot(&c, "overview").await;

    // HTML in a title is text.
    c.goto(&format!("{base}/category/html")).await.unwrap();
    let title = c.find(Locator::Css("#card h2")).await.unwrap().text().await.unwrap();
    assert_eq!(title, "<b>bold</b> & <img src=x onerror=alert(1)>");
    assert!(
        c.find_all(Locator::Css("#card h2 b, #card img"))
            .await
            .unwrap()
            .is_empty()
    );
    shot(&c, "html-title").await;

    // Pick a plugin: the details card changes.
    c.goto(&format!("{base}/category/text")).await.unwrap();
    let first = c
        .find(Locator::Css("#card"))
        .await
        .unwrap()
        .attr("data-plugin")
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("text_reverse"));
    c.find(Locator::Css("#plugin-select"))
        .await
        .unwrap()
        .select_by_value("text_word_count")
        .await
        .unwrap();
    eventually("the card to show the word counter", || async {
        match c.find(Locator::Css("#card")).await {
            Ok(e) => e.attr("data-plugin").await.ok().flatten().as_deref() == Some("text_word_count"),
            Err(_) => false,
        }
    })
    .await;
    let card = c.find(Locator::Css("#card h2")).await.unwrap().text().await.unwrap();
    assert_eq!(card, "Word counter (Rust worker)");
    shot(&c, "category").await;

    // An invalid config: inline error, nothing on disk.
    let file = configs.join("text_word_count.json");
    c.find(Locator::Css("#confirm")).await.unwrap().click().await.unwrap();
    eventually("the config form", || async {
        c.find(Locator::Css("#f-min_length")).await.is_ok()
    })
    .await;
    let input = c.find(Locator::Css("#f-min_length")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("0").await.unwrap();
    c.find(Locator::Css("#save")).await.unwrap().click().await.unwrap();
    eventually("the inline error", || async {
        c.find(Locator::Css(".error[data-field=min_length]")).await.is_ok()
    })
    .await;
    let err = c
        .find(Locator::Css(".error[data-field=min_length]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(err.contains("minimum"), "{err}");
    assert!(!file.exists(), "an invalid config reached the disk");
    shot(&c, "config-invalid").await;

    // A valid one is saved.
    let input = c.find(Locator::Css("#f-min_length")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("4").await.unwrap();
    c.find(Locator::Css("#save")).await.unwrap().click().await.unwrap();
    eventually("the saved notice", || async {
        c.find(Locator::Css("#saved")).await.is_ok()
    })
    .await;
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["min_length"], 4);
    shot(&c, "config-saved").await;

    // Start the process-tree example from the page, see its pids, stop it.
    c.goto(&format!("{base}/running")).await.unwrap();
    click(&c, "tr[data-plugin=demo_process_tree] button[data-action=start]").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids: Vec<u32> = loop {
        if let Ok(e) = c.find(Locator::Css("tr[data-plugin=demo_process_tree] .pids")).await {
            let text = e.text().await.unwrap_or_default();
            let pids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.len() >= 9 {
                break pids;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the pids of the process tree"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(pids.iter().all(|p| alive(*p)));
    shot(&c, "running").await;
    click(&c, "tr[data-plugin=demo_process_tree] button[data-action=stop]").await;
    eventually("the tree to be gone", || async { pids.iter().all(|p| !alive(*p)) }).await;
    eventually("the row to say stopped", || async {
        match c.find(Locator::Css("tr[data-plugin=demo_process_tree] .state")).await {
            Ok(e) => e.text().await.unwrap_or_default() == "stopped",
            Err(_) => false,
        }
    })
    .await;
    shot(&c, "running-stopped").await;
    c.close().await.unwrap();
}
