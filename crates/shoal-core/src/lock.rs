//! A lock that lives in shared memory, so every process that maps the page
//! can take it: a futex word and the holder's pid.
//!
//! The state follows the classic three-value futex mutex (0 free, 1 held,
//! 2 held with waiters), so an uncontended take and release make no system
//! call. As `multiprocessing.Lock`, any process or thread may release it.
//! Because the holder's pid is recorded, a waiter whose holder died while
//! holding the lock (killed, say) takes the lock over instead of waiting
//! forever, as a robust mutex does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::futex::{is_dead, my_pid, InSharedMemory, CHECK_EVERY};

/// Bytes a lock takes in a segment (it needs 4-byte alignment).
pub const LOCK_SIZE: usize = 8;

#[repr(C)]
pub struct SharedLock {
    state: AtomicU32,
    /// Pid of the holder, 0 while free (or for a moment while taken).
    owner: AtomicU32,
}

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;

/// Releasing a lock nobody holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHeld;

// SAFETY: repr(C), two atomics; zeroed bytes are a free lock.
unsafe impl InSharedMemory for SharedLock {}

impl SharedLock {
    fn took(&self) -> bool {
        self.owner.store(my_pid(), Ordering::Relaxed);
        true
    }

    pub fn try_acquire(&self) -> bool {
        self.state
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            && self.took()
    }

    /// Takes the lock, waiting at most `wait`; false if it is still held.
    ///
    /// Whether the holder has died is checked when the time is up (so a
    /// non-blocking try takes over a dead holder's lock at once) and every
    /// [`CHECK_EVERY`] of a longer wait, not on every contended try: that
    /// check costs system calls, and handing a live lock over must not.
    pub fn acquire_within(&self, wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        let start = Instant::now();
        let deadline = start + wait;
        let mut next_check = start + CHECK_EVERY;
        loop {
            // Announce a waiter; if the lock was free meanwhile, it is ours
            // (held as contended, which costs the releaser one wake call).
            if self.state.swap(CONTENDED, Ordering::Acquire) == FREE {
                return self.took();
            }
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() || now >= next_check {
                next_check = now + CHECK_EVERY;
                if self.take_over_dead_holder() {
                    return true;
                }
                if left.is_zero() {
                    return false;
                }
            }
            crate::futex::wait(&self.state, CONTENDED, left.min(CHECK_EVERY));
        }
    }

    /// Takes the lock over if its holder has died holding it.
    fn take_over_dead_holder(&self) -> bool {
        let owner = self.owner.load(Ordering::Relaxed);
        owner != 0
            && owner != my_pid()
            && is_dead(owner)
            && self
                .owner
                .compare_exchange(owner, my_pid(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Frees the lock and wakes one waiter; an error if it was free.
    pub fn release(&self) -> Result<(), NotHeld> {
        self.owner.store(0, Ordering::Relaxed);
        match self.state.swap(FREE, Ordering::Release) {
            FREE => Err(NotHeld),
            HELD => Ok(()),
            _ => {
                crate::futex::wake(&self.state, 1);
                Ok(())
            }
        }
    }

    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }

    /// Pid of the process holding it (None while free).
    pub fn owner(&self) -> Option<u32> {
        match self.owner.load(Ordering::Relaxed) {
            0 => None,
            pid if self.is_locked() => Some(pid),
            _ => None,
        }
    }

    /// Whether this process holds it.
    pub fn held_here(&self) -> bool {
        self.is_locked() && self.owner.load(Ordering::Relaxed) == my_pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::futex::testing::{dead_pid, page};

    #[test]
    fn excludes_and_hands_over() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        assert!(lock.try_acquire());
        assert!(lock.is_locked());
        assert!(!lock.acquire_within(Duration::from_millis(20)));
        let m2 = m.clone();
        let waiter = std::thread::spawn(move || {
            // SAFETY: as above; `m2` keeps the mapping alive.
            let lock = unsafe { SharedLock::at(m2.as_ptr()) };
            let ok = lock.acquire_within(Duration::from_secs(10));
            lock.release().unwrap();
            ok
        });
        std::thread::sleep(Duration::from_millis(50));
        lock.release().unwrap();
        assert!(waiter.join().unwrap());
        assert_eq!(lock.release(), Err(NotHeld));
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        let dead = dead_pid();
        lock.state.store(HELD, Ordering::SeqCst);
        lock.owner.store(dead, Ordering::SeqCst);
        assert!(lock.acquire_within(Duration::from_secs(5)));
        assert_eq!(lock.owner.load(Ordering::SeqCst), my_pid());
    }
}
