//! Provider keys and the other secrets plugboard itself needs: the
//! environment first, then a private file in the data dir.
//!
//! **Why a store of its own.** Cloud backends (AWS EC2, Lambda Cloud,
//! RunPod, Vast.ai) call their providers with API keys. A key must never
//! reach a plugin config, the ledger, a log, `--json` output, the host API
//! or a dashboard page: each of those is copied, shared, shown or kept far
//! longer than a key should be. So a key lives in exactly two places — the
//! environment of the process that needs it, or `{data_dir}/secrets.json` —
//! is read at the moment a backend needs it, and travels as a [`Secret`],
//! whose `Debug` and `Display` print `***`. Only [`Secret::expose`] gives
//! the value, where it is handed to the provider.
//!
//! **The file.** `secrets.json` ([`DataDir::secrets_path`]) is
//! `{"secrets": {"NAME": "value", …}}`, mode 0600. It is never written in
//! place: a temp file is created in the same directory with mode 0600 from
//! its first instant (so no value is ever world-readable, not even while it
//! is being written), written, fsynced and renamed over the old one, and the
//! directory is fsynced; writers take an exclusive lock
//! (`secrets.json.lock` beside it) so two concurrent `set`s both land.
//! Opening a file that group or others may read or write is refused with an
//! error that says `chmod 600 PATH`, as ssh refuses a private key: its
//! values must be taken as leaked, and plugboard will not quietly keep using
//! them.
//!
//! **Names** are environment-variable style, `^[A-Z][A-Z0-9_]{0,63}$`, so
//! the same name works in both places. [`KNOWN`] lists the ones plugboard's
//! backends read.
//!
//! **Lookup order** ([`lookup`]): the environment variable of the same name
//! first (CI, one-off runs, AWS's usual variables), then the store. An
//! empty or non-UTF-8 variable counts as unset.
//!
//! [`DataDir::secrets_path`]: crate::paths::DataDir::secrets_path

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};

/// The secrets plugboard's backends read: `(name, what it is for)`.
pub const KNOWN: &[(&str, &str)] = &[
    ("LAMBDA_API_KEY", "Lambda Cloud API key"),
    ("RUNPOD_API_KEY", "RunPod API key"),
    ("VAST_API_KEY", "Vast.ai API key"),
    (
        "AWS_ACCESS_KEY_ID",
        "AWS access key id (normally from the AWS default credential chain)",
    ),
    (
        "AWS_SECRET_ACCESS_KEY",
        "AWS secret access key (normally from the AWS default credential chain)",
    ),
    (
        "AWS_SESSION_TOKEN",
        "AWS session token (normally from the AWS default credential chain)",
    ),
];

/// The longest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// The largest secrets file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How long a writer waits for another writer's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the secret store. Each names the file (or the bad name); none
/// ever contains a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file system refused.
    #[error("secret store {}: cannot {op}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`"read"`, `"rename into place"`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file may be read or written by group or others.
    #[error(
        "secret store {} has mode {mode:04o}: it must be readable by its owner only; its values may have leaked \
         (rotate them), then run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names something other than a regular file.
    #[error("secret store {} is {kind}, not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead (`"a directory"`, …).
        kind: &'static str,
    },
    /// The file is not a secrets file.
    #[error("secret store {} is not valid: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why (never quoting a value).
        reason: String,
    },
    /// Another writer held the lock too long.
    #[error("secret store {}: another writer holds {} (waited {waited:?})", path.display(), lock.display())]
    Locked {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// How long this writer waited.
        waited: Duration,
    },
    /// A name that is not `^[A-Z][A-Z0-9_]{0,63}$`.
    #[error(
        "{name:?} is not a secret name: use A-Z, 0-9 and _, starting with a letter, at most 64 characters \
         (like LAMBDA_API_KEY)"
    )]
    BadName {
        /// The name as given.
        name: String,
    },
    /// A value that cannot be stored.
    #[error("the value of {name} {reason}")]
    BadValue {
        /// The secret's name.
        name: String,
        /// What is wrong with it (`"is empty"`, …), never the value.
        reason: &'static str,
    },
}

