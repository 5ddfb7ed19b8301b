//! A re-entrant lock in shared memory: a [`SharedLock`] plus the thread
//! that holds it and how many times. The thread that took it may take it
//! again; it is free once released as many times. Only the holding thread
//! may release it (as `multiprocessing.RLock`). A holder process that dies
//! is taken over as with [`SharedLock`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sync::futex::{my_tid, InSharedMemory};
use crate::sync::lock::SharedLock;

#[repr(C)]
pub struct SharedRLock {
    lock: SharedLock,
    /// Kernel thread id of the holder (0 while free).
    tid: AtomicU32,
    /// How many times the holder has taken it.
    count: AtomicU32,
}

// SAFETY: repr(C), made only of atomics (SharedLock included); zeroed bytes
// are a free lock.
unsafe impl InSharedMemory for SharedRLock {}

/// Releasing an RLock that this thread does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOwner;

impl SharedRLock {
    fn mine(&self) -> bool {
        self.lock.held_here() && self.tid.load(Ordering::Relaxed) == my_tid()
    }

    fn took(&self) -> bool {
        self.tid.store(my_tid(), Ordering::Relaxed);
        self.count.store(1, Ordering::Relaxed);
        true
    }

    pub fn try_acquire(&self) -> bool {
        if self.mine() {
            self.count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.lock.try_acquire() && self.took()
    }

    /// Takes it, waiting at most `wait`; false if another thread still
    /// holds it.
    pub fn acquire_within(&self, wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        self.lock.acquire_within(wait) && self.took()
    }

    /// Releases one level; the lock is free once every level is released.
    pub fn release(&self) -> Result<(), NotOwner> {
        if !self.mine() {
            return Err(NotOwner);
        }
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.tid.store(0, Ordering::Relaxed);
            self.lock.release().map_err(|_| NotOwner)?;
        }
        Ok(())
    }

    /// Releases every level at once (for a condition's wait); returns how
    /// many there were, to give back to [`Self::restore`].
    pub fn release_all(&self) -> Result<u32, NotOwner> {
        if !self.mine() {
            return Err(NotOwner);
        }
        let count = self.count.swap(0, Ordering::Relaxed);
        self.tid.store(0, Ordering::Relaxed);
        self.lock.release().map_err(|_| NotOwner)?;
        Ok(count)
    }

    /// After [`Self::release_all`] and a new acquire: the levels held before.
    pub fn restore(&self, count: u32) {
        if self.mine() {
            self.count.store(count.max(1), Ordering::Relaxed);
        }
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// Whether the calling thread holds it.
    pub fn held_by_me(&self) -> bool {
        self.mine()
    }

    /// `(pid, tid, count)` of the holder, if held.
    pub fn holder(&self) -> Option<(u32, u32, u32)> {
        let pid = self.lock.owner()?;
        Some((
            pid,
            self.tid.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::page;

    #[test]
    fn the_holder_reenters_and_others_wait() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as an RLock.
        let lock = unsafe { SharedRLock::at(m.as_ptr()) };
        assert!(lock.try_acquire());
        assert!(lock.try_acquire());
        assert_eq!(lock.holder().map(|h| h.2), Some(2));
        let m2 = m.clone();
        let other = std::thread::spawn(move || {
            // SAFETY: as above; `m2` keeps the mapping alive.
            let lock = unsafe { SharedRLock::at(m2.as_ptr()) };
            let blocked = !lock.acquire_within(Duration::from_millis(30));
            let not_mine = lock.release() == Err(NotOwner);
            let later = lock.acquire_within(Duration::from_secs(10));
            lock.release().unwrap();
            (blocked, not_mine, later)
        });
        std::thread::sleep(Duration::from_millis(80));
        lock.release().unwrap();
        assert!(lock.is_locked(), "one level is still held");
        lock.release().unwrap();
        assert_eq!(other.join().unwrap(), (true, true, true));
        assert!(!lock.is_locked());
        assert_eq!(lock.release(), Err(NotOwner));
    }

    #[test]
    fn release_all_and_restore_keep_the_depth() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as an RLock.
        let lock = unsafe { SharedRLock::at(m.as_ptr()) };
        for _ in 0..3 {
            assert!(lock.try_acquire());
        }
        let depth = lock.release_all().unwrap();
        assert_eq!(depth, 3);
        assert!(!lock.is_locked());
        assert!(lock.try_acquire());
        lock.restore(depth);
        for _ in 0..3 {
            lock.release().unwrap();
        }
        assert!(!lock.is_locked());
    }
}
