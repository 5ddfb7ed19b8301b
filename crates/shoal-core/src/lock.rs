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

fn my_pid() -> u32 {
    std::process::id()
}

fn is_dead(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // A zombie (killed, not yet reaped by its parent) still answers
    // signal 0, but runs no more code: its locks are free to take over.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            Some(after_name.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl SharedLock {
    /// The lock stored at `ptr` (zeroed memory is a free lock).
    ///
    /// # Safety
    ///
    /// `ptr` must be 4-byte aligned, point to [`LOCK_SIZE`] bytes of shared
    /// memory used only as this lock, and stay mapped for `'a`.
    pub unsafe fn at<'a>(ptr: *mut u8) -> &'a SharedLock {
        // SAFETY: the caller promises alignment, size and lifetime; every
        // field is an atomic, valid for any bit pattern.
        unsafe { &*ptr.cast::<SharedLock>() }
    }

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
    pub fn acquire_within(&self, wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        let deadline = Instant::now() + wait;
        loop {
            // Announce a waiter; if the lock was free meanwhile, it is ours
            // (held as contended, which costs the releaser one wake call).
            if self.state.swap(CONTENDED, Ordering::Acquire) == FREE {
                return self.took();
            }
            let owner = self.owner.load(Ordering::Relaxed);
            if owner != 0 && owner != my_pid() && is_dead(owner) {
                // The holder died holding it: take it over.
                if self
                    .owner
                    .compare_exchange(owner, my_pid(), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Owner checks need a wake-up now and then.
            crate::futex::wait(&self.state, CONTENDED, left.min(Duration::from_millis(100)));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::SharedFd;
    use crate::shm::{create, Access, Mapping};
    use std::sync::Arc;

    fn page() -> Arc<Mapping> {
        Mapping::map(SharedFd::new(create(4096).unwrap()), Access::Shared).unwrap()
    }

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
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        lock.state.store(HELD, Ordering::SeqCst);
        lock.owner.store(dead, Ordering::SeqCst);
        assert!(lock.acquire_within(Duration::from_secs(5)));
        assert_eq!(lock.owner.load(Ordering::SeqCst), my_pid());
    }
}