/// True when `name` is a valid secret name: `^[A-Z][A-Z0-9_]{0,63}$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// `Ok` for a valid name, else [`SecretError::BadName`] naming it.
pub fn check_name(name: &str) -> Result<(), SecretError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(SecretError::BadName { name: name.to_owned() })
    }
}

/// What a known secret is for (`None` for a name not in [`KNOWN`]).
pub fn purpose(name: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

fn check_value(name: &str, value: &str) -> Result<(), SecretError> {
    let reason = if value.is_empty() {
        "is empty"
    } else if value.len() > MAX_VALUE_BYTES {
        "is over 16 KiB"
    } else if value.contains(['\n', '\r']) {
        "is more than one line"
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(SecretError::BadValue {
        name: name.to_owned(),
        reason,
    })
}

/// A secret value. `Debug` and `Display` print `***`; it is not
/// serializable; [`Secret::expose`] is the one way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that hands it to a provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SecretSource {
    /// The environment variable of the same name.
    #[serde(rename = "environment")]
    Environment,
    /// The data dir's secret store.
    #[serde(rename = "secret store")]
    Store,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretSource::Environment => "environment",
            SecretSource::Store => "secret store",
        })
    }
}

/// The secret `name`: the environment variable of the same name if it is
/// set (and not empty), else the store's value, else `None`. An invalid
/// name is never found.
pub fn lookup(name: &str, store: Option<&SecretStore>) -> Option<(Secret, SecretSource)> {
    lookup_in(name, store, |n| std::env::var(n).ok())
}

fn lookup_in(
    name: &str,
    store: Option<&SecretStore>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<(Secret, SecretSource)> {
    if !valid_name(name) {
        return None;
    }
    if let Some(v) = env(name).filter(|v| !v.is_empty()) {
        return Some((Secret(v), SecretSource::Environment));
    }
    store.and_then(|s| s.get(name)).map(|v| (v, SecretSource::Store))
}

/// Whether one secret is set and where from, as `plugboard secret list` and
/// `GET /api/v1/secrets` show it. Holds no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretStatus {
    /// The name.
    pub name: String,
    /// True when [`lookup`] finds it.
    pub set: bool,
    /// Where [`lookup`] finds it (`None` when not set).
    pub source: Option<SecretSource>,
    /// What it is for (`None` for a name not in [`KNOWN`]).
    #[serde(rename = "for")]
    pub purpose: Option<&'static str>,
}

/// Every [`KNOWN`] name, then every other name in `store` (sorted): set or
/// not, and where from.
pub fn statuses(store: Option<&SecretStore>) -> Vec<SecretStatus> {
    statuses_in(store, |n| std::env::var(n).ok())
}

