//! Which connection of a split download (`-j N`) fetches which bytes, as
//! aria2 does it: a connection that has finished its range takes the
//! second half of the range with the most left, so one slow connection
//! (a lossy path, a busy server thread) does not hold the whole download
//! back while the others idle.
//!
//! The board is the ranges' progress, shared by the lanes: each range is
//! fetched by at most one lane at a time. A range taken over is cut at an
//! aligned offset; its lane stops writing there and leaves its connection
//! (the rest of its answer is not wanted), and the thief fetches from the
//! cut to the old end. Both would write the same bytes of the same version
//! of the file there, so a race at the cut costs nothing but a few bytes
//! received twice. Pure bookkeeping: no IO.

use std::sync::Mutex;

use super::RangeProgress;

/// A range is split only if at least this much of it is left, so that
/// each half is worth a request (and the cut lane a new connection).
/// Measured over a 50 ms, 0.5 %-loss link, a 16 MiB file with `-j 8`
/// (ranges of 2 MiB), median of 10: 5.63 s with 4 MiB here (cuts on
/// 1 MiB), 4.00–4.28 s with 1 MiB (256 KiB), 3.85 s with 512 KiB
/// (128 KiB), against 3.80–4.15 s for `aria2c -x 8 -s 8 -k 1M`.
pub const MIN_STEAL: u64 = 512 * 1024;

/// Cuts land on multiples of this.
const ALIGN: u64 = 128 * 1024;

/// At most this many ranges: the part's metadata lists them all.
const MAX_RANGES: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Slot {
    range: RangeProgress,
    /// A lane is fetching it.
    taken: bool,
}

/// The ranges of one split download and who fetches what.
#[derive(Debug)]
pub struct Board {
    slots: Mutex<Vec<Slot>>,
}

/// What a lane may write of a chunk that arrived for range `i`.
#[derive(Debug, PartialEq, Eq)]
pub struct Fit {
    /// Bytes of the chunk that belong to the range (a prefix of it).
    pub take: usize,
    /// The range ends within this chunk, at its end, or before it. If the
    /// lane's answer goes on past that point (another lane took the rest),
    /// the lane must leave the connection after writing.
    pub cut: bool,
}

