//! Config forms generated from a plugin's JSON Schema, form submissions
//! turned back into a config, and secrets kept out of everything rendered.
//!
//! **Field paths.** A field's path (its input's name) is the property names
//! from the top, each escaped JSON-pointer style (`~` as `~0`, `.` as `~1`)
//! and joined with `.`: `decoding.beam` is property `beam` of `decoding`,
//! `torch~1dtype` is the top-level property `torch.dtype`. Any property name
//! round-trips; a violation's JSON pointer (`/decoding/beam`) maps to its
//! field with [`field_of`].
//!
//! **Bounded work.** Schemas may refer to themselves (`{"$ref": "#"}`) and
//! branch (`allOf`, several self-referencing properties), so generation is
//! bounded in total, not only per branch: at most [`MAX_FIELDS`] fields in
//! the whole form and [`MAX_DEPTH`] levels of nesting. An object that does
//! not fit is edited as JSON text instead of a nested fieldset.
//!
//! **Secrets.** A property is secret when its schema (following `$ref`s and
//! `allOf`/`anyOf`/`oneOf`) says `writeOnly: true` or `format: "password"`,
//! or when it is a string whose name looks like one (`api_key`, `token`,
//! `password`, `secret`, …). Secret fields are rendered empty, whatever
//! their type; leaving one empty keeps the saved value. [`redact`] replaces
//! every secret value in a config (through `$ref`, `items`,
//! `additionalProperties`, …) before anything is rendered, and [`scrub`]
//! removes secret values from messages, so a value never reaches a page.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

/// The most fields one form may have, all nesting levels and branches
/// together; objects beyond it are edited as JSON text.
pub const MAX_FIELDS: usize = 500;

/// The deepest nesting of objects rendered as fieldsets; deeper objects are
/// edited as JSON text.
pub const MAX_DEPTH: usize = 8;

/// What a secret value is shown as.
pub const SET: &str = "(set)";

/// How many schema nodes one expansion (`$ref`s and combinators) visits.
const MAX_EXPANSION: usize = 256;

/// How many config values [`redact`] inspects before it hides the rest.
const MAX_REDACT_STEPS: usize = 200_000;

/// The kind of input a schema property becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// Free text.
    Text,
    /// A secret of the inner kind: rendered empty, kept when left empty.
    Secret(Box<FieldKind>),
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
    /// Any JSON value, edited as JSON text (arrays of objects, objects too
    /// deep or beyond the field budget).
    Json,
}

/// One form field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The escaped path (see the module docs), the input's name.
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
    /// The schema's `type` as written (`integer`, `string or null`), when it gives one.
    pub type_name: Option<String>,
    /// The schema's other constraints, each as a short phrase
    /// (`minimum 1`, `one of "cpu", "cuda"`, `pattern ^a`), for the schema table.
    pub constraints: Vec<String>,
}

impl Field {
    /// True when the field holds a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self.kind, FieldKind::Secret(_))
    }
}

/// Escapes one property name for a field path: `~` as `~0`, `.` as `~1`.
pub fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('.', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", ".").replace("~0", "~")
}

/// The path of property `name` below `prefix` (`""` for the top level).
pub fn child_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        escape(name)
    } else {
        format!("{prefix}.{}", escape(name))
    }
}

/// The property names of a field path, unescaped.
pub fn path_names(path: &str) -> Vec<String> {
    path.split('.').map(unescape).collect()
}

/// The name of the hidden input that says a checkbox was on the form (an
/// unticked checkbox sends nothing). `~p` is no escape, so no field has it.
pub fn present_key(path: &str) -> String {
    format!("{path}~present")
}

/// The schema a local `$ref` points to (`#` is the root).
fn target<'a>(root: &'a Value, s: &Value) -> Option<&'a Value> {
    let r = s.get("$ref")?.as_str()?;
    root.pointer(r.strip_prefix('#')?)
}

