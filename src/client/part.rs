//! [`PartFile`]: a download in progress, kept beside its target as
//! `NAME.part`, with the server file's identity and, for a split download,
//! each range's progress in `NAME.part.meta`, so a later run resumes it
//! only if the server's file is unchanged.
//!
//! The final name is only ever created by renaming a complete, verified
//! `.part` onto it, so a file under its final name is always whole.
//!
//! Every file created or rewritten here is opened relative to a handle on
//! the output directory, with `O_NOFOLLOW`, and `O_EXCL` where it is new:
//! a symlink planted at `NAME.part` or `NAME.part.meta` (or at the final
//! name) is never written through, and nothing is resolved outside the
//! output directory (cap-std opens beneath the handle).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::OFlags;

use crate::protocol::Validator;

/// One range of a split download and how much of it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeProgress {
    /// First byte of the range.
    pub offset: u64,
    /// Its length.
    pub length: u64,
    /// Bytes from `offset` on that are written.
    pub done: u64,
}

impl RangeProgress {
    /// Bytes still to fetch.
    pub fn remaining(&self) -> u64 {
        self.length - self.done.min(self.length)
    }
}

/// What an earlier attempt left on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Have {
    /// The first `n` bytes (a single-stream download).
    Prefix(u64),
    /// Parts of each range (a split download).
    Ranges(Vec<RangeProgress>),
}

impl Have {
    /// How many bytes are on disk in all.
    pub fn bytes(&self) -> u64 {
        match self {
            Have::Prefix(n) => *n,
            Have::Ranges(r) => r.iter().map(|r| r.done.min(r.length)).sum(),
        }
    }
}

/// A download's temporary file and its resume metadata, inside an output
/// directory.
#[derive(Debug, Clone)]
pub struct PartFile {
    /// The directory everything is opened beneath.
    dir: Arc<Dir>,
    /// The target's path relative to `dir`.
    rel: PathBuf,
    part_rel: PathBuf,
    meta_rel: PathBuf,
    /// The target as the user sees it (for messages only).
    shown: PathBuf,
}

const META_MAGIC_V1: &str = "ferry-part 1";
const META_MAGIC: &str = "ferry-part 2";

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

fn nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

impl PartFile {
    /// The part file for downloading into `rel` beneath `dir`, shown to the
    /// user as `shown`.
    pub fn new(dir: Arc<Dir>, rel: PathBuf, shown: PathBuf) -> Self {
        PartFile {
            part_rel: with_suffix(&rel, ".part"),
            meta_rel: with_suffix(&rel, ".part.meta"),
            rel,
            dir,
            shown,
        }
    }

    /// Where the file ends up (as shown to the user).
    pub fn target(&self) -> &Path {
        &self.shown
    }

    /// The temporary file's path (as shown to the user).
    pub fn part_path(&self) -> PathBuf {
        with_suffix(&self.shown, ".part")
    }

    /// The output directory handle and the target's path beneath it.
    pub fn location(&self) -> (&Dir, &Path) {
        (&self.dir, &self.rel)
    }

    /// What an earlier interrupted download left, and which version of the
    /// server's file it was, if both the part and its metadata exist.
    pub fn resume_point(&self) -> Option<(Have, Validator)> {
        let meta = self.read_meta()?;
        let mut lines = meta.lines();
        let magic = lines.next()?;
        if magic != META_MAGIC && magic != META_MAGIC_V1 {
            return None;
        }
        let mut size = None;
        let mut mtime_ns = None;
        let mut ranges = None;
        for line in lines {
            match line.split_once('=') {
                Some(("size", v)) => size = v.parse().ok(),
                Some(("mtime_ns", v)) => mtime_ns = v.parse().ok(),
                Some(("ranges", v)) => ranges = Some(parse_ranges(v)?),
                _ => {}
            }
        }
        let v = Validator {
            size: size?,
            mtime_ns: mtime_ns?,
        };
        let len = self
            .dir
            .symlink_metadata(&self.part_rel)
            .ok()
            .filter(|m| m.is_file())?
            .len();
        let have = match ranges {
            Some(r) if covers(&r, v.size) && len == v.size => Have::Ranges(r),
            Some(_) => return None,
            None => Have::Prefix(len),
        };
        Some((have, v))
    }

