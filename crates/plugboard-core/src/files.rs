//! Reading the small files plugboard expects to be plain files (configs,
//! config schemas, manifests) without ever blocking on something that is not
//! one.
//!
//! A FIFO, a socket or a device named where a config or a schema should be
//! would block a plain `open` or `read` forever (a FIFO with no writer) or
//! never end (`/dev/zero`); a host holding its registry lock while it waits
//! freezes with it. [`read_regular_file`] checks what the path is before
//! opening it, opens it with `O_NONBLOCK` (so even a FIFO swapped in after
//! the check cannot block the open), checks again on the open descriptor,
//! and reads at most a limit.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a file could not be read by [`read_regular_file`].
#[derive(Debug, Error)]
pub enum FileError {
    /// The path names something other than a regular file.
    #[error("{} is {kind}, not a regular file; refusing to read it", path.display())]
    NotRegular {
        /// The path as given.
        path: PathBuf,
        /// What it is instead, with its article (`"a FIFO (named pipe)"`).
        kind: &'static str,
    },
    /// The file is larger than the caller's limit.
    #[error("{} is {size} bytes, over the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes (at least this much; it may still be growing).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file system refused (including: it does not exist).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a file type is, in words with an article, for error messages.
///
/// ```
/// use plugboard_core::files::file_kind;
///
/// let t = std::fs::metadata("/").unwrap().file_type();
/// assert_eq!(file_kind(&t), "a directory");
/// ```
pub fn file_kind(t: &FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Reads a whole regular file of at most `limit` bytes. Symbolic links are
/// followed; what they lead to must be a regular file.
///
/// Never blocks on a FIFO or a device: the path's type is checked first, the
/// file is opened with `O_NONBLOCK` and its type checked again on the
/// descriptor before any read.
///
/// ```
/// use plugboard_core::files::{read_regular_file, FileError};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.json");
/// std::fs::write(&path, b"{}").unwrap();
/// assert_eq!(read_regular_file(&path, 1024).unwrap(), b"{}");
/// assert!(matches!(read_regular_file(&path, 1), Err(FileError::TooLarge { size: 2, .. })));
/// assert!(matches!(read_regular_file(dir.path(), 1024), Err(FileError::NotRegular { .. })));
/// assert!(read_regular_file(&dir.path().join("missing"), 1024).unwrap_err().is_not_found());
/// ```
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io_err = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let check = |t: FileType| {
        if t.is_file() {
            Ok(())
        } else {
            Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: file_kind(&t),
            })
        }
    };
    check(std::fs::metadata(path).map_err(io_err)?.file_type())?;
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check(meta.file_type())?;
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}
