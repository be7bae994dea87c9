//! `plugboard._native`: the Rust core under the Python package `plugboard`.
//!
//! The package keeps the seed library's Python API (enums, dataclasses,
//! protocols, the registry's methods) in thin Python; this module is what
//! those call for the parts where plugboard's core is better than the seed:
//! config validation against a plugin's JSON Schema (every violation, with
//! its JSON pointer), atomic config persistence, plugin id checks, schema
//! default filling, and statistics over many plugins in one pass.
//!
//! Python values cross into JSON here, not through `json.dumps`: configs
//! strictly (a value JSON cannot hold is an error naming where it is),
//! schemas leniently (a Python object inside a schema, such as an enum
//! default, becomes its `str`). Errors are raised as the exception classes of
//! `plugboard.errors`, so Python code catches them by name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use plugboard_core::config_store::{ConfigStore as CoreStore, check_id as core_check_id};
use plugboard_core::schema::CompiledSchema;
use plugboard_core::{ConfigError, Violation};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::{IntoPyObjectExt, intern};
use serde_json::{Map, Number, Value};

/// How deep a Python value may nest before it is refused (a list that
/// contains itself would otherwise never end).
const MAX_DEPTH: usize = 200;

/// What a violation's reason becomes when a very short secret occurs in it
/// (masking every `1` in a message would say nothing).
const HIDDEN: &str = "a value does not fit the schema (not shown: it may contain a secret)";

// ---------------------------------------------------------------- values

/// Where a value sits inside the config, as a JSON pointer.
fn pointer(path: &[String]) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.iter()
            .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
            .collect()
    }
}

/// A dict key as the `json` module writes it (`json.dump` turns int,
/// float, bool and None keys into strings); other keys are refused.
fn key_string(key: &Bound<'_, PyAny>, path: &[String]) -> PyResult<String> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if key.is_none() {
        return Ok("null".to_owned());
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if key.is_instance_of::<PyInt>() || key.is_instance_of::<PyFloat>() {
        return Ok(key.str()?.to_cow()?.into_owned());
    }
    Err(PyTypeError::new_err(format!(
        "keys must be str, int, float, bool or None, not {} (at {})",
        key.get_type().name()?,
        pointer(path)
    )))
}

/// A Python value as JSON. Strict: a value JSON cannot hold (NaN, a set,
/// a datetime…) is an error naming its place; lenient: it becomes its `str`.
fn to_json(obj: &Bound<'_, PyAny>, strict: bool, path: &mut Vec<String>) -> PyResult<Value> {
    if path.len() > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the value is nested more than {MAX_DEPTH} levels deep (at {}); is it circular?",
            pointer(path)
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(PyValueError::new_err(format!(
            "the integer at {} does not fit in 64 bits",
            pointer(path)
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None if strict => Err(PyValueError::new_err(format!(
                "{v} at {} is not a JSON number",
                pointer(path)
            ))),
            None => Ok(Value::String(v.to_string())),
        };
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = key_string(&k, path)?;
            path.push(key.clone());
            let value = to_json(&v, strict, path)?;
            path.pop();
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            path.push(i.to_string());
            items.push(to_json(&item?, strict, path)?);
            path.pop();
        }
        return Ok(Value::Array(items));
    }
    if strict {
        return Err(PyTypeError::new_err(format!(
            "the value at {} is a {}, which JSON cannot hold",
            pointer(path),
            obj.get_type().name()?
        )));
    }
    Ok(Value::String(obj.str()?.to_cow()?.into_owned()))
}

/// JSON as Python values (dicts keep their key order).
fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)?
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)?
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

fn map_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in map {
        d.set_item(k, to_py(py, v)?)?;
    }
    Ok(d)
}

