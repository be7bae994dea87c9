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
    // No temp file is left behind by finished writers (the lock file stays:
    // removing it would let two writers lock two different files).
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        vec![
            std::ffi::OsString::from(".shared_plugin.json.lock"),
            std::ffi::OsString::from("shared_plugin.json")
        ],
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

// ---- Issue 10: read-modify-write under a lock, size limit, FIFOs ----

/// Set in a re-executed copy of this test binary to make it an updater.
const UPDATER_ENV: &str = "PLUGBOARD_TEST_UPDATER";

/// Runs as a child process when UPDATER_ENV is set: waits for the go file,
/// then appends each round's number to its own key, one locked update per
/// round.
#[test]
fn updater_child() {
    let Ok(spec) = std::env::var(UPDATER_ENV) else { return };
    let mut parts = spec.split(',');
    let dir = parts.next().unwrap().to_owned();
    let key = parts.next().unwrap().to_owned();
    let rounds: u64 = parts.next().unwrap().parse().unwrap();
    let go = Path::new(&dir).join("go");
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let store = ConfigStore::new(&dir);
    for round in 0..rounds {
        store
            .update("shared_plugin", None, |c| {
                let list = c.entry(key.clone()).or_insert_with(|| json!([]));
                list.as_array_mut().unwrap().push(json!(round));
                Ok::<_, ConfigError>(())
            })
            .unwrap();
    }
}

#[test]
fn concurrent_config_set_keeps_every_key_defect_7() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = 10;
    let mut children: Vec<(String, Child)> = (0..8)
        .map(|i| {
            let key = format!("key{i}");
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "updater_child", "--nocapture", "--test-threads=1"])
                .env(UPDATER_ENV, format!("{},{key},{rounds}", dir.path().display()))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (key, child)
        })
        .collect();
    // All eight start their read-modify-writes at once.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path().join("go"), b"").unwrap();
    for (key, child) in &mut children {
        assert!(child.wait().unwrap().success(), "updater {key} failed");
    }
    let config = ConfigStore::new(dir.path()).load("shared_plugin").unwrap();
    for (key, _) in &children {
        let rounds_seen: Vec<u64> = config[key.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{key} was lost: {config:?}"))
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            rounds_seen,
            (0..rounds).collect::<Vec<_>>(),
            "updates of {key} were lost"
        );
    }
    assert_eq!(config.len(), 8);
}

#[test]
fn concurrent_registry_updates_from_threads_keep_every_key_defect_7() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.path().to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut registry = plugboard_core::UnifiedPluginRegistry::new(dir);
                barrier.wait();
                registry
                    .update_plugin_config("stt_whisper", |c| {
                        c.insert(format!("key{i}"), json!(i));
                        Ok::<_, ConfigError>(())
                    })
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let config = ConfigStore::new(dir.path()).load("stt_whisper").unwrap();
    let keys: Vec<&String> = config.keys().collect();
    assert_eq!(keys.len(), 8, "{config:?}");
}

#[test]
fn an_update_that_fails_or_is_invalid_writes_nothing_defect_7() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    store.save("stt_whisper", &obj(json!({"device": "cpu"})), None).unwrap();
    #[derive(Debug)]
    enum Mine {
        Refused,
        Config(ConfigError),
    }
    impl From<ConfigError> for Mine {
        fn from(e: ConfigError) -> Self {
            Mine::Config(e)
        }
    }
    let r = store.update("stt_whisper", None, |c| {
        c.insert("device".into(), json!("cuda"));
        Err(Mine::Refused)
    });
    assert!(matches!(r, Err(Mine::Refused)));
    let r = store.update("stt_whisper", Some(&schema()), |c| {
        c.insert("device".into(), json!("tpu"));
        Ok::<_, Mine>(())
    });
    assert!(matches!(r, Err(Mine::Config(ConfigError::Invalid { .. }))), "{r:?}");
    assert_eq!(store.load("stt_whisper").unwrap(), obj(json!({"device": "cpu"})));
}

#[test]
fn a_held_lock_times_out_with_a_clear_error_defect_7() {
    let dir = tempfile::tempdir().unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            ConfigStore::new(dir)
                .update("stt_whisper", None, |_| {
                    locked_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok::<_, ConfigError>(())
                })
                .unwrap();
        })
    };
    locked_rx.recv().unwrap();
    let impatient = ConfigStore::new(dir.path()).with_lock_timeout(Duration::from_millis(100));
    let err = impatient
        .update("stt_whisper", None, |_| Ok::<_, ConfigError>(()))
        .unwrap_err();
    let ConfigError::Locked { path, lock, .. } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(path, &dir.path().join("stt_whisper.json"));
    assert_eq!(lock, &dir.path().join(".stt_whisper.json.lock"));
    let text = err.to_string();
    assert!(
        text.contains("stt_whisper.json") && text.contains("another process"),
        "{text}"
    );
    assert!(matches!(
        impatient.save("stt_whisper", &Map::new(), None),
        Err(ConfigError::Locked { .. })
    ));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    // Released: the next writer goes through, and the lock file is no config.
    impatient.save("stt_whisper", &Map::new(), None).unwrap();
    assert_eq!(ConfigStore::new(dir.path()).ids().unwrap(), ["stt_whisper"]);
}