    /// The HTTP validator recorded with the part, if any.
    pub fn if_range(&self) -> Option<String> {
        self.read_meta()?
            .lines()
            .find_map(|l| l.strip_prefix("if_range=").map(str::to_string))
    }

    fn read_meta(&self) -> Option<String> {
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(nofollow());
        let mut f = self.dir.open_with(&self.meta_rel, &opts).ok()?;
        let mut s = String::new();
        // A real meta file is a few lines; anything bigger is not ours.
        (&mut f).take(64 * 1024).read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Records the file version `v` and, for a split download, each
    /// range's progress. The metadata is written to a new file (`O_EXCL`,
    /// `O_NOFOLLOW`) and renamed over the old one, so it is always whole.
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn write_meta(&self, v: Validator, ranges: Option<&[RangeProgress]>) -> io::Result<()> {
        self.write_meta_with(v, ranges, None)
    }

    /// [`PartFile::write_meta`], plus the HTTP validator (`If-Range`: an
    /// ETag or a Last-Modified date) that a resume must present.
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn write_meta_with(
        &self,
        v: Validator,
        ranges: Option<&[RangeProgress]>,
        if_range: Option<&str>,
    ) -> io::Result<()> {
        let mut text = format!("{META_MAGIC}\nsize={}\nmtime_ns={}\n", v.size, v.mtime_ns);
        if let Some(ir) = if_range.filter(|s| !s.contains(['\n', '\r'])) {
            text.push_str(&format!("if_range={ir}\n"));
        }
        if let Some(r) = ranges {
            let list: Vec<String> = r
                .iter()
                .map(|r| format!("{}+{}:{}", r.offset, r.length, r.done.min(r.length)))
                .collect();
            text.push_str(&format!("ranges={}\n", list.join(",")));
        }
        let tmp = with_suffix(&self.meta_rel, ".new");
        match self.dir.remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true).custom_flags(nofollow());
        let mut f = self.dir.open_with(&tmp, &opts)?;
        f.write_all(text.as_bytes())?;
        drop(f);
        self.dir.rename(&tmp, &self.dir, &self.meta_rel)
    }

    /// Starts a fresh download of the file version `v`: records `v`, then
    /// creates (or empties) the part file.
    ///
    /// # Errors
    ///
    /// The file system's error.
    pub fn create(&self, v: Validator) -> io::Result<File> {
        let file = self.create_plain()?;
        self.write_meta(v, None)?;
        Ok(file)
    }

    /// Creates (or empties) the part file, with no resume metadata (for
    /// the raw protocol, which cannot resume, and for small files, which
    /// are verified in memory).
    ///
    /// # Errors
    ///
    /// The file system's error, `ELOOP` if a symlink sits at the part's name.
    pub fn create_plain(&self) -> io::Result<File> {
        // No O_TRUNC: the part is emptied only once we hold its lock, so a
        // second ferry on the same target cannot cut the first one's file.
        let mut opts = OpenOptions::new();
        opts.read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(nofollow());
        let file = self.dir.open_with(&self.part_rel, &opts)?.into_std();
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a regular file",
            ));
        }
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
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).custom_flags(nofollow());
        let file = self.dir.open_with(&self.part_rel, &opts)?.into_std();
        lock(&file)?;
        Ok(file)
    }

    /// Moves the complete, verified part onto the target name (replacing
    /// whatever is there, a symlink included, without following it) and
    /// removes the metadata; the file is `fsync`ed before the rename and
    /// its directory after. `file` is the part's open handle: the saved
    /// file gets the server's modification time `mtime_ns` (when known)
    /// first, so it appears under its final name complete, times included.
    ///
    /// # Errors
    ///
    /// The rename's error.
    pub fn commit(&self, file: &File, mtime_ns: Option<i64>) -> io::Result<()> {
        if let Some(t) = mtime_ns {
            crate::storage::set_mtime(file, t);
        }
        // Durable before it has its final name, and the name durable after:
        // a crash never leaves a short file under the final name.
        file.sync_all()?;
        self.dir.rename(&self.part_rel, &self.dir, &self.rel)?;
        crate::storage::fsync_dir_of(&self.dir, &self.rel)?;
        match self.dir.remove_file(&self.meta_rel) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// [`PartFile::commit`], its failure as the user sees it (naming the
    /// target).
    ///
    /// # Errors
    ///
    /// `Local` with the rename's error.
    pub fn save(&self, file: &File, mtime_ns: Option<i64>) -> Result<(), super::ClientError> {
        self.commit(file, mtime_ns)
            .map_err(|source| super::ClientError::Local {
                path: self.target().to_path_buf(),
                source,
            })
    }

    /// Removes the part and its metadata.
    pub fn discard(&self) {
        let _ = self.dir.remove_file(&self.part_rel);
        let _ = self.dir.remove_file(&self.meta_rel);
    }
}

