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

/// The most work one [`CompiledSchema::fill_defaults`] does, across all
/// branches: one unit per schema node visited or `$ref` followed, plus the
/// size (in JSON values) of every default copied in. A normal schema needs a
/// few units per property; a schema that refers to itself many times over
/// (`allOf: [{"$ref": "#"}, {"$ref": "#"}]`) stops here instead of doing
/// exponential work.
pub const FILL_DEFAULTS_BUDGET: usize = 100_000;

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
            reason: schema_fault(schema, &e),
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
    ///
    /// Bounded for any schema: a schema is not applied again to an object it
    /// is already being applied to (`allOf: [{"$ref": "#"}]`), an object a
    /// default created is not filled again by a schema it came from (a
    /// recursive property with `"default": {}` gets `{}`, not an endless
    /// tree), and the total work is at most [`FILL_DEFAULTS_BUDGET`]. Returns
    /// false when the budget ran out before every default was filled.
    pub fn fill_defaults(&self, config: &mut Map<String, Value>) -> bool {
        let mut filler = Filler {
            root: &self.raw,
            budget: FILL_DEFAULTS_BUDGET,
            exhausted: false,
            active: Vec::new(),
        };
        filler.fill(&self.raw, config, 0);
        !filler.exhausted
    }
}

/// Why a schema does not compile, with the JSON pointer of the fault inside
/// the schema: `at /properties/a/type: …`.
fn schema_fault(schema: &Value, compile_error: &jsonschema::ValidationError<'_>) -> String {
    // A meta-schema violation locates the fault by its instance path (the
    // schema is the instance); a later compile error (a bad regex, a $ref
    // that resolves nowhere) by its schema path.
    let (pointer, reason) = match jsonschema::meta::validate(schema) {
        Err(meta) => (meta.instance_path().as_str().to_owned(), meta.to_string()),
        Ok(()) => (
            compile_error.schema_path().as_str().to_owned(),
            compile_error.to_string(),
        ),
    };
    let at = if pointer.is_empty() {
        "the root".to_owned()
    } else {
        pointer
    };
    let reason: String = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("at {at}: {reason}")
}

/// One default-filling pass: the work left, and the schemas being applied
/// now (with the object each is applied to), innermost last.
struct Filler<'a> {
    root: &'a Value,
    budget: usize,
    exhausted: bool,
    active: Vec<(*const Value, *const Map<String, Value>)>,
}

impl<'a> Filler<'a> {
    /// Takes `units` of work; false (and nothing taken) when they are not left.
    fn spend(&mut self, units: usize) -> bool {
        if self.budget >= units && !self.exhausted {
            self.budget -= units;
            true
        } else {
            self.exhausted = true;
            false
        }
    }

    /// Resolves a local `$ref` (`#/$defs/X`, `#/definitions/X`, any `#/…`
    /// pointer) against the root schema; other schemas are returned as they
    /// are. `None` when the budget ran out.
    fn resolve(&mut self, schema: &'a Value) -> Option<&'a Value> {
        let mut current = schema;
        for _ in 0..MAX_DEPTH {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with('#') => {
                    if !self.spend(1) {
                        return None;
                    }
                    match self.root.pointer(&r[1..]) {
                        Some(target) => current = target,
                        None => return Some(current),
                    }
                }
                _ => return Some(current),
            }
        }
        Some(current)
    }

    fn fill(&mut self, schema: &'a Value, config: &mut Map<String, Value>, depth: usize) {
        if depth > MAX_DEPTH || !self.spend(1) {
            return;
        }
        let Some(schema) = self.resolve(schema) else {
            return;
        };
        let here = (schema as *const Value, config as *const Map<String, Value>);
        if self.active.contains(&here) {
            return; // this schema is already being applied to this object
        }
        self.active.push(here);
        // schemars wraps optional nested structs in allOf/anyOf with one $ref.
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.fill(part, config, depth + 1);
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                if !self.spend(1) {
                    break;
                }
                let Some(target) = self.resolve(prop) else {
                    break;
                };
                let mut created = false;
                if !config.contains_key(name) {
                    // A default beside a `$ref` wins over one in the referenced schema.
                    if let Some(default) = prop.get("default").or_else(|| target.get("default")) {
                        if !self.spend(value_size(default, self.budget)) {
                            break;
                        }
                        config.insert(name.clone(), default.clone());
                        created = true;
                    }
                }
                // A default made by a schema being applied already is not
                // filled again by it (that would never end).
                let recursive = created && self.active.iter().any(|&(s, _)| std::ptr::eq(s, target));
                if let Some(Value::Object(nested)) = config.get_mut(name)
                    && !recursive
                {
                    self.fill(prop, nested, depth + 1);
                }
                if self.exhausted {
                    break;
                }
            }
        }
        self.active.pop();
    }
}

/// How many JSON values `v` holds (itself included), counting no further
/// than `limit + 1`.
fn value_size(v: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
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