#[test]
fn configs_over_the_size_limit_are_refused_at_save_defect_13() {
    use plugboard_core::config_store::MAX_CONFIG_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path());
    let small = obj(json!({"device": "cpu"}));
    store.save("stt_whisper", &small, None).unwrap();
    let big = obj(json!({"blob": "x".repeat(MAX_CONFIG_BYTES)}));
    let err = store.save("stt_whisper", &big, None).unwrap_err();
    let ConfigError::TooLarge { size, limit, .. } = &err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(*size > MAX_CONFIG_BYTES as u64);
    assert_eq!(*limit, MAX_CONFIG_BYTES as u64);
    let text = err.to_string();
    assert!(
        text.contains(&size.to_string()) && text.contains(&MAX_CONFIG_BYTES.to_string()),
        "{text}"
    );
    assert_eq!(store.load("stt_whisper").unwrap(), small, "the old file stays");
    // The same through update, and a file made too large by hand is not loaded.
    let err = store
        .update("stt_whisper", None, |c| {
            c.insert("blob".into(), json!("x".repeat(MAX_CONFIG_BYTES)));
            Ok::<_, ConfigError>(())
        })
        .unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
    let mut text = String::from("{\"blob\": \"");
    text.push_str(&"x".repeat(MAX_CONFIG_BYTES));
    text.push_str("\"}");
    std::fs::write(dir.path().join("stt_whisper.json"), text).unwrap();
    assert!(matches!(store.load("stt_whisper"), Err(ConfigError::TooLarge { .. })));
    // Just under the limit is fine.
    let fits = obj(json!({"blob": "x".repeat(MAX_CONFIG_BYTES - 64)}));
    store.save("stt_whisper", &fits, None).unwrap();
    assert_eq!(store.load("stt_whisper").unwrap(), fits);
}

/// Runs `f` on another thread; fails the test (instead of hanging it) when
/// `f` has not returned in 20 s.
fn within_20s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s"))
}

#[test]
fn a_fifo_config_file_is_refused_without_blocking_defect_11() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stt_whisper.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let store = ConfigStore::new(dir.path());
    let s = store.clone();
    let err = within_20s("loading a FIFO config", move || s.load("stt_whisper")).unwrap_err();
    let ConfigError::NotAFile { path, kind } = &err else {
        panic!("expected NotAFile, got {err:?}");
    };
    assert_eq!(path, &fifo);
    assert!(kind.contains("FIFO"), "{kind}");
    let text = err.to_string();
    assert!(
        text.contains(&fifo.display().to_string()) && text.contains("FIFO"),
        "{text}"
    );
    // Through the registry (defaults) and a read-modify-write too.
    let s = store.clone();
    let r = within_20s("updating a FIFO config", move || {
        s.update("stt_whisper", None, |_| Ok::<_, ConfigError>(()))
    });
    assert!(matches!(r, Err(ConfigError::NotAFile { .. })), "{r:?}");
    let d = dir.path().to_path_buf();
    let r = within_20s("registry load of a FIFO config", move || {
        plugboard_core::UnifiedPluginRegistry::new(d).load_plugin_config("stt_whisper")
    });
    assert!(matches!(r, Err(ConfigError::NotAFile { .. })), "{r:?}");
    // A directory and a socket are refused the same way.
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    assert!(matches!(
        store.load("stt_whisper"),
        Err(ConfigError::NotAFile {
            kind: "a directory",
            ..
        })
    ));
    std::fs::remove_dir(&fifo).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(&fifo).unwrap();
    assert!(matches!(
        store.load("stt_whisper"),
        Err(ConfigError::NotAFile { kind: "a socket", .. })
    ));
}

#[test]
fn a_symlinked_config_file_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("elsewhere.json.txt");
    std::fs::write(&real, b"{\"device\": \"cuda\"}").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("stt_whisper.json")).unwrap();
    let store = ConfigStore::new(dir.path());
    assert_eq!(store.load("stt_whisper").unwrap(), obj(json!({"device": "cuda"})));
}
