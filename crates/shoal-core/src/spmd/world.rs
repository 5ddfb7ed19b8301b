//! The world segment: one memfd that the launcher makes and every rank
//! maps. It holds a header, one status slot per rank, and one ring per
//! ordered pair of ranks (see [`super::ring`]).
//!
//! ```text
//! header (4 KiB) | slot 0 | slot 1 | ... | ring 0->0 | ring 0->1 | ... | ring (n-1)->(n-1)
//! ```
//!
//! A slot says what its rank is doing (running, or asleep in which call
//! on which peer, at which line of the program), carries the rank's
//! doorbell (a futex word others ring after sending to it), and is where
//! the launcher writes how the rank ended. Everything in it is atomic:
//! several processes read and write it at once.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::error::{CoreError, Result};
use crate::fds::SharedFd;

use super::ring::{Ring, RING_HEADER};

const MAGIC: u64 = 0x5348_4f41_4c53_504d; // "SHOALSPM"
const HEADER_SIZE: usize = 4096;
/// Bytes of a slot; a multiple of the cache line.
const SLOT_SIZE: usize = 2048;
/// Longest source location a slot keeps ("prog.py:12 in main").
pub const LOCATION_MAX: usize = 600;
/// Staged segments a rank may have in flight at once (see `staged.rs`).
pub const STAGE_SLOTS: usize = 32;

/// What a rank is doing, as its slot says.
pub mod state {
    /// Not started yet.
    pub const UNSTARTED: u32 = 0;
    /// Running its program (or spinning briefly in a call).
    pub const RUNNING: u32 = 1;
    /// Asleep in a call that waits for other ranks.
    pub const BLOCKED: u32 = 2;
    /// Done with its program, waiting at exit for the others to be done.
    pub const FINALIZING: u32 = 3;
}

#[repr(C)]
struct Header {
    magic: u64,
    size: u32,
    ring_cap: u32,
    /// Bumped by the launcher for each deadlock it declares.
    verdict: AtomicU32,
    /// How many ranks have ended: gives each its death order.
    ended: AtomicU32,
    /// Set by a rank that calls `Abort`: its error code + 1.
    abort: AtomicU32,
    abort_rank: AtomicU32,
}

/// Progress of one staged message (see `staged.rs`): written by the
/// sender as it copies, counted down by the receivers as they finish.
#[repr(C)]
pub struct StageSlot {
    pub written: AtomicU64,
    /// Receivers that have not finished copying it out.
    pub readers: AtomicU32,
    /// Receivers that have not started yet.
    pub unstarted: AtomicU32,
}

/// What a blocked rank waits for, as published in its slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitInfo {
    /// The call (the Python side's op code: recv, bcast, ...).
    pub op: u32,
    /// The communicator's context id.
    pub ctx: u32,
    /// The world rank waited for; -1 for any.
    pub peer: i32,
    pub tag: i32,
    /// The collective's sequence number on its communicator.
    pub seq: u32,
    pub root: i32,
    /// Where in the program ("prog.py:12 in main").
    pub location: String,
}

#[repr(C)]
struct Slot {
    // Line 0: rung by others.
    bell: AtomicU32,
    sleepers: AtomicU32,
    _line0: [u8; 56],
    // Line 1: the rank's own state, and how it ended (the launcher's).
    pid: AtomicU32,
    state: AtomicU32,
    /// Seqlock over the wait description: odd while it is being written.
    epoch: AtomicU32,
    finalized: AtomicU32,
    /// Death order (1 for the first rank to end), 0 while alive.
    ended: AtomicU32,
    exit_code: AtomicI32,
    exit_signal: AtomicI32,
    _line1: [u8; 36],
    // The wait description (seqlock: `epoch`).
    op: AtomicU32,
    ctx: AtomicU32,
    peer: AtomicI32,
    tag: AtomicI32,
    seq: AtomicU32,
    root: AtomicI32,
    location_len: AtomicU32,
    _pad: u32,
    location: [AtomicU8; LOCATION_MAX],
    stages: [StageSlot; STAGE_SLOTS],
}

