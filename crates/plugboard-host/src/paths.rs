//! Where the host keeps its state: the data dir.
//!
//! One directory holds the ledger, the per-plugin logs and the workers'
//! sockets, so a whole installation (or a test) is moved, inspected or wiped
//! as one thing. It is created private (0700): sockets and logs are only for
//! the user running the host.

use std::path::{Path, PathBuf};

/// The data dir layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data dir at `root`, made absolute (workers run in other
    /// directories and are given paths inside it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        DataDir {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }

    /// `$XDG_DATA_HOME/plugboard`, else `$HOME/.local/share/plugboard`, else
    /// `./.plugboard`.
    pub fn default_root() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("plugboard");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(h).join(".local/share/plugboard");
        }
        PathBuf::from(".plugboard")
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ledger database.
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.sqlite")
    }

    /// The budgets file.
    pub fn budgets_path(&self) -> PathBuf {
        self.root.join("budgets.json")
    }

    /// The secret store (provider keys, mode 0600; see
    /// [`crate::secrets`]).
    pub fn secrets_path(&self) -> PathBuf {
        self.root.join("secrets.json")
    }

    /// The logs directory.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log file of a plugin.
    pub fn log_path(&self, unique_id: &str) -> PathBuf {
        self.logs_dir().join(format!("{unique_id}.log"))
    }

    /// The directory of worker sockets.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Creates the directories (mode 0700).
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [self.root.clone(), self.logs_dir(), self.run_dir()] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d)?;
        }
        Ok(())
    }
}
