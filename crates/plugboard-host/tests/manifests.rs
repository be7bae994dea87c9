//! Manifests: discovery without starting anything, every bad manifest
//! reported with its path and reason, the good ones still loaded.

mod common;

use std::path::Path;

use common::*;
use plugboard_core::{ExecutionMode, UnifiedPluginRegistry};
use plugboard_host::manifest::{Ready, RestartPolicy};
use plugboard_host::{Catalog, Manifest, ManifestManager};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const GOOD: &str = r#"
name = "whisper"
category = "stt"
title = "Whisper <b>large</b>"
version = "1.2.0"
description = "Speech to text"
execution_mode = "subprocess"
ready = { http_get = "http://127.0.0.1:9000/health" }
ready_timeout_s = 120
stop_grace_s = 2.5

[launch]
command = "./serve.sh"
args = ["--model", "large"]
env = { HF_HOME = "/models" }
cwd = "work"

[config_schema]
type = "object"
required = ["device"]
[config_schema.properties.device]
type = "string"
enum = ["cpu", "cuda"]
default = "cpu"

[resources]
gpu_count = 1
gpu_type = "A10"
memory_gb = 12
estimated_cost_per_hour = 0.0

[restart]
policy = "on-failure"
max_restarts = 2
"#;

#[test]
fn a_full_manifest_parses_into_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "whisper/plugin.toml", GOOD);
    let m = Manifest::load(&tmp.path().join("whisper/plugin.toml")).unwrap();
    assert_eq!(m.unique_id(), "stt_whisper");
    assert_eq!(m.ready, Ready::HttpGet("http://127.0.0.1:9000/health".into()));
    assert_eq!((m.ready_timeout_s, m.stop_grace_s), (120.0, 2.5));
    assert_eq!(m.launch.args, ["--model", "large"]);
    assert_eq!(m.launch.env["HF_HOME"], "/models");
    assert_eq!(m.resources.gpu_count, 1);
    assert_eq!(m.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(m.config_schema["properties"]["device"]["default"], "cpu");
    let meta = m.metadata();
    assert_eq!(meta.execution_mode, ExecutionMode::Subprocess);
    assert_eq!(meta.title, "Whisper <b>large</b>");
    assert_eq!(meta.version.as_deref(), Some("1.2.0"));
    assert!(meta.manages_child_processes && meta.manages_external_resources);
    assert!(meta.spawned_pids.is_empty());
}

#[test]
fn defaults_apply_to_a_minimal_manifest() {
    let m = Manifest::parse(Path::new("/x/plugin.toml"), "name = \"a\"\ncategory = \"b\"\n").unwrap();
    assert_eq!(m.title, "a");
    assert_eq!(m.execution_mode, ExecutionMode::InProcess);
    assert_eq!(m.ready, Ready::Protocol);
    assert_eq!((m.ready_timeout_s, m.stop_grace_s), (30.0, 5.0));
    assert_eq!(m.config_schema, serde_json::json!({"type": "object", "properties": {}}));
    assert_eq!(m.restart.policy, RestartPolicy::Never);
}

