//! A counting semaphore in shared memory: a futex word holding the value,
//! and a table of which processes hold how many units.
//!
//! Taking a unit when the value is above zero and giving one back are a
//! compare-and-swap each, plus a scan of the holder table (no system call
//! unless someone waits). A bounded semaphore refuses to be released above
//! its initial value.
//!
//! The holder table is what keeps a killed holder from wedging the others:
//! each process's count is the units it took minus those it gave back
//! (never below zero; units a process releases without having taken them
//! count for nobody). A waiter that finds the value at zero looks for
//! holders that have died and gives their units back, but never raises the
//! value above the one the semaphore was made with. So a semaphore that
//! limits how many processes do something at once recovers the units of a
//! killed process, and one used to signal (made with 0, released by a
//! producer, taken by a consumer) never gets spurious signals from a
//! consumer's death. A table that is full (more processes holding units at
//! once than it has slots) leaves the extra holders untracked.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::futex::{is_dead, my_pid, InSharedMemory, CHECK_EVERY};

/// Processes whose units can be tracked at once.
pub const HOLDER_SLOTS: usize = 64;

#[repr(C)]
pub struct SharedSemaphore {
    value: AtomicU32,
    /// Processes and threads asleep on `value`.
    waiters: AtomicU32,
    /// The value it was made with: recovery never goes above it.
    initial: AtomicU32,
    /// 1 for a bounded semaphore (release above `initial` is an error).
    bounded: AtomicU32,
    /// Per slot: holder pid (high 32 bits) and units held (low 32 bits);
    /// 0 is a free slot.
    holders: [AtomicU64; HOLDER_SLOTS],
}

// SAFETY: repr(C), made only of atomics; zeroed bytes are a semaphore of
// value 0 (callers initialise it with `init`).
unsafe impl InSharedMemory for SharedSemaphore {}

/// Why a release was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseError {
    /// A bounded semaphore would go above its initial value.
    AboveBound,
    /// The value would overflow.
    Overflow,
}

const COUNT_MASK: u64 = 0xffff_ffff;

