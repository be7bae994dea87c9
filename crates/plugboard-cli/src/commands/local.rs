//! Commands that need no running host: they read manifests, configs, the
//! ledger and log files directly.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use plugboard_core::config_store::check_id;
use plugboard_core::error::json_type_name;
use plugboard_core::{ConfigError, ExecutionMode, PluginMetadata, UnifiedPluginRegistry, plugin_stats};
use plugboard_host::ledger::now_ms;
use plugboard_host::{Backends, DataDir, GcOptions, Ledger, gc as run_gc, registry_for};
use serde_json::{Map, Value, json};

use crate::output::{self, human_duration, table};
use crate::{CmdResult, Dirs, Failure};

/// The registry over the plugins dirs, warnings printed for bad manifests.
pub fn registry(dirs: &Dirs) -> Result<UnifiedPluginRegistry, Failure> {
    super::check_plugin_dirs(dirs)?;
    let (registry, catalog) = registry_for(&dirs.plugins, dirs.config.clone());
    for p in &catalog.problems {
        if !dirs.plugins_explicit && p.reason.contains("does not exist") {
            continue; // the default dir need not exist
        }
        eprintln!("warning: {p}");
    }
    Ok(registry)
}

fn known<'a>(r: &'a UnifiedPluginRegistry, id: &str) -> Result<&'a PluginMetadata, Failure> {
    check_id(id).map_err(Failure::usage)?;
    r.get_plugin(id)
        .ok_or_else(|| Failure::not_found(format!("unknown plugin {id:?} (see `plugboard list`)")))
}

