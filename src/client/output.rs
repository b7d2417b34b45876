//! Where downloads are saved: `-o` resolved the way `cp` resolves its
//! target, an output directory opened once and everything created beneath
//! its handle, and what to do about a file that is already there.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::{ClientError, PartFile};

/// Where `ferry get` saves, from `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `-o -`: one verified stream on standard output.
    Stdout,
    /// Files are saved inside this directory under their own names
    /// (created if missing).
    Dir(PathBuf),
    /// The one file is saved under this name.
    File(PathBuf),
}

impl Destination {
    /// Resolves `-o` as `cp` resolves its target: `-` is standard output;
    /// an existing directory, or a path ending in `/`, receives the files
    /// under their own names; otherwise one file (not `-r`) is saved as
    /// PATH, and several files (or trees) go into the directory PATH,
    /// created if missing. Without `-o`, files go into the current
    /// directory.
    pub fn resolve(output: Option<&Path>, files: usize, recursive: bool) -> Self {
        let Some(out) = output else {
            return Destination::Dir(PathBuf::from("."));
        };
        if out.as_os_str() == "-" {
            return Destination::Stdout;
        }
        let names_a_dir = out.as_os_str().as_encoded_bytes().ends_with(b"/") || out.is_dir();
        if names_a_dir || recursive || files != 1 {
            Destination::Dir(out.to_path_buf())
        } else {
            Destination::File(out.to_path_buf())
        }
    }
}

/// A directory downloads are saved into, opened once: every file and
/// directory is then created beneath this handle, never by a path from `/`.
#[derive(Debug, Clone)]
pub struct OutputDir {
    dir: Arc<Dir>,
    path: PathBuf,
}

/// What is at a download's target already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: download it.
    Absent,
    /// ferry's own copy of this version of the server's file (same size
    /// and modification time, which ferry gives every file it saves):
    /// nothing to do.
    UpToDate,
    /// Something else, to be replaced (`--force`).
    Replace,
}

impl OutputDir {
    /// Opens `path`, creating it (and its parents) if missing.
    ///
    /// # Errors
    ///
    /// `Local` if it cannot be created or opened as a directory.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let local = |source| ClientError::Local {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => local(io::Error::new(
                e.kind(),
                "cannot create the directory: a file is in the way",
            )),
            _ => local(e),
        })?;
        let dir = Dir::open_ambient_dir(path, ambient_authority()).map_err(local)?;
        Ok(OutputDir {
            dir: Arc::new(dir),
            path: path.to_path_buf(),
        })
    }

    /// The directory as the user named it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The part file for saving to `rel` (relative, already checked).
    pub fn part(&self, rel: &Path) -> PartFile {
        PartFile::new(self.dir.clone(), rel.to_path_buf(), self.shown(rel))
    }

    /// How `rel` is shown to the user.
    pub fn shown(&self, rel: &Path) -> PathBuf {
        if self.path == Path::new(".") {
            rel.to_path_buf()
        } else {
            self.path.join(rel)
        }
    }

    /// Creates the directory `rel` (one component below an existing one)
    /// if missing; an existing entry must be a real directory, never a
    /// symlink (which could point anywhere).
    ///
    /// # Errors
    ///
    /// The file system's error, or `AlreadyExists` for something that is
    /// not a directory.
    pub fn ensure_dir(&self, rel: &Path) -> io::Result<()> {
        debug_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
        match self.dir.symlink_metadata(rel) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory (symlinks are not followed)",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.dir.create_dir(rel) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.ensure_dir(rel),
                other => other,
            },
            Err(e) => Err(e),
        }
    }

    /// What is at `rel` already, compared with the server's file of `size`
    /// bytes modified at `mtime_ns`. With `force`, anything but a directory
    /// is to be replaced, up to date or not.
    ///
    /// # Errors
    ///
    /// `Exists` for something that differs when `force` is off, `Local`
    /// for a directory in the way (never replaced, whatever `force`).
    pub fn existing(
        &self,
        rel: &Path,
        size: u64,
        mtime_ns: i64,
        force: bool,
    ) -> Result<Existing, ClientError> {
        let Ok(m) = self.dir.symlink_metadata(rel) else {
            return Ok(Existing::Absent);
        };
        if m.is_dir() {
            return Err(ClientError::Local {
                path: self.shown(rel),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way"),
            });
        }
        if force {
            return Ok(Existing::Replace);
        }
        let same_time = m
            .modified()
            .map(|t| crate::storage::system_time_ns(t.into_std()) == mtime_ns)
            .unwrap_or(false);
        if m.is_file() && m.len() == size && same_time {
            Ok(Existing::UpToDate)
        } else {
            Err(ClientError::Exists(self.shown(rel)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_resolves_like_cp() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("d");
        fs::create_dir(&existing).unwrap();
        let r = |o: &Path, n, rec| Destination::resolve(Some(o), n, rec);
        assert_eq!(
            Destination::resolve(None, 1, false),
            Destination::Dir(".".into())
        );
        assert_eq!(r(Path::new("-"), 1, false), Destination::Stdout);
        assert_eq!(r(&existing, 1, false), Destination::Dir(existing.clone()));
        let new = dir.path().join("x/y/renamed.txt");
        assert_eq!(r(&new, 1, false), Destination::File(new.clone()));
        assert_eq!(r(&new, 2, false), Destination::Dir(new.clone()));
        assert_eq!(r(&new, 1, true), Destination::Dir(new.clone()));
        let slash = PathBuf::from(format!("{}/", new.display()));
        assert_eq!(r(&slash, 1, false), Destination::Dir(slash.clone()));
    }
}
