//! A barrier in shared memory, with `threading.Barrier`'s states: parties
//! arrive and wait until the last one comes; the last runs the action (in
//! the caller) and then lets the generation pass. A timeout, an abort or a
//! failed action breaks it: everyone waiting, and everyone who arrives
//! until a reset, gets "broken". A reset breaks the current waiters and
//! starts afresh.
//!
//! A small lock guards the state; waiters sleep on `seq`, which changes on
//! every pass, abort and reset. A process killed while waiting still
//! counts as arrived, so the others are not held up by it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::futex::{InSharedMemory, CHECK_EVERY};
use crate::sync::lock::SharedLock;

#[repr(C)]
pub struct SharedBarrier {
    guard: SharedLock,
    /// Bumped on every change waiters must see (the futex word).
    seq: AtomicU32,
    /// The current generation: bumped when it passes or is reset.
    generation: AtomicU32,
    /// The last generation that ended by a reset (its waiters are broken).
    reset_generation: AtomicU32,
    /// Parties that have arrived in this generation.
    count: AtomicU32,
    parties: AtomicU32,
    broken: AtomicU32,
}

// SAFETY: repr(C), made only of atomics; callers initialise it with `init`.
unsafe impl InSharedMemory for SharedBarrier {}

/// The barrier is broken (by a timeout, an abort, a failed action or a
/// reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

/// What arriving at the barrier gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Wait (with [`SharedBarrier::wait_pass`]) for this generation to pass;
    /// `index` is the arrival order, 0-based.
    Wait { index: u32, generation: u32 },
    /// The last party: run the action, then [`SharedBarrier::pass`] (or
    /// [`SharedBarrier::abort`] if it failed).
    Last { index: u32, generation: u32 },
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Passed,
    Broken,
    /// Still waiting when the time ran out (nothing changed).
    Pending,
}