/// `s` and every schema that applies with it: `$ref` targets and the parts
/// of `allOf`, `anyOf`, `oneOf` (and `then`/`else`), each once, in order,
/// at most [`MAX_EXPANSION`] of them.
fn expand<'a>(root: &'a Value, s: &'a Value, out: &mut Vec<&'a Value>, seen: &mut HashSet<*const Value>) {
    if out.len() >= MAX_EXPANSION || !seen.insert(std::ptr::from_ref(s)) {
        return;
    }
    out.push(s);
    if let Some(t) = target(root, s) {
        expand(root, t, out, seen);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        for part in s.get(k).and_then(Value::as_array).into_iter().flatten() {
            expand(root, part, out, seen);
        }
    }
    for k in ["then", "else"] {
        if let Some(part) = s.get(k) {
            expand(root, part, out, seen);
        }
    }
}

fn parts<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let mut out = Vec::new();
    expand(root, s, &mut out, &mut HashSet::new());
    out
}

fn first<'a>(parts: &[&'a Value], key: &str) -> Option<&'a Value> {
    parts.iter().find_map(|p| p.get(key))
}

fn type_of<'a>(parts: &[&'a Value]) -> Option<&'a str> {
    parts.iter().find_map(|p| match p.get("type") {
        Some(Value::String(t)) if t != "null" => Some(t.as_str()),
        // ["string", "null"]: the non-null one.
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    })
}

/// The schema's `type` in words: `integer`, `string or null`.
fn type_name(parts: &[&Value]) -> Option<String> {
    parts.iter().find_map(|p| match p.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or ")),
        _ => None,
    })
}

/// Keywords shown as constraints in the schema table, with their phrases.
const CONSTRAINTS: [(&str, &str); 16] = [
    ("minimum", "minimum"),
    ("exclusiveMinimum", "greater than"),
    ("maximum", "maximum"),
    ("exclusiveMaximum", "less than"),
    ("multipleOf", "multiple of"),
    ("minLength", "at least this many characters:"),
    ("maxLength", "at most this many characters:"),
    ("pattern", "pattern"),
    ("format", "format"),
    ("minItems", "at least this many items:"),
    ("maxItems", "at most this many items:"),
    ("uniqueItems", "unique items:"),
    ("minProperties", "at least this many properties:"),
    ("maxProperties", "at most this many properties:"),
    ("const", "always"),
    ("enum", "one of"),
];

/// The constraints of a schema (its parts merged, first one wins) as
/// phrases; enum and const values as compact JSON, at most 20 values.
fn constraints(parts: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, phrase) in CONSTRAINTS {
        let Some(v) = first(parts, key) else { continue };
        let shown = match v {
            Value::Array(items) if key == "enum" => {
                let mut s: Vec<String> = items.iter().take(20).map(Value::to_string).collect();
                if items.len() > 20 {
                    s.push(format!("… ({} in all)", items.len()));
                }
                s.join(", ")
            }
            Value::String(t) if key != "const" => t.clone(),
            other => other.to_string(),
        };
        out.push(format!("{phrase} {shown}"));
    }
    if parts
        .iter()
        .any(|p| p.get("additionalProperties") == Some(&Value::Bool(false)))
    {
        out.push("no other properties".into());
    }
    out
}

/// True when a schema itself marks a secret (`writeOnly`, `format: password`).
pub fn is_secret_schema(s: &Value) -> bool {
    s.get("writeOnly").and_then(Value::as_bool) == Some(true)
        || s.get("format").and_then(Value::as_str) == Some("password")
}

/// True when a property name looks like it holds a secret (applies to
/// strings only: `max_tokens` is a number, not a secret).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// True when a property holds a secret: its schema (through `$ref`s and
/// combinators) says so, or it is a string with a secret's name.
pub fn is_secret(root: &Value, name: &str, s: &Value) -> bool {
    let ps = parts(root, s);
    ps.iter().any(|p| is_secret_schema(p)) || (matches!(type_of(&ps), None | Some("string")) && is_secret_name(name))
}