/// A config given from Python: a dict of JSON values.
fn config_map(unique_id: &str, config: &Bound<'_, PyAny>) -> PyResult<Map<String, Value>> {
    if !config.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "config for {unique_id} must be a dict, not {}",
            config.get_type().name()?
        )));
    }
    match to_json(config, true, &mut Vec::new()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PyTypeError::new_err(format!("config for {unique_id} must be a dict"))),
        Err(e) => {
            let ty = e.get_type(config.py());
            Err(PyErr::from_type(
                ty,
                format!("config for {unique_id} is not JSON: {}", e.value(config.py())),
            ))
        }
    }
}

// ---------------------------------------------------------------- secrets

/// A schema with its local `$ref`s followed, and the parts it combines
/// (`allOf`/`anyOf`/`oneOf`), each resolved the same way.
fn parts<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                    Some(t) => s = t,
                    None => return s,
                },
                _ => return s,
            }
        }
        s
    }
    let s = resolve(root, schema);
    let mut out = vec![s];
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            out.extend(list.iter().map(|p| resolve(root, p)));
        }
    }
    out
}

/// True when a property name looks like it holds a secret (for strings).
fn secret_name(name: &str) -> bool {
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

/// Collects the values of `config` that are secrets by `schema`: marked
/// `writeOnly: true` or `format: "password"`, or strings whose property
/// name looks like a secret's.
fn secrets(root: &Value, schema: &Value, config: &Value, name: Option<&str>, depth: usize, out: &mut Vec<String>) {
    if depth > 32 {
        return;
    }
    let ps = parts(root, schema);
    let marked = ps.iter().any(|p| {
        p.get("writeOnly").and_then(Value::as_bool) == Some(true)
            || p.get("format").and_then(Value::as_str) == Some("password")
    });
    let named = matches!(config, Value::String(_)) && name.is_some_and(secret_name);
    if marked || named {
        match config {
            Value::String(s) => {
                out.push(s.clone());
                if let Ok(quoted) = serde_json::to_string(s) {
                    out.push(quoted[1..quoted.len() - 1].to_owned());
                }
            }
            Value::Null => {}
            other => out.push(other.to_string()),
        }
        return;
    }
    let empty = Value::Object(Map::new());
    match config {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = ps
                    .iter()
                    .find_map(|p| p.get("properties").and_then(|props| props.get(k)))
                    .or_else(|| {
                        ps.iter()
                            .find_map(|p| p.get("additionalProperties").filter(|a| a.is_object()))
                    })
                    .unwrap_or(&empty);
                secrets(root, sub, v, Some(k), depth + 1, out);
            }
        }
        Value::Array(items) => {
            let sub = ps
                .iter()
                .find_map(|p| p.get("items").filter(|i| i.is_object()))
                .unwrap_or(&empty);
            for item in items {
                secrets(root, sub, item, name, depth + 1, out);
            }
        }
        _ => {}
    }
}

/// `reason` with every secret replaced by `(secret)`; when a secret is very
/// short, the whole reason is replaced.
fn scrub(reason: &str, secrets: &[String]) -> String {
    let mut r = reason.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if r.contains(s.as_str()) {
            if s.chars().count() < 4 {
                return HIDDEN.to_owned();
            }
            r = r.replace(s.as_str(), "(secret)");
        }
    }
    r
}

/// Every violation of `config`, with secret values kept out of the reasons.
fn checked_violations(schema: &Schema, config: &Value) -> Vec<Violation> {
    let mut violations = schema.compiled.violations(config);
    if !violations.is_empty() {
        let mut found = Vec::new();
        secrets(
            schema.compiled.raw(),
            schema.compiled.raw(),
            config,
            None,
            0,
            &mut found,
        );
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found.dedup();
        for v in &mut violations {
            v.reason = scrub(&v.reason, &found);
        }
    }
    violations
}

// ---------------------------------------------------------------- errors

/// An exception of `plugboard.errors` by class name, with attributes set.
fn raise(py: Python<'_>, class: &str, message: String, attrs: &[(&str, Bound<'_, PyAny>)]) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("plugboard.errors")?.getattr(class)?;
        let inst = cls.call1((message.clone(),))?;
        for (k, v) in attrs {
            inst.setattr(*k, v)?;
        }
        Ok(PyErr::from_value(inst))
    })();
    // Without the Python package around the module (used on its own), the
    // nearest built-in exception still carries the message.
    made.unwrap_or_else(|_| match class {
        "ConfigFileError" | "ConfigLockedError" => PyOSError::new_err(message),
        _ => PyValueError::new_err(message),
    })
}

