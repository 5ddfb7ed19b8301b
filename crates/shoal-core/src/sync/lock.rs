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
//! mutex does (see [`is_dead`]). Whether the holder lives is checked when a
//! wait's time is up and every [`CHECK_EVERY`] of a longer wait, not on
//! every contended try: the check costs system calls, and handing a live
//! lock over must not.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::futex::{is_dead, my_pid, InSharedMemory, CHECK_EVERY};

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

/// The word of a lock `pid` holds (Linux pids are below 2^22).
fn held_by(pid: u32) -> u32 {
    pid << 1
}

fn holder(state: u32) -> u32 {
    state >> 1
}

// SAFETY: repr(C), two atomics; zeroed bytes are a free lock.
unsafe impl InSharedMemory for SharedLock {}

impl SharedLock {
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
        let start = Instant::now();
        let deadline = start + wait;
        let mut next_check = start;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            // Free: take it, marked as waited for (others may be), which
            // costs the next release one wake call.
            if state == FREE {
                if self.take_from(state, me) {
                    return true;
                }
                continue;
            }
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() || now >= next_check {
                next_check = now + CHECK_EVERY;
                // Held by a process that died holding it: take it over.
                let owner = holder(state);
                if owner != me && is_dead(owner) && self.take_from(state, me) {
                    return true;
                }
                if left.is_zero() {
                    return false;
                }
            }
            if state & WAITERS == 0
                && self
                    .state
                    .compare_exchange(state, state | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            super::futex::wait(&self.state, state | WAITERS, left.min(CHECK_EVERY));
        }
    }

    fn take_from(&self, state: u32, me: u32) -> bool {
        self.state
            .compare_exchange(
                state,
                held_by(me) | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Frees the lock and wakes one waiter; an error if it was free.
    pub fn release(&self) -> Result<(), NotHeld> {
        let state = self.state.swap(FREE, Ordering::Release);
        if state == FREE {
            return Err(NotHeld);
        }
        if state & WAITERS != 0 {
            super::futex::wake(&self.state, 1);
        }
        Ok(())
    }

    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }

    /// Pid of the process holding it (None while free).
    pub fn owner(&self) -> Option<u32> {
        match self.state.load(Ordering::Relaxed) {
            FREE => None,
            state => Some(holder(state)),
        }
    }

    /// Whether this process holds it.
    pub fn held_here(&self) -> bool {
        self.owner() == Some(my_pid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::{dead_pid, page};

    #[test]
    fn excludes_and_hands_over() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        assert!(lock.try_acquire());
        assert!(lock.is_locked() && lock.held_here());
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
        assert_eq!(lock.owner(), None);
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        lock.state
            .store(held_by(dead_pid()) | WAITERS, Ordering::SeqCst);
        assert!(lock.acquire_within(Duration::from_secs(5)));
        assert_eq!(lock.owner(), Some(my_pid()));
    }

    #[test]
    fn a_holder_that_died_right_after_taking_it_is_taken_over() {
        // Taking the lock is one step that also says who took it: a holder
        // killed just after it leaves a word that names it, nothing else.
        let m = page();
        // SAFETY: a fresh, page-aligned shared mapping used only as a lock.
        let lock = unsafe { SharedLock::at(m.as_ptr()) };
        lock.state.store(held_by(dead_pid()), Ordering::SeqCst);
        assert!(
            lock.acquire_within(Duration::ZERO),
            "a try takes a dead holder's lock"
        );
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
            .args([
                "--exact",
                "sync::lock::tests::another_users_holder_is_alive",
            ])
            .env("SHOAL_LOCK_TEST_HOLDER", my_pid().to_string())
            .uid(65534)
            .gid(65534)
            .status()
            .unwrap();
        assert!(status.success(), "{status}");
    }
}