/// True when a secret may be anywhere inside `s` (items, properties,
/// additional properties…); conservative when the schema is too big to tell.
fn contains_secret(root: &Value, s: &Value) -> bool {
    let mut stack = vec![s];
    let mut seen: HashSet<*const Value> = HashSet::new();
    while let Some(s) = stack.pop() {
        if !seen.insert(std::ptr::from_ref(s)) {
            continue;
        }
        if seen.len() > 4 * MAX_EXPANSION {
            return true;
        }
        if is_secret_schema(s) {
            return true;
        }
        if let Some(t) = target(root, s) {
            stack.push(t);
        }
        for k in ["properties", "patternProperties"] {
            if let Some(m) = s.get(k).and_then(Value::as_object) {
                for (name, p) in m {
                    let ps = parts(root, p);
                    if matches!(type_of(&ps), None | Some("string")) && is_secret_name(name) {
                        return true;
                    }
                    stack.push(p);
                }
            }
        }
        for k in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            stack.extend(s.get(k).and_then(Value::as_array).into_iter().flatten());
        }
        for k in [
            "items",
            "additionalItems",
            "additionalProperties",
            "unevaluatedProperties",
            "then",
            "else",
        ] {
            match s.get(k) {
                Some(Value::Array(a)) => stack.extend(a),
                Some(v) => stack.push(v),
                None => {}
            }
        }
    }
    false
}

/// The properties of an object schema (all its parts merged, first one
/// wins) and the names it requires.
fn properties<'a>(ps: &[&'a Value]) -> (Vec<(&'a String, &'a Value)>, Vec<&'a str>) {
    let mut props: Vec<(&String, &Value)> = Vec::new();
    let mut required = Vec::new();
    for p in ps {
        if let Some(m) = p.get("properties").and_then(Value::as_object) {
            for (name, s) in m {
                if !props.iter().any(|(n, _)| *n == name) {
                    props.push((name, s));
                }
            }
        }
        required.extend(
            p.get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
    }
    (props, required)
}

struct Builder<'a> {
    root: &'a Value,
    /// Fields that may still be made.
    left: usize,
}

/// The budget ran out: the object is edited as JSON instead.
struct Exhausted;

impl<'a> Builder<'a> {
    fn field(&mut self, name: &str, raw: &'a Value, path: String, required: bool, depth: usize, nest: bool) -> Field {
        let ps = parts(self.root, raw);
        let text = |k: &str| first(&ps, k).and_then(Value::as_str).map(str::to_owned);
        Field {
            label: text("title").unwrap_or_else(|| name.to_owned()),
            help: text("description"),
            required,
            kind: self.kind(name, &ps, &path, depth, nest),
            default: first(&ps, "default").cloned(),
            min: first(&ps, "minimum").and_then(Value::as_f64),
            max: first(&ps, "maximum").and_then(Value::as_f64),
            type_name: type_name(&ps),
            constraints: constraints(&ps),
            name: name.to_owned(),
            path,
        }
    }