#[test]
fn every_bad_manifest_is_reported_and_the_good_ones_load() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "good/plugin.toml", GOOD);
    write(
        root,
        "nested/group/also_good/plugin.toml",
        "name = \"other\"\ncategory = \"stt\"\nexecution_mode = \"cloud_gpu\"\n",
    );
    write(root, "syntax/plugin.toml", "name = \"x\"\ncategory = \n");
    write(
        root,
        "mode/plugin.toml",
        "name = \"x\"\ncategory = \"c\"\nexecution_mode = \"gpu_farm\"\n",
    );
    write(root, "missing/plugin.toml", "category = \"c\"\n");
    write(
        root,
        "unknown_key/plugin.toml",
        "name = \"x\"\ncategory = \"c\"\ntitel = \"typo\"\n",
    );
    write(
        root,
        "bad_schema/plugin.toml",
        "name = \"x\"\ncategory = \"c\"\n[config_schema]\ntype = \"strang\"\n",
    );
    write(
        root,
        "bad_schema_file/plugin.toml",
        "name = \"y\"\ncategory = \"c\"\nconfig_schema_file = \"schema.json\"\n",
    );
    write(root, "bad_schema_file/schema.json", "{\"type\": \"object\",");
    write(
        root,
        "bad_regex/plugin.toml",
        "name = \"z\"\ncategory = \"c\"\nready = { log_line = \"(unclosed\" }\n",
    );
    write(root, "bad_name/plugin.toml", "name = \"../../etc\"\ncategory = \"c\"\n");
    write(
        root,
        "bad_ready/plugin.toml",
        "name = \"w\"\ncategory = \"c\"\nready = \"sometimes\"\n",
    );
    write(
        root,
        "bad_timeout/plugin.toml",
        "name = \"v\"\ncategory = \"c\"\nready_timeout_s = -1\n",
    );
    write(root, "zz_dup/plugin.toml", "name = \"whisper\"\ncategory = \"stt\"\n");
    write(root, ".hidden/plugin.toml", "this is ignored");
    write(root, "binary/plugin.toml", "\u{0}\u{1}garbage");

    let catalog = Catalog::scan(&[root.to_path_buf(), root.join("does-not-exist")]);
    let ids: Vec<String> = catalog.manifests.iter().map(Manifest::unique_id).collect();
    assert_eq!(ids, ["stt_whisper", "stt_other"], "{:#?}", catalog.problems);
    let find = |dir: &str| {
        catalog
            .problems
            .iter()
            .find(|p| p.path.to_string_lossy().contains(&format!("/{dir}")))
            .unwrap_or_else(|| panic!("no problem reported for {dir}: {:#?}", catalog.problems))
            .to_string()
    };
    assert!(find("syntax/plugin.toml").contains("line 2"), "{}", find("syntax/"));
    assert!(
        find("mode/").contains("gpu_farm") && find("mode/").contains("in_process"),
        "{}",
        find("mode/")
    );
    assert!(find("missing/").contains("name"), "{}", find("missing/"));
    assert!(find("unknown_key/").contains("titel"), "{}", find("unknown_key/"));
    assert!(
        find("bad_schema/").contains("not a valid JSON Schema"),
        "{}",
        find("bad_schema/")
    );
    assert!(
        find("bad_schema_file/").contains("schema.json is not JSON"),
        "{}",
        find("bad_schema_file/")
    );
    assert!(
        find("bad_regex/").contains("not a valid regex"),
        "{}",
        find("bad_regex/")
    );
    assert!(
        find("bad_name/").contains("name \"../../etc\""),
        "{}",
        find("bad_name/")
    );
    assert!(find("bad_ready/").contains("sometimes"), "{}", find("bad_ready/"));
    assert!(
        find("bad_timeout/").contains("ready_timeout_s"),
        "{}",
        find("bad_timeout/")
    );
    assert!(
        find("zz_dup/").contains("duplicate plugin id stt_whisper"),
        "{}",
        find("zz_dup/")
    );
    assert!(find("binary/").contains("plugin.toml"), "{}", find("binary/"));
    assert!(find("does-not-exist").contains("does not exist"));
    for p in &catalog.problems {
        println!("{p}");
    }
    assert_eq!(catalog.problems.len(), 13, "{:#?}", catalog.problems);
    // Problems are one line each.
    assert!(
        catalog.problems.iter().all(|p| !p.to_string().contains('\n')),
        "{:#?}",
        catalog.problems
    );
}

#[test]
fn the_manager_feeds_the_registry_per_category_without_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "plugins/a/plugin.toml", GOOD);
    write(
        tmp.path(),
        "plugins/b/plugin.toml",
        "name = \"qwen\"\ncategory = \"llm\"\nexecution_mode = \"cloud_gpu\"\n[launch]\nprovider = \"runpod\"\n",
    );
    write(
        tmp.path(),
        "plugins/c/plugin.toml",
        "name = \"broken\"\ncategory = \"llm\"\nexecution_mode = 3\n",
    );
    let paths = vec![tmp.path().join("plugins")];
    let catalog = Catalog::scan(&paths);
    let mut registry = UnifiedPluginRegistry::new(tmp.path().join("configs"));
    for category in catalog.categories() {
        registry
            .register_plugin_manager(
                &category,
                ManifestManager::new(paths.clone()).for_category(&category),
                None,
                true,
            )
            .unwrap();
    }
    assert_eq!(registry.categories(), ["llm", "stt"]);
    let qwen = registry.get_plugin("llm_qwen").unwrap();
    assert_eq!(qwen.execution_mode, ExecutionMode::CloudGpu);
    assert!(qwen.is_cloud_execution());
    let mgr = registry.get_manager::<ManifestManager>("llm").unwrap();
    assert_eq!(mgr.problems().len(), 1);
    assert!(
        mgr.catalog()
            .get("llm_qwen")
            .unwrap()
            .launch
            .extra
            .contains_key("provider")
    );
    // Configs validate against the manifest's schema.
    let bad = serde_json::json!({"device": "tpu"}).as_object().cloned().unwrap();
    assert!(registry.save_plugin_config("stt_whisper", &bad).is_err());
}