fn with_id(m: &PluginMetadata) -> Value {
    let mut v = Map::new();
    v.insert("unique_id".into(), json!(m.unique_id()));
    if let Ok(Value::Object(fields)) = serde_json::to_value(m) {
        v.extend(fields);
    }
    Value::Object(v)
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// `plugboard list`.
pub fn list(
    dirs: &Dirs,
    category: Option<String>,
    mode: Option<ExecutionMode>,
    configured: bool,
    unconfigured: bool,
    as_json: bool,
) -> CmdResult {
    let r = registry(dirs)?;
    let plugins: Vec<&PluginMetadata> = r
        .all_plugins()
        .into_iter()
        .filter(|p| category.as_ref().is_none_or(|c| &p.category == c))
        .filter(|p| mode.is_none_or(|m| p.execution_mode == m))
        .filter(|p| !configured || p.is_configured)
        .filter(|p| !unconfigured || !p.is_configured)
        .collect();
    if as_json {
        output::json(&plugins.iter().map(|p| with_id(p)).collect::<Vec<_>>());
        return Ok(());
    }
    if plugins.is_empty() {
        let filtered = category.is_some() || mode.is_some() || configured || unconfigured;
        let looked = dirs
            .plugins
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if filtered && !r.all_plugins().is_empty() {
            eprintln!("no plugins match (looked in {looked})");
        } else {
            eprintln!(
                "no plugins found in {looked}; point at your plugins with --plugins DIR (repeatable) or PLUGBOARD_PLUGINS=DIR[:DIR…] (with no --plugins, a host running on --data-dir {} lends its own)",
                dirs.data.display()
            );
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            vec![
                p.unique_id(),
                p.title.clone(),
                p.execution_mode.to_string(),
                p.version.clone().unwrap_or_else(|| "-".into()),
                yes(p.is_configured),
            ]
        })
        .collect();
    table(&["ID", "TITLE", "MODE", "VERSION", "CONFIGURED"], &rows);
    Ok(())
}

/// `plugboard show`.
pub fn show(dirs: &Dirs, id: &str, as_json: bool) -> CmdResult {
    let r = registry(dirs)?;
    let m = known(&r, id)?;
    if as_json {
        output::json(&with_id(m));
        return Ok(());
    }
    println!("{}  ({})", m.title, m.unique_id());
    if let Some(d) = &m.description {
        println!("  {d}");
    }
    let rows = vec![
        vec![
            "category".into(),
            format!("{} ({})", m.category, r.category_display_name(&m.category)),
        ],
        vec!["version".into(), m.version.clone().unwrap_or_else(|| "-".into())],
        vec![
            "mode".into(),
            format!(
                "{} ({})",
                m.execution_mode,
                if m.is_local_execution() {
                    "local"
                } else {
                    "cloud/remote"
                }
            ),
        ],
        vec!["configured".into(), yes(m.is_configured)],
        vec![
            "conda env".into(),
            m.conda_env_name.clone().unwrap_or_else(|| "-".into()),
        ],
    ];
    table(&["FIELD", "VALUE"], &rows);
    println!("config schema:");
    println!("{}", serde_json::to_string_pretty(&m.config_schema).unwrap_or_default());
    Ok(())
}

/// `plugboard stats`.
pub fn stats(dirs: &Dirs, as_json: bool) -> CmdResult {
    let r = registry(dirs)?;
    let s = plugin_stats(r.all_plugins());
    if as_json {
        output::json(&s);
        return Ok(());
    }
    let mut rows = vec![
        vec!["total".to_owned(), s.total.to_string()],
        vec!["configured".into(), s.configured.to_string()],
        vec!["unconfigured".into(), s.unconfigured.to_string()],
        vec!["local".into(), s.local.to_string()],
        vec!["cloud".into(), s.cloud.to_string()],
        vec!["with active resources".into(), s.with_active_resources.to_string()],
    ];
    for (c, n) in &s.by_category {
        rows.push(vec![format!("category {}", r.category_display_name(c)), n.to_string()]);
    }
    table(&["STAT", "COUNT"], &rows);
    Ok(())
}

fn config_failure(e: ConfigError) -> Failure {
    match &e {
        ConfigError::InvalidId(_) => Failure::usage(e),
        ConfigError::Invalid { violations, .. } => {
            for v in violations {
                eprintln!("  {v}");
            }
            Failure::failed(e)
        }
        _ => Failure::failed(e),
    }
}

/// `plugboard config get`.
pub fn config_get(dirs: &Dirs, id: &str) -> CmdResult {
    let r = registry(dirs)?;
    known(&r, id)?;
    let c = r.load_plugin_config(id).map_err(config_failure)?;
    output::json(&c);
    Ok(())
}

fn read_json_arg(json: Option<String>, file: Option<PathBuf>) -> Result<Option<Value>, Failure> {
    let (text, from) = match (json, file) {
        (Some(j), _) => (j, "--json".to_owned()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::failed(format!("cannot read stdin: {e}")))?;
            (s, "stdin".to_owned())
        }
        (None, Some(f)) => (
            std::fs::read_to_string(&f).map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?,
            f.display().to_string(),
        ),
        (None, None) => return Ok(None),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Failure::usage(format!(
            "{from} is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

fn as_object(v: Value, from: &str) -> Result<Map<String, Value>, Failure> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(Failure::usage(format!(
            "{from} must be a JSON object, got {}",
            json_type_name(&other)
        ))),
    }
}

/// Applies `a.b=VALUE` to a config (VALUE parsed as JSON, else a string).
fn apply_pair(config: &mut Map<String, Value>, pair: &str) -> Result<(), Failure> {
    let (key, raw) = pair
        .split_once('=')
        .ok_or_else(|| Failure::usage(format!("{pair:?} is not KEY=VALUE")))?;
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Failure::usage(format!("{pair:?} has an empty key")));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = config;
    for p in &parts[..parts.len() - 1] {
        let entry = node.entry((*p).to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        node = match entry {
            Value::Object(m) => m,
            _ => return Err(Failure::usage(format!("{key}: {p} is not an object"))),
        };
    }
    node.insert(parts[parts.len() - 1].to_owned(), value);
    Ok(())
}

/// Why a `config set KEY=VALUE` update failed: a bad pair, or the store.
enum SetError {
    Pair(Failure),
    Config(ConfigError),
}

impl From<ConfigError> for SetError {
    fn from(e: ConfigError) -> Self {
        SetError::Config(e)
    }
}

/// `plugboard config set`.
pub fn config_set(dirs: &Dirs, id: &str, json: Option<String>, file: Option<PathBuf>, pairs: Vec<String>) -> CmdResult {
    let mut r = registry(dirs)?;
    known(&r, id)?;
    match read_json_arg(json, file)? {
        Some(v) => r
            .save_plugin_config(id, &as_object(v, "the config")?)
            .map_err(config_failure)?,
        None if pairs.is_empty() => {
            return Err(Failure::usage(
                "give the config with --json, --file, or KEY=VALUE pairs",
            ));
        }
        None => {
            // Read-modify-write under the config's lock: concurrent sets of
            // other keys are kept.
            r.update_plugin_config(id, |c| {
                pairs.iter().try_for_each(|p| apply_pair(c, p)).map_err(SetError::Pair)
            })
            .map_err(|e| match e {
                SetError::Pair(f) => f,
                SetError::Config(e) => config_failure(e),
            })?;
        }
    }
    eprintln!(
        "saved {}",
        r.config_store()
            .path_for(id)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    output::json(&r.load_plugin_config(id).map_err(config_failure)?);
    Ok(())
}

/// `plugboard config validate`.
pub fn config_validate(dirs: &Dirs, id: &str, json: Option<String>, file: Option<PathBuf>) -> CmdResult {
    let r = registry(dirs)?;
    known(&r, id)?;
    let v = read_json_arg(json, file)?.ok_or_else(|| Failure::usage("give the config with --json or --file"))?;
    let config = as_object(v, "the config")?;
    r.validate_plugin_config(id, &config).map_err(config_failure)?;
    println!("valid");
    Ok(())
}

/// `plugboard config delete`.
pub fn config_delete(dirs: &Dirs, id: &str) -> CmdResult {
    let mut r = registry(dirs)?;
    known(&r, id)?;
    if r.delete_plugin_config(id).map_err(config_failure)? {
        println!("deleted the config of {id}");
    } else {
        println!("{id} had no saved config");
    }
    Ok(())
}

/// `plugboard config edit`.
pub fn config_edit(dirs: &Dirs, id: &str) -> CmdResult {
    let mut r = registry(dirs)?;
    known(&r, id)?;
    let current = r.load_plugin_config(id).map_err(config_failure)?;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "vi".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{id}-"))
        .suffix(".json")
        .tempfile()
        .map_err(|e| Failure::failed(format!("cannot create a temp file: {e}")))?;
    std::fs::write(
        tmp.path(),
        serde_json::to_string_pretty(&current).unwrap_or_default() + "\n",
    )
    .map_err(|e| Failure::failed(format!("cannot write {}: {e}", tmp.path().display())))?;
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(words)
        .arg(tmp.path())
        .status()
        .map_err(|e| Failure::failed(format!("cannot run editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(Failure::failed(format!(
            "editor {editor:?} failed ({status}); nothing saved"
        )));
    }
    let text = std::fs::read_to_string(tmp.path())
        .map_err(|e| Failure::failed(format!("cannot read the edited file: {e}")))?;
    let parsed: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let kept = tmp.keep().map(|(_, p)| p.display().to_string()).unwrap_or_default();
            return Err(Failure::failed(format!(
                "the edited config is not JSON (line {}, column {}): {e}; nothing saved, your edit is in {kept}",
                e.line(),
                e.column()
            )));
        }
    };
    let config = as_object(parsed, "the edited config")?;
    if let Err(e) = r.save_plugin_config(id, &config) {
        let kept = tmp.keep().map(|(_, p)| p.display().to_string()).unwrap_or_default();
        eprintln!("your edit is kept in {kept}");
        return Err(config_failure(e));
    }
    println!("saved the config of {id}");
    Ok(())
}

