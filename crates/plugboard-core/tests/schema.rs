//! Schemas: default filling is bounded for any schema (self-referencing ones
//! included) and still complete for normal ones; compile errors say where in
//! the schema they are.

use std::time::Duration;

use plugboard_core::schema::FILL_DEFAULTS_BUDGET;
use plugboard_core::{CapabilityError, CompiledSchema, PluginManager, PluginMetadata, UnifiedPluginRegistry};
use serde_json::{Map, Value, json};

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

fn filled(schema: Value, config: Value) -> (Map<String, Value>, bool) {
    within_20s("filling defaults", move || {
        let s = CompiledSchema::compile("t_x", &schema).unwrap();
        let mut c = config.as_object().cloned().unwrap();
        let complete = s.fill_defaults(&mut c);
        (c, complete)
    })
}

struct One(Value);

impl PluginManager for One {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Ok(vec![PluginMetadata::new("x", "", "X").with_schema(self.0.clone())])
    }
}

#[test]
fn a_schema_referring_to_itself_twice_does_not_hang_defect_2() {
    let schema = json!({"type": "object", "allOf": [{"$ref": "#"}, {"$ref": "#"}]});
    let (c, complete) = filled(schema.clone(), json!({"a": {"b": {}}}));
    assert_eq!(Value::Object(c), json!({"a": {"b": {}}}));
    assert!(complete);
    // What `plugboard config get` and `config set` do, through the registry.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let config = within_20s("load and save through the registry", move || {
        let mut r = UnifiedPluginRegistry::new(d);
        r.register_plugin_manager("t", One(schema), None, true).unwrap();
        let mut c = r.load_plugin_config("t_x").unwrap();
        c.insert("k".into(), json!(1));
        r.save_plugin_config("t_x", &c).unwrap();
        r.load_plugin_config("t_x").unwrap()
    });
    assert_eq!(Value::Object(config), json!({"k": 1}));
}

#[test]
fn recursive_properties_with_object_defaults_fill_one_level_defect_2() {
    let schema = json!({
        "type": "object",
        "properties": {
            "l": {"$ref": "#", "default": {}},
            "r": {"$ref": "#", "default": {}},
            "n": {"type": "integer", "default": 3}
        }
    });
    let (c, complete) = filled(schema.clone(), json!({}));
    assert_eq!(Value::Object(c), json!({"l": {}, "r": {}, "n": 3}));
    assert!(complete);
    // Objects the user gave are filled, level after level, as deep as they go.
    let (c, _) = filled(schema, json!({"l": {"r": {}}}));
    assert_eq!(
        Value::Object(c),
        json!({"l": {"r": {"l": {}, "r": {}, "n": 3}, "l": {}, "n": 3}, "r": {}, "n": 3})
    );
}

#[test]
fn total_default_filling_work_is_bounded_by_the_budget_defect_2() {
    // Not self-referencing, but every level multiplies: 12 properties per
    // level, 8 levels of object defaults = 12^8 (4e8) objects if unbounded.
    let mut defs = Map::new();
    for level in 0..8 {
        let mut props = Map::new();
        for p in 0..12 {
            let prop = if level < 7 {
                json!({"$ref": format!("#/$defs/L{}", level + 1), "default": {}})
            } else {
                json!({"type": "integer", "default": p})
            };
            props.insert(format!("p{p}"), prop);
        }
        defs.insert(format!("L{level}"), json!({"type": "object", "properties": props}));
    }
    let schema = json!({"$ref": "#/$defs/L0", "$defs": defs});
    let (c, complete) = filled(schema, json!({}));
    assert!(!complete, "the budget must have run out");
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Object(m) => m.values().map(count).sum(),
            Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    let size = count(&Value::Object(c));
    assert!(size <= FILL_DEFAULTS_BUDGET, "{size} values filled");
    assert!(size > 1000, "filling stopped far too early: {size}");
}

#[test]
fn normal_nested_defaults_are_still_filled_defect_2() {
    // The shape schemars derives: nested structs behind $ref and allOf.
    let schema = json!({
        "type": "object",
        "properties": {
            "model": {"allOf": [{"$ref": "#/$defs/Model"}], "default": {"name": "base"}},
            "beam": {"type": "integer", "default": 5},
            "opt": {"$ref": "#/$defs/Model"}
        },
        "$defs": {
            "Model": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "default": "tiny"},
                    "device": {"type": "string", "default": "cpu"}
                }
            }
        }
    });
    let (c, complete) = filled(schema, json!({"opt": {"name": "x"}}));
    assert!(complete);
    assert_eq!(
        Value::Object(c),
        json!({
            "opt": {"name": "x", "device": "cpu"},
            "model": {"name": "base", "device": "cpu"},
            "beam": 5
        })
    );
}

#[test]
fn schema_compile_errors_say_where_in_the_schema_defect_13() {
    let cases = [
        (
            json!({"type": "object", "properties": {"a": {"type": "strang"}}}),
            "/properties/a/type",
        ),
        (
            json!({"properties": {"n": {"minimum": "zero"}}}),
            "/properties/n/minimum",
        ),
        (json!({"items": {"pattern": "(unclosed"}}), "/items/pattern"),
    ];
    for (schema, pointer) in cases {
        let err = CompiledSchema::compile("stt_bad", &schema).unwrap_err().to_string();
        assert!(err.contains("stt_bad"), "{err}");
        assert!(err.contains(pointer), "{pointer} missing from: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
