//! Config forms generated from a plugin's JSON Schema, and form submissions
//! turned back into a config.
//!
//! Field names are the property path joined with `.` (`decoding.beam`), so a
//! violation's JSON pointer (`/decoding/beam`) maps straight to its field.
//! Secret fields (`writeOnly`, `format: password`, or a name such as
//! `api_key`, `token`, `password`, `secret`) are never rendered with their
//! value; leaving one empty keeps the saved value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The kind of input a schema property becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// Free text.
    Text,
    /// A secret: rendered empty, kept when left empty.
    Secret,
    /// One of these values (a select).
    Enum(Vec<Value>),
    /// An integer (step 1).
    Integer,
    /// A number (step any).
    Number,
    /// A checkbox.
    Boolean,
    /// A list of scalars, one per line; the item kind.
    Array(Box<FieldKind>),
    /// A nested object.
    Object(Vec<Field>),
}

/// One form field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Dotted path, the input's name.
    pub path: String,
    /// The property's own name.
    pub name: String,
    /// Label (the schema's `title`, else the name).
    pub label: String,
    /// Help text (the schema's `description`).
    pub help: Option<String>,
    /// Required by its parent.
    pub required: bool,
    /// The input kind.
    pub kind: FieldKind,
    /// The schema's default.
    pub default: Option<Value>,
    /// `minimum`.
    pub min: Option<f64>,
    /// `maximum`.
    pub max: Option<f64>,
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    let mut cur = s;
    for _ in 0..16 {
        match cur.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                Some(t) => cur = t,
                None => return cur,
            },
            _ => {
                // schemars wraps single refs in allOf.
                match cur.get("allOf").and_then(Value::as_array) {
                    Some(parts) if parts.len() == 1 => cur = &parts[0],
                    _ => return cur,
                }
            }
        }
    }
    cur
}

