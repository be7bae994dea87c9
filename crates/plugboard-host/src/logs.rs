//! Per-plugin log files: size-bounded with rotation, readable as a tail.
//!
//! A worker's stdout and stderr are pumped by the host into
//! `{data_dir}/logs/{unique_id}.log`, each line prefixed with its stream, so
//! stdout stays free for the plugin's own prints and nothing grows without
//! bound: past `max_bytes` the file becomes `.log.1`, older ones shift up, and
//! the oldest beyond `keep` is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default size at which a log file rotates: 8 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Default number of rotated files kept.
pub const DEFAULT_KEEP: usize = 3;

/// An append-only log file that rotates by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingLog {
    /// A log at `path` rotating past `max_bytes`, keeping `keep` old files.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> Self {
        RotatingLog {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        self.file.as_mut().ok_or_else(|| io::Error::other("log file not open"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            fs::remove_file(&self.path).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            if self.path.exists() {
                fs::rename(&self.path, rotated(&self.path, 1))?;
            }
        }
        self.size = 0;
        Ok(())
    }

    /// Appends one line (a newline is added), rotating first when the file
    /// would pass its bound.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.file.is_none() {
            self.open()?;
        }
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let f = self.open()?;
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }
}

/// The last `n` lines of the log at `path`, reading rotated files as needed,
/// oldest first. A missing log has no lines.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut files = vec![path.to_path_buf()];
    files.extend((1..=64).map(|i| rotated(path, i)));
    for f in files {
        if out.len() >= n {
            break;
        }
        let text = match fs::read(&f) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if f == path {
                    continue;
                }
                break;
            }
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.lines().collect();
        let want = n - out.len();
        let take = &lines[lines.len().saturating_sub(want)..];
        let mut chunk: Vec<String> = take.iter().map(|s| (*s).to_owned()).collect();
        chunk.append(&mut out);
        out = chunk;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_tails_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut log = RotatingLog::new(&path, 100, 2);
        for i in 0..50 {
            log.write_line(&format!("line {i:03}")).unwrap();
        }
        // 9 bytes a line, 11 lines a file: the newest three files exist.
        assert!(path.exists() && rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        let t = tail(&path, 15).unwrap();
        assert_eq!(t.len(), 15);
        assert_eq!(t.last().unwrap(), "line 049");
        assert_eq!(t.first().unwrap(), "line 035");
        let all = tail(&path, 1000).unwrap();
        assert!(all.len() < 50 && all.len() >= 22);
        assert!(tail(&dir.path().join("none.log"), 5).unwrap().is_empty());
    }
}
