//! A counter in shared memory that processes can wait on: for it to drop
//! below a limit (a bounded queue's free room) or to reach zero (a joinable
//! queue's unfinished tasks). Counting up and down is one atomic operation,
//! plus a wake-up call only when someone waits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::futex::{InSharedMemory, CHECK_EVERY};

#[repr(C)]
pub struct SharedCounter {
    value: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: repr(C), two atomics; zeroed bytes are a counter at 0.
unsafe impl InSharedMemory for SharedCounter {}

/// Counting down from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underflow;

impl SharedCounter {
    pub fn get(&self) -> u32 {
        self.value.load(Ordering::SeqCst)
    }

    /// Counts up by one if the count is below `limit` (0: no limit),
    /// waiting at most `wait` for it to drop; false if it stayed at the
    /// limit.
    pub fn increment_below(&self, limit: u32, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let v = self.value.load(Ordering::SeqCst);
            if limit == 0 || v < limit {
                if v == u32::MAX {
                    return false;
                }
                if self
                    .value
                    .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::SeqCst)
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
            self.sleep_while(v, left);
        }
    }

    /// Counts down by one and wakes whoever waits.
    pub fn decrement(&self) -> Result<u32, Underflow> {
        let mut v = self.value.load(Ordering::SeqCst);
        loop {
            if v == 0 {
                return Err(Underflow);
            }
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            crate::sync::futex::wake_all(&self.value);
        }
        Ok(v - 1)
    }

    /// Waits at most `wait` for the count to reach zero.
    pub fn wait_zero_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let v = self.value.load(Ordering::SeqCst);
            if v == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sleep_while(v, left);
        }
    }

    fn sleep_while(&self, value: u32, left: Duration) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        crate::sync::futex::wait(&self.value, value, left.min(CHECK_EVERY));
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::page;

    #[test]
    fn waits_for_room_and_for_zero() {
        let m = page();
        // SAFETY: a fresh shared page used only as a counter.
        let c = unsafe { SharedCounter::at(m.as_ptr()) };
        assert!(c.increment_below(2, Duration::ZERO));
        assert!(c.increment_below(2, Duration::ZERO));
        assert!(!c.increment_below(2, Duration::from_millis(20)));
        assert!(!c.wait_zero_within(Duration::from_millis(20)));
        let m2 = m.clone();
        let taker = std::thread::spawn(move || {
            // SAFETY: as above; `m2` keeps the page mapped.
            let c = unsafe { SharedCounter::at(m2.as_ptr()) };
            std::thread::sleep(Duration::from_millis(30));
            c.decrement().unwrap();
            std::thread::sleep(Duration::from_millis(30));
            c.decrement().unwrap();
            c.decrement().unwrap();
        });
        assert!(c.increment_below(2, Duration::from_secs(10)));
        assert!(c.wait_zero_within(Duration::from_secs(10)));
        taker.join().unwrap();
        assert_eq!(c.decrement(), Err(Underflow));
    }
}