#[test]
fn the_bundled_examples_load() {
    let catalog = Catalog::scan(&[workspace_root().join("examples/plugins")]);
    assert!(catalog.problems.is_empty(), "{:#?}", catalog.problems);
    assert!(catalog.get("demo_process_tree").is_some());
}

// ---- Issue 10: one scan, FIFOs, symlinked folders, schema error locations ----

/// Runs `f` on another thread; fails the test (instead of hanging it) when
/// `f` has not returned in 20 s.
fn within_20s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s"))
}

/// A tracing subscriber that keeps the message of every event.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl Events {
    fn count(&self, level: tracing::Level, message: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == level && m == message)
            .count()
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push((*event.metadata().level(), m.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn discovery_scans_the_plugins_dirs_once_for_all_categories_defect_9() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    for i in 0..40 {
        write(
            &plugins,
            &format!("p{i:02}/plugin.toml"),
            &format!("name = \"p{i}\"\ncategory = \"cat{i:02}\"\n"),
        );
    }
    write(&plugins, "broken/plugin.toml", "name = \"x\"\ncategory = \n");
    let events = Events::default();
    // tracing caches per call site whether anyone listens; while a single
    // dispatcher is registered, other test threads' first events decide that
    // with their own (empty) default. A second live dispatcher makes every
    // decision consult all of them, so no event of this thread is dropped.
    let _second = tracing::Dispatch::new(Events::default());
    let ours = tracing::Dispatch::new(events.clone());
    tracing::callsite::rebuild_interest_cache();
    let dirs = vec![plugins.clone()];
    let (registry, catalog) = tracing::dispatcher::with_default(&ours, || {
        plugboard_host::registry_for(&dirs, tmp.path().join("configs"))
    });
    assert_eq!(
        events.count(tracing::Level::DEBUG, "scanned plugins dirs"),
        1,
        "one scan for 40 categories"
    );
    assert_eq!(
        events.count(tracing::Level::WARN, "bad plugin manifest"),
        0,
        "problems are the caller's to report, once"
    );
    assert_eq!(catalog.problems.len(), 1, "{:#?}", catalog.problems);
    assert_eq!(registry.len(), 40);
    assert_eq!(registry.categories().len(), 40);
    for i in 0..40 {
        let category = format!("cat{i:02}");
        let m = registry.get_manager::<ManifestManager>(&category).unwrap();
        let ids: Vec<String> = m.catalog().manifests.iter().map(Manifest::unique_id).collect();
        assert_eq!(ids, [format!("{category}_p{i}")]);
        assert!(m.problems().is_empty());
    }
    // The per-category schema is the manifest's.
    assert!(registry.compiled_schema("cat07_p7").unwrap().is_some());
}

#[test]
fn a_fifo_schema_file_is_refused_without_blocking_defect_11() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    write(
        &root,
        "fifo/plugin.toml",
        "name = \"f\"\ncategory = \"c\"\nconfig_schema_file = \"schema.json\"\n",
    );
    let schema = root.join("fifo/schema.json");
    nix::unistd::mkfifo(&schema, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    write(&root, "good/plugin.toml", "name = \"g\"\ncategory = \"c\"\n");
    let scan_root = root.clone();
    let catalog = within_20s("scanning a plugin with a FIFO schema file", move || {
        Catalog::scan(&[scan_root])
    });
    let ids: Vec<String> = catalog.manifests.iter().map(Manifest::unique_id).collect();
    assert_eq!(ids, ["c_g"]);
    assert_eq!(catalog.problems.len(), 1, "{:#?}", catalog.problems);
    let p = catalog.problems[0].to_string();
    assert!(
        p.contains(&schema.display().to_string()) && p.contains("FIFO") && p.contains("config_schema_file"),
        "{p}"
    );
    // A FIFO named plugin.toml is reported too, not waited on.
    let fifo_manifest = root.join("fifo_manifest/plugin.toml");
    std::fs::create_dir_all(fifo_manifest.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo_manifest, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let catalog = within_20s("scanning a FIFO plugin.toml", move || Catalog::scan(&[root]));
    let p = catalog
        .problems
        .iter()
        .find(|p| p.path == fifo_manifest)
        .unwrap_or_else(|| panic!("{:#?}", catalog.problems))
        .to_string();
    assert!(p.contains("FIFO"), "{p}");
}

#[test]
fn symlinked_plugin_folders_are_followed_and_loops_reported_defect_14() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("plugins");
    let elsewhere = tmp.path().join("elsewhere");
    write(
        &elsewhere,
        "linked/plugin.toml",
        "name = \"linked\"\ncategory = \"c\"\n",
    );
    write(
        &elsewhere,
        "group/deep/plugin.toml",
        "name = \"deep\"\ncategory = \"c\"\n",
    );
    write(&root, "plain/plugin.toml", "name = \"plain\"\ncategory = \"c\"\n");
    std::fs::create_dir_all(root.join("loops/inner")).unwrap();
    symlink(elsewhere.join("linked"), root.join("linked")).unwrap();
    symlink(elsewhere.join("group"), root.join("group")).unwrap();
    // A loop: a link back to a folder being scanned.
    symlink(root.join("loops"), root.join("loops/inner/back")).unwrap();
    symlink(&root, root.join("loops/to_root")).unwrap();
    // A dangling link.
    symlink(tmp.path().join("nowhere"), root.join("dangling")).unwrap();
    let scan_root = root.clone();
    let catalog = within_20s("scanning with symlink loops", move || Catalog::scan(&[scan_root]));
    let mut ids: Vec<String> = catalog.manifests.iter().map(Manifest::unique_id).collect();
    ids.sort();
    assert_eq!(ids, ["c_deep", "c_linked", "c_plain"], "{:#?}", catalog.problems);
    let about = |name: &str| -> Vec<String> {
        catalog
            .problems
            .iter()
            .filter(|p| p.path == root.join(name))
            .map(ToString::to_string)
            .collect()
    };
    let back = about("loops/inner/back");
    assert!(back.len() == 1 && back[0].contains("loop"), "{:#?}", catalog.problems);
    let to_root = about("loops/to_root");
    assert!(
        to_root.len() == 1 && to_root[0].contains("loop"),
        "{:#?}",
        catalog.problems
    );
    let dangling = about("dangling");
    assert!(
        dangling.len() == 1 && dangling[0].contains("broken symbolic link"),
        "{:#?}",
        catalog.problems
    );
    assert_eq!(catalog.problems.len(), 3, "{:#?}", catalog.problems);
}

#[test]
fn a_folder_reached_twice_is_scanned_once_defect_14() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("plugins");
    write(&root, "a/plugin.toml", "name = \"a\"\ncategory = \"c\"\n");
    symlink(root.join("a"), root.join("b")).unwrap();
    let catalog = Catalog::scan(&[root.clone(), root.clone()]);
    let ids: Vec<String> = catalog.manifests.iter().map(Manifest::unique_id).collect();
    assert_eq!(ids, ["c_a"]);
    // Not a "duplicate plugin id": the second path is named as the same folder.
    assert!(
        catalog.problems.iter().all(|p| p.reason.contains("same folder")),
        "{:#?}",
        catalog.problems
    );
    assert_eq!(catalog.problems.len(), 2, "{:#?}", catalog.problems);
}

