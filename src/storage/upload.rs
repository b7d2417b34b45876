//! The write side of the local directory: an upload goes to a hidden
//! temporary beside its target and is renamed into place only when whole
//! (and, when its hash was given, verified), then made durable.
//!
//! Confinement is stricter than for reads. Every directory on the way is
//! opened beneath the root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so a symlink anywhere on the path, even one
//! that stays inside the root, is refused rather than written through;
//! missing directories are created one component at a time the same way.
//! The temporary is created with `O_CREAT | O_EXCL | O_NOFOLLOW` (or
//! reopened with `O_NOFOLLOW` to resume) and locked; its name,
//! `.ferry-up-<32 hex>`, is derived from the target path, the declared
//! size and the declared hash, so the same upload finds its temporary
//! again after a cut connection or a server restart, and a different one
//! never does. Such names are never listed, served or accepted as
//! targets, even with hidden files shared.
//!
//! The final rename is `renameat2(RENAME_NOREPLACE)` unless overwriting is
//! allowed: of two uploads racing for one new name exactly one wins, whole,
//! and the other is told the name exists. Before the rename the file is
//! `fsync`ed, after it the directory.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use super::local::{FileInfo, PathError, SafeRoot};
use crate::protocol::{ErrorCode, HASH_LEN};

/// Names of upload temporaries start with this (and are 42 bytes long).
pub const TEMP_PREFIX: &str = ".ferry-up-";

/// Temporaries untouched for this long are abandoned: removed when another
/// upload starts in their directory.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Whether a name is an upload temporary (never listed, served or written).
pub fn is_temp_name(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// Why an upload was refused or failed. Each maps to one wire code and one
/// HTTP status in the front-ends.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The server was not started with `--upload`.
    #[error("uploads are off on this server (start it with --upload)")]
    Disabled,
    /// The target path is malformed, leaves the root, or is in the way.
    #[error("{0}")]
    Path(PathError),
    /// A name starting with `.` (or a temporary's name), not accepted.
    #[error("hidden names (starting with '.') are not accepted as upload targets")]
    Hidden,
    /// A symlink on the way or at the target: never written through.
    #[error("a symbolic link is in the way (uploads never write through links)")]
    Symlink,
    /// The target exists and overwriting is off.
    #[error("already exists (the server does not overwrite; start it with --overwrite)")]
    Exists,
    /// Larger than `--max-upload-size`.
    #[error("{size} bytes is over the server's upload limit of {max} bytes")]
    TooLarge {
        /// What was declared or received so far.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Another upload of the same file holds its temporary.
    #[error("another upload of this file is in progress")]
    Busy,
    /// The received bytes do not hash to the declared hash.
    #[error("the received file does not match its BLAKE3 hash; it was discarded")]
    Mismatch,
    /// The server's disk (or quota, or file size limit) is full.
    #[error("the server's disk is full")]
    NoSpace,
    /// The client asked to continue at an offset the server does not have.
    #[error("cannot continue at byte {asked}: the server holds {held} byte(s) of this upload")]
    BadOffset {
        /// Where the client wanted to continue.
        asked: u64,
        /// What the temporary holds.
        held: u64,
    },
    /// More bytes than declared, or fewer before the body ended.
    #[error("the body was {got} bytes, not the {declared} declared")]
    WrongLength {
        /// Declared size.
        declared: u64,
        /// Received.
        got: u64,
    },
    /// Any other IO failure.
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl UploadError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            UploadError::Disabled => ErrorCode::ReadOnly,
            UploadError::Path(p) => p.code(),
            UploadError::Hidden => ErrorCode::InvalidPath,
            UploadError::Symlink => ErrorCode::NotAFile,
            UploadError::Exists => ErrorCode::Exists,
            UploadError::TooLarge { .. } => ErrorCode::TooLarge,
            UploadError::Busy => ErrorCode::Conflict,
            UploadError::Mismatch => ErrorCode::Mismatch,
            UploadError::NoSpace => ErrorCode::NoSpace,
            UploadError::BadOffset { .. } => ErrorCode::RangeNotSatisfiable,
            UploadError::WrongLength { .. } | UploadError::Io(_) => ErrorCode::Io,
        }
    }

    fn from_io(e: io::Error) -> Self {
        let no_space = [Errno::NOSPC, Errno::DQUOT, Errno::FBIG]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()));
        if no_space {
            UploadError::NoSpace
        } else {
            UploadError::Io(e)
        }
    }
}

