//! A page of shared memory per worker saying which task it is running and
//! since when.
//!
//! The worker writes two atomics before each task; the scheduler reads them
//! when a worker dies or a deadline passes. That tells it exactly which task
//! was running (the others it held never started and are simply requeued)
//! and how long it has run, without a message per task. The page lives in a
//! memfd, so nothing is left in /dev/shm when either side is killed.
//!
//! The scheduler also writes the ids of tasks it withdrew (cancelled)
//! after sending them into a ring on the page; before it starts a task, the
//! worker looks at the ring's count (one atomic load) and skips a task found
//! there. Both sides write first and read second, with sequentially
//! consistent atomics, so either the worker sees the withdrawal and skips
//! the task, or the scheduler sees the task running (and stops it).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CoreError, Result};
use crate::timing::monotonic_ns;

/// Withdrawn task ids the ring remembers; a worker that falls further
/// behind than this misses the oldest (those tasks run, and their answers
/// are dropped).
pub const REVOKED_RING: usize = 1016;

#[repr(C)]
struct Slot {
    /// Task id being run, 0 when idle (task ids start at 1).
    task: AtomicU64,
    /// `CLOCK_MONOTONIC` nanoseconds when `task` started.
    started_ns: AtomicU64,
    /// Task ids written to `revoked` so far (the ring's next slot is this
    /// modulo its length).
    revoked_count: AtomicU64,
    /// How far the worker has come in its stream of tasks (the position
    /// of the last task it began or skipped, 1 for the first), or
    /// [`TAKEN_BACK`] with the position of a task the scheduler took back
    /// since: one word both sides change atomically, so a take-back is
    /// decided exactly (see [`StatusPage::take_back`]). Positions only grow,
    /// so a value read once cannot come back.
    claim: AtomicU64,
    _pad: [u64; 4],
    revoked: [AtomicU64; REVOKED_RING],
}

/// Marks [`Slot::claim`] as a task taken back (positions stay far below).
const TAKEN_BACK: u64 = 1 << 63;

const PAGE: usize = 8192;
const _: () = assert!(std::mem::size_of::<Slot>() <= PAGE);

/// The mapped page. Both processes map the same memfd.
#[derive(Debug)]
pub struct StatusPage {
    ptr: NonNull<Slot>,
}

// SAFETY: the page is only accessed through atomics, and the mapping lives
// as long as the `StatusPage`.
unsafe impl Send for StatusPage {}
// SAFETY: as above: all access is atomic.
unsafe impl Sync for StatusPage {}

impl StatusPage {
    /// Creates a fresh page and returns it with the memfd to hand to a worker.
    pub fn create() -> Result<(StatusPage, OwnedFd)> {
        let fd =
            crate::shm::memfd(c"shoal-status", 0).map_err(|e| CoreError::io("memfd_create", e))?;
        File::from(fd.try_clone().map_err(|e| CoreError::io("dup", e))?)
            .set_len(PAGE as u64)
            .map_err(|e| CoreError::io("ftruncate status page", e))?;
        let page = StatusPage::map(&fd)?;
        Ok((page, fd))
    }

