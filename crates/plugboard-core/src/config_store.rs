//! Plugin configs on disk: `{config_dir}/{unique_id}.json`, pretty JSON, the
//! seed's layout.
//!
//! What the seed did not promise and this store does: a config is validated
//! before it is written; a write never leaves a torn or mixed file, whoever
//! else writes at the same time and whenever the process dies (temp file in
//! the same directory, fsync, rename, fsync of the directory); a corrupt file
//! is an error naming the file and position, never a silent `{}`; and no id
//! can name a file outside the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ConfigError, InvalidId, json_type_name};
use crate::schema::CompiledSchema;

/// The seed's default config directory, relative to the working directory.
pub const DEFAULT_CONFIG_DIR: &str = "configs";

/// The longest plugin id accepted, in bytes (file names are limited to 255).
pub const MAX_ID_LEN: usize = 200;

/// Checks that `id` can safely name a file inside the config dir.
///
/// Refused: empty, longer than [`MAX_ID_LEN`] bytes, `/`, `\`, NUL or other
/// control characters, `..` anywhere, or a leading `.` (hidden and temp files).
///
/// ```
/// use plugboard_core::config_store::check_id;
///
/// assert!(check_id("transcription_whisper").is_ok());
/// assert!(check_id("../etc/passwd").is_err());
/// assert!(check_id("").is_err());
/// ```
pub fn check_id(id: &str) -> Result<(), InvalidId> {
    let refuse = |reason| {
        let shown: String = id.chars().take(64).collect();
        Err(InvalidId { id: shown, reason })
    };
    if id.is_empty() {
        return refuse("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return refuse("it is longer than 200 bytes");
    }
    if id.contains(['/', '\\']) {
        return refuse("it contains a path separator");
    }
    if id.chars().any(char::is_control) {
        return refuse("it contains NUL or another control character");
    }
    if id.contains("..") {
        return refuse("it contains '..'");
    }
    if id.starts_with('.') {
        return refuse("it starts with '.'");
    }
    Ok(())
}

/// Reads, validates and atomically writes plugin configs in one directory.
///
/// ```
/// use plugboard_core::ConfigStore;
/// use serde_json::json;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = ConfigStore::new(dir.path());
/// let config = json!({"device": "cuda"}).as_object().unwrap().clone();
/// store.save("transcription_whisper", &config, None).unwrap();
/// assert_eq!(store.load("transcription_whisper").unwrap(), config);
/// assert!(store.delete("transcription_whisper").unwrap());
/// assert!(store.load("transcription_whisper").unwrap().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct ConfigStore {
    dir: PathBuf,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new(DEFAULT_CONFIG_DIR)
    }
}

impl ConfigStore {
    /// A store over `dir`; the directory is created on the first save.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigStore { dir: dir.into() }
    }

    /// The directory configs live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `unique_id`'s config, after checking the id.
    pub fn path_for(&self, unique_id: &str) -> Result<PathBuf, ConfigError> {
        check_id(unique_id)?;
        Ok(self.dir.join(format!("{unique_id}.json")))
    }

    /// True when a config file exists for `unique_id`.
    pub fn exists(&self, unique_id: &str) -> Result<bool, ConfigError> {
        let path = self.path_for(unique_id)?;
        Ok(path.is_file())
    }

    /// The saved config, or an empty object when none is saved (seed
    /// behaviour). A file that is not a JSON object is [`ConfigError::Corrupt`].
    pub fn load(&self, unique_id: &str) -> Result<Map<String, Value>, ConfigError> {
        let path = self.path_for(unique_id)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(ConfigError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(ConfigError::Corrupt {
                path,
                line: 1,
                column: 1,
                reason: format!("expected a JSON object, found {}", json_type_name(&other)),
            }),
            Err(e) => Err(ConfigError::Corrupt {
                path,
                line: e.line(),
                column: e.column(),
                reason: e.to_string(),
            }),
        }
    }

    /// [`load`](Self::load), then fill the schema's defaults for missing keys.
    pub fn load_with_defaults(
        &self,
        unique_id: &str,
        schema: Option<&CompiledSchema>,
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut config = self.load(unique_id)?;
        if let Some(s) = schema {
            s.fill_defaults(&mut config);
        }
        Ok(config)
    }

    /// Validates `config` against `schema` (when given) and replaces the file
    /// atomically. On any error the file on disk is as it was.
    pub fn save(
        &self,
        unique_id: &str,
        config: &Map<String, Value>,
        schema: Option<&CompiledSchema>,
    ) -> Result<(), ConfigError> {
        let path = self.path_for(unique_id)?;
        if let Some(s) = schema {
            // Validation needs a Value; the clone is cheap next to the fsyncs.
            s.validate(unique_id, &Value::Object(config.clone()))?;
        }
        let mut text = serde_json::to_string_pretty(config).map_err(|e| ConfigError::Io {
            op: "serialize the config for",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        text.push('\n');
        write_atomic(&self.dir, &path, text.as_bytes())
    }

    /// Deletes the saved config; `Ok(false)` when there was none.
    pub fn delete(&self, unique_id: &str) -> Result<bool, ConfigError> {
        let path = self.path_for(unique_id)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ConfigError::Io {
                op: "delete",
                path,
                source,
            }),
        }
    }

    /// The ids that have a saved config, sorted. Temp files and other
    /// non-config files are ignored; a missing directory lists nothing.
    pub fn ids(&self) -> Result<Vec<String>, ConfigError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ConfigError::Io {
                    op: "list",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
            .filter(|id| check_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one,
/// never a mix: a uniquely named temp file in `dir`, fsync, rename over
/// `path`, fsync of `dir`.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let io_err = |op, source| ConfigError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(|source| ConfigError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("config");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io_err("create a temp file beside", e))?;
    tmp.write_all(bytes)
        .map_err(|e| io_err("write a temp file beside", e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_err("fsync a temp file beside", e))?;
    tmp.persist(path).map_err(|e| io_err("rename into place", e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ConfigError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ConfigError::Io {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}
