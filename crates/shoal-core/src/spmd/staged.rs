//! Large payloads: staged through shared memory segments that the sender
//! keeps and reuses, so that a large `Send` costs one copy in and one copy
//! out of pages that are already in memory (a fresh segment's pages cost
//! as much again the first time they are touched).
//!
//! The sender takes a free segment from its cache, sends its descriptor
//! with the message, then copies the payload in 1 MiB chunks, advancing
//! `written` in one of its world slot's stage slots after each; receivers
//! copy out (`pread`) as far as `written` goes, so the two copies overlap.
//! Each receiver counts `readers` down when it is done; at 0 the segment
//! is free again. When every stage slot is busy, or the payload is larger
//! than the cache may hold, the payload goes in a segment of its own
//! (written whole before the message is sent, never reused).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{CoreError, Result};
use crate::fds::SharedFd;
use crate::shm::{Access, Mapping};

use super::world::{World, STAGE_SLOTS};

/// Copy granularity: receivers start on a chunk as soon as it is written.
pub const CHUNK: usize = 1 << 20;
/// The most bytes a rank keeps in cached segments.
const CACHE_LIMIT: usize = 512 << 20;
/// Smallest segment made.
const MIN_SEGMENT: usize = 256 << 10;

/// What [`StagedCache::acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// This stage slot, marked busy for the message's readers.
    Slot(usize),
    /// A segment that fits is being copied out by receivers that have all
    /// started: wait for it (their last one rings the bell) rather than
    /// fault in a fresh one.
    Wait,
    /// Send the payload in a segment of its own.
    None,
}

/// A rank's cache of staged segments, one per stage slot.
#[derive(Default)]
pub struct StagedCache {
    segments: Vec<Option<Arc<Mapping>>>,
    /// The ranks each busy segment was last sent to.
    readers: Vec<Vec<usize>>,
}

impl StagedCache {
    pub fn new() -> StagedCache {
        StagedCache {
            segments: vec![None; STAGE_SLOTS],
            readers: vec![Vec::new(); STAGE_SLOTS],
        }
    }

    fn total(&self) -> usize {
        self.segments.iter().flatten().map(|m| m.len()).sum()
    }

    /// A free stage slot whose segment holds `len` bytes (reusing, making
    /// or replacing one), for a message to `dests`; `ended(rank)` says
    /// whether a rank has ended (its copy-out will never finish).
    pub fn acquire(
        &mut self,
        world: &World,
        me: usize,
        len: usize,
        dests: &[usize],
        ended: impl Fn(usize) -> bool,
    ) -> Result<Acquired> {
        let free = |i: usize| world.stage(me, i).readers.load(Ordering::Acquire) == 0;
        let fits = |i: usize| self.segments[i].as_ref().is_some_and(|m| m.len() >= len);
        let fitting = (0..STAGE_SLOTS)
            .filter(|&i| free(i) && fits(i))
            .min_by_key(|&i| self.segments[i].as_ref().map_or(0, |m| m.len()));
        let index = match fitting {
            Some(i) => i,
            None => {
                let busy_but_going = (0..STAGE_SLOTS).any(|i| {
                    fits(i)
                        && !free(i)
                        && world.stage(me, i).unstarted.load(Ordering::Acquire) == 0
                        && !self.readers[i].iter().any(|&r| ended(r))
                });
                if busy_but_going {
                    return Ok(Acquired::Wait);
                }
                let want = len.next_power_of_two().max(MIN_SEGMENT);
                if want > CACHE_LIMIT {
                    return Ok(Acquired::None);
                }
                // An empty slot, else the free slot with the smallest segment.
                let victim = (0..STAGE_SLOTS)
                    .filter(|&i| free(i))
                    .min_by_key(|&i| self.segments[i].as_ref().map_or(0, |m| m.len()));
                let Some(i) = victim else {
                    return Ok(Acquired::None);
                };
                let old = self.segments[i].as_ref().map_or(0, |m| m.len());
                if self.total() - old + want > CACHE_LIMIT {
                    // Make room by dropping other free segments.
                    for j in 0..STAGE_SLOTS {
                        if j != i && free(j) {
                            self.segments[j] = None;
                        }
                    }
                    if self.total() - old + want > CACHE_LIMIT {
                        return Ok(Acquired::None);
                    }
                }
                self.segments[i] = None;
                let fd = SharedFd::new(crate::shm::create(want)?);
                self.segments[i] = Some(Mapping::map(fd, Access::Shared)?);
                i
            }
        };
        let stage = world.stage(me, index);
        let n = dests.len() as u32;
        stage.written.store(0, Ordering::Relaxed);
        stage.unstarted.store(n, Ordering::Relaxed);
        stage.readers.store(n, Ordering::Release);
        self.readers[index] = dests.to_vec();
        Ok(Acquired::Slot(index))
    }

    pub fn segment(&self, index: usize) -> &Arc<Mapping> {
        self.segments[index]
            .as_ref()
            .expect("a stage slot in use has a segment")
    }

    /// Copies `data` into stage `index`'s segment chunk by chunk, calling
    /// `written(bytes)` after each (to publish progress and wake readers).
    pub fn fill(&self, index: usize, data: &[u8], mut written: impl FnMut(usize)) {
        let map = self.segment(index);
        assert!(data.len() <= map.len());
        let mut done = 0;
        while done < data.len() {
            let n = CHUNK.min(data.len() - done);
            // SAFETY: `done + n <= data.len() <= map.len()`; the segment is
            // ours while its readers count is non-zero, and readers only
            // read below `written`, which covers bytes already copied.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr().add(done), map.as_ptr().add(done), n);
            }
            done += n;
            written(done);
        }
    }
}

/// The identity (inode) of the file behind `fd`.
pub fn inode(fd: &SharedFd) -> Result<u64> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we hold, into a writable struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(CoreError::io(
            "fstat a message's segment",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.st_ino as u64)
}

/// `pread` of `buf.len()` bytes at `offset`, all of them.
pub fn pread_exact(fd: &SharedFd, buf: &mut [u8], offset: usize) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into the unfilled tail of a valid buffer.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                buf.len() - done,
                (offset + done) as libc::off_t,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CoreError::io("read a message from shared memory", err));
        }
        if n == 0 {
            return Err(CoreError::Config(
                "a message's shared memory segment is shorter than the message".into(),
            ));
        }
        done += n as usize;
    }
    Ok(())
}
