//! Config persistence: validation, atomic replacement under concurrent
//! writers and crashes, traversal ids, defaults, corrupt files.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use plugboard_core::{CompiledSchema, ConfigError, ConfigStore};
use serde_json::{Map, Value, json};

/// Set in a re-executed copy of this test binary to make it a writer.
const CHILD_ENV: &str = "PLUGBOARD_TEST_WRITER";

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// A config big enough that a torn write would be visible: every element of
/// `blob` carries the writer's tag.
fn tagged_config(tag: u64, round: u64) -> Map<String, Value> {
    obj(json!({"writer": tag, "round": round, "blob": vec![tag; 20_000]}))
}

/// Checks a read config is one writer's whole config.
fn assert_whole(config: &Map<String, Value>) {
    let tag = config["writer"].as_u64().unwrap();
    let blob = config["blob"].as_array().unwrap();
    assert_eq!(blob.len(), 20_000);
    assert!(
        blob.iter().all(|v| v.as_u64() == Some(tag)),
        "mixed content from several writers"
    );
}

/// Runs as a child process when CHILD_ENV is set: saves tagged configs in a
/// loop (a number of rounds, or until killed).
#[test]
fn writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split(',');
    let dir = parts.next().unwrap().to_owned();
    let tag: u64 = parts.next().unwrap().parse().unwrap();
    let rounds: u64 = parts.next().unwrap().parse().unwrap();
    let store = ConfigStore::new(dir);
    for round in 0..rounds {
        store.save("shared_plugin", &tagged_config(tag, round), None).unwrap();
    }
}

fn spawn_writer(dir: &Path, tag: u64, rounds: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{},{tag},{rounds}", dir.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_writers_in_separate_processes_never_tear() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    let mut writers: Vec<Child> = (1..=4).map(|tag| spawn_writer(dir.path(), tag, 40)).collect();
    let mut reads = 0;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = store.load("shared_plugin").unwrap();
        if !c.is_empty() {
            assert_whole(&c);
            seen.insert(c["writer"].as_u64().unwrap());
            reads += 1;
        }
        let all_done = writers.iter_mut().all(|w| w.try_wait().unwrap().is_some());
        if all_done || Instant::now() > deadline {
            break;
        }
    }
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    assert!(reads > 0);
    let last = store.load("shared_plugin").unwrap();
    assert_whole(&last);
    assert_eq!(last["round"], 39);
    // No temp file is left behind by finished writers.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("shared_plugin.json")],
        "seen writers: {seen:?}"
    );
}

#[test]
fn a_writer_killed_mid_save_leaves_a_whole_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    store.save("shared_plugin", &tagged_config(0, 0), None).unwrap();
    for i in 0..12u64 {
        let mut child = spawn_writer(dir.path(), i + 1, 1_000_000);
        // Let it get into its save loop, then SIGKILL it at an arbitrary point.
        std::thread::sleep(Duration::from_millis(30 + (i * 37) % 90));
        child.kill().unwrap();
        child.wait().unwrap();
        let c = store.load("shared_plugin").unwrap();
        assert_whole(&c);
        assert!(c["writer"].as_u64().unwrap() <= i + 1);
    }
    // Stray temp files from killed writers are not configs.
    assert_eq!(store.ids().unwrap(), ["shared_plugin"]);
}

#[test]
fn a_stale_temp_file_does_not_replace_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    let good = obj(json!({"device": "cuda"}));
    store.save("stt_whisper", &good, None).unwrap();
    // What a crash between writing the temp file and the rename leaves.
    std::fs::write(dir.path().join(".stt_whisper.json.ab12cd.tmp"), b"{\"device\": \"tp").unwrap();
    assert_eq!(store.load("stt_whisper").unwrap(), good);
    assert_eq!(store.ids().unwrap(), ["stt_whisper"]);
    let newer = obj(json!({"device": "cpu"}));
    store.save("stt_whisper", &newer, None).unwrap();
    assert_eq!(store.load("stt_whisper").unwrap(), newer);
}

fn schema() -> CompiledSchema {
    CompiledSchema::compile(
        "stt_whisper",
        &json!({
            "type": "object",
            "properties": {
                "device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"},
                "beam_size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
                "language": {"type": "string"},
                "decoding": {
                    "type": "object",
                    "properties": {
                        "temperature": {"type": "number", "default": 0.0},
                        "best_of": {"type": "integer", "default": 1}
                    },
                    "default": {}
                }
            },
            "required": ["language"],
            "additionalProperties": false
        }),
    )
    .unwrap()
}

#[test]
fn invalid_config_is_refused_with_every_violation_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    let s = schema();
    store
        .save("stt_whisper", &obj(json!({"language": "en"})), Some(&s))
        .unwrap();
    let before = std::fs::read(dir.path().join("stt_whisper.json")).unwrap();
    let bad = obj(json!({"device": "tpu", "beam_size": 0, "colour": "red", "decoding": {"best_of": "two"}}));
    let err = store.save("stt_whisper", &bad, Some(&s)).unwrap_err();
    let ConfigError::Invalid { unique_id, violations } = &err else {
        panic!("{err}")
    };
    assert_eq!(unique_id, "stt_whisper");
    let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["", "", "/beam_size", "/decoding/best_of", "/device"],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("5 violations") && text.contains("language") && text.contains("colour"),
        "{text}"
    );
    assert_eq!(std::fs::read(dir.path().join("stt_whisper.json")).unwrap(), before);
}