impl SharedBarrier {
    pub fn init(&self, parties: u32) {
        self.parties.store(parties, Ordering::SeqCst);
        // No generation has been reset yet.
        self.reset_generation.store(u32::MAX, Ordering::SeqCst);
    }

    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::SeqCst)
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst) != 0
    }

    /// Parties waiting now (0 while broken).
    pub fn n_waiting(&self) -> u32 {
        if self.is_broken() {
            0
        } else {
            self.count.load(Ordering::SeqCst)
        }
    }

    fn locked<T>(&self, f: impl FnOnce() -> T) -> T {
        while !self.guard.acquire_within(Duration::from_secs(3600)) {}
        let out = f();
        let _ = self.guard.release();
        out
    }

    fn changed(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        crate::sync::futex::wake_all(&self.seq);
    }

    pub fn arrive(&self) -> Result<Arrival, Broken> {
        self.locked(|| {
            if self.is_broken() {
                return Err(Broken);
            }
            let index = self.count.fetch_add(1, Ordering::SeqCst);
            let generation = self.generation.load(Ordering::SeqCst);
            if index + 1 >= self.parties() {
                Ok(Arrival::Last { index, generation })
            } else {
                Ok(Arrival::Wait { index, generation })
            }
        })
    }

    /// Lets `generation` pass (called by its last party after the action).
    pub fn pass(&self, generation: u32) {
        self.locked(|| {
            if self.generation.load(Ordering::SeqCst) == generation && !self.is_broken() {
                self.count.store(0, Ordering::SeqCst);
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
        });
        self.changed();
    }

    fn outcome(&self, generation: u32) -> Option<Waited> {
        let now = self.generation.load(Ordering::SeqCst);
        if now != generation {
            if self.reset_generation.load(Ordering::SeqCst) == generation {
                return Some(Waited::Broken);
            }
            return Some(Waited::Passed);
        }
        if self.is_broken() {
            return Some(Waited::Broken);
        }
        None
    }

    /// Waits at most `wait` for `generation` to pass.
    pub fn wait_pass(&self, generation: u32, wait: Duration) -> Waited {
        let deadline = Instant::now() + wait;
        loop {
            let seq = self.seq.load(Ordering::SeqCst);
            if let Some(done) = self.outcome(generation) {
                return done;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::Pending;
            }
            crate::sync::futex::wait(&self.seq, seq, left.min(CHECK_EVERY));
        }
    }

    /// A waiter of `generation` gave up: breaks the barrier unless the
    /// generation ended meanwhile; returns how it ended.
    pub fn give_up(&self, generation: u32) -> Waited {
        let done = self.locked(|| {
            if let Some(done) = self.outcome(generation) {
                return Some(done);
            }
            self.broken.store(1, Ordering::SeqCst);
            None
        });
        match done {
            Some(done) => done,
            None => {
                self.changed();
                Waited::Broken
            }
        }
    }

    /// Breaks it: waiters and later arrivals get [`Broken`] until a reset.
    pub fn abort(&self) {
        self.locked(|| self.broken.store(1, Ordering::SeqCst));
        self.changed();
    }

    /// Breaks the current waiters and makes it whole and empty again.
    pub fn reset(&self) {
        self.locked(|| {
            let generation = self.generation.load(Ordering::SeqCst);
            if self.count.load(Ordering::SeqCst) > 0 {
                // Its waiters (broken already or not) read it as broken.
                self.reset_generation.store(generation, Ordering::SeqCst);
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.count.store(0, Ordering::SeqCst);
            self.broken.store(0, Ordering::SeqCst);
        });
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::page;
    use std::sync::Arc;

    fn barrier(m: &crate::shm::Mapping) -> &SharedBarrier {
        // SAFETY: a fresh shared page used only as a barrier, kept alive by
        // the caller.
        unsafe { SharedBarrier::at(m.as_ptr()) }
    }

    fn party(m: Arc<crate::shm::Mapping>, wait: Duration) -> std::thread::JoinHandle<Waited> {
        std::thread::spawn(move || {
            let b = barrier(&m);
            match b.arrive() {
                Err(Broken) => Waited::Broken,
                Ok(Arrival::Last { generation, .. }) => {
                    b.pass(generation);
                    Waited::Passed
                }
                Ok(Arrival::Wait { generation, .. }) => match b.wait_pass(generation, wait) {
                    Waited::Pending => b.give_up(generation),
                    done => done,
                },
            }
        })
    }

    #[test]
    fn every_party_passes_together() {
        let m = page();
        barrier(&m).init(3);
        for _ in 0..5 {
            let parties: Vec<_> = (0..3)
                .map(|_| party(m.clone(), Duration::from_secs(10)))
                .collect();
            for p in parties {
                assert_eq!(p.join().unwrap(), Waited::Passed);
            }
        }
    }

    #[test]
    fn a_timeout_breaks_it_until_reset() {
        let m = page();
        barrier(&m).init(3);
        let a = party(m.clone(), Duration::from_millis(50));
        assert_eq!(a.join().unwrap(), Waited::Broken);
        assert!(barrier(&m).is_broken());
        assert_eq!(barrier(&m).arrive(), Err(Broken));
        barrier(&m).reset();
        assert!(!barrier(&m).is_broken());
        let parties: Vec<_> = (0..3)
            .map(|_| party(m.clone(), Duration::from_secs(10)))
            .collect();
        assert!(parties
            .into_iter()
            .all(|p| p.join().unwrap() == Waited::Passed));
    }

    #[test]
    fn a_reset_breaks_the_waiters() {
        let m = page();
        barrier(&m).init(3);
        let a = party(m.clone(), Duration::from_secs(10));
        while barrier(&m).n_waiting() < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        barrier(&m).reset();
        assert_eq!(a.join().unwrap(), Waited::Broken);
        assert!(!barrier(&m).is_broken());
        assert_eq!(barrier(&m).n_waiting(), 0);
    }
}
