//! JSON Schema for plugin configs: compile, validate (every violation, with
//! its JSON pointer), fill defaults, and derive a schema from a Rust type.
//!
//! Validation uses the `jsonschema` crate, which reads `$schema` to pick the
//! draft (2020-12 when absent, draft 7 and others when declared). Derivation
//! uses `schemars`, the counterpart of the seed's `dataclass_to_jsonschema`.

use serde_json::{Map, Value};

use crate::error::{ConfigError, Violation};

/// How deep default filling follows nested objects and `$ref`s before it
/// stops (a guard against recursive schemas).
const MAX_DEPTH: usize = 32;

/// A plugin's config schema, compiled once and reused for every validation.
///
/// ```
/// use plugboard_core::schema::CompiledSchema;
/// use serde_json::json;
///
/// let schema = json!({
///     "type": "object",
///     "properties": {
///         "device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"},
///         "beam": {"type": "integer", "minimum": 1, "default": 5}
///     }
/// });
/// let s = CompiledSchema::compile("transcription_whisper", &schema).unwrap();
/// let errors = s.violations(&json!({"device": "tpu", "beam": 0}));
/// assert_eq!(errors.len(), 2);
/// assert_eq!(errors[0].pointer, "/beam");
///
/// let mut config = json!({"beam": 3}).as_object().unwrap().clone();
/// s.fill_defaults(&mut config);
/// assert_eq!(config["device"], "cpu");
/// assert_eq!(config["beam"], 3);
/// ```
#[derive(Debug)]
pub struct CompiledSchema {
    raw: Value,
    validator: jsonschema::Validator,
}

impl CompiledSchema {
    /// Compiles `schema`; `unique_id` names the plugin in the error.
    pub fn compile(unique_id: &str, schema: &Value) -> Result<Self, ConfigError> {
        let validator = jsonschema::validator_for(schema).map_err(|e| ConfigError::BadSchema {
            unique_id: unique_id.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(CompiledSchema {
            raw: schema.clone(),
            validator,
        })
    }

    /// The schema as given.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Every violation of `instance`, sorted by pointer; empty when valid.
    pub fn violations(&self, instance: &Value) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .validator
            .iter_errors(instance)
            .map(|e| Violation {
                pointer: e.instance_path().as_str().to_owned(),
                reason: e.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.pointer.cmp(&b.pointer).then_with(|| a.reason.cmp(&b.reason)));
        out.dedup();
        out
    }

    /// `Ok` when `instance` is valid, else every violation for `unique_id`.
    pub fn validate(&self, unique_id: &str, instance: &Value) -> Result<(), ConfigError> {
        let violations = self.violations(instance);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                unique_id: unique_id.to_owned(),
                violations,
            })
        }
    }

    /// Adds the schema's `default` for every property missing from `config`,
    /// recursing into nested objects that are present (or that a default
    /// created), following local `$ref`s. Present values are never changed.
    pub fn fill_defaults(&self, config: &mut Map<String, Value>) {
        fill_defaults(&self.raw, &self.raw, config, 0);
    }
}

/// Resolves a local `$ref` (`#/$defs/X`, `#/definitions/X`, any `#/…`
/// pointer) against the root schema; other schemas are returned as they are.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..MAX_DEPTH {
        match current.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                Some(target) => current = target,
                None => return current,
            },
            _ => return current,
        }
    }
    current
}

fn fill_defaults(root: &Value, schema: &Value, config: &mut Map<String, Value>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = resolve(root, schema);
    // schemars wraps optional nested structs in allOf/anyOf with one $ref.
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            fill_defaults(root, part, config, depth + 1);
        }
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        // A default beside a `$ref` wins over one in the referenced schema.
        let default = prop.get("default").or_else(|| resolve(root, prop).get("default"));
        if !config.contains_key(name)
            && let Some(default) = default
        {
            config.insert(name.clone(), default.clone());
        }
        if let Some(Value::Object(nested)) = config.get_mut(name) {
            fill_defaults(root, prop, nested, depth + 1);
        }
    }
}

/// The JSON Schema of a Rust config type, derived with `schemars`: title
/// from `#[schemars(title = …)]` or the type name, description from its doc
/// comment, defaults from `#[serde(default)]`.
///
/// ```
/// use plugboard_core::schema::schema_for;
///
/// /// Whisper settings.
/// #[derive(schemars::JsonSchema, serde::Deserialize, serde::Serialize, Default)]
/// #[serde(default)]
/// struct WhisperConfig {
///     /// Device to run on.
///     device: String,
/// }
///
/// let s = schema_for::<WhisperConfig>();
/// assert_eq!(s["title"], "WhisperConfig");
/// assert_eq!(s["description"], "Whisper settings.");
/// assert_eq!(s["properties"]["device"]["description"], "Device to run on.");
/// ```
pub fn schema_for<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}
