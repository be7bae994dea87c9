//! Plugin configs on disk: `{config_dir}/{unique_id}.json`, pretty JSON, the
//! seed's layout.
//!
//! What the seed did not promise and this store does: a config is validated
//! before it is written; a write never leaves a torn or mixed file, whoever
//! else writes at the same time and whenever the process dies (temp file in
//! the same directory, fsync, rename, fsync of the directory); a corrupt file
//! is an error naming the file and position, never a silent `{}`; no id
//! can name a file outside the directory; read-modify-write updates
//! ([`ConfigStore::update`]) hold a per-config lock across processes, so
//! concurrent updates of different keys all land; a config is at most
//! [`MAX_CONFIG_BYTES`]; and a config path that is a FIFO, socket or device
//! is refused, never opened in a way that could block.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde_json::{Map, Value};

use crate::error::{ConfigError, InvalidId, json_type_name};
use crate::files::{FileError, file_kind, read_regular_file};
use crate::schema::CompiledSchema;

/// The seed's default config directory, relative to the working directory.
pub const DEFAULT_CONFIG_DIR: &str = "configs";

/// The longest plugin id accepted, in bytes (file names are limited to 255).
pub const MAX_ID_LEN: usize = 200;

/// The largest config accepted, in bytes of its file (pretty JSON): 1 MiB.
/// Saves over it are refused and files over it are not loaded, since a
/// config travels whole to its worker on every start and apply. Large data
/// belongs in files whose paths the config holds.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// How long [`ConfigStore::update`], [`save`](ConfigStore::save) and
/// [`delete`](ConfigStore::delete) wait for another writer's lock on the same
/// config before failing with [`ConfigError::Locked`].
pub const CONFIG_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

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
    lock_timeout: Duration,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new(DEFAULT_CONFIG_DIR)
    }
}

