//! An event flag in shared memory: set, clear, and wait until set. Setting
//! it wakes every waiter with one system call (none if nobody waits).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::futex::{InSharedMemory, CHECK_EVERY};

#[repr(C)]
pub struct SharedEvent {
    flag: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: repr(C), two atomics; zeroed bytes are a clear event.
unsafe impl InSharedMemory for SharedEvent {}

impl SharedEvent {
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst) != 0
    }

    pub fn set(&self) {
        self.flag.store(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            crate::sync::futex::wake_all(&self.flag);
        }
    }

    pub fn clear(&self) {
        self.flag.store(0, Ordering::SeqCst);
    }

    /// Waits at most `wait` for the flag; returns whether it is set.
    pub fn wait_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.is_set() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            crate::sync::futex::wait(&self.flag, 0, left.min(CHECK_EVERY));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::page;

    #[test]
    fn setting_wakes_every_waiter() {
        let m = page();
        // SAFETY: a fresh shared page used only as an event.
        let event = unsafe { SharedEvent::at(m.as_ptr()) };
        assert!(!event.wait_within(Duration::from_millis(10)));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    // SAFETY: as above; `m` keeps the page mapped.
                    let event = unsafe { SharedEvent::at(m.as_ptr()) };
                    event.wait_within(Duration::from_secs(10))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        event.set();
        assert!(waiters.into_iter().all(|w| w.join().unwrap()));
        event.clear();
        assert!(!event.is_set());
    }
}