/// The message of an error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn invalid_config(py: Python<'_>, unique_id: &str, violations: &[Violation]) -> PyErr {
    let message = format!(
        "config for {unique_id} is invalid ({} violation{}): {}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" },
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let list = violations
        .iter()
        .map(|v| (v.pointer.clone(), v.reason.clone()))
        .collect::<Vec<_>>();
    let attrs = (|| -> PyResult<Vec<(&str, Bound<'_, PyAny>)>> {
        Ok(vec![
            ("unique_id", unique_id.into_bound_py_any(py)?),
            ("raw_violations", list.into_bound_py_any(py)?),
        ])
    })()
    .unwrap_or_default();
    raise(py, "InvalidConfigError", message, &attrs)
}

/// A core config error as the matching `plugboard.errors` exception.
fn config_err(py: Python<'_>, e: ConfigError) -> PyErr {
    let message = chain(&e);
    match e {
        ConfigError::InvalidId(id) => {
            let attrs = id
                .id
                .into_bound_py_any(py)
                .map(|v| vec![("unique_id", v)])
                .unwrap_or_default();
            raise(py, "InvalidIdError", message, &attrs)
        }
        ConfigError::Invalid { unique_id, violations } => invalid_config(py, &unique_id, &violations),
        ConfigError::BadSchema { unique_id, .. } => {
            let attrs = unique_id
                .into_bound_py_any(py)
                .map(|v| vec![("unique_id", v)])
                .unwrap_or_default();
            raise(py, "SchemaError", message, &attrs)
        }
        ConfigError::Corrupt { path, line, column, .. } => {
            let attrs = (|| -> PyResult<Vec<(&str, Bound<'_, PyAny>)>> {
                Ok(vec![
                    ("path", path.into_bound_py_any(py)?),
                    ("line", line.into_bound_py_any(py)?),
                    ("column", column.into_bound_py_any(py)?),
                ])
            })()
            .unwrap_or_default();
            raise(py, "CorruptConfigError", message, &attrs)
        }
        ConfigError::NotAnObject { .. } => raise(py, "InvalidConfigError", message, &[]),
        ConfigError::TooLarge { .. } => raise(py, "ConfigTooLargeError", message, &[]),
        ConfigError::Locked { .. } => raise(py, "ConfigLockedError", message, &[]),
        ConfigError::NotAFile { path, .. } | ConfigError::Io { path, .. } => {
            let attrs = path
                .into_bound_py_any(py)
                .map(|v| vec![("path", v)])
                .unwrap_or_default();
            raise(py, "ConfigFileError", message, &attrs)
        }
    }
}

// ---------------------------------------------------------------- API

/// Raises `plugboard.errors.InvalidIdError` when `unique_id` cannot safely
/// name a config file: empty, over 200 bytes, a path separator, `..`, a
/// control character, or a leading `.`.
#[pyfunction]
fn check_id(py: Python<'_>, unique_id: &str) -> PyResult<()> {
    core_check_id(unique_id).map_err(|e| config_err(py, e.into()))
}

/// A plugin's config schema, compiled once: validation with every violation
/// (secret values kept out of the reasons) and default filling.
#[pyclass(module = "plugboard._native", frozen)]
struct Schema {
    unique_id: String,
    compiled: Arc<CompiledSchema>,
}

#[pymethods]
impl Schema {
    /// Compiles `schema` (a dict, or a bool) for plugin `unique_id`; raises
    /// `SchemaError` naming the fault's place when it is not a JSON Schema.
    #[new]
    fn new(py: Python<'_>, unique_id: &str, schema: &Bound<'_, PyAny>) -> PyResult<Self> {
        let raw = to_json(schema, false, &mut Vec::new())?;
        let compiled = CompiledSchema::compile(unique_id, &raw).map_err(|e| config_err(py, e))?;
        Ok(Schema {
            unique_id: unique_id.to_owned(),
            compiled: Arc::new(compiled),
        })
    }