    fn kind(&mut self, name: &str, ps: &[&'a Value], path: &str, depth: usize, nest: bool) -> FieldKind {
        let schema_secret = ps.iter().any(|p| is_secret_schema(p));
        let ty = type_of(ps);
        let has_props = ps.iter().any(|p| p.get("properties").is_some());
        let base = if let Some(e) = first(ps, "enum").and_then(Value::as_array) {
            FieldKind::Enum(e.clone())
        } else {
            match ty {
                Some("integer") => FieldKind::Integer,
                Some("number") => FieldKind::Number,
                Some("boolean") => FieldKind::Boolean,
                Some("array") => {
                    let items = first(ps, "items").filter(|i| !i.is_boolean());
                    let item = items.map(|i| {
                        if !i.is_object() {
                            return None; // a tuple
                        }
                        let ips = parts(self.root, i);
                        let scalar = first(&ips, "enum")
                            .and_then(Value::as_array)
                            .map(|e| FieldKind::Enum(e.clone()));
                        scalar.or(match type_of(&ips) {
                            Some("integer") => Some(FieldKind::Integer),
                            Some("number") => Some(FieldKind::Number),
                            Some("boolean") => Some(FieldKind::Boolean),
                            Some("string") | None if !ips.iter().any(|p| p.get("properties").is_some()) => {
                                Some(FieldKind::Text)
                            }
                            _ => None,
                        })
                    });
                    match item {
                        Some(Some(k)) => FieldKind::Array(Box::new(k)),
                        None => FieldKind::Array(Box::new(FieldKind::Text)),
                        Some(None) => FieldKind::Json,
                    }
                }
                Some("object") | None if has_props || ty == Some("object") => {
                    if schema_secret || !has_props {
                        // A secret object is never walked; a free-form one has no fields.
                        FieldKind::Json
                    } else if !nest || depth + 1 >= MAX_DEPTH {
                        FieldKind::Json
                    } else {
                        match self.fields_at(ps, path, depth + 1) {
                            Ok(children) => FieldKind::Object(children),
                            Err(Exhausted) => FieldKind::Json,
                        }
                    }
                }
                _ => FieldKind::Text,
            }
        };
        let named_secret =
            matches!(base, FieldKind::Text) && matches!(ty, None | Some("string")) && is_secret_name(name);
        let inner_secret =
            matches!(base, FieldKind::Array(_) | FieldKind::Json) && ps.iter().any(|p| contains_secret(self.root, p));
        if schema_secret || named_secret || inner_secret {
            FieldKind::Secret(Box::new(base))
        } else {
            base
        }
    }

    /// The fields of a nested object; `Err` when the budget runs out.
    fn fields_at(&mut self, ps: &[&'a Value], prefix: &str, depth: usize) -> Result<Vec<Field>, Exhausted> {
        let (props, required) = properties(ps);
        let mut out = Vec::with_capacity(props.len());
        for (name, raw) in props {
            if self.left == 0 {
                return Err(Exhausted);
            }
            self.left -= 1;
            let path = child_path(prefix, name);
            out.push(self.field(name, raw, path, required.contains(&name.as_str()), depth, true));
        }
        Ok(out)
    }
}

/// The form fields of a schema's top-level properties: at most
/// [`MAX_FIELDS`] in all (top-level properties beyond it are still listed,
/// objects among them as JSON text).
pub fn fields(schema: &Value) -> Vec<Field> {
    let mut b = Builder {
        root: schema,
        left: MAX_FIELDS,
    };
    let ps = parts(schema, schema);
    let (props, required) = properties(&ps);
    props
        .into_iter()
        .map(|(name, raw)| {
            let nest = b.left > 0;
            b.left = b.left.saturating_sub(1);
            b.field(name, raw, escape(name), required.contains(&name.as_str()), 0, nest)
        })
        .collect()
}

/// Every field, nested ones included, depth first.
pub fn all_fields(fields: &[Field]) -> Vec<&Field> {
    let mut out = Vec::new();
    let mut stack: Vec<&Field> = fields.iter().rev().collect();
    while let Some(f) = stack.pop() {
        out.push(f);
        if let FieldKind::Object(children) = &f.kind {
            stack.extend(children.iter().rev());
        }
    }
    out
}

/// The deepest field at or above `path` (a violation inside a list or a
/// JSON field belongs to that field).
pub fn find_field<'f>(fields: &'f [Field], path: &str) -> Option<&'f Field> {
    let names = path_names(path);
    all_fields(fields)
        .into_iter()
        .filter(|f| {
            let own = path_names(&f.path);
            own.len() <= names.len() && own[..] == names[..own.len()]
        })
        .max_by_key(|f| f.path.len())
}

/// The value at a field path of a config.
pub fn value_at<'a>(config: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let names = path_names(path);
    let (first, rest) = names.split_first()?;
    let mut cur = config.get(first)?;
    for n in rest {
        cur = cur.as_object()?.get(n)?;
    }
    Some(cur)
}

