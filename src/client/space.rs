//! Disk space for a download: checked before the first byte, reserved in
//! steps as bytes arrive, and what was reserved but never written given
//! back when a transfer fails.
//!
//! Reserving ahead (`fallocate` with `KEEP_SIZE`, so the file's length,
//! which a resume reads, is unchanged) lets the file system allocate long
//! extents instead of growing the file piece by piece. It is never done for
//! more than [`STEP`] past the last byte written: a server that announces
//! 8 GiB and hangs up after the header must not leave 8 GiB of blocks that
//! `ls` does not show.

use std::fs::File;
use std::path::Path;

use super::ClientError;

/// How far ahead of the bytes written blocks are reserved.
pub(crate) const STEP: u64 = 64 * 1024 * 1024;

/// Fails with [`ClientError::NoSpace`] if the file system holding `file`
/// has less than `need` bytes free for us. A file system that cannot say
/// passes.
///
/// # Errors
///
/// `NoSpace`, naming `shown`.
pub(crate) fn check_free(file: &File, need: u64, shown: &Path) -> Result<(), ClientError> {
    let Ok(st) = rustix::fs::fstatvfs(file) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if need > free {
        return Err(ClientError::NoSpace {
            path: shown.to_path_buf(),
            need,
            free,
        });
    }
    Ok(())
}

/// Blocks reserved ahead of the writes into one file.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    file: &'a File,
    /// Everything before this is reserved (or written).
    reserved: u64,
    /// The file's final size: nothing past it is ever reserved.
    end: u64,
    enabled: bool,
}

impl<'a> Reservation<'a> {
    /// Reserves up to one step past `start` (bytes before `start` are
    /// already on disk), never past `end`.
    pub(crate) fn new(file: &'a File, start: u64, end: u64) -> Self {
        // Not on tmpfs, where fallocate zeroes every page before the first
        // byte arrives: there it costs more than it saves.
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        // `f_type`'s width differs between architectures, hence the cast.
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = rustix::fs::fstatfs(file).is_ok_and(|fs| fs.f_type as i64 == TMPFS_MAGIC);
        let mut r = Reservation {
            file,
            reserved: start,
            end,
            enabled: !on_tmpfs,
        };
        r.advance(start);
        r
    }

    /// Bytes up to `written` are on disk: keep the reservation one step
    /// ahead of them (extended once half a step is used).
    pub(crate) fn advance(&mut self, written: u64) {
        if !self.enabled || self.reserved >= self.end || written + STEP / 2 < self.reserved {
            return;
        }
        let upto = (written + STEP).min(self.end);
        if upto <= self.reserved {
            return;
        }
        let res = rustix::fs::fallocate(
            self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            self.reserved,
            upto - self.reserved,
        );
        match res {
            Ok(()) => self.reserved = upto,
            // No fallocate here (or no room: the write will say so).
            Err(_) => self.enabled = false,
        }
    }

    /// Gives back what was reserved past `written`: the transfer stopped
    /// there.
    pub(crate) fn release(&self, written: u64) {
        if self.reserved <= written {
            return;
        }
        // Truncating to the length written frees the blocks reserved past
        // it (a hole punched past the end of the file would not: ext4
        // ignores holes beyond i_size).
        let _ = self.file.set_len(written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn allocated(f: &File) -> u64 {
        f.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn reserves_in_steps_and_gives_back_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("p")).unwrap();
        let mut r = Reservation::new(&f, 0, 8 << 30);
        if !r.enabled {
            return; // tmpfs: nothing is reserved at all
        }
        assert!(allocated(&f) <= STEP, "reserved {} at once", allocated(&f));
        r.advance(1 << 20);
        assert!(allocated(&f) <= STEP);
        r.release(0);
        assert!(allocated(&f) < 1 << 20, "kept {}", allocated(&f));
        assert_eq!(f.metadata().unwrap().len(), 0);
    }
}
