//! The unified registry: managers per category, discovery, lookups, and
//! config persistence kept true to the disk.

use plugboard_core::{
    CapabilityError, ConfigError, ExecutionMode, PluginManager, PluginMetadata, RegistryError, UnifiedPluginRegistry,
    schema_for,
};
use serde_json::{Map, Value, json};

struct ListManager {
    plugins: Vec<PluginMetadata>,
    discover_calls: usize,
}

impl ListManager {
    fn new(names: &[&str]) -> Self {
        let plugins = names
            .iter()
            .map(|n| {
                PluginMetadata::new(*n, "ignored", format!("{n} title")).with_schema(json!({
                    "type": "object",
                    "properties": {"device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"}}
                }))
            })
            .collect();
        ListManager {
            plugins,
            discover_calls: 0,
        }
    }
}

impl PluginManager for ListManager {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        self.discover_calls += 1;
        Ok(self.plugins.clone())
    }
}

struct OtherManager;

impl PluginManager for OtherManager {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Ok(vec![
            PluginMetadata::new("qwen", "", "Qwen").with_mode(ExecutionMode::CloudGpu),
        ])
    }
}

struct Failing;

impl PluginManager for Failing {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Err("plugins dir /nowhere is missing".into())
    }
}

/// Settings of the derived-schema plugin.
#[derive(schemars::JsonSchema, serde::Serialize, serde::Deserialize)]
#[schemars(title = "Whisper settings")]
#[allow(dead_code)]
struct WhisperConfig {
    /// Which device runs the model.
    #[serde(default = "cpu")]
    device: String,
    /// Beam width.
    #[schemars(range(min = 1, max = 10))]
    #[serde(default = "five")]
    beam_size: u32,
    /// Nested decoding options.
    #[serde(default)]
    decoding: Decoding,
}

/// Decoding options.
#[derive(schemars::JsonSchema, serde::Serialize, serde::Deserialize, Default)]
#[allow(dead_code)]
struct Decoding {
    /// Sampling temperature.
    #[serde(default)]
    temperature: f64,
}

fn cpu() -> String {
    "cpu".into()
}
fn five() -> u32 {
    5
}

/// A manager whose schema comes from a Rust struct (the seed's
/// dataclass_to_jsonschema counterpart).
struct DerivedManager;

impl PluginManager for DerivedManager {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Ok(vec![PluginMetadata::new("whisper", "", "Whisper")])
    }
    fn config_schema(&self, _name: &str) -> Option<Value> {
        Some(schema_for::<WhisperConfig>())
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn registration_discovers_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    let found = r
        .register_plugin_manager("transcription", ListManager::new(&["whisper", "voxtral"]), None, true)
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|p| p.category == "transcription" && !p.is_configured));
    r.register_plugin_manager("llm", OtherManager, Some("Large Language Models"), true)
        .unwrap();
    r.register_plugin_manager("empty_cat", ListManager::new(&[]), None, true)
        .unwrap();

    assert_eq!(r.categories(), ["empty_cat", "llm", "transcription"]);
    assert_eq!(r.categories_with_plugins(), ["llm", "transcription"]);
    assert_eq!(r.category_display_name("llm"), "Large Language Models");
    assert_eq!(r.category_display_name("transcription"), "Transcription");
    assert_eq!(r.category_display_name("empty_cat"), "Empty_Cat");
    assert_eq!(r.category_display_name("never registered"), "Never Registered");
    let ids: Vec<String> = r.all_plugins().iter().map(|p| p.unique_id()).collect();
    assert_eq!(ids, ["transcription_whisper", "transcription_voxtral", "llm_qwen"]);
    assert_eq!(
        r.get_plugin("llm_qwen").unwrap().execution_mode,
        ExecutionMode::CloudGpu
    );
    assert!(r.get_plugin("llm_nope").is_none());
    assert_eq!(r.plugins_by_category("transcription").len(), 2);
    assert!(r.plugins_by_category("nothing").is_empty());
    assert_eq!(r.len(), 3);
}

#[test]
fn managers_come_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("transcription", ListManager::new(&["whisper"]), None, true)
        .unwrap();
    r.register_plugin_manager("llm", OtherManager, None, false).unwrap();
    assert_eq!(r.get_manager::<ListManager>("transcription").unwrap().discover_calls, 1);
    assert!(r.get_manager::<OtherManager>("transcription").is_none());
    assert!(r.get_manager::<OtherManager>("llm").is_some());
    assert!(r.get_manager::<OtherManager>("nope").is_none());
    r.get_manager_mut::<ListManager>("transcription")
        .unwrap()
        .discover_calls = 7;
    assert_eq!(r.get_manager::<ListManager>("transcription").unwrap().discover_calls, 7);
    // auto_discover = false registers without plugins.
    assert!(r.plugins_by_category("llm").is_empty());
    assert!(r.categories().contains(&"llm".to_owned()));
}

#[test]
fn registering_a_category_again_replaces_its_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("transcription", ListManager::new(&["a", "b"]), None, true)
        .unwrap();
    r.register_plugin_manager("llm", OtherManager, None, true).unwrap();
    r.register_plugin_manager("transcription", ListManager::new(&["c"]), None, true)
        .unwrap();
    let ids: Vec<String> = r.all_plugins().iter().map(|p| p.unique_id()).collect();
    assert_eq!(ids, ["llm_qwen", "transcription_c"]);
    assert!(r.get_plugin("transcription_a").is_none());
    assert_eq!(r.get_plugin("llm_qwen").unwrap().title, "Qwen");
}

