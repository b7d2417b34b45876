//! The served root: every file access goes through [`SafeRoot`], which opens
//! paths *beneath* the root directory handle and never by name from `/`.
//!
//! Two layers keep requests inside the root:
//!
//! 1. [`validate_path`] is a pure check of the request's bytes: UTF-8,
//!    relative, no empty, `.` or `..` components, no `\`, NUL or other
//!    control characters, bounded lengths. It rejects the obvious spellings
//!    with a precise message.
//! 2. The open itself goes through `cap-std`, which resolves every component
//!    (symlinks included) beneath the root's directory handle, using
//!    `openat2(RESOLVE_BENEATH)` where the kernel has it. A symlink that
//!    stays inside the root is followed; one that leaves it fails. There is
//!    no check-then-open window: the kernel enforces it during the open.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt};

use crate::protocol::{EntryKind, ErrorCode, ListEntry, MAX_NAME_LEN};

/// Why a path could not be served. Each maps to one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The request's path is malformed.
    #[error("invalid path: {0}")]
    Invalid(&'static str),
    /// Nothing at that path.
    #[error("no such file")]
    NotFound,
    /// The path leaves the root (through a symlink).
    #[error("outside the served root")]
    OutsideRoot,
    /// The server process may not read it.
    #[error("permission denied")]
    PermissionDenied,
    /// A file was wanted; it is a directory.
    #[error("is a directory")]
    IsADirectory,
    /// A directory was wanted; it is not one.
    #[error("not a directory")]
    NotADirectory,
    /// Neither a regular file nor a directory.
    #[error("not a regular file")]
    NotAFile,
    /// Any other IO failure.
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl PathError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::Invalid(_) => ErrorCode::InvalidPath,
            PathError::NotFound => ErrorCode::NotFound,
            PathError::OutsideRoot => ErrorCode::OutsideRoot,
            PathError::PermissionDenied => ErrorCode::PermissionDenied,
            PathError::IsADirectory => ErrorCode::IsADirectory,
            PathError::NotADirectory => ErrorCode::NotADirectory,
            PathError::NotAFile => ErrorCode::NotAFile,
            PathError::Io(_) => ErrorCode::Io,
        }
    }

    fn from_io(e: io::Error) -> Self {
        // cap-std reports an escape attempt as a synthetic PermissionDenied
        // that carries no OS error number; a real EACCES carries one.
        match e.kind() {
            io::ErrorKind::NotFound => PathError::NotFound,
            io::ErrorKind::PermissionDenied if e.raw_os_error().is_none() => PathError::OutsideRoot,
            io::ErrorKind::PermissionDenied => PathError::PermissionDenied,
            _ => match e.raw_os_error() {
                Some(libc_enotdir) if libc_enotdir == rustix::io::Errno::NOTDIR.raw_os_error() => {
                    PathError::NotADirectory
                }
                Some(eloop) if eloop == rustix::io::Errno::LOOP.raw_os_error() => {
                    PathError::OutsideRoot
                }
                Some(exdev) if exdev == rustix::io::Errno::XDEV.raw_os_error() => {
                    PathError::OutsideRoot
                }
                // The wire allows 4096 bytes; Linux counts the NUL too.
                Some(long) if long == rustix::io::Errno::NAMETOOLONG.raw_os_error() => {
                    PathError::Invalid("path too long for the server's file system")
                }
                _ => PathError::Io(e),
            },
        }
    }
}

/// Checks a request path (see [`crate::protocol::validate_path`]).
///
/// # Errors
///
/// [`PathError::Invalid`] naming the first rule broken.
pub fn validate_path(raw: &[u8]) -> Result<&str, PathError> {
    crate::protocol::validate_path(raw).map_err(PathError::Invalid)
}

/// What a stat of a served path found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// File, directory...
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Device number (for the hash cache key).
    pub dev: u64,
    /// Inode number (for the hash cache key).
    pub ino: u64,
    /// Status change time, ns since the epoch (for the hash cache key).
    /// Unlike `mtime_ns` it cannot be set back by a program (`touch -r`,
    /// `cp -p`, `rsync -t` all restore mtimes), and every write moves it.
    pub ctime_ns: i64,
}