impl From<PathError> for UploadError {
    fn from(e: PathError) -> Self {
        UploadError::Path(e)
    }
}

/// What the client declares about an upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadSpec {
    /// The whole file's size, if known in advance.
    pub size: Option<u64>,
    /// The client's modification time of the file, if it sent one: given
    /// to the saved file, and part of what identifies the upload for a
    /// resume (a file changed on the client starts afresh).
    pub mtime_ns: Option<i64>,
    /// Where the client's bytes start: `None` continues wherever the
    /// server's temporary ends (the answer says where); `Some(n)` cuts the
    /// temporary back to `n` (refused if it holds fewer).
    pub offset: Option<u64>,
}

/// An upload in progress: the locked temporary, the directory it lies in,
/// and the hash of what it holds so far. Blocking calls; the file service
/// runs them off the async workers.
#[derive(Debug)]
pub struct Upload {
    dir: OwnedFd,
    name: String,
    temp: String,
    file: File,
    hasher: blake3::Hasher,
    written: u64,
    spec: UploadSpec,
    overwrite: bool,
    max_size: Option<u64>,
}

/// Rules for writes, from the server's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteRules {
    /// Replace existing files (`--overwrite`).
    pub overwrite: bool,
    /// Largest file accepted (`--max-upload-size`).
    pub max_size: Option<u64>,
}

fn errno_io(e: Errno) -> io::Error {
    e.into()
}

fn beneath(dir: &OwnedFd, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

fn dir_error(e: Errno) -> UploadError {
    match e {
        Errno::LOOP => UploadError::Symlink,
        Errno::NOTDIR => UploadError::Path(PathError::NotADirectory),
        Errno::ACCESS | Errno::PERM | Errno::ROFS => UploadError::Path(PathError::PermissionDenied),
        Errno::XDEV => UploadError::Path(PathError::OutsideRoot),
        Errno::NAMETOOLONG => UploadError::Path(PathError::Invalid(
            "path too long for the server's file system",
        )),
        other => UploadError::from_io(errno_io(other)),
    }
}

/// The temporary's name for this target and declaration.
fn temp_name(path: &str, spec: &UploadSpec) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"ferry upload temporary v1\0");
    h.update(path.as_bytes());
    h.update(b"\0");
    match spec.size {
        Some(s) => h.update(&s.to_be_bytes()),
        None => {
            // Nothing to find it by again: a fresh name every time.
            let mut r = [0u8; 16];
            let _ = rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty());
            h.update(b"unsized").update(&r)
        }
    };
    if let Some(t) = spec.mtime_ns {
        h.update(&t.to_be_bytes());
    }
    format!(
        "{TEMP_PREFIX}{}",
        &crate::display::hex(&h.finalize().as_bytes()[..16])
    )
}

impl SafeRoot {
    /// Starts, or resumes, an upload to `raw` (a request path naming a
    /// file). Missing parent directories are created inside the root.
    ///
    /// # Errors
    ///
    /// An [`UploadError`]: a bad or hidden path, a link in the way, a
    /// directory or special file at the target, an existing file without
    /// `rules.overwrite`, a declared size over the limit or over the free
    /// space, a temporary held by another upload, an offset it does not
    /// have.
    pub fn begin_upload(
        &self,
        raw: &[u8],
        spec: UploadSpec,
        rules: WriteRules,
    ) -> Result<Upload, UploadError> {
        let path = super::validate_path(raw)?;
        if path.is_empty() {
            return Err(PathError::IsADirectory.into());
        }
        let comps: Vec<&str> = path.split('/').collect();
        let hidden =
            |c: &&str| c.starts_with('.') && (!self.options().hidden || is_temp_name(c.as_bytes()));
        if comps.iter().any(hidden) {
            return Err(UploadError::Hidden);
        }
        if let (Some(size), Some(max)) = (spec.size, rules.max_size) {
            if size > max {
                return Err(UploadError::TooLarge { size, max });
            }
        }
        let (parents, name) = comps.split_at(comps.len() - 1);
        let dir = self.write_dir(parents)?;
        let name = name[0].to_string();
        check_target(&dir, &name, rules.overwrite)?;
        sweep_abandoned(&dir);
        let temp = temp_name(path, &spec);
        let file = open_temp(&dir, &temp)?;
        let held = file.metadata().map_err(UploadError::Io)?.len();
        let start = match spec.offset {
            None => held,
            Some(asked) if asked > held => return Err(UploadError::BadOffset { asked, held }),
            Some(asked) => asked,
        };
        let start = match spec.size {
            // A temporary longer than the file declared is not this upload's.
            Some(size) if start > size => 0,
            _ => start,
        };
        if start < held {
            file.set_len(start).map_err(UploadError::from_io)?;
        }
        if let Some(size) = spec.size {
            let stat = rustix::fs::fstatvfs(&dir).map_err(|e| UploadError::Io(e.into()))?;
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if size - start > free {
                // Nothing is kept: the file cannot land, and a kept
                // temporary would hold on to space the disk lacks.
                let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
                return Err(UploadError::NoSpace);
            }
        }
        let mut hasher = blake3::Hasher::new();
        crate::hashing::update_from_file(&mut hasher, &file, start).map_err(UploadError::Io)?;
        Ok(Upload {
            dir,
            name,
            temp,
            file,
            hasher,
            written: start,
            spec,
            overwrite: rules.overwrite,
            max_size: rules.max_size,
        })
    }