#[test]
fn discovery_failures_are_reported_with_the_category() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    let err = r.register_plugin_manager("tts", Failing, None, true).unwrap_err();
    assert!(matches!(err, RegistryError::Discovery { .. }));
    assert!(err.to_string().contains("\"tts\""));
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("/nowhere")
    );
    assert!(r.categories().is_empty());
    assert!(matches!(
        r.register_plugin_manager("", OtherManager, None, true),
        Err(RegistryError::EmptyCategory)
    ));
}

#[test]
fn is_configured_stays_true_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("transcription_whisper.json"), "{\"device\": \"cuda\"}").unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("transcription", ListManager::new(&["whisper", "voxtral"]), None, true)
        .unwrap();
    assert!(r.get_plugin("transcription_whisper").unwrap().is_configured);
    assert!(!r.get_plugin("transcription_voxtral").unwrap().is_configured);

    r.save_plugin_config("transcription_voxtral", &obj(json!({"device": "cuda"})))
        .unwrap();
    assert!(r.get_plugin("transcription_voxtral").unwrap().is_configured);
    assert!(dir.path().join("transcription_voxtral.json").is_file());
    assert_eq!(r.load_plugin_config("transcription_voxtral").unwrap()["device"], "cuda");

    assert!(r.delete_plugin_config("transcription_whisper").unwrap());
    assert!(!r.get_plugin("transcription_whisper").unwrap().is_configured);
    assert!(!r.delete_plugin_config("transcription_whisper").unwrap());

    // Another process writes a config: refresh picks it up.
    std::fs::write(dir.path().join("transcription_whisper.json"), "{}").unwrap();
    r.refresh_configured();
    assert!(r.get_plugin("transcription_whisper").unwrap().is_configured);
}

#[test]
fn saves_are_validated_against_the_plugin_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("transcription", ListManager::new(&["whisper"]), None, true)
        .unwrap();
    let err = r
        .save_plugin_config("transcription_whisper", &obj(json!({"device": "tpu"})))
        .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    assert!(!r.get_plugin("transcription_whisper").unwrap().is_configured);
    assert!(!dir.path().join("transcription_whisper.json").exists());
    assert!(
        r.validate_plugin_config("transcription_whisper", &obj(json!({"device": "cuda"})))
            .is_ok()
    );
    // Unknown ids are allowed, unvalidated, as in the seed; traversal is not.
    r.save_plugin_config("other_thing", &obj(json!({"anything": [1, 2]})))
        .unwrap();
    assert_eq!(r.load_plugin_config("other_thing").unwrap()["anything"], json!([1, 2]));
    assert!(matches!(
        r.save_plugin_config("../x", &Map::new()),
        Err(ConfigError::InvalidId(_))
    ));
    assert!(matches!(
        r.load_plugin_config("a/../../x"),
        Err(ConfigError::InvalidId(_))
    ));
    assert!(matches!(r.delete_plugin_config(".."), Err(ConfigError::InvalidId(_))));
}

#[test]
fn derived_schemas_carry_title_description_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("transcription", DerivedManager, None, true)
        .unwrap();
    let meta = r.get_plugin("transcription_whisper").unwrap();
    assert_eq!(meta.config_schema["title"], "Whisper settings");
    assert_eq!(
        meta.config_schema["description"],
        "Settings of the derived-schema plugin."
    );
    assert_eq!(
        meta.config_schema["properties"]["device"]["description"],
        "Which device runs the model."
    );
    let c = r.load_plugin_config("transcription_whisper").unwrap();
    assert_eq!(
        Value::Object(c),
        json!({"device": "cpu", "beam_size": 5, "decoding": {"temperature": 0.0}})
    );
    let err = r
        .save_plugin_config("transcription_whisper", &obj(json!({"beam_size": 11})))
        .unwrap_err();
    assert!(err.to_string().contains("/beam_size"), "{err}");
    r.save_plugin_config(
        "transcription_whisper",
        &obj(json!({"beam_size": 3, "decoding": {"temperature": 0.2}})),
    )
    .unwrap();
    let c = r.load_plugin_config("transcription_whisper").unwrap();
    assert_eq!(c["beam_size"], 3);
    assert_eq!(c["device"], "cpu");
}

#[test]
fn a_broken_plugin_schema_is_an_error_not_a_panic() {
    struct Broken;
    impl PluginManager for Broken {
        fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
            Ok(vec![
                PluginMetadata::new("bad", "", "Bad").with_schema(json!({"type": 12})),
            ])
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut r = UnifiedPluginRegistry::new(dir.path());
    r.register_plugin_manager("x", Broken, None, true).unwrap();
    let err = r.save_plugin_config("x_bad", &Map::new()).unwrap_err();
    assert!(matches!(err, ConfigError::BadSchema { .. }), "{err}");
    assert!(err.to_string().contains("x_bad"));
    assert!(r.load_plugin_config("x_bad").is_err());
}