fn slot_pid(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn slot_count(slot: u64) -> u32 {
    (slot & COUNT_MASK) as u32
}

impl SharedSemaphore {
    /// Sets up fresh (zeroed) memory as a semaphore of `value`.
    pub fn init(&self, value: u32, bounded: bool) {
        self.value.store(value, Ordering::SeqCst);
        self.initial.store(value, Ordering::SeqCst);
        self.bounded.store(u32::from(bounded), Ordering::SeqCst);
    }

    pub fn value(&self) -> u32 {
        self.value.load(Ordering::SeqCst)
    }

    pub fn is_bounded(&self) -> bool {
        self.bounded.load(Ordering::Relaxed) != 0
    }

    pub fn initial(&self) -> u32 {
        self.initial.load(Ordering::Relaxed)
    }

    fn take(&self) -> bool {
        let mut v = self.value.load(Ordering::SeqCst);
        while v > 0 {
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.note_taken();
                    return true;
                }
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes a unit if one is free now (after giving back the units of
    /// dead holders, if the value is zero).
    pub fn try_acquire(&self) -> bool {
        self.take() || (self.recover_dead() > 0 && self.take())
    }

    /// Takes a unit, waiting at most `wait`; false if none came free. Dead
    /// holders are looked for when the time is up and every
    /// [`CHECK_EVERY`] of a longer wait, not on every contended try (the
    /// look costs system calls).
    pub fn acquire_within(&self, wait: Duration) -> bool {
        if self.take() {
            return true;
        }
        let start = Instant::now();
        let deadline = start + wait;
        let mut next_check = start + CHECK_EVERY;
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() || now >= next_check {
                next_check = now + CHECK_EVERY;
                if self.recover_dead() > 0 && self.take() {
                    return true;
                }
                if left.is_zero() {
                    return false;
                }
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            crate::sync::futex::wait(&self.value, 0, left.min(CHECK_EVERY));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if self.take() {
                return true;
            }
        }
    }

    /// Gives a unit back and wakes a waiter.
    pub fn release(&self) -> Result<(), ReleaseError> {
        let bound = if self.is_bounded() {
            self.initial()
        } else {
            u32::MAX
        };
        let mut v = self.value.load(Ordering::SeqCst);
        loop {
            if v >= bound {
                return Err(if self.is_bounded() {
                    ReleaseError::AboveBound
                } else {
                    ReleaseError::Overflow
                });
            }
            match self
                .value
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        self.note_given_back();
        if self.waiters.load(Ordering::SeqCst) > 0 {
            crate::sync::futex::wake(&self.value, 1);
        }
        Ok(())
    }

    /// Counts a unit for this process in the holder table.
    fn note_taken(&self) {
        let me = my_pid();
        for slot in &self.holders {
            let mut v = slot.load(Ordering::SeqCst);
            while v != 0 && slot_pid(v) == me && slot_count(v) < u32::MAX {
                match slot.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
        }
        let fresh = (u64::from(me) << 32) | 1;
        for slot in &self.holders {
            if slot
                .compare_exchange(0, fresh, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return;
            }
        }
        // The table is full: this unit is not tracked.
    }

    /// Takes a unit off this process's count, if it holds any.
    fn note_given_back(&self) {
        let me = my_pid();
        for slot in &self.holders {
            let mut v = slot.load(Ordering::SeqCst);
            while v != 0 && slot_pid(v) == me {
                let new = if slot_count(v) <= 1 { 0 } else { v - 1 };
                match slot.compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
        }
    }

    /// Gives back the units of holders that have died, up to the initial
    /// value; returns how many were added to the value.
    pub fn recover_dead(&self) -> u32 {
        let me = my_pid();
        let mut freed: u64 = 0;
        for slot in &self.holders {
            let v = slot.load(Ordering::SeqCst);
            if v == 0 || slot_pid(v) == me || !is_dead(slot_pid(v)) {
                continue;
            }
            if slot
                .compare_exchange(v, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                freed += u64::from(slot_count(v));
            }
        }
        if freed == 0 {
            return 0;
        }
        let initial = u64::from(self.initial());
        let mut v = self.value.load(Ordering::SeqCst);
        loop {
            let target = (u64::from(v) + freed).min(initial).max(u64::from(v)) as u32;
            if target == v {
                return 0;
            }
            match self
                .value
                .compare_exchange_weak(v, target, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    let added = target - v;
                    crate::sync::futex::wake(&self.value, added.min(i32::MAX as u32) as i32);
                    return added;
                }
                Err(now) => v = now,
            }
        }
    }

    /// Units this process holds, as the table counts them.
    pub fn held_here(&self) -> u32 {
        let me = my_pid();
        self.holders
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&v| v != 0 && slot_pid(v) == me)
            .map(slot_count)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::{dead_pid, page};

    fn semaphore(m: &crate::shm::Mapping) -> &SharedSemaphore {
        // SAFETY: a fresh, page-aligned shared mapping used only as a
        // semaphore, kept alive by the caller for the reference's life.
        unsafe { SharedSemaphore::at(m.as_ptr()) }
    }

    #[test]
    fn counts_down_and_up_and_bounds() {
        let m = page();
        let sem = semaphore(&m);
        sem.init(2, true);
        assert!(sem.try_acquire());
        assert!(sem.try_acquire());
        assert!(!sem.try_acquire());
        assert_eq!(sem.held_here(), 2);
        assert!(!sem.acquire_within(Duration::from_millis(20)));
        sem.release().unwrap();
        sem.release().unwrap();
        assert_eq!(sem.held_here(), 0);
        assert_eq!(sem.release(), Err(ReleaseError::AboveBound));
        assert_eq!(sem.value(), 2);
    }

    #[test]
    fn a_release_wakes_a_waiter() {
        let m = page();
        let sem = semaphore(&m);
        sem.init(0, false);
        let m2 = m.clone();
        let waiter =
            std::thread::spawn(move || semaphore(&m2).acquire_within(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        sem.release().unwrap();
        assert!(waiter.join().unwrap());
        assert_eq!(sem.value(), 0);
    }

    #[test]
    fn units_of_a_dead_holder_come_back_up_to_the_initial_value() {
        let m = page();
        let sem = semaphore(&m);
        sem.init(3, false);
        // A dead process took 2 units and this one took 1.
        sem.value.store(0, Ordering::SeqCst);
        sem.holders[5].store((u64::from(dead_pid()) << 32) | 2, Ordering::SeqCst);
        sem.holders[6].store((u64::from(my_pid()) << 32) | 1, Ordering::SeqCst);
        assert!(sem.acquire_within(Duration::from_secs(5)));
        assert_eq!(sem.value(), 1, "two came back, one of them taken");
        assert_eq!(sem.holders[5].load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dead_consumer_of_signals_gives_nothing_back() {
        let m = page();
        let sem = semaphore(&m);
        sem.init(0, false);
        sem.holders[0].store((u64::from(dead_pid()) << 32) | 5, Ordering::SeqCst);
        assert!(!sem.try_acquire());
        assert_eq!(sem.value(), 0);
        assert_eq!(
            sem.holders[0].load(Ordering::SeqCst),
            0,
            "the slot is freed"
        );
    }
}
