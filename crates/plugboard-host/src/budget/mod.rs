//! Budgets: caps on spend, global, per category and per plugin, kept in the
//! data dir (`budgets.json`) so every host and every `gc` reads the same.
//!
//! A budget caps the running rate (USD per hour) and/or the total spend
//! over a period (a UTC day, a UTC month, everything, or since a date).
//! What a budget means for a given spend is decided by the pure functions
//! in [`decide`]; the supervisor's governor acts on those decisions.

pub mod decide;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use decide::{Level, Refusal, Spend, Status, WARN_AT};

/// Errors reading or writing budgets, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The file could not be read or written.
    #[error("budgets file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a budgets file.
    #[error("budgets file {} is not valid: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value given for a budget is not valid.
    #[error("{0}")]
    Bad(String),
}

/// What a budget counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything in this data dir.
    Global,
    /// The plugins of one category.
    Category(String),
    /// One plugin (its unique id).
    Plugin(String),
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl FromStr for Scope {
    type Err = BudgetError;
    fn from_str(s: &str) -> Result<Scope, BudgetError> {
        if s == "global" {
            return Ok(Scope::Global);
        }
        if let Some(c) = s.strip_prefix("category:") {
            return if valid_id(c) {
                Ok(Scope::Category(c.to_owned()))
            } else {
                Err(BudgetError::Bad(format!(
                    "{s:?}: a category name is letters, digits, _, - and ."
                )))
            };
        }
        if valid_id(s) {
            Ok(Scope::Plugin(s.to_owned()))
        } else {
            Err(BudgetError::Bad(format!(
                "{s:?} is not a budget scope: use global, category:NAME or a plugin id"
            )))
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Category(c) => write!(f, "category:{c}"),
            Scope::Plugin(p) => f.write_str(p),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Scope {
    /// True when a plugin of `category` with id `plugin_id` counts against it.
    pub fn covers(&self, plugin_id: &str, category: Option<&str>) -> bool {
        match self {
            Scope::Global => true,
            Scope::Category(c) => category == Some(c.as_str()),
            Scope::Plugin(p) => p == plugin_id,
        }
    }
}

/// The window a total is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The current UTC day.
    Day,
    /// The current UTC month.
    Month,
    /// Everything recorded.
    All,
    /// Since a moment (ms since epoch; set from a `YYYY-MM-DD` date, UTC).
    Since(i64),
}

impl FromStr for Period {
    type Err = BudgetError;
    fn from_str(s: &str) -> Result<Period, BudgetError> {
        match s {
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            "all" => Ok(Period::All),
            other => {
                let date = other.strip_prefix("since:").unwrap_or(other);
                parse_date(date).map(Period::Since).map_err(|_| {
                    BudgetError::Bad(format!(
                        "{s:?} is not a period: use day, month, all or a date YYYY-MM-DD"
                    ))
                })
            }
        }
    }
}

/// Midnight UTC of a `YYYY-MM-DD` date, in ms since epoch.
pub fn parse_date(s: &str) -> Result<i64, BudgetError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date =
        time::Date::parse(s, format).map_err(|e| BudgetError::Bad(format!("{s:?} is not a date YYYY-MM-DD: {e}")))?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

fn format_date(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Day => f.write_str("day"),
            Period::Month => f.write_str("month"),
            Period::All => f.write_str("all"),
            Period::Since(ms) => write!(f, "since:{}", format_date(*ms)),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// What it counts.
    pub scope: Scope,
    /// The total allowed over the period (USD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
    /// The period the total is counted over.
    #[serde(default = "default_period")]
    pub period: Period,
    /// The running rate allowed (USD per hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd_per_hour: Option<f64>,
}

fn default_period() -> Period {
    Period::Month
}

impl Budget {
    /// Checks that it caps something, with finite non-negative limits.
    pub fn check(&self) -> Result<(), BudgetError> {
        if self.max_usd.is_none() && self.max_usd_per_hour.is_none() {
            return Err(BudgetError::Bad(format!(
                "budget {} caps nothing: give --max-usd and/or --max-usd-per-hour",
                self.scope
            )));
        }
        for (name, v) in [("max-usd", self.max_usd), ("max-usd-per-hour", self.max_usd_per_hour)] {
            if let Some(x) = v
                && (!x.is_finite() || x < 0.0)
            {
                return Err(BudgetError::Bad(format!(
                    "--{name} must be a non-negative number of USD, got {x}"
                )));
            }
        }
        Ok(())
    }
}

/// Every budget's status at `now_ms` from the ledger's spend, with the
/// spend rows read (for per-plugin figures).
pub fn evaluate(
    budgets: &[Budget],
    ledger: &crate::ledger::Ledger,
    now_ms: i64,
) -> Result<(Vec<Status>, Vec<crate::ledger::SpendRow>), crate::ledger::LedgerError> {
    let since = budgets
        .iter()
        .map(|b| decide::period_start(b.period, now_ms))
        .min()
        .unwrap_or(now_ms);
    let rows = if budgets.is_empty() {
        Vec::new()
    } else {
        ledger.spend_since(since)?
    };
    let statuses = budgets
        .iter()
        .map(|b| {
            let spend = decide::spend(&b.scope, &rows, decide::period_start(b.period, now_ms), now_ms);
            decide::status(b, spend, now_ms)
        })
        .collect();
    Ok((statuses, rows))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    #[serde(default)]
    budgets: Vec<Budget>,
}

/// The budgets of a data dir, in `budgets.json` (written atomically; the
/// file holds no secrets).
#[derive(Debug, Clone)]
pub struct BudgetStore {
    path: PathBuf,
}

impl BudgetStore {
    /// The store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> BudgetStore {
        BudgetStore { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every budget (none when the file does not exist), sorted by scope.
    pub fn load(&self) -> Result<Vec<Budget>, BudgetError> {
        let bytes = match plugboard_core::files::read_regular_file(&self.path, 1 << 20) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => {
                return Err(BudgetError::Invalid {
                    path: self.path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let file: BudgetFile = serde_json::from_slice(&bytes).map_err(|e| BudgetError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        for b in &file.budgets {
            b.check().map_err(|e| BudgetError::Invalid {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        let mut v = file.budgets;
        v.sort_by(|a, b| a.scope.cmp(&b.scope));
        Ok(v)
    }

    fn save(&self, budgets: Vec<Budget>) -> Result<(), BudgetError> {
        let bytes = serde_json::to_vec_pretty(&BudgetFile { budgets }).map_err(|e| BudgetError::Bad(e.to_string()))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| BudgetError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        plugboard_core::config_store::write_atomic(dir, &self.path, &bytes).map_err(|e| BudgetError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Takes the exclusive lock of the file (`{file}.lock` beside it),
    /// polling for at most 10 s, so that concurrent `set`s and `delete`s
    /// from any number of processes all land. Released on drop (or when the
    /// process dies: the kernel drops `flock`s with their file).
    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, BudgetError> {
        use nix::errno::Errno;
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock_path = self.path.with_file_name(name);
        let io = |source| BudgetError::Io {
            path: lock_path.clone(),
            source,
        };
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&lock_path)
            .map_err(io)?;
        let limit = std::time::Duration::from_secs(10);
        let started = std::time::Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((f, Errno::EWOULDBLOCK)) if started.elapsed() < limit => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    file = f;
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(io(std::io::Error::other(format!(
                        "still locked by another process after {} s",
                        limit.as_secs()
                    ))));
                }
                Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
            }
        }
    }

    /// Adds or replaces the budget of `budget.scope` (a locked
    /// read-modify-write of the file).
    pub fn set(&self, budget: Budget) -> Result<(), BudgetError> {
        budget.check()?;
        let _lock = self.lock()?;
        let mut all = self.load()?;
        all.retain(|b| b.scope != budget.scope);
        all.push(budget);
        self.save(all)
    }

    /// Removes the budget of `scope`; false when there was none (a locked
    /// read-modify-write of the file).
    pub fn delete(&self, scope: &Scope) -> Result<bool, BudgetError> {
        let _lock = self.lock()?;
        let mut all = self.load()?;
        let before = all.len();
        all.retain(|b| &b.scope != scope);
        let removed = all.len() != before;
        if removed {
            self.save(all)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sets_of_different_scopes_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budgets.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for round in 0..5 {
                        BudgetStore::new(&path)
                            .set(Budget {
                                scope: Scope::Plugin(format!("p{i}_r{round}")),
                                max_usd: Some(1.0),
                                period: Period::All,
                                max_usd_per_hour: None,
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(BudgetStore::new(&path).load().unwrap().len(), 40);
    }

    #[test]
    fn scopes_and_periods_parse_and_print_back() {
        for s in ["global", "category:llm", "llm_chat"] {
            assert_eq!(s.parse::<Scope>().map(|x| x.to_string()).ok().as_deref(), Some(s));
        }
        assert!("category:".parse::<Scope>().is_err());
        assert!("a b".parse::<Scope>().is_err());
        for p in ["day", "month", "all", "since:2026-11-01"] {
            assert_eq!(p.parse::<Period>().map(|x| x.to_string()).ok().as_deref(), Some(p));
        }
        assert_eq!("2026-11-01".parse::<Period>().ok(), "since:2026-11-01".parse().ok());
        assert!("week".parse::<Period>().is_err());
        assert!("2026-13-01".parse::<Period>().is_err());
        assert!(Scope::Category("llm".into()).covers("llm_chat", Some("llm")));
        assert!(!Scope::Category("llm".into()).covers("llm_chat", Some("audio")));
        assert!(Scope::Plugin("a_b".into()).covers("a_b", None));
    }

    #[test]
    fn the_store_sets_replaces_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BudgetStore::new(dir.path().join("budgets.json"));
        assert!(store.load().expect("load").is_empty());
        let b = Budget {
            scope: Scope::Global,
            max_usd: Some(10.0),
            period: Period::Day,
            max_usd_per_hour: None,
        };
        store.set(b.clone()).expect("set");
        store
            .set(Budget {
                max_usd: Some(20.0),
                ..b.clone()
            })
            .expect("replace");
        let all = store.load().expect("load");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].max_usd, Some(20.0));
        assert!(store.delete(&Scope::Global).expect("delete"));
        assert!(!store.delete(&Scope::Global).expect("delete again"));
        let bad = Budget {
            max_usd: None,
            ..b.clone()
        };
        assert!(store.set(bad).is_err());
        assert!(
            store
                .set(Budget {
                    max_usd: Some(-1.0),
                    ..b
                })
                .is_err()
        );
        std::fs::write(
            store.path(),
            "{\"budgets\": [{\"scope\": \"global\", \"max_usd\": \"x\"}]}",
        )
        .expect("write");
        let e = store.load().expect_err("invalid");
        assert!(e.to_string().contains("budgets.json"), "{e}");
    }
}