impl Board {
    /// A board over `ranges` (none taken).
    pub fn new(ranges: Vec<RangeProgress>) -> Self {
        Board {
            slots: Mutex::new(
                ranges
                    .into_iter()
                    .map(|range| Slot {
                        range,
                        taken: false,
                    })
                    .collect(),
            ),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A lane that panicked holding the lock left consistent numbers:
        // every update is a single assignment.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The range a lane should fetch next: the first one nobody fetches
    /// that has bytes left, else the second half of the taken range with
    /// the most left (if that is at least [`MIN_STEAL`]). `None` when there
    /// is nothing left to share out.
    pub fn claim(&self) -> Option<usize> {
        let mut slots = self.slots();
        if let Some(i) = slots
            .iter()
            .position(|s| !s.taken && s.range.remaining() > 0)
        {
            slots[i].taken = true;
            return Some(i);
        }
        if slots.len() >= MAX_RANGES {
            return None;
        }
        let (victim, left) = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.taken)
            .map(|(i, s)| (i, s.range.remaining()))
            .max_by_key(|&(_, left)| left)?;
        if left < MIN_STEAL {
            return None;
        }
        let r = slots[victim].range;
        let end = r.offset + r.length;
        let cut = (r.offset + r.done.min(r.length) + left / 2).next_multiple_of(ALIGN);
        if cut >= end {
            return None;
        }
        slots[victim].range.length = cut - r.offset;
        slots.push(Slot {
            range: RangeProgress {
                offset: cut,
                length: end - cut,
                done: 0,
            },
            taken: true,
        });
        Some(slots.len() - 1)
    }

    /// Range `i` as it stands.
    pub fn range(&self, i: usize) -> RangeProgress {
        self.slots()[i].range
    }

    /// How much of a `len`-byte chunk that arrived for range `i` at file
    /// offset `pos` belongs to it (its end may have moved since the
    /// request was sent).
    pub fn fit(&self, i: usize, pos: u64, len: usize) -> Fit {
        let r = self.slots()[i].range;
        let end = r.offset + r.length;
        let room = end.saturating_sub(pos);
        let take = usize::try_from(room).map_or(len, |room| room.min(len));
        Fit {
            take,
            cut: room <= len as u64,
        }
    }

    /// Records that range `i` is written up to file offset `upto`;
    /// returns how many bytes that adds to the range's progress.
    pub fn advance(&self, i: usize, upto: u64) -> u64 {
        let mut slots = self.slots();
        let r = &mut slots[i].range;
        let done = upto.saturating_sub(r.offset).min(r.length);
        let added = done.saturating_sub(r.done);
        r.done = r.done.max(done);
        added
    }

    /// Lane gives range `i` back (finished, cut, or its lane failed).
    pub fn release(&self, i: usize) {
        self.slots()[i].taken = false;
    }

    /// The ranges in file order, as the part's metadata records them.
    pub fn snapshot(&self) -> Vec<RangeProgress> {
        let mut out: Vec<RangeProgress> = self.slots().iter().map(|s| s.range).collect();
        out.sort_by_key(|r| r.offset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn board(ranges: &[(u64, u64, u64)]) -> Board {
        Board::new(
            ranges
                .iter()
                .map(|&(offset, length, done)| RangeProgress {
                    offset,
                    length,
                    done,
                })
                .collect(),
        )
    }

    fn tiles(b: &Board, size: u64) {
        let mut expect = 0;
        for r in b.snapshot() {
            assert_eq!(r.offset, expect);
            assert!(r.done <= r.length);
            expect += r.length;
        }
        assert_eq!(expect, size);
    }

    #[test]
    fn free_ranges_first_then_the_largest_taken_one_is_halved() {
        let b = board(&[(0, 16 * MIB, 0), (16 * MIB, 16 * MIB, 16 * MIB)]);
        assert_eq!(b.claim(), Some(0));
        // The second range is done: the next lane splits the first.
        b.advance(0, 2 * MIB);
        assert_eq!(b.claim(), Some(2));
        assert_eq!(b.range(0).length, 9 * MIB);
        assert_eq!(
            b.range(2),
            RangeProgress {
                offset: 9 * MIB,
                length: 7 * MIB,
                done: 0
            }
        );
        tiles(&b, 32 * MIB);
        // The first lane's answer runs on past the cut: it may write up to
        // it, then must leave.
        assert_eq!(
            b.fit(0, 8 * MIB + 10, MIB as usize),
            Fit {
                take: (MIB - 10) as usize,
                cut: true
            }
        );
        assert_eq!(
            b.fit(0, 4 * MIB, MIB as usize),
            Fit {
                take: MIB as usize,
                cut: false
            }
        );
        assert_eq!(b.advance(0, 12 * MIB), 7 * MIB, "counted only to the cut");
        assert_eq!(b.range(0).remaining(), 0);
    }

    #[test]
    fn small_remainders_are_not_split_and_the_count_is_bounded() {
        let b = board(&[(0, 6 * MIB, 6 * MIB - MIN_STEAL / 2)]);
        assert_eq!(b.claim(), Some(0));
        assert_eq!(b.claim(), None, "too little left for a second lane");
        let big = board(&[(0, 1 << 40, 0)]);
        let mut n = 0;
        while big.claim().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_RANGES);
        tiles(&big, 1 << 40);
    }

    #[test]
    fn a_released_range_with_bytes_left_is_claimed_again() {
        let b = board(&[(0, 8 * MIB, 0)]);
        assert_eq!(b.claim(), Some(0));
        b.advance(0, MIB);
        b.release(0);
        assert_eq!(b.claim(), Some(0));
        assert_eq!(b.range(0).done, MIB);
    }
}