#[test]
fn invalid_schemas_say_where_and_in_which_file_defect_13() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        root,
        "inline/plugin.toml",
        "name = \"i\"\ncategory = \"c\"\n[config_schema]\ntype = \"object\"\n[config_schema.properties.n]\ntype = \"strang\"\n",
    );
    write(
        root,
        "file/plugin.toml",
        "name = \"f\"\ncategory = \"c\"\nconfig_schema_file = \"schema.json\"\n",
    );
    write(
        root,
        "file/schema.json",
        r#"{"type": "object", "properties": {"a": {"properties": {"b": {"minimum": "zero"}}}}}"#,
    );
    let catalog = Catalog::scan(&[root.to_path_buf()]);
    assert_eq!(catalog.problems.len(), 2, "{:#?}", catalog.problems);
    let inline = catalog
        .problems
        .iter()
        .find(|p| p.path.ends_with("inline/plugin.toml"))
        .unwrap();
    let text = inline.to_string();
    assert!(
        text.contains("[config_schema]") && text.contains("/properties/n/type"),
        "{text}"
    );
    let file = catalog
        .problems
        .iter()
        .find(|p| p.path.ends_with("file/plugin.toml"))
        .unwrap();
    let text = file.to_string();
    assert!(
        text.contains(&root.join("file/schema.json").display().to_string())
            && text.contains("/properties/a/properties/b/minimum"),
        "{text}"
    );
}