#[test]
fn load_fills_defaults_without_overriding() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    let s = schema();
    store
        .save(
            "stt_whisper",
            &obj(json!({"language": "fr", "decoding": {"best_of": 3}})),
            Some(&s),
        )
        .unwrap();
    let c = store.load_with_defaults("stt_whisper", Some(&s)).unwrap();
    assert_eq!(
        Value::Object(c),
        json!({"language": "fr", "device": "cpu", "beam_size": 5, "decoding": {"best_of": 3, "temperature": 0.0}})
    );
    // The file itself keeps what was saved.
    assert_eq!(store.load("stt_whisper").unwrap().len(), 2);
    // A missing file is {} plus defaults (the nested default is filled too).
    let c = store.load_with_defaults("stt_other", Some(&s)).unwrap();
    assert_eq!(
        Value::Object(c),
        json!({"device": "cpu", "beam_size": 5, "decoding": {"temperature": 0.0, "best_of": 1}})
    );
}

#[test]
fn traversal_and_unusable_ids_are_refused_for_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("configs");
    let store = ConfigStore::new(&inner);
    let long = "a".repeat(201);
    let bad = [
        "",
        "..",
        "../escape",
        "a/b",
        "a\\b",
        "a\0b",
        ".hidden",
        "x..y",
        "tab\tid",
        long.as_str(),
        "/etc/passwd",
    ];
    for id in bad {
        assert!(
            matches!(store.save(id, &Map::new(), None), Err(ConfigError::InvalidId(_))),
            "{id:?}"
        );
        assert!(matches!(store.load(id), Err(ConfigError::InvalidId(_))), "{id:?}");
        assert!(matches!(store.delete(id), Err(ConfigError::InvalidId(_))), "{id:?}");
        assert!(matches!(store.exists(id), Err(ConfigError::InvalidId(_))), "{id:?}");
    }
    // Nothing was created anywhere.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let err = store.load("../escape").unwrap_err().to_string();
    assert!(err.contains("../escape") && err.contains("path separator"), "{err}");
    // Ordinary, unknown and unicode ids are fine.
    for id in ["stt_whisper", "llm_qwen-2.5", "tts_voix_française"] {
        store.save(id, &obj(json!({"k": 1})), None).unwrap();
        assert_eq!(store.load(id).unwrap()["k"], 1);
    }
}

#[test]
fn corrupt_files_name_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    std::fs::write(
        dir.path().join("stt_whisper.json"),
        "{\n  \"device\": \"cpu\",\n  oops\n}",
    )
    .unwrap();
    let err = store.load("stt_whisper").unwrap_err();
    let ConfigError::Corrupt { path, line, column, .. } = &err else {
        panic!("{err}")
    };
    assert!(path.ends_with("stt_whisper.json"));
    assert_eq!((*line, *column), (3, 3));
    assert!(
        err.to_string()
            .contains("stt_whisper.json is corrupt at line 3, column 3"),
        "{err}"
    );
    std::fs::write(dir.path().join("stt_list.json"), "[1, 2]").unwrap();
    let err = store.load("stt_list").unwrap_err().to_string();
    assert!(err.contains("expected a JSON object, found an array"), "{err}");
    // The corrupt file is still there, untouched.
    assert!(
        std::fs::read_to_string(dir.path().join("stt_whisper.json"))
            .unwrap()
            .contains("oops")
    );
}

#[test]
fn saved_files_are_pretty_json_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path().join("nested/configs"));
    store
        .save("stt_whisper", &obj(json!({"device": "cuda", "beam": 2})), None)
        .unwrap();
    let path = dir.path().join("nested/configs/stt_whisper.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "{\n  \"device\": \"cuda\",\n  \"beam\": 2\n}\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(store.delete("stt_whisper").unwrap());
    assert!(!store.delete("stt_whisper").unwrap());
}

#[test]
fn draft_7_schemas_are_honoured() {
    // In draft 7 keywords beside $ref are ignored; in 2020-12 they apply.
    let body = |schema_uri: &str| {
        json!({
            "$schema": schema_uri,
            "type": "object",
            "properties": {"name": {"$ref": "#/definitions/s", "maxLength": 2}},
            "definitions": {"s": {"type": "string"}}
        })
    };
    let d7 = CompiledSchema::compile("x", &body("http://json-schema.org/draft-07/schema#")).unwrap();
    let d2020 = CompiledSchema::compile("x", &body("https://json-schema.org/draft/2020-12/schema")).unwrap();
    let long = json!({"name": "abcdef"});
    assert!(d7.violations(&long).is_empty());
    assert_eq!(d2020.violations(&long).len(), 1);
    assert_eq!(d7.violations(&json!({"name": 5}))[0].pointer, "/name");
}

#[test]
fn a_broken_schema_is_reported() {
    let err = CompiledSchema::compile("stt_bad", &json!({"type": "strang"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stt_bad") && err.contains("not a valid JSON Schema"),
        "{err}"
    );
}