/// Parses `o+l:d,o+l:d,...`.
fn parse_ranges(v: &str) -> Option<Vec<RangeProgress>> {
    v.split(',')
        .map(|r| {
            let (ol, done) = r.split_once(':')?;
            let (o, l) = ol.split_once('+')?;
            Some(RangeProgress {
                offset: o.parse().ok()?,
                length: l.parse().ok()?,
                done: done.parse().ok()?,
            })
        })
        .collect()
}

/// Whether `ranges` tile `0..size` exactly, in order.
fn covers(ranges: &[RangeProgress], size: u64) -> bool {
    let mut expect = 0u64;
    for r in ranges {
        if r.offset != expect || r.done > r.length {
            return false;
        }
        let Some(next) = expect.checked_add(r.length) else {
            return false;
        };
        expect = next;
    }
    expect == size && !ranges.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::os::unix::fs::FileExt;

    fn part_in(dir: &Path, name: &str) -> PartFile {
        let d = Arc::new(Dir::open_ambient_dir(dir, ambient_authority()).unwrap());
        PartFile::new(d, PathBuf::from(name), dir.join(name))
    }

    #[test]
    fn resume_point_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = part_in(dir.path(), "f.bin");
        assert_eq!(p.resume_point(), None);
        let v = Validator {
            size: 10,
            mtime_ns: -5,
        };
        let mut f = p.create(v).unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(p.resume_point(), Some((Have::Prefix(3), v)));
        // While one handle holds the part, nobody else may write it.
        let busy = p.reopen().unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::WouldBlock);
        assert!(p.create_plain().is_err());
        drop(f);
        let f = p.reopen().unwrap();
        f.write_all_at(b"de", 3).unwrap();
        assert_eq!(p.resume_point(), Some((Have::Prefix(5), v)));
        p.commit(&f, Some(1_000_000_000)).unwrap();
        let saved = dir.path().join("f.bin");
        assert_eq!(std::fs::read(&saved).unwrap(), b"abcde");
        assert_eq!(
            std::fs::metadata(&saved).unwrap().modified().unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1)
        );
        assert_eq!(p.resume_point(), None);
        assert!(!p.part_path().exists());
    }

    #[test]
    fn range_progress_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = part_in(dir.path(), "r.bin");
        let v = Validator {
            size: 30,
            mtime_ns: 7,
        };
        let f = p.create(v).unwrap();
        f.set_len(30).unwrap();
        let ranges = [
            RangeProgress {
                offset: 0,
                length: 10,
                done: 10,
            },
            RangeProgress {
                offset: 10,
                length: 20,
                done: 4,
            },
        ];
        p.write_meta(v, Some(&ranges)).unwrap();
        assert_eq!(p.resume_point(), Some((Have::Ranges(ranges.to_vec()), v)));
        assert_eq!(Have::Ranges(ranges.to_vec()).bytes(), 14);
        // Ranges that do not tile the file are not ours to trust.
        p.write_meta(v, Some(&ranges[1..])).unwrap();
        assert_eq!(p.resume_point(), None);
    }

    #[test]
    fn planted_symlinks_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("x.part.meta")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("y.part")).unwrap();
        let v = Validator {
            size: 1,
            mtime_ns: 1,
        };
        // The meta link is replaced, not followed.
        let x = part_in(dir.path(), "x");
        x.create(v).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(dir.path().join("x.part.meta"))
            .unwrap()
            .is_symlink());
        // The part link makes the open fail.
        let y = part_in(dir.path(), "y");
        assert!(y.create(v).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