    /// Every violation of `config` as `(json_pointer, reason)` pairs, sorted
    /// by pointer; empty when valid.
    fn violations(&self, config: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
        let value = Value::Object(config_map(&self.unique_id, config)?);
        Ok(checked_violations(self, &value)
            .into_iter()
            .map(|v| (v.pointer, v.reason))
            .collect())
    }

    /// Raises `InvalidConfigError` (with every violation) unless `config`
    /// is valid.
    fn validate(&self, py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = Value::Object(config_map(&self.unique_id, config)?);
        let violations = checked_violations(self, &value);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(invalid_config(py, &self.unique_id, &violations))
        }
    }

    /// A copy of `config` with the schema's defaults filled in for missing
    /// keys (nested objects and local `$ref`s followed).
    fn fill_defaults<'py>(&self, py: Python<'py>, config: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let mut map = config_map(&self.unique_id, config)?;
        self.compiled.fill_defaults(&mut map);
        map_to_py(py, &map)
    }
}

/// Plugin configs in one directory, `{dir}/{unique_id}.json`: ids checked,
/// saves validated and atomic (temp file, fsync, rename, fsync of the
/// directory) under a per-config lock, corrupt files reported with line and
/// column, FIFOs and devices refused without blocking.
#[pyclass(module = "plugboard._native", frozen)]
struct ConfigStore {
    inner: CoreStore,
}

#[pymethods]
impl ConfigStore {
    /// A store over `dir` (created on the first save).
    #[new]
    fn new(dir: PathBuf) -> Self {
        ConfigStore {
            inner: CoreStore::new(dir),
        }
    }

    /// The directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// The file of `unique_id`'s config, after checking the id.
    fn path_for(&self, py: Python<'_>, unique_id: &str) -> PyResult<PathBuf> {
        self.inner.path_for(unique_id).map_err(|e| config_err(py, e))
    }

    /// The saved config (`{}` when none is saved), with `schema`'s defaults
    /// filled in for missing keys when a schema is given (not written back).
    #[pyo3(signature = (unique_id, schema=None))]
    fn load<'py>(
        &self,
        py: Python<'py>,
        unique_id: &str,
        schema: Option<&Bound<'py, Schema>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let compiled = schema.map(|s| Arc::clone(&s.get().compiled));
        let inner = &self.inner;
        let loaded = py.detach(|| inner.load_with_defaults(unique_id, compiled.as_deref()));
        map_to_py(py, &loaded.map_err(|e| config_err(py, e))?)
    }

    /// Validates `config` against `schema` (when given; every violation is
    /// reported) and replaces the saved file atomically. On any error the
    /// file on disk is as it was.
    #[pyo3(signature = (unique_id, config, schema=None))]
    fn save(
        &self,
        py: Python<'_>,
        unique_id: &str,
        config: &Bound<'_, PyAny>,
        schema: Option<&Bound<'_, Schema>>,
    ) -> PyResult<()> {
        core_check_id(unique_id).map_err(|e| config_err(py, e.into()))?;
        let map = config_map(unique_id, config)?;
        if let Some(s) = schema {
            let value = Value::Object(map);
            let violations = checked_violations(s.get(), &value);
            if !violations.is_empty() {
                return Err(invalid_config(py, unique_id, &violations));
            }
            let Value::Object(map) = value else {
                return Err(PyTypeError::new_err(format!("config for {unique_id} must be a dict")));
            };
            return self.write(py, unique_id, map);
        }
        self.write(py, unique_id, map)
    }

    /// Deletes the saved config; False when there was none.
    fn delete(&self, py: Python<'_>, unique_id: &str) -> PyResult<bool> {
        let inner = &self.inner;
        py.detach(|| inner.delete(unique_id)).map_err(|e| config_err(py, e))
    }

    /// True when a config file exists for `unique_id`.
    fn exists(&self, py: Python<'_>, unique_id: &str) -> PyResult<bool> {
        self.inner.exists(unique_id).map_err(|e| config_err(py, e))
    }

    /// The ids that have a saved config, sorted (one directory listing;
    /// temp and lock files are not configs).
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let inner = &self.inner;
        py.detach(|| inner.ids()).map_err(|e| config_err(py, e))
    }
}