fn statuses_in(store: Option<&SecretStore>, env: impl Fn(&str) -> Option<String>) -> Vec<SecretStatus> {
    let mut names: Vec<String> = KNOWN.iter().map(|(n, _)| (*n).to_owned()).collect();
    if let Some(s) = store {
        names.extend(s.names().into_iter().filter(|n| purpose(n).is_none()));
    }
    names
        .into_iter()
        .map(|name| {
            let source = lookup_in(&name, store, &env).map(|(_, src)| src);
            SecretStatus {
                set: source.is_some(),
                source,
                purpose: purpose(&name),
                name,
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    secrets: BTreeMap<&'a str, &'a str>,
}

/// The secret store: `secrets.json` in the data dir, mode 0600 (see the
/// module docs). [`SecretStore::open`] reads it once; [`SecretStore::set`]
/// and [`SecretStore::delete`] change the file (under its lock, from its
/// current contents) and this copy.
pub struct SecretStore {
    path: PathBuf,
    secrets: BTreeMap<String, Secret>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .field("names", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretStore {
    /// Opens the store at `path` (usually [`DataDir::secrets_path`]). A
    /// missing file is an empty store; a file group or others may access is
    /// refused ([`SecretError::Permissions`]), as is one that is not a
    /// regular file or not a valid secrets file.
    ///
    /// [`DataDir::secrets_path`]: crate::paths::DataDir::secrets_path
    pub fn open(path: impl Into<PathBuf>) -> Result<SecretStore, SecretError> {
        let path = path.into();
        let secrets = read(&path)?;
        Ok(SecretStore { path, secrets })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value of `name`.
    pub fn get(&self, name: &str) -> Option<Secret> {
        self.secrets.get(name).cloned()
    }

    /// The stored names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    /// Stores `value` as `name`, replacing any value it had. The name must
    /// be valid; the value one non-empty line of at most
    /// [`MAX_VALUE_BYTES`] without NUL.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SecretError> {
        check_name(name)?;
        check_value(name, value)?;
        self.update(|m| {
            m.insert(name.to_owned(), Secret(value.to_owned()));
            true
        })
        .map(|_| ())
    }

    /// Removes `name` from the store; false when it was not there.
    pub fn delete(&mut self, name: &str) -> Result<bool, SecretError> {
        check_name(name)?;
        self.update(|m| m.remove(name).is_some())
    }

    /// Under the lock: reads the file afresh, applies `change`, writes the
    /// file when `change` says it changed something, keeps the result.
    fn update(&mut self, change: impl FnOnce(&mut BTreeMap<String, Secret>) -> bool) -> Result<bool, SecretError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| SecretError::Io {
                path: dir.clone(),
                op: "create the directory",
                source,
            })?;
        let _lock = self.lock()?;
        let mut secrets = read(&self.path)?;
        let changed = change(&mut secrets);
        if changed {
            write(&dir, &self.path, &secrets)?;
        }
        self.secrets = secrets;
        Ok(changed)
    }

    /// The writers' exclusive lock, `{file}.lock` beside the file.
    fn lock(&self) -> Result<Flock<File>, SecretError> {
        let mut lock_name = self.path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = self.path.with_file_name(lock_name);
        let io_err = |op, source| SecretError::Io {
            path: lock_path.clone(),
            op,
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(&lock_path)
            .map_err(|e| io_err("open the lock file", e))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((f, Errno::EWOULDBLOCK)) => {
                    let waited = started.elapsed();
                    if waited >= LOCK_TIMEOUT {
                        return Err(SecretError::Locked {
                            path: self.path.clone(),
                            lock: lock_path,
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(LOCK_TIMEOUT - waited));
                    pause = (pause * 2).min(Duration::from_millis(10));
                    file = f;
                }
                Err((_, errno)) => return Err(io_err("lock", io::Error::from(errno))),
            }
        }
    }
}

/// Reads and checks the file: a missing one is empty.
fn read(path: &Path) -> Result<BTreeMap<String, Secret>, SecretError> {
    let io_err = |op, source| SecretError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    // O_NONBLOCK: a FIFO named there cannot block the open; it is refused
    // below, on the open descriptor.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_err("open", e)),
    };
    let meta = file.metadata().map_err(|e| io_err("inspect", e))?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
            kind: plugboard_core::files::file_kind(&meta.file_type()),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let invalid = |reason: String| SecretError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!("it is over {MAX_FILE_BYTES} bytes")));
    }
    // serde_json's messages can quote the input; only the position is kept.
    let parsed: FileIn = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(format!(
            "expected {{\"secrets\": {{\"NAME\": \"value\"}}}}, failed at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let mut secrets = BTreeMap::new();
    for (name, value) in parsed.secrets {
        check_name(&name).map_err(|e| invalid(e.to_string()))?;
        check_value(&name, &value).map_err(|e| invalid(e.to_string()))?;
        secrets.insert(name, Secret(value));
    }
    Ok(secrets)
}

/// Removes a temp file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes the file atomically: a 0600 temp file beside it, fsync, rename,
/// fsync of the directory.
fn write(dir: &Path, path: &Path, secrets: &BTreeMap<String, Secret>) -> Result<(), SecretError> {
    let io_err = |op, source| SecretError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let out = FileOut {
        secrets: secrets.iter().map(|(k, v)| (k.as_str(), v.expose())).collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&out).map_err(|e| io_err("serialize", io::Error::other(e)))?;
    bytes.push(b'\n');
    let base = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut attempt = 0u32;
    let (mut file, mut guard, tmp) = loop {
        let tmp = dir.join(format!(".{base}.{}.{nanos}.{attempt}.tmp", std::process::id()));
        // Created with mode 0600 (the umask can only take bits away) and
        // O_EXCL: never an existing file, never through a symlink.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&tmp)
        {
            Ok(f) => break (f, TempFile(Some(tmp.clone())), tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(io_err("create a temp file beside", e)),
        }
    };
    // Exactly 0600 whatever the umask took away, so the owner can rewrite it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("set the mode of a temp file beside", e))?;
    file.write_all(&bytes)
        .map_err(|e| io_err("write a temp file beside", e))?;
    file.sync_all().map_err(|e| io_err("fsync a temp file beside", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io_err("rename into place", e))?;
    guard.0 = None;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SecretError::Io {
            path: dir.to_path_buf(),
            op: "fsync the directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_written_file_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/secrets.json");
        let mut s = SecretStore::open(&path).unwrap();
        assert!(s.names().is_empty());
        s.set("LAMBDA_API_KEY", "lk-123").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(s.get("LAMBDA_API_KEY").unwrap().expose(), "lk-123");
        let again = SecretStore::open(&path).unwrap();
        assert_eq!(again.names(), ["LAMBDA_API_KEY"]);
        assert_eq!(again.get("LAMBDA_API_KEY").unwrap().expose(), "lk-123");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"secrets\""), "{text}");
    }

    #[test]
    fn writes_replace_atomically_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let mut s = SecretStore::open(&path).unwrap();
        s.set("A", "one").unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = ino(&path);
        // A reader holding the old file keeps reading the old contents: the
        // new file is a new inode renamed over it, never rewritten in place.
        let mut old = File::open(&path).unwrap();
        s.set("A", "two").unwrap();
        s.set("B", "three").unwrap();
        assert_ne!(ino(&path), first);
        let mut seen = String::new();
        old.read_to_string(&mut seen).unwrap();
        assert!(seen.contains("one") && !seen.contains("two"), "{seen}");
        let now = SecretStore::open(&path).unwrap();
        assert_eq!(now.get("A").unwrap().expose(), "two");
        assert_eq!(now.names(), ["A", "B"]);
        let mut entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["secrets.json", "secrets.json.lock"]);
        assert_eq!(mode(&dir.path().join("secrets.json.lock")), 0o600);
    }

    #[test]
    fn writers_merge_from_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let mut a = SecretStore::open(&path).unwrap();
        let mut b = SecretStore::open(&path).unwrap();
        a.set("A", "1").unwrap();
        b.set("B", "2").unwrap();
        assert_eq!(b.names(), ["A", "B"]);
        assert!(a.delete("B").unwrap());
        assert!(!a.delete("B").unwrap());
        assert_eq!(SecretStore::open(&path).unwrap().names(), ["A"]);
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, r#"{"secrets": {"A": "leaked-value"}}"#).unwrap();
        for m in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
            let e = SecretStore::open(&path).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, SecretError::Permissions { .. }), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{msg}");
            assert!(msg.contains(&format!("{m:04o}")), "{msg}");
            assert!(!msg.contains("leaked-value"), "{msg}");
        }
        // Writing does not quietly repair it either.
        let mut empty = SecretStore::open(dir.path().join("other.json")).unwrap();
        empty.path = path.clone();
        assert!(matches!(empty.set("B", "x"), Err(SecretError::Permissions { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretStore::open(&path).unwrap().names(), ["A"]);
    }

    #[test]
    fn bad_files_are_refused_without_quoting_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let put = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            SecretStore::open(&path).unwrap_err().to_string()
        };
        let msg = put(r#"{"secrets": {"A": 12345678}}"#);
        assert!(msg.contains("not valid") && !msg.contains("12345678"), "{msg}");
        let msg = put(r#"{"secrets": ["hunter2"]}"#);
        assert!(!msg.contains("hunter2"), "{msg}");
        let msg = put(r#"{"secrets": {"lower": "hunter2"}}"#);
        assert!(
            msg.contains("\"lower\" is not a secret name") && !msg.contains("hunter2"),
            "{msg}"
        );
        let msg = put(r#"{"secrets": {"A": ""}}"#);
        assert!(msg.contains("the value of A is empty"), "{msg}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let msg = SecretStore::open(&path).unwrap_err().to_string();
        assert!(msg.contains("a directory"), "{msg}");
    }

    #[test]
    fn names_and_values_are_validated() {
        for ok in ["A", "LAMBDA_API_KEY", "X9_", &format!("A{}", "B".repeat(63))] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "_A",
            "9A",
            "A-B",
            "A B",
            "Ä",
            "lambda_api_key",
            &"A".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = SecretStore::open(dir.path().join("secrets.json")).unwrap();
        let e = s.set("lambda_key", "v").unwrap_err();
        assert!(e.to_string().contains("\"lambda_key\" is not a secret name"), "{e}");
        assert!(matches!(s.delete("a-b"), Err(SecretError::BadName { .. })));
        for (value, why) in [
            ("", "is empty"),
            ("a\nb", "more than one line"),
            ("a\rb", "more than one line"),
            ("a\0b", "NUL"),
        ] {
            let e = s.set("A", value).unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("the value of A"), "{e}");
        }
        assert!(s.set("A", &"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(!dir.path().join("secrets.json").exists());
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(
            format!("{:?}", Some((s.clone(), SecretSource::Store))),
            "Some((***, Store))"
        );
        assert_eq!(s.expose(), "sk-very-secret");
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path().join("secrets.json")).unwrap();
        store.set("K", "sk-very-secret").unwrap();
        let dbg = format!("{store:?}");
        assert!(dbg.contains("\"K\"") && !dbg.contains("sk-very-secret"), "{dbg}");
        let st = format!("{:?}", statuses(Some(&store)));
        assert!(!st.contains("sk-very-secret"), "{st}");
    }

    #[test]
    fn the_environment_wins_over_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path().join("secrets.json")).unwrap();
        store.set("RUNPOD_API_KEY", "from-store").unwrap();
        store.set("VAST_API_KEY", "vast-store").unwrap();
        let env = |n: &str| match n {
            "RUNPOD_API_KEY" => Some("from-env".to_owned()),
            "VAST_API_KEY" | "LAMBDA_API_KEY" => Some(String::new()),
            _ => None,
        };
        let (v, src) = lookup_in("RUNPOD_API_KEY", Some(&store), env).unwrap();
        assert_eq!((v.expose(), src), ("from-env", SecretSource::Environment));
        // An empty variable counts as unset.
        let (v, src) = lookup_in("VAST_API_KEY", Some(&store), env).unwrap();
        assert_eq!((v.expose(), src), ("vast-store", SecretSource::Store));
        assert!(lookup_in("LAMBDA_API_KEY", Some(&store), env).is_none());
        assert!(lookup_in("RUNPOD_API_KEY", None, |_| None).is_none());
        assert!(lookup_in("bad name", Some(&store), |_| Some("x".into())).is_none());
        // The real environment: cargo sets CARGO_PKG_NAME for test binaries.
        store.set("CARGO_PKG_NAME", "from-store").unwrap();
        let (v, src) = lookup("CARGO_PKG_NAME", Some(&store)).unwrap();
        assert_eq!((v.expose(), src), ("plugboard-host", SecretSource::Environment));
        store.set("PLUGBOARD_TEST_ONLY_STORED", "stored").unwrap();
        let (v, src) = lookup("PLUGBOARD_TEST_ONLY_STORED", Some(&store)).unwrap();
        assert_eq!((v.expose(), src), ("stored", SecretSource::Store));

        let all = statuses_in(Some(&store), env);
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "LAMBDA_API_KEY",
                "RUNPOD_API_KEY",
                "VAST_API_KEY",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "CARGO_PKG_NAME",
                "PLUGBOARD_TEST_ONLY_STORED"
            ]
        );
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"name": "LAMBDA_API_KEY", "set": false, "source": null, "for": "Lambda Cloud API key"})
        );
        assert_eq!(json[1]["source"], "environment");
        assert_eq!(json[2]["source"], "secret store");
        assert_eq!(json[7]["for"], serde_json::Value::Null);
        assert_eq!(SecretSource::Store.to_string(), "secret store");
        assert_eq!(SecretSource::Environment.to_string(), "environment");
        let text = json.to_string();
        assert!(!text.contains("from-") && !text.contains("vast-store"), "{text}");
    }
}
