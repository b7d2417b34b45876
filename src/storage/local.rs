//! The local directory backend: every file access goes through [`SafeRoot`], which opens
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
//!
//! Every path is first opened with `O_PATH`, which has no side effects
//! even on a device node or a FIFO, and only a regular file is then
//! reopened for reading (through `/proc/self/fd`). The `O_PATH` handle also
//! tells where the path really leads, so a symlink into a hidden directory
//! is as hidden as the directory itself.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt};
use rustix::fs::{OFlags, ResolveFlags};

use crate::protocol::{EntryKind, ErrorCode, ListEntry, MAX_LIST_ENTRIES, MAX_NAME_LEN};

/// Why a path could not be served. Each maps to one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The request's path is malformed.
    #[error("invalid path: {0}")]
    Invalid(&'static str),
    /// Nothing at that path.
    #[error("no such file")]
    NotFound,
    /// A hidden name (or a place a symlink leads to under one), not shared:
    /// answered exactly as [`PathError::NotFound`].
    #[error("no such file")]
    Hidden,
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
    /// A regular file with more than one hard link, refused by
    /// `--no-hardlinks` (its other names may lie outside the root).
    #[error("hard-linked file refused (--no-hardlinks)")]
    HardLink,
    /// The server shares no files at all (a message server).
    #[error("this server shares no files (it only answers messages)")]
    NoFiles,
    /// A directory with more entries than one listing may carry.
    #[error(
        "directory has more than {} entries",
        crate::protocol::MAX_LIST_ENTRIES
    )]
    TooManyEntries,
    /// Any other IO failure.
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl PathError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::Invalid(_) => ErrorCode::InvalidPath,
            PathError::NotFound | PathError::Hidden | PathError::NoFiles => ErrorCode::NotFound,
            PathError::OutsideRoot => ErrorCode::OutsideRoot,
            PathError::PermissionDenied => ErrorCode::PermissionDenied,
            PathError::IsADirectory => ErrorCode::IsADirectory,
            PathError::NotADirectory => ErrorCode::NotADirectory,
            PathError::NotAFile | PathError::HardLink => ErrorCode::NotAFile,
            PathError::TooManyEntries => ErrorCode::TooManyEntries,
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
    /// Number of hard links.
    pub nlink: u64,
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
            nlink: m.nlink(),
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

/// Sets a file's modification time (best effort: a file system without
/// fine timestamps keeps what it can).
pub fn set_mtime(file: &File, mtime_ns: i64) {
    let t = if mtime_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    let _ = file.set_times(std::fs::FileTimes::new().set_modified(t));
}

/// `fsync`s the directory holding `rel` beneath `dir` (after a rename
/// into it, so the new name survives a crash).
///
/// # Errors
///
/// The open's or the `fsync`'s error.
pub fn fsync_dir_of(dir: &Dir, rel: &Path) -> io::Result<()> {
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => dir.open_dir(p)?,
        _ => dir.try_clone()?,
    };
    // The handle may be O_PATH, which fsync refuses: reopen it for reading.
    let fd = rustix::fs::openat(
        &parent,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

/// Nanoseconds since the Unix epoch (negative before it), saturating.
pub fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// One entry of a listing: what goes on the wire, and the stat behind it
/// (whose kind and size agree with the wire entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry as listed.
    pub entry: ListEntry,
    /// What its stat found (identity, times; for the hash cache).
    pub info: FileInfo,
}

/// What a [`SafeRoot`] shares besides plain files and directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootOptions {
    /// Serve and list names starting with `.` (`.git/`, `.env`, `.ssh/`).
    /// Off by default: such names are answered as if they did not exist,
    /// and so is anything a symlink leads to inside them.
    pub hidden: bool,
    /// Serve regular files with more than one hard link. On by default;
    /// a hard link's other names may lie outside the root, which
    /// path-based confinement cannot see.
    pub hardlinks: bool,
}

