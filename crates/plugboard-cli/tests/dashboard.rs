//! The dashboard in real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against a real `plugboard serve`. Screenshots
//! of each page are saved under target/screenshots/.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
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

/// A process started as the leader of its own process group, killed with
/// the whole group: chromedriver and the Chromium it starts, which would
/// outlive a killed chromedriver otherwise.
struct KillGroup(Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
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

/// A `plugboard serve` over the bundled examples and `{tmp}/extra`, a
/// chromedriver, and a WebDriver session in headless Chromium.
struct Browser {
    c: Client,
    base: String,
    _host: Kill,
    _driver: KillGroup,
}

async fn browser(tmp: &Path) -> Browser {
    let (chromium, driver) = tools().expect("checked by the caller");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    std::fs::create_dir_all(tmp.join("extra")).unwrap();
    let http = free_port();
    let host = Kill(
        Command::new(assert_cmd::cargo::cargo_bin("plugboard"))
            .arg("--plugins")
            .arg(&examples)
            .arg("--plugins")
            .arg(tmp.join("extra"))
            .arg("--config-dir")
            .arg(tmp.join("configs"))
            .arg("--data-dir")
            .arg(tmp.join("data"))
            .args(["serve", "--bind", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wd = free_port();
    let driver = KillGroup(
        Command::new(driver)
            .process_group(0)
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
                format!("--user-data-dir={}", tmp.join("chrome").display()), "--window-size=1280,1000"
            ]
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd}"))
        .await
        .expect("cannot start a WebDriver session");
    Browser {
        c,
        base: format!("http://127.0.0.1:{http}"),
        _host: host,
        _driver: driver,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    if tools().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // An extra plugin whose title is HTML: it must show as text.
    let extra = tmp.path().join("extra/html_title");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("plugin.toml"),
        "name = \"tricky\"\ncategory = \"html\"\ntitle = \"<b>bold</b> & <img src=x onerror=alert(1)>\"\nexecution_mode = \"subprocess\"\n",
    )
    .unwrap();
    let configs = tmp.path().join("configs");
    // The host and driver live as long as `session`.
    let session = browser(tmp.path()).await;
    let (c, base) = (session.c.clone(), session.base.clone());

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

/// The text of the element matching `css` (empty when there is none).
async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The live state shown on a plugin page.
/// Read in one script, so a swap between finding the element and reading
/// its attribute cannot fail the read.
async fn state_of(c: &Client) -> String {
    c.execute(
        "var e = document.getElementById('plugin-state'); return e ? e.getAttribute('data-state') : '';",
        vec![],
    )
    .await
    .ok()
    .and_then(|v| v.as_str().map(str::to_string))
    .unwrap_or_default()
}

async fn wait_state(c: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reloaded = false;
    while state_of(c).await != want {
        // On a loaded machine a navigation after a form post has been seen
        // to stall in the browser (the page's scripts never ran); a reload
        // asks the server again, which is what is under test.
        if !reloaded && Instant::now() + Duration::from_secs(15) > deadline {
            reloaded = true;
            let _ = c.refresh().await;
        }
        if Instant::now() > deadline {
            shot(c, &format!("failed-waiting-for-{want}")).await;
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let body = text_of(c, "main").await;
            let panel = c
                .execute("var e = document.getElementById('state-panel'); return [document.readyState, e ? e.outerHTML : 'none'];", vec![])
                .await;
            panic!("timed out waiting for the page to say {want} at {url}: {body}\npanel: {panel:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the call panel's progress bar.
async fn progress_of(c: &Client) -> f64 {
    c.execute("return document.getElementById('progress-bar').value;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

/// Replaces the call panel's input.
async fn set_input(c: &Client, json: &str) {
    let input = c.find(Locator::Css("#call-input")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(json).await.unwrap();
}

/// Extra plugins for the plugin page: a Python worker that prints what it
/// is called with (for the log), and a worker that fails its start.
fn plugin_page_extras(tmp: &Path) {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk/python")
        .canonicalize()
        .unwrap();
    let chatty = tmp.join("extra/chatty");
    std::fs::create_dir_all(&chatty).unwrap();
    std::fs::write(
        chatty.join("plugin.toml"),
        format!(
            "name = \"chatty\"\ncategory = \"demo\"\ntitle = \"Chatty\"\nversion = \"0.1.0\"\nexecution_mode = \"subprocess\"\nready = \"protocol\"\nready_timeout_s = 20\nstop_grace_s = 1\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"chatty.py\"]\nenv = {{ PYTHONPATH = \"{}\" }}\n[examples]\ninput = {{ say = \"hello\" }}\n",
            sdk.display()
        ),
    )
    .unwrap();
    std::fs::write(
        chatty.join("chatty.py"),
        "from plugboard_worker import Worker, run\n\n\nclass Chatty(Worker):\n    name = \"chatty\"\n    version = \"0.1.0\"\n\n    def execute(self, input, ctx):\n        print(\"chatty got \" + str(input.get(\"say\")), flush=True)\n        return {\"said\": input.get(\"say\")}\n\n\nif __name__ == \"__main__\":\n    run(Chatty())\n",
    )
    .unwrap();
    let broken = tmp.join("extra/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\ncategory = \"demo\"\ntitle = \"Broken worker\"\nexecution_mode = \"subprocess\"\nready = \"protocol\"\nready_timeout_s = 10\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"echo 'loading weights.bin' >&2; echo 'fatal: weights.bin is missing' >&2; exit 3\"]\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_page_in_headless_chromium() {
    if tools().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    plugin_page_extras(tmp.path());
    let session = browser(tmp.path()).await;
    let (c, base) = (session.c.clone(), session.base.clone());

    // The word counter, stopped: its example input, its schema.
    c.goto(&format!("{base}/plugins/text_word_count")).await.unwrap();
    assert_eq!(state_of(&c).await, "stopped");
    let example = c
        .find(Locator::Css("#call-input"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(example.contains("quick brown fox"), "{example}");
    let schema = text_of(&c, "#schema-table").await;
    assert!(
        schema.contains("min_length") && schema.contains("maximum 100"),
        "{schema}"
    );
    shot(&c, "plugin-stopped").await;

    // Run while stopped: the panel says so and offers Start.
    click(&c, "#run").await;
    eventually("the not-running notice", || async {
        c.find(Locator::Css("#call-not-running")).await.is_ok_and(|_| true)
            && text_of(&c, "#call-output").await.contains("not running")
    })
    .await;
    assert!(
        c.find(Locator::Css("#call-not-running"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    shot(&c, "plugin-call-while-stopped").await;
    click(&c, "#call-start").await;
    wait_state(&c, "running").await;
    let pids = text_of(&c, "#pids").await;
    assert!(!pids.trim().is_empty(), "no pids shown");
    assert!(text_of(&c, "#uptime").await.ends_with('s'));
    shot(&c, "plugin-running").await;

    // Client-side JSON checking.
    set_input(&c, "{\"text\": ").await;
    eventually("the JSON error", || async {
        text_of(&c, "#input-check").await.contains("Not valid JSON")
    })
    .await;
    assert!(!c.find(Locator::Css("#run")).await.unwrap().is_enabled().await.unwrap());
    shot(&c, "plugin-json-invalid").await;

    // A call from the panel: its output, pretty-printed, with its duration.
    set_input(&c, "{\"text\": \"one two two three three three\"}").await;
    click(&c, "#run").await;
    eventually("the call's output", || async {
        text_of(&c, "#call-status").await.starts_with("Done in")
    })
    .await;
    let out: Value = serde_json::from_str(&text_of(&c, "#call-output").await).unwrap();
    assert_eq!(out["words"], 6, "{out}");
    shot(&c, "plugin-call-output").await;

    // Stop it from its page.
    click(&c, "#state-panel button[data-action=stop]").await;
    wait_state(&c, "stopped").await;
    shot(&c, "plugin-stopped-again").await;

    // The streaming slow job: progress as it comes, cancelled mid-call.
    c.goto(&format!("{base}/plugins/demo_slow_job")).await.unwrap();
    click(&c, "#state-panel button[data-action=start]").await;
    wait_state(&c, "running").await;
    click(&c, "#run").await;
    eventually("progress", || async { progress_of(&c).await > 0.0 }).await;
    let message = text_of(&c, "#progress-message").await;
    assert!(message.contains("step"), "{message}");
    shot(&c, "plugin-streaming").await;
    click(&c, "#cancel").await;
    eventually("the call to be cancelled", || async {
        text_of(&c, "#call-status").await.starts_with("Cancelled")
    })
    .await;
    let bar = progress_of(&c).await;
    assert!(bar < 1.0, "the job ran to the end ({bar})");
    shot(&c, "plugin-cancelled").await;

    // Stopped by another client (the CLI): the page follows, no reload.
    let stop = Command::new(assert_cmd::cargo::cargo_bin("plugboard"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["stop", "demo_slow_job"])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    wait_state(&c, "stopped").await;
    assert!(
        c.find(Locator::Css("#call-not-running"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    // The log follows a new line as the worker prints it.
    c.goto(&format!("{base}/plugins/demo_chatty")).await.unwrap();
    click(&c, "#state-panel button[data-action=start]").await;
    wait_state(&c, "running").await;
    eventually("the log to follow", || async {
        match c.find(Locator::Css("#plugin-log")).await {
            Ok(e) => e.attr("data-following").await.ok().flatten().is_some(),
            Err(_) => false,
        }
    })
    .await;
    assert!(!text_of(&c, "#plugin-log").await.contains("fresh-line-42"));
    set_input(&c, "{\"say\": \"fresh-line-42\"}").await;
    click(&c, "#run").await;
    eventually("the new line in the log", || async {
        text_of(&c, "#plugin-log")
            .await
            .contains("out| chatty got fresh-line-42")
    })
    .await;
    shot(&c, "plugin-log-follow").await;
    // The stderr filter hides it.
    c.find(Locator::Css("#log-filter"))
        .await
        .unwrap()
        .select_by_value("stderr")
        .await
        .unwrap();
    eventually("the filter to hide stdout", || async {
        !text_of(&c, "#plugin-log").await.contains("fresh-line-42")
    })
    .await;
    let href = c
        .find(Locator::Css("#log-download"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert_eq!(href.as_deref(), Some("/plugins/demo_chatty/logs/download"));
    click(&c, "#state-panel button[data-action=stop]").await;
    wait_state(&c, "stopped").await;

    // A worker that fails its start: the reason and its stderr tail.
    c.goto(&format!("{base}/plugins/demo_broken")).await.unwrap();
    click(&c, "#state-panel button[data-action=start]").await;
    eventually("the stderr tail", || async {
        text_of(&c, "#stderr-tail")
            .await
            .contains("fatal: weights.bin is missing")
    })
    .await;
    assert_eq!(state_of(&c).await, "failed");
    let reason = text_of(&c, "#start-error").await;
    assert!(
        reason.contains("exit code 3") && reason.contains("weights.bin"),
        "{reason}"
    );
    shot(&c, "plugin-start-failed").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_page_in_headless_chromium() {
    if tools().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A plugin that bills 3600 USD/h, under a 4000 USD/h budget: 90 %.
    let burner = tmp.path().join("extra/burner");
    std::fs::create_dir_all(&burner).unwrap();
    std::fs::write(
        burner.join("plugin.toml"),
        "name = \"burner\"\ncategory = \"gpu\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 1\n\
         [resources]\nestimated_cost_per_hour = 3600\n[launch]\ncommand = \"sleep\"\nargs = [\"300\"]\n",
    )
    .unwrap();
    let cli = || {
        let mut c = assert_cmd::Command::cargo_bin("plugboard").unwrap();
        c.arg("--plugins")
            .arg(tmp.path().join("extra"))
            .arg("--data-dir")
            .arg(tmp.path().join("data"));
        c
    };
    cli()
        .args(["budget", "set", "category:gpu", "--max-usd-per-hour", "4000"])
        .assert()
        .success();
    let session = browser(tmp.path()).await;
    let (c, base) = (session.c.clone(), session.base.clone());
    cli().args(["start", "gpu_burner"]).assert().success();
    tokio::time::sleep(Duration::from_millis(500)).await;

    c.goto(&format!("{base}/cost")).await.unwrap();
    assert_eq!(text_of(&c, "h1").await, "Cost");
    // The chart has the burner's line.
    let lines = c
        .find_all(Locator::Css("svg#spend-chart polyline[data-plugin='gpu_burner']"))
        .await
        .unwrap();
    assert_eq!(lines.len(), 1);
    // The budget bar is at the warning level, 90 % wide.
    let bar = c
        .find(Locator::Css(".budget[data-scope='category:gpu']"))
        .await
        .unwrap();
    assert_eq!(bar.attr("data-level").await.unwrap().as_deref(), Some("warning"));
    let fill = c
        .find(Locator::Css(".budget[data-scope='category:gpu'] .fill"))
        .await
        .unwrap();
    let style = fill.attr("style").await.unwrap().unwrap_or_default();
    assert!(style.contains("width: 90.0%"), "{style}");
    let burn = text_of(&c, "#burn-rate").await;
    assert!(burn.contains("$3600/h"), "{burn}");
    shot(&c, "cost").await;
    cli().args(["stop", "gpu_burner"]).assert().success();
}
