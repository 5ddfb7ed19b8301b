//! A single-producer, single-consumer ring of messages in shared memory:
//! one per ordered pair of ranks. The sender appends records and
//! publishes them by advancing `head`; the receiver reads them and frees
//! the room by advancing `tail`. No lock and no system call: a small
//! message costs two copies within the caches and two atomic stores.
//!
//! A record is a [`RecordHeader`] and its inline payload, padded to 8
//! bytes; records wrap around the end of the ring. Positions only grow
//! (64 bits never wrap), so `head - tail` is the bytes in use.

use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Bytes before a ring's data: the two positions on lines of their own.
pub const RING_HEADER: usize = 256;

#[repr(C)]
struct Positions {
    /// Bytes ever written (the sender's).
    head: AtomicU64,
    _a: [u8; 120],
    /// Bytes ever read (the receiver's).
    tail: AtomicU64,
    /// Set by a sender that sleeps until there is room.
    space_wanted: AtomicU32,
    _b: [u8; 116],
}

const _: () = assert!(std::mem::size_of::<Positions>() == RING_HEADER);

/// Where a message's payload is.
pub mod kind {
    /// In the ring, after the header.
    pub const INLINE: u8 = 0;
    /// In a staged segment the sender reuses (see `staged.rs`).
    pub const STAGED: u8 = 1;
    /// In a segment of its own, written whole before the message was sent.
    pub const ONESHOT: u8 = 2;
}

/// The fixed part of every message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RecordHeader {
    /// Payload bytes following in the ring (INLINE), else 0.
    pub len: u32,
    pub kind: u8,
    /// Descriptors sent with it through the receiver's inbox.
    pub nfds: u8,
    /// 0 for point-to-point; a collective's op code.
    pub op: u8,
    /// A staged message's stage slot.
    pub stage: u8,
    /// Context id of the communicator (odd: its collectives).
    pub ctx: u32,
    /// Point-to-point: the tag. Collectives: the sequence number.
    pub tag: i32,
    /// Collectives: the root (-1 if none).
    pub root: i32,
    /// A buffer's element type (0: a pickle).
    pub dtype: u32,
    /// Which inbox packet carries the descriptors.
    pub packet: u32,
    pub _reserved: u32,
    /// Payload bytes, wherever they are.
    pub total: u64,
}

pub const HEADER_BYTES: usize = std::mem::size_of::<RecordHeader>();
const _: () = assert!(HEADER_BYTES == 40);

impl RecordHeader {
    fn to_bytes(self) -> [u8; HEADER_BYTES] {
        // SAFETY: RecordHeader is repr(C), has no padding (40 bytes of
        // fields, checked above) and only integer fields.
        unsafe { std::mem::transmute(self) }
    }

    fn from_bytes(bytes: [u8; HEADER_BYTES]) -> RecordHeader {
        // SAFETY: any 40 bytes are a valid RecordHeader (integers only).
        unsafe { std::mem::transmute(bytes) }
    }
}

/// The record size for `payload` bytes inline.
pub fn record_len(payload: usize) -> usize {
    (HEADER_BYTES + payload).next_multiple_of(8)
}

/// The bytes in a ring are not a record: someone wrote over shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// One ring, borrowed from the world mapping.
pub struct Ring<'a> {
    pos: &'a Positions,
    data: *mut u8,
    cap: usize,
    _world: PhantomData<&'a [u8]>,
}

