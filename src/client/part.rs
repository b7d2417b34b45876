//! [`PartFile`]: a download in progress, kept beside its target as
//! `NAME.part`, with the server file's identity in `NAME.part.meta` so a
//! later run can resume it only if the server's file is unchanged.
//!
//! The final name is only ever created by renaming a complete, verified
//! `.part` onto it, so a file under its final name is always whole.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::protocol::Validator;

/// A download's temporary file and its resume metadata.
#[derive(Debug, Clone)]
pub struct PartFile {
    target: PathBuf,
    part: PathBuf,
    meta: PathBuf,
}

const META_MAGIC: &str = "ferry-part 1";

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Takes an exclusive lock on an open part file, held until every handle
/// of it is closed.
fn lock(file: &File) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another ferry is downloading this file right now",
            )
        } else {
            e.into()
        }
    })
}

impl PartFile {
    /// The part file for downloading into `target`.
    pub fn new(target: PathBuf) -> Self {
        PartFile {
            part: with_suffix(&target, ".part"),
            meta: with_suffix(&target, ".part.meta"),
            target,
        }
    }

    /// Where the file ends up.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary file's path.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Where an earlier interrupted download stopped, and which version of
    /// the server's file it was, if both the part and its metadata exist.
    pub fn resume_point(&self) -> Option<(u64, Validator)> {
        let meta = fs::read_to_string(&self.meta).ok()?;
        let mut lines = meta.lines();
        if lines.next()? != META_MAGIC {
            return None;
        }
        let mut size = None;
        let mut mtime_ns = None;
        for line in lines {
            match line.split_once('=') {
                Some(("size", v)) => size = v.parse().ok(),
                Some(("mtime_ns", v)) => mtime_ns = v.parse().ok(),
                _ => {}
            }
        }
        let len = fs::symlink_metadata(&self.part)
            .ok()
            .filter(|m| m.is_file())?
            .len();
        Some((
            len,
            Validator {
                size: size?,
                mtime_ns: mtime_ns?,
            },
        ))
    }

    /// Starts a fresh download of the file version `v`: records `v`, then
    /// creates (or truncates) the part file.
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn create(&self, v: Validator) -> io::Result<File> {
        let file = self.create_plain()?;
        fs::write(
            &self.meta,
            format!("{META_MAGIC}\nsize={}\nmtime_ns={}\n", v.size, v.mtime_ns),
        )?;
        Ok(file)
    }

    /// Creates (or truncates) the part file, with no resume metadata (for
    /// the raw protocol, which cannot resume).
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn create_plain(&self) -> io::Result<File> {
        // O_NOFOLLOW: never write through a symlink planted at the part's name.
        // No O_TRUNC: the part is emptied only once we hold its lock, so a
        // second ferry on the same target cannot cut the first one's file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.part)?;
        lock(&file)?;
        // Truncate only a leftover: on ext4, truncating even an empty file
        // marks it "replaced", and its last close then forces writeback.
        if file.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// Opens the existing part file to continue writing it (at explicit
    /// offsets).
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn reopen(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.part)?;
        lock(&file)?;
        Ok(file)
    }

    /// Moves the complete, verified part onto the target name.
    ///
    /// # Errors
    ///
    /// The rename's error.
    pub fn commit(&self) -> io::Result<()> {
        self.commit_plain()?;
        let _ = fs::remove_file(&self.meta);
        Ok(())
    }

    /// [`PartFile::commit`] for a part written without metadata (nothing
    /// to remove beside it).
    ///
    /// # Errors
    ///
    /// The rename's error.
    pub fn commit_plain(&self) -> io::Result<()> {
        fs::rename(&self.part, &self.target)
    }

    /// Removes the part and its metadata.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.part);
        let _ = fs::remove_file(&self.meta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn resume_point_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartFile::new(dir.path().join("f.bin"));
        assert_eq!(p.resume_point(), None);
        let v = Validator {
            size: 10,
            mtime_ns: -5,
        };
        let mut f = p.create(v).unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(p.resume_point(), Some((3, v)));
        // While one handle holds the part, nobody else may write it.
        let busy = p.reopen().unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::WouldBlock);
        assert!(p.create_plain().is_err());
        drop(f);
        p.reopen().unwrap().write_all_at(b"de", 3).unwrap();
        assert_eq!(p.resume_point(), Some((5, v)));
        p.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("f.bin")).unwrap(), b"abcde");
        assert_eq!(p.resume_point(), None);
        assert!(!p.part_path().exists());
    }
}
