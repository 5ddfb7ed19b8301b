//! The waiting half of a condition variable in shared memory; the lock is
//! the caller's (a [`crate::sync::lock::SharedLock`] or
//! [`crate::sync::rlock::SharedRLock`]), and every call except [`SharedCondvar::sleep`]
//! is made with it held.
//!
//! `notify(n)` hands out up to `n` wake-ups, never more than there are
//! waiters, and wakes every sleeper: each re-takes the lock and claims one;
//! those that find none go back to sleep. So `notify(n)` releases exactly
//! `min(n, waiting)` waiters, whichever re-take the lock first (a waiter
//! that came after the notify may take a wake-up an earlier one was woken
//! for, as with any condition variable). A waiter whose time runs out takes
//! a wake-up if one is left, else leaves the count of waiters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::futex::{InSharedMemory, CHECK_EVERY};

#[repr(C)]
pub struct SharedCondvar {
    /// Bumped by every notify that hands out wake-ups (the futex word).
    seq: AtomicU32,
    /// Waiters not yet handed a wake-up.
    waiting: AtomicU32,
    /// Wake-ups handed out and not yet claimed.
    to_wake: AtomicU32,
    _reserved: AtomicU32,
}

// SAFETY: repr(C), made only of atomics; zeroed bytes are a condition with
// nobody waiting.
unsafe impl InSharedMemory for SharedCondvar {}

impl SharedCondvar {
    /// Joins the waiters (lock held); returns the sequence to sleep on.
    pub fn enter(&self) -> u32 {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.seq.load(Ordering::SeqCst)
    }

    /// The sequence to sleep on again (lock held, already a waiter).
    pub fn current(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Sleeps (lock released) until a notify after `seq`, at most `wait`;
    /// returns whether one came.
    pub fn sleep(&self, seq: u32, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.seq.load(Ordering::SeqCst) != seq {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            crate::sync::futex::wait(&self.seq, seq, left.min(CHECK_EVERY));
        }
    }

    /// Claims a wake-up (lock held); false if none is left.
    pub fn claim(&self) -> bool {
        let left = self.to_wake.load(Ordering::SeqCst);
        if left == 0 {
            return false;
        }
        self.to_wake.store(left - 1, Ordering::SeqCst);
        true
    }

    /// Leaves the waiters without a wake-up (lock held; time ran out).
    pub fn leave(&self) {
        let n = self.waiting.load(Ordering::SeqCst);
        self.waiting.store(n.saturating_sub(1), Ordering::SeqCst);
    }

    /// Hands out up to `n` wake-ups (lock held); returns how many.
    pub fn notify(&self, n: u32) -> u32 {
        let waiting = self.waiting.load(Ordering::SeqCst);
        let k = n.min(waiting);
        if k == 0 {
            return 0;
        }
        self.waiting.store(waiting - k, Ordering::SeqCst);
        self.to_wake.fetch_add(k, Ordering::SeqCst);
        self.seq.fetch_add(1, Ordering::SeqCst);
        crate::sync::futex::wake_all(&self.seq);
        k
    }

    /// `(waiting, to_wake)`, for tests and reprs.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.waiting.load(Ordering::SeqCst),
            self.to_wake.load(Ordering::SeqCst),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::page;
    use crate::sync::lock::SharedLock;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn notify_n_wakes_exactly_n() {
        let m = page();
        // SAFETY: a fresh shared page: a lock at 0, the condvar at 64.
        let (lock, cv) = unsafe {
            (
                SharedLock::at(m.as_ptr()),
                SharedCondvar::at(m.as_ptr().add(64)),
            )
        };
        let woken = Arc::new(AtomicUsize::new(0));
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                let (m, woken) = (m.clone(), woken.clone());
                std::thread::spawn(move || {
                    // SAFETY: as above; `m` keeps the page mapped.
                    let (lock, cv) = unsafe {
                        (
                            SharedLock::at(m.as_ptr()),
                            SharedCondvar::at(m.as_ptr().add(64)),
                        )
                    };
                    assert!(lock.acquire_within(Duration::from_secs(10)));
                    let mut seq = cv.enter();
                    loop {
                        lock.release().unwrap();
                        cv.sleep(seq, Duration::from_secs(10));
                        assert!(lock.acquire_within(Duration::from_secs(10)));
                        if cv.claim() {
                            break;
                        }
                        seq = cv.current();
                    }
                    woken.fetch_add(1, Ordering::SeqCst);
                    lock.release().unwrap();
                })
            })
            .collect();
        while cv.counts().0 < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock.acquire_within(Duration::from_secs(10)));
        assert_eq!(cv.notify(3), 3);
        lock.release().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        assert!(lock.acquire_within(Duration::from_secs(10)));
        assert_eq!(cv.notify(5), 1, "only one is left to wake");
        lock.release().unwrap();
        for s in sleepers {
            s.join().unwrap();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 4);
        assert_eq!(cv.counts(), (0, 0));
    }
}
