//! The library's error type.
//!
//! Why one enum with a dedicated `Corrupt` variant: callers must be able to tell "the data on disk
//! is damaged" (EIO in the mount, non-zero `check`) apart from "you asked for something that does
//! not exist" (ENOENT) and from ordinary I/O failures, without parsing strings. Every variant
//! carries the context (path, pack, blob) a person needs to act on it.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing and where.
    #[error("{context}: {path}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes read from the repository are damaged (bad tag, wrong id, truncated, undecodable).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A referenced object (blob, pack, snapshot, path) is not in the repository.
    #[error("not found: {0}")]
    NotFound(String),
    /// No key file opens with the given passphrase.
    #[error("wrong passphrase: no key in this repository opens with it")]
    WrongPassword,
    /// Another process holds the writer lock.
    #[error("repository is locked by {0}")]
    Locked(String),
    /// The repository (or an object in it) has a format version this build cannot read.
    #[error("unsupported format: {0}")]
    Unsupported(String),
    /// The user asked for something invalid (bad snapshot spec, bad time, bad option).
    #[error("{0}")]
    Invalid(String),
    /// The index (RocksDB cache) failed.
    #[error("index: {0}")]
    Index(String),
    /// A child command (e.g. `pg_dump`) failed.
    #[error("command failed: {0}")]
    Command(String),
}

impl Error {
    /// Wraps an I/O error with context and the path it concerns.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// True when the error means damaged repository data (the mount maps this to EIO).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt(_))
    }

    /// True when the file system of the repository (or its index) is full (ENOSPC, EDQUOT):
    /// the CLI exits 17 and the agent answers wal-push with `no-space`, so an admin's alert can
    /// say "free space" rather than "something failed".
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            Error::Index(m) => m.contains("No space left on device"),
            _ => false,
        }
    }

    /// True when the error means "does not exist" (the mount maps this to ENOENT).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Index(e.to_string())
    }
}