impl ConfigStore {
    fn write(&self, py: Python<'_>, unique_id: &str, map: Map<String, Value>) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.save(unique_id, &map, None))
            .map_err(|e| config_err(py, e))
    }
}

/// The seed's `get_plugin_stats` in one pass, with `by_category` filled
/// (sorted by category). Instances of exactly `metadata_cls` are read field
/// by field (`local_modes` holds the local execution modes); any other
/// object is asked through its own `is_local_execution`,
/// `is_cloud_execution` and `has_active_resources` methods, as the seed does.
#[pyfunction]
fn plugin_stats<'py>(
    py: Python<'py>,
    plugins: &Bound<'py, PyAny>,
    metadata_cls: &Bound<'py, PyType>,
    local_modes: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyDict>> {
    let locals: Vec<Bound<'py, PyAny>> = local_modes.iter().collect();
    let (mut total, mut configured, mut local, mut cloud, mut active) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut by_category: BTreeMap<String, usize> = BTreeMap::new();
    for item in plugins.try_iter()? {
        let p = item?;
        total += 1;
        if p.getattr(intern!(py, "is_configured"))?.is_truthy()? {
            configured += 1;
        }
        if p.get_type().is(metadata_cls) {
            let mode = p.getattr(intern!(py, "execution_mode"))?;
            if locals.iter().any(|m| m.is(&mode)) {
                local += 1;
            } else {
                cloud += 1;
            }
            let busy = p.getattr(intern!(py, "spawned_pids"))?.is_truthy()?
                || p.getattr(intern!(py, "container_id"))?.is_truthy()?
                || {
                    let rr = p.getattr(intern!(py, "remote_resource"))?;
                    rr.is_truthy()? && rr.getattr(intern!(py, "status"))?.eq(intern!(py, "running"))?
                };
            if busy {
                active += 1;
            }
        } else {
            if p.call_method0(intern!(py, "is_local_execution"))?.is_truthy()? {
                local += 1;
            }
            if p.call_method0(intern!(py, "is_cloud_execution"))?.is_truthy()? {
                cloud += 1;
            }
            if p.call_method0(intern!(py, "has_active_resources"))?.is_truthy()? {
                active += 1;
            }
        }
        let category = p.getattr(intern!(py, "category"))?;
        let key = match category.cast::<PyString>() {
            Ok(s) => s.to_cow()?.into_owned(),
            Err(_) => category.str()?.to_cow()?.into_owned(),
        };
        *by_category.entry(key).or_insert(0) += 1;
    }
    let out = PyDict::new(py);
    out.set_item(intern!(py, "total"), total)?;
    out.set_item(intern!(py, "configured"), configured)?;
    out.set_item(intern!(py, "unconfigured"), total - configured)?;
    out.set_item(intern!(py, "local"), local)?;
    out.set_item(intern!(py, "cloud"), cloud)?;
    out.set_item(intern!(py, "with_active_resources"), active)?;
    let cats = PyDict::new(py);
    for (k, n) in by_category {
        cats.set_item(k, n)?;
    }
    out.set_item(intern!(py, "by_category"), cats)?;
    Ok(out)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_id, m)?)?;
    m.add_function(wrap_pyfunction!(plugin_stats, m)?)?;
    m.add_class::<Schema>()?;
    m.add_class::<ConfigStore>()?;
    m.add("MAX_CONFIG_BYTES", plugboard_core::config_store::MAX_CONFIG_BYTES)?;
    m.add("MAX_ID_LEN", plugboard_core::config_store::MAX_ID_LEN)?;
    Ok(())
}