impl<'a> Ring<'a> {
    /// The ring at `ptr` with `cap` bytes of data.
    ///
    /// # Safety
    ///
    /// `ptr` must be 8-aligned and point to `RING_HEADER + cap` bytes of
    /// shared memory used only as this ring, mapped for `'a`; `cap` a
    /// multiple of 8. At most one thread at a time may write, and one read.
    pub(crate) unsafe fn at(ptr: *mut u8, cap: usize) -> Ring<'a> {
        debug_assert!(cap % 8 == 0 && ptr as usize % 8 == 0);
        Ring {
            // SAFETY: the caller's promise; the header's fields are atomics.
            pos: unsafe { &*ptr.cast::<Positions>() },
            // SAFETY: the data follows the header inside the same mapping.
            data: unsafe { ptr.add(RING_HEADER) },
            cap,
            _world: PhantomData,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn is_empty(&self) -> bool {
        self.pos.head.load(Ordering::Acquire) == self.pos.tail.load(Ordering::Acquire)
    }

    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let off = (at % self.cap as u64) as usize;
        let first = bytes.len().min(self.cap - off);
        // SAFETY: `off + first <= cap` and `bytes.len() - first <= cap - first`
        // (a record never exceeds the ring); the region is free (between
        // head and tail + cap), so the receiver does not read it now.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.add(off), first);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(first),
                self.data,
                bytes.len() - first,
            );
        }
    }

    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let off = (at % self.cap as u64) as usize;
        let first = out.len().min(self.cap - off);
        // SAFETY: as in `copy_in`; the region was published by the sender
        // (below head, acquired), and it does not write it until we move tail.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(off), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data,
                out.as_mut_ptr().add(first),
                out.len() - first,
            );
        }
    }

    // ------------------------------------------------------------- sender

    /// Whether a record of `payload` bytes could ever fit.
    pub fn fits(&self, payload: usize) -> bool {
        record_len(payload) <= self.cap
    }

    /// Appends a record; false if there is no room now (the record must
    /// fit the ring at all: see [`Ring::fits`]).
    pub fn try_write(&self, header: &RecordHeader, payload: &[u8]) -> bool {
        let mut tail = self.pos.tail.load(Ordering::Acquire);
        self.try_write_cached(header, payload, &mut tail)
    }

    /// [`Ring::try_write`] with the sender's last look at the receiver's
    /// position in `tail`: it is read again (a cache line the receiver
    /// writes) only when the ring looks too full for the record.
    pub fn try_write_cached(&self, header: &RecordHeader, payload: &[u8], tail: &mut u64) -> bool {
        let rec = record_len(payload.len()) as u64;
        let head = self.pos.head.load(Ordering::Relaxed);
        // A stale `tail` is at most the real one: it can only say "full"
        // when there is room, never the other way round.
        let room = |tail: u64| (self.cap as u64).saturating_sub(head - tail) >= rec;
        if !room(*tail) {
            *tail = self.pos.tail.load(Ordering::Acquire);
            if !room(*tail) {
                return false;
            }
        }
        self.copy_in(head, &header.to_bytes());
        self.copy_in(head + HEADER_BYTES as u64, payload);
        self.pos.head.store(head + rec, Ordering::Release);
        true
    }

    /// The sender will sleep until the receiver frees room. It must check
    /// for room again after this, before sleeping.
    pub fn want_space(&self) {
        self.pos.space_wanted.store(1, Ordering::SeqCst);
    }

    // ----------------------------------------------------------- receiver

    /// The next record's header, without taking it.
    pub fn peek(&self) -> Result<Option<RecordHeader>, Corrupt> {
        let tail = self.pos.tail.load(Ordering::Relaxed);
        let head = self.pos.head.load(Ordering::Acquire);
        if head == tail {
            return Ok(None);
        }
        let mut bytes = [0u8; HEADER_BYTES];
        self.copy_out(tail, &mut bytes);
        let header = RecordHeader::from_bytes(bytes);
        let rec = record_len(header.len as usize) as u64;
        if rec > head - tail || rec as usize > self.cap {
            return Err(Corrupt);
        }
        Ok(Some(header))
    }

    /// Takes the next record, appending its payload to `out`. Returns its
    /// header, and whether its sender waits for room (then ring its bell).
    pub fn read(&self, out: &mut Vec<u8>) -> Result<Option<(RecordHeader, bool)>, Corrupt> {
        let Some(header) = self.peek()? else {
            return Ok(None);
        };
        let tail = self.pos.tail.load(Ordering::Relaxed);
        let start = out.len();
        out.resize(start + header.len as usize, 0);
        self.copy_out(tail + HEADER_BYTES as u64, &mut out[start..]);
        let rec = record_len(header.len as usize) as u64;
        self.pos.tail.store(tail + rec, Ordering::Release);
        fence(Ordering::SeqCst);
        let waiting = self.pos.space_wanted.load(Ordering::SeqCst) != 0;
        if waiting {
            self.pos.space_wanted.store(0, Ordering::SeqCst);
        }
        Ok(Some((header, waiting)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_memory(cap: usize) -> Vec<u64> {
        vec![0u64; (RING_HEADER + cap) / 8]
    }

    #[test]
    fn records_come_out_in_order_across_the_wrap() {
        let cap = 256;
        let mut mem = ring_memory(cap);
        // SAFETY: `mem` is 8-aligned, large enough, and outlives `ring`.
        let ring = unsafe { Ring::at(mem.as_mut_ptr().cast(), cap) };
        let mut out = Vec::new();
        for i in 0..100u32 {
            let payload: Vec<u8> = (0..(i % 50) as u8).collect();
            let h = RecordHeader {
                len: payload.len() as u32,
                tag: i as i32,
                total: payload.len() as u64,
                ..Default::default()
            };
            assert!(ring.try_write(&h, &payload));
            out.clear();
            let (got, waiting) = ring.read(&mut out).unwrap().unwrap();
            assert_eq!((got, waiting), (h, false));
            assert_eq!(out, payload);
            assert!(ring.is_empty());
        }
    }

    #[test]
    fn a_full_ring_refuses_and_says_who_waits() {
        let cap = 128;
        let mut mem = ring_memory(cap);
        // SAFETY: as above.
        let ring = unsafe { Ring::at(mem.as_mut_ptr().cast(), cap) };
        let h = RecordHeader {
            len: 20,
            ..Default::default()
        };
        assert!(ring.try_write(&h, &[1; 20]));
        assert!(ring.try_write(&h, &[2; 20]));
        assert!(
            !ring.try_write(&h, &[3; 20]),
            "128 bytes hold two 64-byte records"
        );
        assert!(ring.fits(88) && !ring.fits(89));
        ring.want_space();
        let mut out = Vec::new();
        assert!(ring.read(&mut out).unwrap().unwrap().1);
        assert!(!ring.read(&mut out).unwrap().unwrap().1);
        assert_eq!(out.len(), 40);
        assert!(ring.read(&mut out).unwrap().is_none());
    }

    #[test]
    fn a_record_longer_than_what_was_written_is_corrupt() {
        let cap = 128;
        let mut mem = ring_memory(cap);
        // SAFETY: as above.
        let ring = unsafe { Ring::at(mem.as_mut_ptr().cast(), cap) };
        let h = RecordHeader::default();
        assert!(ring.try_write(&h, &[]));
        // Overwrite the length field with nonsense, as a stray write might.
        // SAFETY: the data area starts RING_HEADER bytes in.
        unsafe { *mem.as_mut_ptr().cast::<u8>().add(RING_HEADER) = 200 };
        assert_eq!(ring.peek(), Err(Corrupt));
    }
}