    /// Opens (creating what is missing) the directory `comps` beneath the
    /// root, refusing any symlink on the way.
    fn write_dir(&self, comps: &[&str]) -> Result<OwnedFd, UploadError> {
        let mut cur = rustix::fs::openat(
            self.dir_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(dir_error)?;
        for c in comps {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY;
            cur = match beneath(&cur, c, flags) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, *c, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(dir_error(e)),
                    }
                    beneath(&cur, c, flags).map_err(dir_error)?
                }
                Err(Errno::NOTDIR) => {
                    // A file, or a link (NOFOLLOW on the last component).
                    return Err(match lstat_kind(&cur, c) {
                        Some(FileType::Symlink) => UploadError::Symlink,
                        _ => UploadError::Path(PathError::NotADirectory),
                    });
                }
                Err(e) => return Err(dir_error(e)),
            };
        }
        Ok(cur)
    }
}

fn lstat_kind(dir: &OwnedFd, name: &str) -> Option<FileType> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| FileType::from_raw_mode(s.st_mode))
}

/// Whether `name` in `dir` may be (re)placed by an upload.
fn check_target(dir: &OwnedFd, name: &str, overwrite: bool) -> Result<(), UploadError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(dir_error(e)),
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile if overwrite => Ok(()),
            FileType::RegularFile => Err(UploadError::Exists),
            FileType::Symlink => Err(UploadError::Symlink),
            FileType::Directory => Err(PathError::IsADirectory.into()),
            _ => Err(PathError::NotAFile.into()),
        },
    }
}

/// Opens the temporary to resume it, or creates it; locked, so a second
/// upload of the same file is refused while this one runs.
fn open_temp(dir: &OwnedFd, temp: &str) -> Result<File, UploadError> {
    // Bounded: each turn loses a race with an upload that just finished.
    for _ in 0..4 {
        let fd = match rustix::fs::openat(
            dir,
            temp,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => match rustix::fs::openat(
                dir,
                temp,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(dir_error(e)),
            },
            Err(Errno::LOOP) => return Err(UploadError::Symlink),
            Err(e) => return Err(dir_error(e)),
        };
        let file = File::from(fd);
        let st = rustix::fs::fstat(&file).map_err(|e| UploadError::Io(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
            return Err(PathError::NotAFile.into());
        }
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(UploadError::Busy),
            Err(e) => return Err(UploadError::Io(e.into())),
        }
        // Locked: but is it still the temporary, or did the upload that
        // held it rename it into place meanwhile?
        match rustix::fs::statat(dir, temp, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => return Ok(file),
            _ => continue,
        }
    }
    Err(UploadError::Busy)
}

/// Removes temporaries in `dir` nobody touched for [`ABANDONED_AFTER`]
/// and nobody holds. At most one pass per directory visit; bounded.
fn sweep_abandoned(dir: &OwnedFd) {
    let Ok(fd) = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) else {
        return;
    };
    let now = SystemTime::now();
    let mut seen = 0usize;
    while let Some(Ok(e)) = entries.next() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let name = e.file_name().to_bytes();
        if !is_temp_name(name) {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let Ok(fd) = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let f = File::from(fd);
        let age = f
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default());
        let regular = f.metadata().is_ok_and(|m| m.is_file());
        if age.map_or(true, |a| a < ABANDONED_AFTER) || !regular {
            continue;
        }
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        }
    }
}