pub fn ledger(dirs: &Dirs) -> Result<Ledger, Failure> {
    Ledger::open(&DataDir::new(&dirs.data).ledger_path()).map_err(Failure::failed)
}

/// `YYYY-MM-DD HH:MM:SS` UTC from ms since the epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `plugboard ps`.
pub fn ps(dirs: &Dirs, as_json: bool) -> CmdResult {
    let l = ledger(dirs)?;
    let rows = l.live().map_err(Failure::failed)?;
    if as_json {
        output::json(&rows);
        return Ok(());
    }
    let now = now_ms();
    // Plugins stopped by a budget or a lifecycle limit in the last hour, and why.
    let governed: Vec<_> = l
        .ended_since(now - 3_600_000)
        .map_err(Failure::failed)?
        .into_iter()
        .filter(|r| r.note.as_deref().is_some_and(|n| n.starts_with("stopped: ")))
        .collect();
    if rows.is_empty() {
        println!("nothing is running");
    }
    for r in &governed {
        println!(
            "{} was {} at {} UTC",
            r.plugin_id,
            r.note.as_deref().unwrap_or_default(),
            utc(r.ended_at.unwrap_or(now))
        );
    }
    if rows.is_empty() {
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.plugin_id.clone(),
                r.backend.clone(),
                r.handle.as_ref().map_or_else(|| "-".into(), |h| h.short()),
                r.endpoint.clone().unwrap_or_else(|| "-".into()),
                output::state(r.status.as_str()),
                utc(r.created_at),
                human_duration(now - r.created_at),
                r.cost_per_hour.map_or("-".into(), |c| format!("{c:.2}")),
                format!("{:.4}", r.accrued_usd(now)),
                match (r.deadline_at, &r.deadline_reason) {
                    (Some(at), Some(why)) => format!("{} ({why})", human_duration(at - now)),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "PLUGIN",
            "BACKEND",
            "RESOURCE",
            "ENDPOINT",
            "STATUS",
            "STARTED (UTC)",
            "UPTIME",
            "USD/H",
            "ACCRUED USD",
            "STOPS IN",
        ],
        &table_rows,
    );
    Ok(())
}