const _: () = assert!(std::mem::size_of::<Slot>() <= SLOT_SIZE);
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// How a rank ended, as the launcher recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// 1 for the first rank of the job to end, 2 for the next, ...
    pub order: u32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// It ended after finishing its program (past the exit barrier).
    pub finalized: bool,
}

/// One rank's slot, read at one moment (for deadlock checks and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub pid: u32,
    pub state: u32,
    pub epoch: u32,
    pub ended: Option<Ended>,
    pub wait: WaitInfo,
    /// Nothing sent to this rank is left unread in its rings.
    pub drained: bool,
}

/// The world segment, mapped. Cheap to share between threads.
#[derive(Debug)]
pub struct World {
    ptr: NonNull<u8>,
    len: usize,
    size: usize,
    ring_cap: usize,
    fd: SharedFd,
}

// SAFETY: every access to the mapping goes through atomics or through the
// rings, whose single-producer/single-consumer protocol orders the plain
// byte copies with acquire/release on the ring positions.
unsafe impl Send for World {}
// SAFETY: as above.
unsafe impl Sync for World {}

/// A ring's capacity for `size` ranks: large rings for few ranks, small
/// ones for many, so that the rings of a job stay under about 64 MiB.
fn ring_capacity(size: usize) -> usize {
    let pairs = (size * size).max(1);
    let per = (64usize << 20) / pairs;
    let mut cap = 16 * 1024;
    while cap * 2 <= per && cap < 256 * 1024 {
        cap *= 2;
    }
    cap
}

fn total_len(size: usize, ring_cap: usize) -> usize {
    HEADER_SIZE + size * SLOT_SIZE + size * size * (RING_HEADER + ring_cap)
}

impl World {
    /// A new world for `size` ranks (the launcher's side).
    pub fn create(size: usize) -> Result<World> {
        if size == 0 || size > 4096 {
            return Err(CoreError::Config(format!(
                "a job needs between 1 and 4096 ranks, not {size}"
            )));
        }
        let ring_cap = ring_capacity(size);
        let fd = crate::shm::create(total_len(size, ring_cap))?;
        let mut world = World::map_fd(SharedFd::new(fd))?;
        // SAFETY: the header lies at the start of the fresh mapping, which
        // nobody else maps yet.
        unsafe {
            let header = world.ptr.as_ptr().cast::<Header>();
            (*header).size = size as u32;
            (*header).ring_cap = ring_cap as u32;
            (*header).magic = MAGIC;
        }
        world.size = size;
        world.ring_cap = ring_cap;
        Ok(world)
    }

    /// Maps the world behind `fd` (a rank's side).
    pub fn map(fd: SharedFd) -> Result<World> {
        World::map_fd(fd)
    }