fn set_at(config: &mut Map<String, Value>, path: &str, v: Value) {
    let names = path_names(path);
    let Some((last, parents)) = names.split_last() else {
        return;
    };
    let mut node = config;
    for p in parents {
        let e = node.entry(p.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !e.is_object() {
            *e = Value::Object(Map::new());
        }
        let Value::Object(m) = e else { return };
        node = m;
    }
    node.insert(last.clone(), v);
}

/// `config` with the fields' schema defaults added where a value is
/// missing (nested objects included), as loading a config does.
pub fn with_defaults(fields: &[Field], config: &Map<String, Value>) -> Map<String, Value> {
    fn fill(fields: &[Field], m: &mut Map<String, Value>) {
        for f in fields {
            if !m.contains_key(&f.name)
                && let Some(d) = &f.default
            {
                m.insert(f.name.clone(), d.clone());
            }
            if let (FieldKind::Object(children), Some(Value::Object(nested))) = (&f.kind, m.get_mut(&f.name)) {
                fill(children, nested);
            }
        }
    }
    let mut c = config.clone();
    fill(fields, &mut c);
    c
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
        FieldKind::Json => serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}")),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

fn parse_lines(item: &FieldKind, raw: &str) -> Result<Vec<Value>, String> {
    raw.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| parse_scalar(item, l))
        .collect()
}

/// Parses what was typed into a field of kind `kind`.
fn parse(kind: &FieldKind, raw: &str) -> Result<Value, String> {
    match kind {
        FieldKind::Array(item) => parse_lines(item, raw).map(Value::Array),
        k => parse_scalar(k, raw),
    }
}