impl ConfigStore {
    /// A store over `dir`; the directory is created on the first save.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigStore {
            dir: dir.into(),
            lock_timeout: CONFIG_LOCK_TIMEOUT,
        }
    }

    /// The same store, waiting at most `timeout` for another writer's lock
    /// (default [`CONFIG_LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
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
    /// behaviour). A file that is not a JSON object is [`ConfigError::Corrupt`];
    /// a path that is not a regular file is [`ConfigError::NotAFile`] (it is
    /// never opened in a way that could block); a file over
    /// [`MAX_CONFIG_BYTES`] is [`ConfigError::TooLarge`].
    pub fn load(&self, unique_id: &str) -> Result<Map<String, Value>, ConfigError> {
        let path = self.path_for(unique_id)?;
        let bytes = match read_regular_file(&path, MAX_CONFIG_BYTES as u64) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Map::new()),
            Err(FileError::NotRegular { path, kind }) => return Err(ConfigError::NotAFile { path, kind }),
            Err(FileError::TooLarge { size, limit, .. }) => {
                return Err(ConfigError::TooLarge {
                    unique_id: unique_id.to_owned(),
                    size,
                    limit,
                });
            }
            Err(FileError::Io { path, source }) => {
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
    /// atomically, under the config's lock (see [`update`](Self::update)).
    /// A config over [`MAX_CONFIG_BYTES`] serialized is
    /// [`ConfigError::TooLarge`]. On any error the file on disk is as it was.
    pub fn save(
        &self,
        unique_id: &str,
        config: &Map<String, Value>,
        schema: Option<&CompiledSchema>,
    ) -> Result<(), ConfigError> {
        let path = self.path_for(unique_id)?;
        let text = serialize(unique_id, &path, config)?;
        if let Some(s) = schema {
            // Validation needs a Value; the clone is cheap next to the fsyncs.
            s.validate(unique_id, &Value::Object(config.clone()))?;
        }
        let _lock = self.lock(unique_id, &path)?;
        write_atomic(&self.dir, &path, text.as_bytes())
    }

    /// Read-modify-write of one config that no other writer can interleave
    /// with, in this process or another: takes the config's lock (an
    /// exclusive `flock` on `.{unique_id}.json.lock` in the config dir,
    /// waiting at most the store's lock timeout, else
    /// [`ConfigError::Locked`]), loads the saved config (without defaults;
    /// `{}` when none), lets `change` edit it, validates it against `schema`
    /// and saves it atomically. Returns the config as saved.
    ///
    /// When `change` fails, nothing is written and its error is returned.
    /// Eight processes each setting a different key at once keep all eight.
    ///
    /// ```
    /// use plugboard_core::{ConfigError, ConfigStore};
    /// use serde_json::json;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = ConfigStore::new(dir.path());
    /// store.update("stt_whisper", None, |c| {
    ///     c.insert("device".into(), json!("cuda"));
    ///     Ok::<_, ConfigError>(())
    /// }).unwrap();
    /// let saved = store.update("stt_whisper", None, |c| {
    ///     c.insert("beam".into(), json!(5));
    ///     Ok::<_, ConfigError>(())
    /// }).unwrap();
    /// assert_eq!(serde_json::Value::Object(saved), json!({"device": "cuda", "beam": 5}));
    /// ```
    pub fn update<E, F>(
        &self,
        unique_id: &str,
        schema: Option<&CompiledSchema>,
        change: F,
    ) -> Result<Map<String, Value>, E>
    where
        F: FnOnce(&mut Map<String, Value>) -> Result<(), E>,
        E: From<ConfigError>,
    {
        let path = self.path_for(unique_id)?;
        let _lock = self.lock(unique_id, &path)?;
        let mut config = self.load(unique_id)?;
        change(&mut config)?;
        let text = serialize(unique_id, &path, &config)?;
        if let Some(s) = schema {
            s.validate(unique_id, &Value::Object(config.clone()))?;
        }
        write_atomic(&self.dir, &path, text.as_bytes())?;
        Ok(config)
    }

    /// Deletes the saved config (under its lock); `Ok(false)` when there was none.
    pub fn delete(&self, unique_id: &str) -> Result<bool, ConfigError> {
        let path = self.path_for(unique_id)?;
        if !self.dir.is_dir() {
            return Ok(false);
        }
        let _lock = self.lock(unique_id, &path)?;
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

    /// The lock file of `unique_id`'s config: `.{unique_id}.json.lock` in
    /// the config dir. It stays after use (removing it would race).
    pub fn lock_path_for(&self, unique_id: &str) -> Result<PathBuf, ConfigError> {
        check_id(unique_id)?;
        Ok(self.dir.join(format!(".{unique_id}.json.lock")))
    }

    /// Takes the exclusive lock of one config, polling for at most the
    /// store's lock timeout. Released when the guard drops (or the process
    /// dies: the kernel drops `flock`s with their file).
    fn lock(&self, unique_id: &str, path: &Path) -> Result<Flock<File>, ConfigError> {
        let lock_path = self.lock_path_for(unique_id)?;
        let io_err = |op, source| ConfigError::Io {
            op,
            path: lock_path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(|source| ConfigError::Io {
            op: "create directory",
            path: self.dir.clone(),
            source,
        })?;
        // No symlink is followed and no FIFO can block the open.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(&lock_path)
            .map_err(|e| io_err("open the lock file", e))?;
        let t = file
            .metadata()
            .map_err(|e| io_err("inspect the lock file", e))?
            .file_type();
        if !t.is_file() {
            return Err(ConfigError::NotAFile {
                path: lock_path,
                kind: file_kind(&t),
            });
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((f, Errno::EWOULDBLOCK)) => {
                    let waited = started.elapsed();
                    if waited >= self.lock_timeout {
                        return Err(ConfigError::Locked {
                            path: path.to_path_buf(),
                            lock: lock_path,
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(self.lock_timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(10));
                    file = f;
                }
                Err((_, errno)) => return Err(io_err("lock", io::Error::from(errno))),
            }
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

/// `config` as the file's text (pretty JSON and a newline), refused over
/// [`MAX_CONFIG_BYTES`].
fn serialize(unique_id: &str, path: &Path, config: &Map<String, Value>) -> Result<String, ConfigError> {
    let mut text = serde_json::to_string_pretty(config).map_err(|e| ConfigError::Io {
        op: "serialize the config for",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    text.push('\n');
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            unique_id: unique_id.to_owned(),
            size: text.len() as u64,
            limit: MAX_CONFIG_BYTES as u64,
        });
    }
    Ok(text)
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