    fn map_fd(fd: SharedFd) -> Result<World> {
        let len = crate::shm::size(&fd)?;
        if len < HEADER_SIZE {
            return Err(CoreError::Config("not a shoal world segment".into()));
        }
        // SAFETY: a fresh shared mapping of a descriptor we hold; checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(CoreError::io(
                "map the world segment",
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap returned null without failing");
        let mut world = World {
            ptr,
            len,
            size: 0,
            ring_cap: 0,
            fd,
        };
        // SAFETY: the mapping is at least HEADER_SIZE bytes.
        let (magic, size, ring_cap) = unsafe {
            let h = &*ptr.as_ptr().cast::<Header>();
            (h.magic, h.size as usize, h.ring_cap as usize)
        };
        if magic == MAGIC {
            if len != total_len(size, ring_cap) {
                return Err(CoreError::Config(
                    "a damaged shoal world segment (wrong size)".into(),
                ));
            }
            world.size = size;
            world.ring_cap = ring_cap;
        } else if magic != 0 {
            return Err(CoreError::Config("not a shoal world segment".into()));
        }
        Ok(world)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn ring_capacity(&self) -> usize {
        self.ring_cap
    }

    /// The descriptor, to hand to ranks.
    pub fn fd(&self) -> &SharedFd {
        &self.fd
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is at the start of the mapping, which outlives
        // `self`; its mutable fields are atomics.
        unsafe { &*self.ptr.as_ptr().cast::<Header>() }
    }

    fn slot(&self, rank: usize) -> &Slot {
        assert!(rank < self.size, "rank {rank} out of range");
        // SAFETY: slot `rank` lies inside the mapping (checked at map time),
        // is suitably aligned (offsets are multiples of 2048 from a page),
        // and every field is atomic or padding.
        unsafe {
            &*self
                .ptr
                .as_ptr()
                .add(HEADER_SIZE + rank * SLOT_SIZE)
                .cast::<Slot>()
        }
    }

    /// The ring carrying messages from `src` to `dst`.
    pub fn ring(&self, src: usize, dst: usize) -> Ring<'_> {
        assert!(src < self.size && dst < self.size);
        let stride = RING_HEADER + self.ring_cap;
        let offset = HEADER_SIZE + self.size * SLOT_SIZE + (src * self.size + dst) * stride;
        debug_assert!(offset + stride <= self.len);
        // SAFETY: the ring's header and data lie inside the mapping, which
        // outlives the returned borrow; one process writes it (src) and one
        // reads it (dst).
        unsafe { Ring::at(self.ptr.as_ptr().add(offset), self.ring_cap) }
    }

    pub fn stage(&self, rank: usize, index: usize) -> &StageSlot {
        &self.slot(rank).stages[index]
    }

    // ------------------------------------------------------------ doorbells

    /// The doorbell's current value, read before checking for work.
    pub fn bell(&self, rank: usize) -> u32 {
        self.slot(rank).bell.load(Ordering::SeqCst)
    }

    /// Wakes `rank` if it sleeps (after a message to it is published).
    pub fn ring_bell(&self, rank: usize) {
        fence(Ordering::SeqCst);
        let slot = self.slot(rank);
        if slot.sleepers.load(Ordering::SeqCst) > 0 {
            slot.bell.fetch_add(1, Ordering::SeqCst);
            crate::sync::futex::wake(&slot.bell, i32::MAX);
        }
    }

    /// Wakes `rank` whether or not it sleeps now (a change of the world:
    /// a death, a verdict).
    pub fn ring_bell_always(&self, rank: usize) {
        let slot = self.slot(rank);
        slot.bell.fetch_add(1, Ordering::SeqCst);
        crate::sync::futex::wake(&slot.bell, i32::MAX);
    }

    /// Announces that `rank` is about to sleep; returns the bell value to
    /// sleep on. The caller must check for work once more after this and
    /// call [`World::sleep`] only if there is none, then [`World::awake`].
    pub fn prepare_sleep(&self, rank: usize) -> u32 {
        let slot = self.slot(rank);
        slot.sleepers.fetch_add(1, Ordering::SeqCst);
        slot.bell.load(Ordering::SeqCst)
    }

    pub fn sleep(&self, rank: usize, seen: u32, timeout: Duration) {
        crate::sync::futex::wait(&self.slot(rank).bell, seen, timeout);
    }