/// Builds a config from submitted form pairs. Empty optional fields are
/// left out; an empty secret keeps `saved`'s value. Returns the config and
/// per-field parse errors (by field path); an error never repeats a
/// secret's value.
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
                let present = form.contains_key(present_key(&f.path).as_str());
                if raw.is_some() || present {
                    set_at(config, &f.path, Value::Bool(raw.is_some_and(|r| r != "false")));
                }
            }
            FieldKind::Secret(inner) => match raw {
                Some(r) if !r.trim().is_empty() => match parse(inner, r) {
                    Ok(v) => set_at(config, &f.path, v),
                    Err(_) => {
                        errors.insert(
                            f.path.clone(),
                            format!("not a valid {} (the value is not shown)", kind_name(inner)),
                        );
                    }
                },
                _ => {
                    if let Some(v) = value_at(saved, &f.path) {
                        set_at(config, &f.path, v.clone());
                    }
                }
            },
            FieldKind::Array(item) => {
                let Some(r) = raw else { continue };
                match parse_lines(item, r) {
                    Ok(items) => {
                        if !items.is_empty() || f.required {
                            set_at(config, &f.path, Value::Array(items));
                        }
                    }
                    Err(e) => {
                        errors.insert(f.path.clone(), e);
                    }
                }
            }
            kind => {
                let Some(r) = raw else { continue };
                if r.trim().is_empty() {
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

fn kind_name(k: &FieldKind) -> &'static str {
    match k {
        FieldKind::Integer => "whole number",
        FieldKind::Number => "number",
        FieldKind::Boolean => "true or false",
        FieldKind::Enum(_) => "choice",
        FieldKind::Array(_) => "list",
        FieldKind::Json => "JSON value",
        _ => "value",
    }
}

/// The field path of a violation's JSON pointer (`/a/b` -> `a.b`, names
/// escaped; a missing required property names the property).
pub fn field_of(pointer: &str, reason: &str) -> String {
    let mut path = pointer
        .split('/')
        .skip(1)
        .map(|s| escape(&s.replace("~1", "/").replace("~0", "~")))
        .collect::<Vec<_>>()
        .join(".");
    if let Some(name) = reason
        .strip_suffix(" is a required property")
        .and_then(|n| serde_json::from_str::<String>(n).ok())
    {
        path = child_path(&path, &name);
    }
    path
}

/// A config with its secret values hidden, and the texts of those values
/// (for [`scrub`]).
#[derive(Debug, Clone, Default)]
pub struct Redacted {
    /// The config, each secret replaced by [`SET`].
    pub config: Map<String, Value>,
    /// Every secret value's text (strings raw and JSON-escaped, numbers).
    pub secrets: Vec<String>,
}

impl Redacted {
    /// Adds another config's secrets (a saved one, next to a submitted one).
    pub fn also(mut self, other: &Redacted) -> Redacted {
        self.secrets.extend(other.secrets.iter().cloned());
        self
    }
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            if let Ok(j) = serde_json::to_string(s) {
                let inner = &j[1..j.len() - 1];
                if inner != s {
                    out.push(inner.to_owned());
                }
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => {
            out.push(v.to_string());
            a.iter().for_each(|x| collect(x, out));
        }
        Value::Object(m) => {
            out.push(v.to_string());
            m.values().for_each(|x| collect(x, out));
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// The schemas that apply to property `key` of an object matched by `ps`:
/// its `properties` entry, else (conservatively) every `patternProperties`
/// entry and `additionalProperties`.
fn property_schemas<'a>(ps: &[&'a Value], key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for p in ps {
        match p.get("properties").and_then(|m| m.get(key)) {
            Some(s) => out.push(s),
            None => {
                if let Some(m) = p.get("patternProperties").and_then(Value::as_object) {
                    out.extend(m.values());
                }
                for k in ["additionalProperties", "unevaluatedProperties"] {
                    if let Some(s) = p.get(k).filter(|s| s.is_object()) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

/// The schemas that apply to item `i` of an array matched by `ps`.
fn item_schemas<'a>(ps: &[&'a Value], i: usize) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for p in ps {
        let tuple = p
            .get("prefixItems")
            .or_else(|| p.get("items").filter(|v| v.is_array()))
            .and_then(Value::as_array);
        match tuple.and_then(|t| t.get(i)) {
            Some(s) => out.push(s),
            None => {
                for k in ["items", "additionalItems", "unevaluatedItems"] {
                    if let Some(s) = p.get(k).filter(|s| s.is_object()) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

fn redact_value(
    root: &Value,
    schemas: &[&Value],
    name: Option<&str>,
    v: &mut Value,
    steps: &mut usize,
    secrets: &mut Vec<String>,
) {
    *steps += 1;
    let mut ps = Vec::new();
    let mut seen = HashSet::new();
    for s in schemas {
        expand(root, s, &mut ps, &mut seen);
    }
    let by_name = v.is_string() && name.is_some_and(is_secret_name);
    if *steps > MAX_REDACT_STEPS || by_name || ps.iter().any(|p| is_secret_schema(p)) {
        if !v.is_null() {
            collect(v, secrets);
            *v = Value::String(SET.into());
        }
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let subs = property_schemas(&ps, k);
                redact_value(root, &subs, Some(k), child, steps, secrets);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                let subs = item_schemas(&ps, i);
                redact_value(root, &subs, name, child, steps, secrets);
            }
        }
        _ => {}
    }
}

/// `config` with every secret value replaced by [`SET`]: values whose
/// schema (through `$ref`, `allOf`/`anyOf`/`oneOf`, `properties`, `items`,
/// `prefixItems`, `additionalProperties`, `patternProperties`) is
/// `writeOnly` or `format: password`, and strings with a secret's name.
pub fn redact(schema: &Value, config: &Map<String, Value>) -> Redacted {
    let mut v = Value::Object(config.clone());
    let mut secrets = Vec::new();
    let mut steps = 0;
    redact_value(schema, &[schema], None, &mut v, &mut steps, &mut secrets);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let config = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Redacted { config, secrets }
}

/// `message` without any of `secrets`: each occurrence becomes `(secret)`;
/// when a very short secret occurs, the whole message is replaced (masking
/// every `1` in a message would say nothing).
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut m = message.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if m.contains(s.as_str()) {
            if s.chars().count() < 4 {
                return "a value does not fit the schema (not shown: it may contain a secret)".into();
            }
            m = m.replace(s.as_str(), "(secret)");
        }
    }
    m
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
        assert_eq!(kinds[6].1, &FieldKind::Secret(Box::new(FieldKind::Text)));
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
                ("stream~present", "1"),
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
        assert_eq!(field_of("/torch.dtype", "x"), "torch~1dtype");
        assert_eq!(field_of("/a~1b/c~0d", "x"), "a/b.c~0d");
    }

    #[test]
    fn any_property_name_round_trips() {
        for name in ["plain", "torch.dtype", "a~b", "~1", "a.b~c.d", "", "."] {
            assert_eq!(path_names(&escape(name)), vec![name.to_owned()], "{name}");
        }
    }
}