impl FileInfo {
    fn from_metadata(m: &Metadata) -> Self {
        use cap_std::fs::MetadataExt;
        FileInfo {
            kind: kind_of(m),
            size: m.len(),
            mtime_ns: m
                .modified()
                .map(|t| system_time_ns(t.into_std()))
                .unwrap_or(0),
            dev: m.dev(),
            ino: m.ino(),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
        }
    }

    /// Reads a std file's metadata.
    ///
    /// # Errors
    ///
    /// The `fstat` failure.
    pub fn of_file(file: &File) -> io::Result<Self> {
        Ok(Self::from_metadata(&Metadata::from_file(file)?))
    }
}

fn kind_of(m: &Metadata) -> EntryKind {
    let ft = m.file_type();
    if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

/// Nanoseconds since the Unix epoch (negative before it), saturating.
pub fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// A directory served read-only; nothing outside it can be opened through it.
#[derive(Debug)]
pub struct SafeRoot {
    dir: Dir,
    path: PathBuf,
}

impl SafeRoot {
    /// Opens the directory to serve.
    ///
    /// # Errors
    ///
    /// If `path` cannot be opened as a directory.
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        Ok(SafeRoot { dir, path })
    }

    /// The served directory as given (canonicalized when possible), for
    /// display only: it is never used to open anything.
    pub fn display_path(&self) -> &Path {
        &self.path
    }

    /// Opens a regular file for reading.
    ///
    /// # Errors
    ///
    /// A [`PathError`] for a bad path, a missing file, a directory, a
    /// special file or a path that leaves the root.
    pub fn open_file(&self, raw: &[u8]) -> Result<(File, FileInfo), PathError> {
        let path = validate_path(raw)?;
        if path.is_empty() {
            return Err(PathError::IsADirectory);
        }
        let mut opts = OpenOptions::new();
        opts.read(true);
        // O_NONBLOCK: opening a FIFO for reading would otherwise block this
        // thread until a writer appears. It has no effect on regular files.
        // O_NOCTTY: a served tty must never become our controlling terminal.
        opts.custom_flags(libc_flags());
        let file = self
            .dir
            .open_with(path, &opts)
            .map_err(PathError::from_io)?
            .into_std();
        let info = FileInfo::of_file(&file).map_err(PathError::Io)?;
        match info.kind {
            EntryKind::File => Ok((file, info)),
            EntryKind::Dir => Err(PathError::IsADirectory),
            _ => Err(PathError::NotAFile),
        }
    }

    /// Describes a path (following symlinks that stay in the root).
    ///
    /// # Errors
    ///
    /// A [`PathError`] as for [`SafeRoot::open_file`].
    pub fn stat(&self, raw: &[u8]) -> Result<FileInfo, PathError> {
        let path = validate_path(raw)?;
        let m = if path.is_empty() {
            self.dir.dir_metadata()
        } else {
            self.dir.metadata(path)
        }
        .map_err(PathError::from_io)?;
        Ok(FileInfo::from_metadata(&m))
    }

    /// Lists a directory, sorted by name. Symlinks are reported as what they
    /// point to when that is inside the root, and as [`EntryKind::Symlink`]
    /// otherwise; entries whose names are too long for the wire are skipped.
    ///
    /// # Errors
    ///
    /// A [`PathError`] for a bad path or a path that is not a directory.
    pub fn list(&self, raw: &[u8]) -> Result<Vec<ListEntry>, PathError> {
        let path = validate_path(raw)?;
        let dir = if path.is_empty() {
            self.dir.try_clone().map_err(PathError::Io)?
        } else {
            self.dir.open_dir(path).map_err(PathError::from_io)?
        };
        let mut out = Vec::new();
        for entry in dir.entries().map_err(PathError::from_io)? {
            let entry = entry.map_err(PathError::Io)?;
            let name = entry.file_name();
            let name = name.as_encoded_bytes().to_vec();
            if name.len() > MAX_NAME_LEN {
                continue;
            }
            let Ok(lmeta) = entry.metadata() else {
                continue; // vanished between readdir and stat
            };
            let meta = if lmeta.file_type().is_symlink() {
                dir.metadata(entry.file_name()).unwrap_or(lmeta)
            } else {
                lmeta
            };
            let info = FileInfo::from_metadata(&meta);
            out.push(ListEntry {
                name,
                kind: info.kind,
                size: if info.kind == EntryKind::File {
                    info.size
                } else {
                    0
                },
                mtime_ns: info.mtime_ns,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32
}