    /// Maps the page behind `fd` (the worker's side).
    pub fn map(fd: &impl AsRawFd) -> Result<StatusPage> {
        // SAFETY: a fresh shared mapping of a descriptor we were given; the
        // kernel picks the address, and we check for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(CoreError::io(
                "mmap status page",
                std::io::Error::last_os_error(),
            ));
        }
        let Some(ptr) = NonNull::new(ptr.cast::<Slot>()) else {
            return Err(CoreError::io(
                "mmap status page",
                std::io::Error::other("mmap returned a null address"),
            ));
        };
        Ok(StatusPage { ptr })
    }

    fn slot(&self) -> &Slot {
        // SAFETY: the mapping is PAGE bytes (at least a `Slot`, checked at
        // compile time), page-aligned, zero-filled at creation (a valid
        // `Slot`: every field is an atomic or plain integers), and outlives
        // `&self`.
        unsafe { self.ptr.as_ref() }
    }

    /// Worker side: `task` starts now.
    pub fn mark_start(&self, task: u64) {
        let slot = self.slot();
        slot.started_ns.store(monotonic_ns(), Ordering::Relaxed);
        // SeqCst, then `revoked_since` reads the ring's count: see the
        // module docs.
        slot.task.store(task, Ordering::SeqCst);
    }

    /// Scheduler side (the page's one writer of withdrawals): `task`, sent
    /// to this worker, must not start. Call [`StatusPage::running`] after
    /// it to learn whether it started already.
    pub fn revoke(&self, task: u64) {
        let slot = self.slot();
        let n = slot.revoked_count.load(Ordering::Relaxed);
        slot.revoked[(n % REVOKED_RING as u64) as usize].store(task, Ordering::Relaxed);
        slot.revoked_count.store(n + 1, Ordering::SeqCst);
    }

    /// Worker side: how many withdrawals have been written (one atomic
    /// load: compare it with what was last seen before calling
    /// [`StatusPage::revoked_since`]).
    pub fn revoked_count(&self) -> u64 {
        self.slot().revoked_count.load(Ordering::SeqCst)
    }

    /// Worker side: the tasks withdrawn after the first `seen`, up to
    /// `count` (a [`StatusPage::revoked_count`]); the oldest are missing if
    /// more than [`REVOKED_RING`] came since.
    pub fn revoked_since(&self, seen: u64, count: u64, out: &mut impl Extend<u64>) {
        let slot = self.slot();
        let from = seen.max(count.saturating_sub(REVOKED_RING as u64));
        out.extend(
            (from..count)
                .map(|i| slot.revoked[(i % REVOKED_RING as u64) as usize].load(Ordering::Relaxed)),
        );
    }

    /// Worker side, on meeting the task at `position` in its stream (before
    /// beginning or skipping it): records how far it has come, and returns
    /// the position of a task the scheduler took back since the previous
    /// one (the worker must skip it, which may be this one), if any.
    pub fn note_reached(&self, position: u64) -> Option<u64> {
        let old = self.slot().claim.swap(position, Ordering::SeqCst);
        (old & TAKEN_BACK != 0).then_some(old & !TAKEN_BACK)
    }

    /// Scheduler side: takes back the task at `position` in this worker's
    /// stream of tasks, if the worker has not reached it; returns whether
    /// it did. True means the worker will skip it and send no answer for
    /// it; false that it may have begun it, and will answer as usual. The
    /// worker meets tasks in the order they were sent and notes each one it
    /// meets, begun or skipped, so it has reached `position` exactly when
    /// the noted position is at least that. Only one task can be taken back
    /// per task the worker meets.
    pub fn take_back(&self, position: u64) -> bool {
        let claim = &self.slot().claim;
        let reached = claim.load(Ordering::SeqCst);
        if reached & TAKEN_BACK != 0 || reached >= position {
            return false;
        }
        claim
            .compare_exchange(
                reached,
                TAKEN_BACK | position,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Worker side: no task running.
    pub fn mark_idle(&self) {
        self.slot().task.store(0, Ordering::Release);
    }

    /// Scheduler side: the running task and its start time, if any.
    pub fn running(&self) -> Option<(u64, u64)> {
        let slot = self.slot();
        loop {
            let task = slot.task.load(Ordering::SeqCst);
            if task == 0 {
                return None;
            }
            let started = slot.started_ns.load(Ordering::Relaxed);
            if slot.task.load(Ordering::Acquire) == task {
                return Some((task, started));
            }
        }
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), PAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_each_other() {
        let (parent, fd) = StatusPage::create().unwrap();
        let worker = StatusPage::map(&fd).unwrap();
        assert_eq!(parent.running(), None);
        worker.mark_start(42);
        let (task, started) = parent.running().unwrap();
        assert_eq!(task, 42);
        assert!(started <= monotonic_ns());
        worker.mark_idle();
        assert_eq!(parent.running(), None);
    }

    #[test]
    fn a_task_is_taken_back_only_before_the_worker_reaches_it() {
        let (parent, fd) = StatusPage::create().unwrap();
        let worker = StatusPage::map(&fd).unwrap();
        assert!(parent.take_back(2), "nothing reached yet");
        assert!(!parent.take_back(3), "one take-back per task met");
        assert_eq!(worker.note_reached(1), Some(2), "the worker learns of it");
        assert!(!parent.take_back(1), "1 is reached");
        assert_eq!(worker.note_reached(2), None, "2 is skipped");
        assert!(!parent.take_back(2), "a skipped task counts as reached");
        assert!(!parent.take_back(1), "and so does every one before it");
        assert!(parent.take_back(3), "3 is not reached");
        assert_eq!(worker.note_reached(3), Some(3), "and is skipped");
    }

    #[test]
    fn withdrawals_reach_the_worker_and_the_ring_keeps_the_latest() {
        let (parent, fd) = StatusPage::create().unwrap();
        let worker = StatusPage::map(&fd).unwrap();
        assert_eq!(worker.revoked_count(), 0);
        parent.revoke(7);
        parent.revoke(9);
        let mut got = Vec::new();
        let count = worker.revoked_count();
        worker.revoked_since(0, count, &mut got);
        assert_eq!(got, [7, 9]);
        got.clear();
        for id in 100..100 + 2 * REVOKED_RING as u64 {
            parent.revoke(id);
        }
        let newer = worker.revoked_count();
        worker.revoked_since(count, newer, &mut got);
        assert_eq!(got.len(), REVOKED_RING);
        assert_eq!(got.first(), Some(&(100 + REVOKED_RING as u64)));
        assert_eq!(got.last(), Some(&(99 + 2 * REVOKED_RING as u64)));
    }
}