/// `plugboard gc`.
pub fn gc(dirs: &Dirs, all: bool, dry_run: bool, as_json: bool) -> CmdResult {
    let mut l = ledger(dirs)?;
    let spin = if as_json { None } else { output::spinner("reaping") };
    let rt = super::runtime()?;
    let report = rt
        .block_on(run_gc(
            &mut l,
            GcOptions {
                all,
                dry_run,
                grace: Duration::from_secs(2),
                ..Default::default()
            },
            None,
            &Backends::builtin_with_secrets(None, Some(DataDir::new(&dirs.data).secrets_path())),
        ))
        .map_err(Failure::failed)?;
    if let Some(s) = spin {
        s.finish_and_clear();
    }
    if as_json {
        output::json(&report);
        return Ok(());
    }
    let verb = if dry_run { "would reap" } else { "reaped" };
    if report.reaped.is_empty() {
        println!(
            "nothing to reap ({} live resource(s) kept: their host runs)",
            report.kept
        );
    } else {
        let rows: Vec<Vec<String>> = report
            .reaped
            .iter()
            .map(|r| {
                let what = if r.pids.is_empty() {
                    r.found.clone().unwrap_or_else(|| "-".into())
                } else {
                    r.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                };
                let outcome = match (&r.error, r.confirmed, dry_run) {
                    (Some(e), _, _) => format!("NOT CONFIRMED: {e}"),
                    (None, _, true) => "planned".into(),
                    (None, true, false) => "gone".into(),
                    (None, false, false) => "-".into(),
                };
                vec![
                    r.plugin_id.clone().unwrap_or_else(|| "-".into()),
                    r.resource_id.map_or("-".into(), |i| i.to_string()),
                    r.backend.clone(),
                    what,
                    r.reason.clone(),
                    outcome,
                ]
            })
            .collect();
        table(
            &["PLUGIN", "RESOURCE", "BACKEND", "PIDS/FOUND", "REASON", "OUTCOME"],
            &rows,
        );
        println!("{verb} {} resource(s); {} kept", report.reaped.len(), report.kept);
        if report.unconfirmed > 0 {
            println!(
                "{} resource(s) could not be confirmed gone; they stay in the ledger and the next gc tries again",
                report.unconfirmed
            );
        }
    }
    Ok(())
}

/// `plugboard logs`.
pub fn logs(dirs: &Dirs, id: &str, follow: bool, lines: usize) -> CmdResult {
    check_id(id).map_err(Failure::usage)?;
    let path = DataDir::new(&dirs.data).log_path(id);
    if !path.exists() {
        let r = registry(dirs)?;
        known(&r, id)?;
        if !follow {
            eprintln!("{id} has no log yet ({})", path.display());
            return Ok(());
        }
    }
    for l in
        plugboard_host::logs::tail(&path, lines).map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?
    {
        println!("{l}");
    }
    if !follow {
        return Ok(());
    }
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => continue,
        };
        if len < pos {
            pos = 0; // rotated
        }
        if len > pos
            && let Ok(mut f) = std::fs::File::open(&path)
            && f.seek(SeekFrom::Start(pos)).is_ok()
        {
            let mut buf = String::new();
            if f.read_to_string(&mut buf).is_ok() {
                print!("{buf}");
                pos = len;
            }
        }
    }
}