/// What a finished upload left under its final name.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The saved file's stat.
    pub info: FileInfo,
    /// Its BLAKE3 hash (computed as the bytes arrived).
    pub hash: [u8; HASH_LEN],
    /// Whether an existing file was replaced.
    pub replaced: bool,
}

impl Upload {
    /// Bytes the temporary holds (where the client's bytes continue).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Appends `data`.
    ///
    /// # Errors
    ///
    /// `WrongLength` past the declared size, `TooLarge` past the limit,
    /// `NoSpace` when the disk is full, or the write's error.
    pub fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        let end = self.written + data.len() as u64;
        if let Some(declared) = self.spec.size {
            if end > declared {
                return Err(UploadError::WrongLength { declared, got: end });
            }
        }
        if let Some(max) = self.max_size {
            if end > max {
                return Err(UploadError::TooLarge { size: end, max });
            }
        }
        self.file
            .write_all_at(data, self.written)
            .map_err(UploadError::from_io)?;
        self.hasher.update(data);
        self.written = end;
        Ok(())
    }

    /// Checks the whole file against `hash` (when given), makes it durable
    /// and renames it into place.
    ///
    /// # Errors
    ///
    /// `WrongLength` if fewer bytes than declared arrived (the temporary
    /// is kept for a resume), `Mismatch` (the temporary is removed),
    /// `Exists` if another upload took the name first, or the file
    /// system's error.
    pub fn commit(self, hash: Option<[u8; HASH_LEN]>) -> Result<Committed, UploadError> {
        if let Some(declared) = self.spec.size {
            if self.written != declared {
                return Err(UploadError::WrongLength {
                    declared,
                    got: self.written,
                });
            }
        }
        let got = *self.hasher.finalize().as_bytes();
        if hash.is_some_and(|h| h != got) {
            self.discard();
            return Err(UploadError::Mismatch);
        }
        if let Some(t) = self.spec.mtime_ns {
            crate::storage::set_mtime(&self.file, t);
        }
        self.file.sync_all().map_err(UploadError::from_io)?;
        if let Err(e) = check_target(&self.dir, &self.name, self.overwrite) {
            self.discard();
            return Err(e);
        }
        let replaced = lstat_kind(&self.dir, &self.name).is_some();
        let flags = if self.overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(&self.dir, &self.temp, &self.dir, &self.name, flags) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // Another upload took the name first: this one is whole
                // but has nowhere to go.
                self.discard();
                return Err(UploadError::Exists);
            }
            Err(e) => return Err(dir_error(e)),
        }
        rustix::fs::fsync(&self.dir).map_err(|e| UploadError::from_io(e.into()))?;
        let info = FileInfo::of_file(&self.file).map_err(UploadError::Io)?;
        Ok(Committed {
            info,
            hash: got,
            replaced,
        })
    }

    /// Removes the temporary (a failed verification: nothing to resume).
    pub fn discard(&self) {
        let _ = rustix::fs::unlinkat(&self.dir, self.temp.as_str(), AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &std::path::Path) -> SafeRoot {
        SafeRoot::open(dir).unwrap()
    }

    fn spec(data: &[u8]) -> UploadSpec {
        UploadSpec {
            size: Some(data.len() as u64),
            mtime_ns: Some(data[0] as i64),
            offset: None,
        }
    }

    fn hash(data: &[u8]) -> Option<[u8; HASH_LEN]> {
        Some(*blake3::hash(data).as_bytes())
    }

    #[test]
    fn whole_upload_lands_atomically_and_durably() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let data = b"hello upload";
        let mut u = r
            .begin_upload(b"a/b/c.txt", spec(data), WriteRules::default())
            .unwrap();
        assert_eq!(u.offset(), 0);
        u.write(&data[..5]).unwrap();
        assert!(!d.path().join("a/b/c.txt").exists());
        u.write(&data[5..]).unwrap();
        let c = u.commit(hash(data)).unwrap();
        assert_eq!(c.hash, *blake3::hash(data).as_bytes());
        assert_eq!(std::fs::read(d.path().join("a/b/c.txt")).unwrap(), data);
        let left: Vec<_> = std::fs::read_dir(d.path().join("a/b")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary left beside the file");
    }

    #[test]
    fn resumes_where_the_temporary_ends_and_verifies_the_whole() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut u = r
            .begin_upload(b"f", spec(&data), WriteRules::default())
            .unwrap();
        u.write(&data[..40_000]).unwrap();
        assert!(matches!(
            r.begin_upload(b"f", spec(&data), WriteRules::default()),
            Err(UploadError::Busy)
        ));
        drop(u); // kept on disk for the resume
        let mut u = r
            .begin_upload(b"f", spec(&data), WriteRules::default())
            .unwrap();
        assert_eq!(u.offset(), 40_000);
        u.write(&data[40_000..]).unwrap();
        u.commit(hash(&data)).unwrap();
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), data);
    }

    /// Found by the `upload_session` fuzz target: a refusal for lack of
    /// space left an empty temporary behind.
    #[test]
    fn no_space_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let huge = UploadSpec {
            size: Some(u64::MAX / 2),
            mtime_ns: None,
            offset: None,
        };
        assert!(matches!(
            r.begin_upload(b"big", huge, WriteRules::default()),
            Err(UploadError::NoSpace)
        ));
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_mismatch_is_discarded_and_nothing_is_renamed() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let mut u = r
            .begin_upload(b"x", spec(b"right"), WriteRules::default())
            .unwrap();
        u.write(b"wrong").unwrap();
        assert!(matches!(
            u.commit(hash(b"right")),
            Err(UploadError::Mismatch)
        ));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn existing_links_dirs_and_hidden_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("old"), b"keep").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("old", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.path().join("dirlink")).unwrap();
        let r = root(d.path());
        let rules = WriteRules::default();
        let s = spec(b"new!");
        assert!(matches!(
            r.begin_upload(b"old", s, rules),
            Err(UploadError::Exists)
        ));
        assert!(matches!(
            r.begin_upload(b"link", s, rules),
            Err(UploadError::Symlink)
        ));
        assert!(matches!(
            r.begin_upload(b"dirlink/f", s, rules),
            Err(UploadError::Symlink)
        ));
        assert!(matches!(
            r.begin_upload(b"sub", s, rules),
            Err(UploadError::Path(PathError::IsADirectory))
        ));
        assert!(matches!(
            r.begin_upload(b"old/f", s, rules),
            Err(UploadError::Path(PathError::NotADirectory))
        ));
        assert!(matches!(
            r.begin_upload(b".env", s, rules),
            Err(UploadError::Hidden)
        ));
        assert!(matches!(
            r.begin_upload(b"../x", s, rules),
            Err(UploadError::Path(PathError::Invalid(_)))
        ));
        let over = WriteRules {
            overwrite: true,
            ..rules
        };
        let mut u = r.begin_upload(b"old", s, over).unwrap();
        u.write(b"new!").unwrap();
        assert!(u.commit(None).unwrap().replaced);
        assert_eq!(std::fs::read(d.path().join("old")).unwrap(), b"new!");
        assert!(std::fs::symlink_metadata(d.path().join("link"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn racing_uploads_of_one_new_name_one_wins() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let mut a = r
            .begin_upload(b"n", spec(b"aaaa"), WriteRules::default())
            .unwrap();
        let mut b = r
            .begin_upload(b"n", spec(b"bbbb"), WriteRules::default())
            .unwrap();
        a.write(b"aaaa").unwrap();
        b.write(b"bbbb").unwrap();
        b.commit(None).unwrap();
        assert!(matches!(a.commit(None), Err(UploadError::Exists)));
        assert_eq!(std::fs::read(d.path().join("n")).unwrap(), b"bbbb");
    }

    #[test]
    fn limits_are_checked_before_and_while_writing() {
        let d = tempfile::tempdir().unwrap();
        let r = root(d.path());
        let rules = WriteRules {
            overwrite: false,
            max_size: Some(4),
        };
        assert!(matches!(
            r.begin_upload(b"big", spec(b"12345"), rules),
            Err(UploadError::TooLarge { size: 5, max: 4 })
        ));
        let mut u = r
            .begin_upload(b"big", UploadSpec::default(), rules)
            .unwrap();
        u.write(b"1234").unwrap();
        assert!(matches!(u.write(b"5"), Err(UploadError::TooLarge { .. })));
    }
}
