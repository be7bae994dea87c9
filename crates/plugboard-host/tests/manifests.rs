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
