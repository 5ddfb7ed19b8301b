//! A lock that lives in shared memory, so every process that maps the page
//! can take it: one futex word that holds the holder's pid.
//!
//! The word is 0 while the lock is free, and `pid << 1 | waiters` while the
//! process `pid` holds it (`waiters` set once someone waits for it). Taking
//! it is one compare-and-swap that also records who took it, so there is
//! no moment at which the lock is held by nobody known; an uncontended take
//! and release make no system call. As `multiprocessing.Lock`, any process
//! or thread may release it. A waiter whose holder died while holding the
//! lock (killed, say) takes it over instead of waiting forever, as a robust
//! mutex does: a holder is dead when `kill(pid, 0)` says there is no such
//! process (`ESRCH`; `EPERM` means it lives, as another user's) or it is a
//! zombie.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bytes a lock takes in a segment (it needs 4-byte alignment).
pub const LOCK_SIZE: usize = 8;

#[repr(C)]
pub struct SharedLock {
    state: AtomicU32,
    /// Unused; keeps the size other code lays segments out by.
    _reserved: AtomicU32,
}

const FREE: u32 = 0;
/// Set in a held lock's word once a waiter sleeps on it.
const WAITERS: u32 = 1;

/// Releasing a lock nobody holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHeld;

fn my_pid() -> u32 {
    std::process::id()
}

/// The word of a lock `pid` holds (Linux pids are below 2^22).
fn held_by(pid: u32) -> u32 {
    pid << 1
}

fn holder(state: u32) -> u32 {
    state >> 1
}

fn is_dead(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        // EPERM: it exists, and belongs to another user.
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

    pub fn try_acquire(&self) -> bool {
        self.state
            .compare_exchange(
                FREE,
                held_by(my_pid()),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Takes the lock, waiting at most `wait`; false if it is still held.
    pub fn acquire_within(&self, wait: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        let me = my_pid();
        let deadline = Instant::now() + wait;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            // Free, or held by a process that died holding it: take it,
            // marked as waited for (others may be), which costs the next
            // release one wake call.
            let owner = holder(state);
            if state == FREE || (owner != me && is_dead(owner)) {
                if self
                    .state
                    .compare_exchange(
                        state,
                        held_by(me) | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if state & WAITERS == 0
                && self
                    .state
                    .compare_exchange(state, state | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Owner checks need a wake-up now and then.
            futex_wait(
                &self.state,
                state | WAITERS,
                left.min(Duration::from_millis(100)),
            );
        }
    }

    /// Frees the lock and wakes one waiter; an error if it was free.
    pub fn release(&self) -> Result<(), NotHeld> {
        let state = self.state.swap(FREE, Ordering::Release);
        if state == FREE {
            return Err(NotHeld);
        }
        if state & WAITERS != 0 {
            futex_wake(&self.state, 1);
        }
        Ok(())
    }

    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a futex wait on a live atomic word with a valid timeout; not
    // FUTEX_PRIVATE, because the word is shared between processes. Spurious
    // wake-ups and EAGAIN are handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: a futex wake on a live atomic word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
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

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        dead
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        lock.state
            .store(held_by(dead_pid()) | WAITERS, Ordering::SeqCst);
        assert!(lock.acquire_within(Duration::from_secs(5)));
        assert_eq!(holder(lock.state.load(Ordering::SeqCst)), my_pid());
    }

    #[test]
    fn a_holder_that_died_right_after_taking_it_is_taken_over() {
        // Taking the lock is one step that also says who took it: a holder
        // killed just after it leaves a word that names it, nothing else.
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        lock.state.store(held_by(dead_pid()), Ordering::SeqCst);
        assert!(lock.acquire_within(Duration::from_secs(5)));
        lock.release().unwrap();
        assert!(!lock.is_locked());
    }

    /// Run by the next test in a process of its own, as another user.
    #[test]
    fn another_users_holder_is_alive() {
        let Ok(holder_pid) = std::env::var("SHOAL_LOCK_TEST_HOLDER") else {
            return;
        };
        let mut word = [0u64; 1];
        // SAFETY: a local, aligned, zeroed 8-byte buffer used only as a lock.
        let lock = unsafe { SharedLock::at(word.as_mut_ptr().cast()) };
        lock.state
            .store(held_by(holder_pid.parse().unwrap()), Ordering::SeqCst);
        // kill(holder, 0) fails with EPERM here: the holder lives.
        assert!(!lock.acquire_within(Duration::from_millis(50)));
    }

    #[test]
    fn a_holder_that_another_user_runs_is_not_taken_over() {
        // SAFETY: reading this process's effective user id.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root, to run a check as another user");
            return;
        }
        use std::os::unix::process::CommandExt;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock::tests::another_users_holder_is_alive"])
            .env("SHOAL_LOCK_TEST_HOLDER", my_pid().to_string())
            .uid(65534)
            .gid(65534)
            .status()
            .unwrap();
        assert!(status.success(), "{status}");
    }
}