fn type_of(s: &Value) -> Option<&str> {
    match s.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        // ["string", "null"]: the non-null one.
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// True when a property holds a secret.
pub fn is_secret(name: &str, s: &Value) -> bool {
    let n = name.to_ascii_lowercase();
    s.get("writeOnly").and_then(Value::as_bool) == Some(true)
        || s.get("format").and_then(Value::as_str) == Some("password")
        || ["password", "secret", "token", "api_key", "apikey", "credential"]
            .iter()
            .any(|w| n.contains(w))
}

fn kind(root: &Value, name: &str, s: &Value, path: &str, depth: usize) -> FieldKind {
    if depth > 8 {
        // A schema that nests (or refers to itself) this deep is edited as text.
        return FieldKind::Text;
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return FieldKind::Enum(e.clone());
    }
    match type_of(s) {
        Some("integer") => FieldKind::Integer,
        Some("number") => FieldKind::Number,
        Some("boolean") => FieldKind::Boolean,
        Some("array") => {
            let items = s.get("items").map(|i| resolve(root, i)).cloned().unwrap_or(Value::Null);
            let item = match kind(root, name, &items, path, depth + 1) {
                FieldKind::Object(_) | FieldKind::Array(_) => FieldKind::Text,
                k => k,
            };
            FieldKind::Array(Box::new(item))
        }
        Some("object") if depth < 8 => FieldKind::Object(fields_at(root, s, path, depth + 1)),
        _ if is_secret(name, s) => FieldKind::Secret,
        _ => FieldKind::Text,
    }
}

fn fields_at(root: &Value, schema: &Value, prefix: &str, depth: usize) -> Vec<Field> {
    let schema = resolve(root, schema);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, raw)| {
            let s = resolve(root, raw);
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let text = |k: &str| {
                raw.get(k)
                    .or_else(|| s.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Field {
                label: text("title").unwrap_or_else(|| name.clone()),
                help: text("description"),
                required: required.contains(&name.as_str()),
                kind: kind(root, name, s, &path, depth),
                default: raw.get("default").or_else(|| s.get("default")).cloned(),
                min: s.get("minimum").and_then(Value::as_f64),
                max: s.get("maximum").and_then(Value::as_f64),
                name: name.clone(),
                path,
            }
        })
        .collect()
}

/// The form fields of a schema's top-level properties.
pub fn fields(schema: &Value) -> Vec<Field> {
    fields_at(schema, schema, "", 0)
}

/// The value at a dotted path of a config.
pub fn value_at<'a>(config: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = config.get(first)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn set_at(config: &mut Map<String, Value>, path: &str, v: Value) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = config;
    for p in &parts[..parts.len() - 1] {
        let e = node.entry((*p).to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !e.is_object() {
            *e = Value::Object(Map::new());
        }
        let Value::Object(m) = e else { return };
        node = m;
    }
    if let Some(last) = parts.last() {
        node.insert((*last).to_owned(), v);
    }
}

/// A form value as text for an input.
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_scalar(kind: &FieldKind, raw: &str) -> Result<Value, String> {
    match kind {
        FieldKind::Integer => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{raw:?} is not a whole number")),
        FieldKind::Number => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .ok_or_else(|| format!("{raw:?} is not a number")),
        FieldKind::Boolean => Ok(Value::Bool(matches!(raw, "on" | "true" | "1" | "yes"))),
        FieldKind::Enum(options) => options
            .iter()
            .find(|o| display(o) == raw)
            .cloned()
            .ok_or_else(|| format!("{raw:?} is not one of the choices")),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// Builds a config from submitted form pairs. Empty optional fields are
/// left out; an empty secret keeps `saved`'s value. Returns the config and
/// per-field parse errors (by dotted path).
pub fn config_from_form(
    fields: &[Field],
    form: &[(String, String)],
    saved: &Map<String, Value>,
) -> (Map<String, Value>, BTreeMap<String, String>) {
    let by_name: BTreeMap<&str, Vec<&str>> = form.iter().fold(BTreeMap::new(), |mut m, (k, v)| {
        m.entry(k.as_str()).or_insert_with(Vec::new).push(v.as_str());
        m
    });
    let mut config = Map::new();
    let mut errors = BTreeMap::new();
    fill(fields, &by_name, saved, &mut config, &mut errors);
    (config, errors)
}

fn fill(
    fields: &[Field],
    form: &BTreeMap<&str, Vec<&str>>,
    saved: &Map<String, Value>,
    config: &mut Map<String, Value>,
    errors: &mut BTreeMap<String, String>,
) {
    for f in fields {
        let raw = form.get(f.path.as_str()).and_then(|v| v.last()).copied();
        match &f.kind {
            FieldKind::Object(children) => fill(children, form, saved, config, errors),
            FieldKind::Boolean => {
                // A checkbox is absent when unticked; the hidden marker says the field was on the form.
                let present = form.contains_key(format!("{}.__present", f.path).as_str());
                if raw.is_some() || present {
                    set_at(config, &f.path, Value::Bool(raw.is_some_and(|r| r != "false")));
                }
            }
            FieldKind::Secret => match raw {
                Some(r) if !r.is_empty() => set_at(config, &f.path, Value::String(r.to_owned())),
                _ => {
                    if let Some(v) = value_at(saved, &f.path) {
                        set_at(config, &f.path, v.clone());
                    }
                }
            },
            FieldKind::Array(item) => {
                let Some(r) = raw else { continue };
                let mut items = Vec::new();
                for line in r.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    match parse_scalar(item, line) {
                        Ok(v) => items.push(v),
                        Err(e) => {
                            errors.insert(f.path.clone(), e);
                        }
                    }
                }
                if !items.is_empty() || f.required {
                    set_at(config, &f.path, Value::Array(items));
                }
            }
            kind => {
                let Some(r) = raw else { continue };
                if r.is_empty() {
                    if f.required {
                        errors.insert(f.path.clone(), "this field is required".into());
                    }
                    continue;
                }
                match parse_scalar(kind, r) {
                    Ok(v) => set_at(config, &f.path, v),
                    Err(e) => {
                        errors.insert(f.path.clone(), e);
                    }
                }
            }
        }
    }
}

/// The dotted field path of a violation's JSON pointer (`/a/b` -> `a.b`;
/// a missing required property names the property).
pub fn field_of(pointer: &str, reason: &str) -> String {
    let base: Vec<String> = pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut path = base.join(".");
    if let Some(name) = reason
        .strip_prefix('"')
        .and_then(|r| r.split_once("\" is a required property"))
        .map(|(n, _)| n)
    {
        path = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": {"type": "string", "title": "Model", "description": "Which model"},
                "device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"},
                "beam": {"type": "integer", "minimum": 1, "maximum": 10},
                "temperature": {"type": "number"},
                "stream": {"type": "boolean", "default": false},
                "stops": {"type": "array", "items": {"type": "string"}},
                "api_key": {"type": "string"},
                "decoding": {"$ref": "#/$defs/D"}
            },
            "$defs": {"D": {"type": "object", "properties": {"best_of": {"type": "integer", "default": 1}}}}
        })
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn fields_follow_the_schema() {
        let f = fields(&schema());
        let kinds: Vec<(&str, &FieldKind)> = f.iter().map(|f| (f.path.as_str(), &f.kind)).collect();
        assert_eq!(kinds[0], ("model", &FieldKind::Text));
        assert!(f[0].required && f[0].label == "Model");
        assert!(matches!(kinds[1].1, FieldKind::Enum(_)));
        assert_eq!(kinds[2].1, &FieldKind::Integer);
        assert_eq!(f[2].max, Some(10.0));
        assert_eq!(kinds[6].1, &FieldKind::Secret);
        let FieldKind::Object(children) = kinds[7].1 else {
            panic!("object expected")
        };
        assert_eq!(children[0].path, "decoding.best_of");
    }

    #[test]
    fn forms_become_configs_with_errors_per_field() {
        let f = fields(&schema());
        let saved = json!({"api_key": "s3cret"}).as_object().cloned().unwrap();
        let (c, e) = config_from_form(
            &f,
            &pairs(&[
                ("model", "tiny"),
                ("device", "cuda"),
                ("beam", "x"),
                ("temperature", ""),
                ("stream.__present", "1"),
                ("stops", "a\n\nb\n"),
                ("api_key", ""),
                ("decoding.best_of", "3"),
            ]),
            &saved,
        );
        assert_eq!(e.get("beam").map(String::as_str), Some("\"x\" is not a whole number"));
        assert_eq!(
            Value::Object(c),
            json!({"model": "tiny", "device": "cuda", "stream": false, "stops": ["a", "b"], "api_key": "s3cret", "decoding": {"best_of": 3}})
        );
    }

    #[test]
    fn self_referencing_schemas_do_not_recurse_forever() {
        let s = json!({
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}, "o": {"$ref": "#"}},
            "$defs": {"A": {"type": "array", "items": {"$ref": "#/$defs/A"}}}
        });
        let f = fields(&s);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn pointers_map_to_fields() {
        assert_eq!(field_of("/decoding/best_of", "x"), "decoding.best_of");
        assert_eq!(field_of("", "\"model\" is a required property"), "model");
    }
}