    pub fn awake(&self, rank: usize) {
        self.slot(rank).sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    // -------------------------------------------------------- rank's status

    pub fn set_pid(&self, rank: usize, pid: u32) {
        self.slot(rank).pid.store(pid, Ordering::Release);
    }

    pub fn set_running(&self, rank: usize) {
        let slot = self.slot(rank);
        if slot.state.load(Ordering::Relaxed) == state::RUNNING {
            return;
        }
        slot.epoch.fetch_add(1, Ordering::AcqRel);
        slot.state.store(state::RUNNING, Ordering::Release);
        slot.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Publishes that `rank` sleeps in `wait` (state BLOCKED or FINALIZING).
    pub fn publish_wait(&self, rank: usize, new_state: u32, wait: &WaitInfo) {
        let slot = self.slot(rank);
        slot.epoch.fetch_add(1, Ordering::AcqRel);
        slot.op.store(wait.op, Ordering::Relaxed);
        slot.ctx.store(wait.ctx, Ordering::Relaxed);
        slot.peer.store(wait.peer, Ordering::Relaxed);
        slot.tag.store(wait.tag, Ordering::Relaxed);
        slot.seq.store(wait.seq, Ordering::Relaxed);
        slot.root.store(wait.root, Ordering::Relaxed);
        let bytes = wait.location.as_bytes();
        let mut n = bytes.len().min(LOCATION_MAX);
        while !wait.location.is_char_boundary(n) {
            n -= 1;
        }
        for (cell, b) in slot.location.iter().zip(&bytes[..n]) {
            cell.store(*b, Ordering::Relaxed);
        }
        slot.location_len.store(n as u32, Ordering::Relaxed);
        slot.state.store(new_state, Ordering::Release);
        slot.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn set_finalized(&self, rank: usize) {
        self.slot(rank).finalized.store(1, Ordering::Release);
    }

    /// All ranks are finalizing or have ended.
    pub fn all_finalizing(&self) -> bool {
        (0..self.size).all(|r| {
            let slot = self.slot(r);
            slot.ended.load(Ordering::Acquire) != 0
                || slot.state.load(Ordering::Acquire) == state::FINALIZING
                || slot.finalized.load(Ordering::Acquire) != 0
        })
    }

    // ------------------------------------------------------- the launcher's

    /// Records that `rank` ended; returns its death order.
    pub fn mark_ended(&self, rank: usize, code: Option<i32>, signal: Option<i32>) -> u32 {
        let slot = self.slot(rank);
        if let Some(order) = self.ended(rank).map(|e| e.order) {
            return order;
        }
        slot.exit_code
            .store(code.unwrap_or(i32::MIN), Ordering::Relaxed);
        slot.exit_signal
            .store(signal.unwrap_or(0), Ordering::Relaxed);
        let order = self.header().ended.fetch_add(1, Ordering::AcqRel) + 1;
        slot.ended.store(order, Ordering::Release);
        for r in 0..self.size {
            self.ring_bell_always(r);
        }
        order
    }

    pub fn ended(&self, rank: usize) -> Option<Ended> {
        let slot = self.slot(rank);
        let order = slot.ended.load(Ordering::Acquire);
        (order != 0).then(|| {
            let code = slot.exit_code.load(Ordering::Relaxed);
            let signal = slot.exit_signal.load(Ordering::Relaxed);
            Ended {
                order,
                code: (code != i32::MIN).then_some(code),
                signal: (signal != 0).then_some(signal),
                finalized: slot.finalized.load(Ordering::Acquire) != 0,
            }
        })
    }

    /// Declares a deadlock: every rank wakes and sees a new verdict.
    pub fn declare_deadlock(&self) {
        self.header().verdict.fetch_add(1, Ordering::AcqRel);
        for r in 0..self.size {
            self.ring_bell_always(r);
        }
    }

    pub fn verdict(&self) -> u32 {
        self.header().verdict.load(Ordering::Acquire)
    }

    /// Records an `Abort(code)` by `rank` (the first one wins).
    pub fn abort(&self, rank: usize, code: i32) {
        let h = self.header();
        if h.abort
            .compare_exchange(
                0,
                (code as u32).wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            h.abort_rank.store(rank as u32, Ordering::Release);
        }
    }

    /// `(rank, code)` of the first `Abort`, if any.
    pub fn aborted(&self) -> Option<(usize, i32)> {
        let h = self.header();
        let v = h.abort.load(Ordering::Acquire);
        (v != 0).then(|| {
            (
                h.abort_rank.load(Ordering::Acquire) as usize,
                v.wrapping_sub(1) as i32,
            )
        })
    }

    /// Whether every ring into `rank` has been read to its end.
    pub fn drained(&self, rank: usize) -> bool {
        (0..self.size).all(|src| src == rank || self.ring(src, rank).is_empty())
    }

    /// `rank`'s slot as it is now (a consistent read of the wait).
    pub fn view(&self, rank: usize) -> SlotView {
        let slot = self.slot(rank);
        loop {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let n = (slot.location_len.load(Ordering::Relaxed) as usize).min(LOCATION_MAX);
            let bytes: Vec<u8> = slot.location[..n]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let wait = WaitInfo {
                op: slot.op.load(Ordering::Relaxed),
                ctx: slot.ctx.load(Ordering::Relaxed),
                peer: slot.peer.load(Ordering::Relaxed),
                tag: slot.tag.load(Ordering::Relaxed),
                seq: slot.seq.load(Ordering::Relaxed),
                root: slot.root.load(Ordering::Relaxed),
                location: String::from_utf8_lossy(&bytes).into_owned(),
            };
            let state = slot.state.load(Ordering::Acquire);
            if slot.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            return SlotView {
                pid: slot.pid.load(Ordering::Acquire),
                state,
                epoch,
                ended: self.ended(rank),
                wait,
                drained: self.drained(rank),
            };
        }
    }

    /// Every rank's slot.
    pub fn views(&self) -> Vec<SlotView> {
        (0..self.size).map(|r| self.view(r)).collect()
    }

    /// A second handle on the same mapping's segment (for a rank's own
    /// threads it is simpler to share `&World`; this maps it again).
    pub fn fd_owned(&self) -> std::io::Result<OwnedFd> {
        self.fd.duplicate()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map_fd` mapped; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_capacity_shrinks_with_more_ranks() {
        assert_eq!(ring_capacity(2), 256 * 1024);
        assert_eq!(ring_capacity(64), 16 * 1024);
        assert!(ring_capacity(16) >= 128 * 1024);
    }

    #[test]
    fn two_mappings_share_slots() {
        let a = World::create(3).unwrap();
        let b = World::map(SharedFd::new(a.fd().duplicate().unwrap())).unwrap();
        assert_eq!(b.size(), 3);
        b.set_pid(1, 42);
        b.publish_wait(
            1,
            state::BLOCKED,
            &WaitInfo {
                op: 7,
                ctx: 0,
                peer: 2,
                tag: 5,
                seq: 0,
                root: -1,
                location: "prog.py:3 in main".into(),
            },
        );
        let v = a.view(1);
        assert_eq!((v.pid, v.state, v.wait.peer), (42, state::BLOCKED, 2));
        assert_eq!(v.wait.location, "prog.py:3 in main");
        assert!(v.drained && v.ended.is_none());
        assert_eq!(a.mark_ended(2, None, Some(9)), 1);
        assert_eq!(a.mark_ended(0, Some(3), None), 2);
        let e = b.ended(2).unwrap();
        assert_eq!((e.order, e.code, e.signal), (1, None, Some(9)));
        assert_eq!(b.ended(0).unwrap().code, Some(3));
        assert!(!a.all_finalizing());
        b.publish_wait(1, state::FINALIZING, &WaitInfo::default());
        assert!(a.all_finalizing());
    }

    #[test]
    fn a_sleeper_is_woken_by_the_bell() {
        let w = std::sync::Arc::new(World::create(2).unwrap());
        let seen = w.prepare_sleep(1);
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.ring_bell(1);
        });
        let start = std::time::Instant::now();
        w.sleep(1, seen, Duration::from_secs(10));
        w.awake(1);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}