impl Default for RootOptions {
    fn default() -> Self {
        RootOptions {
            hidden: false,
            hardlinks: true,
        }
    }
}

/// A directory served read-only; nothing outside it can be opened through it.
#[derive(Debug)]
pub struct SafeRoot {
    dir: Dir,
    path: PathBuf,
    opts: RootOptions,
}

/// Whether a name is hidden (`.git`, `.env`).
fn is_hidden_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

impl SafeRoot {
    /// Opens the directory to serve, with default [`RootOptions`].
    ///
    /// # Errors
    ///
    /// If `path` cannot be opened as a directory.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, RootOptions::default())
    }

    /// Opens the directory to serve.
    ///
    /// # Errors
    ///
    /// If `path` cannot be opened as a directory.
    pub fn open_with(path: &Path, opts: RootOptions) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        Ok(SafeRoot { dir, path, opts })
    }

    /// The served directory as given (canonicalized when possible), for
    /// display only: it is never used to open anything.
    pub fn display_path(&self) -> &Path {
        &self.path
    }

    /// Whether the served directory can still be reached: not deleted, and
    /// readable (a lost mount or a revoked permission fails here).
    ///
    /// # Errors
    ///
    /// What failed.
    pub fn check(&self) -> io::Result<()> {
        let meta = rustix::fs::fstat(self.dir_fd())?;
        if meta.st_nlink == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the served directory was deleted",
            ));
        }
        self.dir.entries()?.next().transpose()?;
        Ok(())
    }

    /// The root's directory handle (for the write side, `upload`).
    pub(super) fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The options it was opened with.
    pub fn options(&self) -> RootOptions {
        self.opts
    }

    /// Opens `path` (validated, non-empty) beneath the root with `O_PATH`:
    /// no side effects whatever the file is. Hidden names, and paths that
    /// lead into hidden ones through symlinks, are `NotFound` unless
    /// hidden files are shared.
    fn resolve(&self, path: &str) -> Result<(File, FileInfo), PathError> {
        if path.split('/').any(|c| {
            super::upload::is_temp_name(c.as_bytes())
                || (!self.opts.hidden && is_hidden_name(c.as_bytes()))
        }) {
            return Err(PathError::Hidden);
        }
        // Fast path: a path with no symlink on it is exactly the names
        // checked above, so where the file lies needs no second look.
        if let Ok(fd) = rustix::fs::openat2(
            &self.dir,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            let handle = File::from(fd);
            let info = FileInfo::of_file(&handle).map_err(PathError::Io)?;
            return Ok((handle, info));
        }
        // A symlink on the way (or any error, or a kernel without
        // openat2): the general resolver, which gives every error its
        // meaning, and a check of where the file really lies.
        let mut opts = OpenOptions::new();
        opts.read(true);
        opts.custom_flags(OFlags::PATH.bits() as i32);
        let handle = self
            .dir
            .open_with(path, &opts)
            .map_err(PathError::from_io)?
            .into_std();
        let info = FileInfo::of_file(&handle).map_err(PathError::Io)?;
        if self.leads_into_hidden(handle.as_fd()) {
            return Err(PathError::Hidden);
        }
        Ok((handle, info))
    }

    /// Whether the file behind `fd` lies, below the root, under a name
    /// starting with `.`, wherever the path that reached it went. Read from
    /// `/proc/self/fd`; where procfs is missing only the request's own
    /// names were checked.
    fn leads_into_hidden(&self, fd: BorrowedFd<'_>) -> bool {
        let Ok(proc_fd) = rustix::procfs::proc_self_fd() else {
            return false;
        };
        let real = |fd: BorrowedFd<'_>| {
            rustix::fs::readlinkat(proc_fd, fd.as_raw_fd().to_string(), Vec::new())
                .ok()
                .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p.into_bytes())))
        };
        let (Some(target), Some(root)) = (real(fd), real(self.dir.as_fd())) else {
            return true;
        };
        match target.strip_prefix(&root) {
            Ok(rel) => rel.components().any(|c| {
                let c = c.as_os_str().as_encoded_bytes();
                super::upload::is_temp_name(c) || (!self.opts.hidden && is_hidden_name(c))
            }),
            // Not below the root's current path (the root was moved while
            // being served): refuse rather than guess.
            Err(_) => true,
        }
    }

    /// Opens a regular file for reading.
    ///
    /// # Errors
    ///
    /// A [`PathError`] for a bad path, a missing or hidden file, a
    /// directory, a special file or a path that leaves the root.
    pub fn open_file(&self, raw: &[u8]) -> Result<(File, FileInfo), PathError> {
        let path = validate_path(raw)?;
        if path.is_empty() {
            return Err(PathError::IsADirectory);
        }
        let (handle, info) = self.resolve(path)?;
        match info.kind {
            EntryKind::File => {}
            EntryKind::Dir => return Err(PathError::IsADirectory),
            _ => return Err(PathError::NotAFile),
        }
        if !self.opts.hardlinks && info.nlink > 1 {
            return Err(PathError::HardLink);
        }
        let file = self.reopen_for_reading(&handle, path)?;
        // The same file, still regular (the fallback reopen goes by name).
        let now = FileInfo::of_file(&file).map_err(PathError::Io)?;
        if (now.dev, now.ino) != (info.dev, info.ino) || now.kind != EntryKind::File {
            return Err(PathError::NotFound);
        }
        Ok((file, now))
    }

    /// Turns the `O_PATH` handle of a regular file into a readable one:
    /// through `/proc/self/fd`, so exactly the inode checked is opened; by
    /// name beneath the root again where procfs is missing.
    fn reopen_for_reading(&self, handle: &File, path: &str) -> Result<File, PathError> {
        // O_NONBLOCK: were it a FIFO after all, opening it must not block.
        // O_NOCTTY: a served tty must never become our controlling terminal.
        let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if let Ok(proc_fd) = rustix::procfs::proc_self_fd() {
            let fd = rustix::fs::openat(
                proc_fd,
                handle.as_raw_fd().to_string(),
                flags,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| PathError::from_io(e.into()))?;
            return Ok(File::from(fd));
        }
        let mut opts = OpenOptions::new();
        opts.read(true);
        opts.custom_flags((OFlags::NOCTTY | OFlags::NONBLOCK).bits() as i32);
        Ok(self
            .dir
            .open_with(path, &opts)
            .map_err(PathError::from_io)?
            .into_std())
    }

    /// Describes a path (following symlinks that stay in the root).
    /// Directories have size 0.
    ///
    /// # Errors
    ///
    /// A [`PathError`] as for [`SafeRoot::open_file`].
    pub fn stat(&self, raw: &[u8]) -> Result<FileInfo, PathError> {
        let path = validate_path(raw)?;
        let mut info = if path.is_empty() {
            FileInfo::from_metadata(&self.dir.dir_metadata().map_err(PathError::from_io)?)
        } else {
            self.resolve(path)?.1
        };
        if info.kind != EntryKind::File {
            info.size = 0;
        }
        Ok(info)
    }

    /// (device, inode) of the root and of every directory on the way to
    /// `path`, `path` included: a directory entry that is one of them
    /// would lead in a circle.
    fn ancestors(&self, path: &str) -> Result<HashSet<(u64, u64)>, PathError> {
        let root = FileInfo::from_metadata(&self.dir.dir_metadata().map_err(PathError::from_io)?);
        let mut seen = HashSet::from([(root.dev, root.ino)]);
        if !path.is_empty() {
            let mut end = 0;
            for comp in path.split('/') {
                end += comp.len();
                let info = self.resolve(&path[..end])?.1;
                seen.insert((info.dev, info.ino));
                end += 1;
            }
        }
        Ok(seen)
    }

    /// Lists a directory, sorted by name, agreeing with [`SafeRoot::stat`]
    /// and [`SafeRoot::open_file`]: a symlink is listed as what it leads to
    /// when that is inside the root (resolved from the root, so a link to a
    /// sibling directory counts), and as [`EntryKind::Symlink`] when it
    /// cannot be followed (dangling, leaving the root) or leads back to a
    /// directory on the way here (a loop). Hidden names, and links into
    /// hidden places, are left out unless hidden files are shared; names
    /// too long for the wire are skipped.
    ///
    /// # Errors
    ///
    /// A [`PathError`] for a bad path, a path that is not a directory, or a
    /// directory of more than [`MAX_LIST_ENTRIES`] entries.
    pub fn list(&self, raw: &[u8]) -> Result<Vec<ListEntry>, PathError> {
        Ok(self.entries(raw)?.into_iter().map(|e| e.entry).collect())
    }

    /// [`SafeRoot::list`], each entry with what a stat of it found (for
    /// hashes, times and identities the wire entry does not carry).
    ///
    /// # Errors
    ///
    /// As [`SafeRoot::list`].
    pub fn entries(&self, raw: &[u8]) -> Result<Vec<Entry>, PathError> {
        let path = validate_path(raw)?;
        let dir = if path.is_empty() {
            self.dir.try_clone().map_err(PathError::Io)?
        } else {
            if self.resolve(path)?.1.kind != EntryKind::Dir {
                return Err(PathError::NotADirectory);
            }
            self.dir.open_dir(path).map_err(PathError::from_io)?
        };
        let ancestors = self.ancestors(path)?;
        let mut out = Vec::new();
        for entry in dir.entries().map_err(PathError::from_io)? {
            let entry = entry.map_err(PathError::Io)?;
            let name = entry.file_name().into_encoded_bytes();
            if name.len() > MAX_NAME_LEN
                || (!self.opts.hidden && is_hidden_name(&name))
                || super::upload::is_temp_name(&name)
            {
                continue;
            }
            let Ok(lmeta) = entry.metadata() else {
                continue; // vanished between readdir and stat
            };
            let mut info = FileInfo::from_metadata(&lmeta);
            if lmeta.file_type().is_symlink() {
                match self.resolve_entry(path, &name) {
                    Ok(target) => info = target,
                    // A link into a hidden place is as hidden as the place.
                    Err(PathError::Hidden) => continue,
                    // Dangling, leaving the root, unreadable: not followed.
                    Err(_) => info.kind = EntryKind::Symlink,
                }
            }
            if info.kind == EntryKind::Dir && ancestors.contains(&(info.dev, info.ino)) {
                info.kind = EntryKind::Symlink;
            }
            if info.kind == EntryKind::File && !self.opts.hardlinks && info.nlink > 1 {
                info.kind = EntryKind::Other;
            }
            if out.len() == MAX_LIST_ENTRIES {
                return Err(PathError::TooManyEntries);
            }
            if info.kind != EntryKind::File {
                info.size = 0;
            }
            out.push(Entry {
                entry: ListEntry {
                    name,
                    kind: info.kind,
                    size: info.size,
                    mtime_ns: info.mtime_ns,
                },
                info,
            });
        }
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Ok(out)
    }

    /// Resolves the entry `name` of directory `dir_path` from the root.
    fn resolve_entry(&self, dir_path: &str, name: &[u8]) -> Result<FileInfo, PathError> {
        let name = crate::protocol::validate_name(name).map_err(PathError::Invalid)?;
        let full = if dir_path.is_empty() {
            name.to_string()
        } else {
            format!("{dir_path}/{name}")
        };
        if full.len() > crate::protocol::MAX_PATH_LEN {
            return Err(PathError::Invalid("path too long"));
        }
        Ok(self.resolve(&full)?.1)
    }
}
