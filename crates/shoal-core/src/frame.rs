//! Length-prefixed frames between the scheduler and a worker process.
//!
//! Wire layout of one frame (little endian):
//!
//! ```text
//! u32 body_len | u8 kind | u64 a | u64 b | u16 nfds | body_len bytes of body
//! ```
//!
//! `a` and `b` carry the ids a kind needs (task id, function id, a duration)
//! so the body stays an opaque pickle. `nfds` file descriptors (shared
//! memory segments, sockets) travel with the frame by `SCM_RIGHTS`; they
//! arrive no later than the frame's bytes (see [`crate::fds`]), and the
//! decoder hands them out in order.
//!
//! The decoder treats its input as untrusted (`make fuzz` fuzzes it against
//! this contract, written out in `src/fuzzing.rs`):
//!
//! - A bad frame is a [`FrameError`], never a panic. An unknown kind byte is
//!   refused as soon as it arrives, without waiting for the rest of the header.
//! - An error sticks: once [`Decoder::next_frame`] has returned one, it returns
//!   the same error on every later call, whatever bytes are fed, so nothing
//!   is decoded from a stream after it went wrong.
//! - Memory follows the bytes that arrived, never a length a header declares.
//!   The buffer's capacity is at most `4 * pending() + SPARE_CAPACITY` bytes,
//!   with `pending()` as it was right after the last [`Decoder::feed`] (twice
//!   what the buffer holds, and frames already taken are at most half of
//!   that); [`Decoder::next_frame`] never grows it. Each frame's body is one
//!   allocation of exactly its length, made once all of it has arrived.

use std::collections::VecDeque;

use crate::error::FrameError;
use crate::fds::SharedFd;

/// Bytes before the body: length, kind, `a`, `b`, descriptor count.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 2;

/// The most descriptors one frame may carry.
pub const MAX_FRAME_FDS: usize = u16::MAX as usize;

/// The largest body a frame may carry. Bigger payloads belong in shared memory.
pub const MAX_BODY: usize = u32::MAX as usize;

/// Buffer space a [`Decoder`] may keep beyond its bound, so a
/// link that reads 256 KiB at a time does not reallocate on every read, while
/// one that has passed a large frame gives the space back.
pub const SPARE_CAPACITY: usize = 1 << 20;

/// Offset of the kind byte in the header.
const KIND_AT: usize = 4;

/// What a frame means. Parent-to-worker kinds are below 16, worker-to-parent
/// kinds from 16 up, so a frame sent the wrong way is caught at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Worker set-up, the first frame a worker gets: `a` = the engine's id
    /// for the worker, `b` = its slot (`0..workers`); body (and descriptors)
    /// = the pool's set-up, opaque to the engine (a Python pool sends the
    /// parent's `sys.path`, the initializer and its arguments, `max_memory`,
    /// the log level and the number of workers; a thread pool, nothing).
    Init = 1,
    /// `a` = function id; body = the pickled function, cached by the worker.
    Func = 2,
    /// `a` = task id, `b` = function id; body = pickled arguments.
    Task = 3,
    /// `a` = function id the worker may drop from its cache.
    Forget = 4,
    /// Finish what you hold, then exit.
    Exit = 5,
    /// Worker is initialised; `a` = its pid.
    Ready = 16,
    /// `a` = task id, `b` = run time in ns; body = pickled result, then a
    /// [`crate::timing::RunTiming`] (as for `Failed` and `Retryable`).
    Done = 17,
    /// `a` = task id, `b` = run time in ns; body = pickled exception.
    Failed = 18,
    /// The initializer raised; body = pickled exception. The worker exits.
    InitFailed = 19,
    /// Text the worker wrote: `a` = stream (1 stdout, 2 stderr); body =
    /// whole lines, UTF-8.
    Output = 20,
    /// A `logging` record from the worker; body = its pickled fields.
    Log = 21,
    /// As `Failed`, and the exception is one the task's `retry_on` names.
    Retryable = 22,
    /// The worker is over its memory limit and exits after this frame; the
    /// tasks it holds beyond those already answered did not run.
    Retire = 23,
}

impl Kind {
    /// The kind a byte names; an unknown byte is an error.
    pub fn from_u8(byte: u8) -> Result<Kind, FrameError> {
        Ok(match byte {
            1 => Kind::Init,
            2 => Kind::Func,
            3 => Kind::Task,
            4 => Kind::Forget,
            5 => Kind::Exit,
            16 => Kind::Ready,
            17 => Kind::Done,
            18 => Kind::Failed,
            19 => Kind::InitFailed,
            20 => Kind::Output,
            21 => Kind::Log,
            22 => Kind::Retryable,
            23 => Kind::Retire,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Kinds a worker sends (the others go from parent to worker).
    pub fn is_from_worker(self) -> bool {
        self as u8 >= 16
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub a: u64,
    pub b: u64,
    pub body: Vec<u8>,
    /// Descriptors that came with it, in the order the sender listed them.
    pub fds: Vec<SharedFd>,
}

impl Frame {
    pub fn new(kind: Kind, a: u64, b: u64, body: Vec<u8>) -> Frame {
        Frame {
            kind,
            a,
            b,
            body,
            fds: Vec::new(),
        }
    }

    /// Appends this frame's wire bytes to `out`; its descriptors are the
    /// caller's to send alongside.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_with_fds(out, self.kind, self.a, self.b, &self.body, self.fds.len())
    }
}

/// Appends one frame without descriptors to `out`.
pub fn encode_into(
    out: &mut Vec<u8>,
    kind: Kind,
    a: u64,
    b: u64,
    body: &[u8],
) -> Result<(), FrameError> {
    encode_parts_into(out, kind, a, b, &[body], 0)
}

/// Appends one frame to `out` that says `nfds` descriptors come with it.
pub fn encode_with_fds(
    out: &mut Vec<u8>,
    kind: Kind,
    a: u64,
    b: u64,
    body: &[u8],
    nfds: usize,
) -> Result<(), FrameError> {
    encode_parts_into(out, kind, a, b, &[body], nfds)
}

/// Appends one frame whose body is `parts` joined, without joining them
/// first, and which says `nfds` descriptors come with it.
pub fn encode_parts_into(
    out: &mut Vec<u8>,
    kind: Kind,
    a: u64,
    b: u64,
    parts: &[&[u8]],
    nfds: usize,
) -> Result<(), FrameError> {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(body_len).map_err(|_| FrameError::TooLarge {
        len: body_len as u64,
        max: MAX_BODY as u64,
    })?;
    let nfds = u16::try_from(nfds).map_err(|_| FrameError::TooManyFds(nfds))?;
    out.reserve(HEADER_LEN + body_len);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out.extend_from_slice(&nfds.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Incremental decoder: feed it bytes and descriptors as they arrive, take
/// frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first undecoded byte in `buf`.
    start: usize,
    /// Descriptors received and not yet handed out with a frame.
    fds: VecDeque<SharedFd>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        // Drop the frames already taken once they are at least half the
        // buffer: the bytes moved are never more than the bytes dropped, so
        // feeding stays linear however the caller interleaves its calls.
        if self.start > 0 && self.start >= self.pending() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let needed = self.buf.len() + data.len();
        if self.buf.capacity() > 2 * needed + SPARE_CAPACITY {
            // Give back what a large frame left behind.
            self.buf.shrink_to(needed);
        }
        self.buf.extend_from_slice(data);
    }

    /// Appends received descriptors.
    pub fn feed_fds(&mut self, fds: impl IntoIterator<Item = SharedFd>) {
        self.fds.extend(fds);
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of memory the buffer holds (see the bound in the module docs).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(&kind_byte) = avail.get(KIND_AT) else {
            return Ok(None);
        };
        let kind = Kind::from_u8(kind_byte)?;
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(read_array(&avail[0..4])) as usize;
        let a = u64::from_le_bytes(read_array(&avail[5..13]));
        let b = u64::from_le_bytes(read_array(&avail[13..21]));
        let nfds = u16::from_le_bytes(read_array(&avail[21..23])) as usize;
        // `get` rather than `HEADER_LEN + len`: no sum to overflow on 32 bits.
        let Some(body) = avail[HEADER_LEN..].get(..len) else {
            return Ok(None);
        };
        // Descriptors travel no later than the first byte of their frame.
        if self.fds.len() < nfds {
            return Err(FrameError::MissingFds {
                wanted: nfds,
                have: self.fds.len(),
            });
        }
        let body = body.to_vec();
        self.start += HEADER_LEN + len;
        let fds = self.fds.drain(..nfds).collect();
        Ok(Some(Frame {
            kind,
            a,
            b,
            body,
            fds,
        }))
    }

    /// Call at end of input: an incomplete frame (or descriptors no frame
    /// claimed) left over is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        match (self.pending(), self.fds.len()) {
            (0, 0) => Ok(()),
            (0, n) => Err(FrameError::MissingFds { wanted: 0, have: n }),
            (n, _) => Err(FrameError::Truncated(n)),
        }
    }
}

fn read_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            f.encode_into(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_whole_and_byte_by_byte() {
        let frames = vec![
            Frame::new(Kind::Task, 7, 3, b"payload".to_vec()),
            Frame::new(Kind::Exit, 0, 0, Vec::new()),
            Frame::new(Kind::Done, u64::MAX, 12345, vec![0u8; 70_000]),
        ];
        let bytes = encoded(&frames);

        let mut whole = Decoder::new();
        whole.feed(&bytes);
        let mut got = Vec::new();
        while let Some(f) = whole.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        whole.finish().unwrap();

        let mut slow = Decoder::new();
        let mut got = Vec::new();
        for byte in &bytes {
            slow.feed(std::slice::from_ref(byte));
            while let Some(f) = slow.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn unknown_kind_is_an_error_that_sticks() {
        let mut bytes = encoded(&[
            Frame::new(Kind::Task, 1, 1, vec![1]),
            Frame::new(Kind::Task, 2, 1, vec![2]),
        ]);
        bytes[4] = 99;
        let mut d = Decoder::new();
        d.feed(&bytes);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(99)));
        // The next frame is well formed, but a stream that went wrong once
        // is not trusted again.
        d.feed(&bytes);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(99)));
    }

    #[test]
    fn unknown_kind_is_refused_before_the_header_is_complete() {
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
        d.feed(&[200]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(200)));
    }

    #[test]
    fn a_large_frame_leaves_no_large_buffer_behind() {
        let big = encoded(&[Frame::new(Kind::Done, 1, 1, vec![7; 8 << 20])]);
        let small = encoded(&[Frame::new(Kind::Done, 2, 1, vec![1; 100])]);
        let mut d = Decoder::new();
        for piece in big.chunks(256 * 1024) {
            d.feed(piece);
        }
        assert_eq!(d.next_frame().unwrap().unwrap().body.len(), 8 << 20);
        assert!(d.buffered_capacity() >= 8 << 20);
        d.feed(&small[..50]);
        assert!(
            d.buffered_capacity() <= 4 * d.pending() + SPARE_CAPACITY,
            "kept {} bytes for {} pending",
            d.buffered_capacity(),
            d.pending()
        );
        d.feed(&small[50..]);
        assert_eq!(d.next_frame().unwrap().unwrap().a, 2);
    }

    #[test]
    fn truncated_input_is_reported_at_finish() {
        let bytes = encoded(&[Frame::new(Kind::Task, 1, 1, vec![1, 2, 3])]);
        let mut d = Decoder::new();
        d.feed(&bytes[..bytes.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(bytes.len() - 1)));
    }

    #[test]
    fn a_huge_declared_length_allocates_nothing_up_front() {
        let mut bytes = encoded(&[Frame::new(Kind::Task, 1, 1, Vec::new())]);
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = Decoder::new();
        d.feed(&bytes);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buffered_capacity() < 1024);
    }

    #[test]
    fn descriptors_go_with_the_frame_that_names_them() {
        // SAFETY: a valid name and flags; checked below.
        let raw = unsafe { libc::memfd_create(c"frame-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a new descriptor nothing else owns.
        let fd = SharedFd::new(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) });
        let mut with = Frame::new(Kind::Task, 2, 1, b"x".to_vec());
        with.fds = vec![fd.clone(), fd.clone()];
        let bytes = encoded(&[Frame::new(Kind::Task, 1, 1, vec![]), with.clone()]);
        let mut d = Decoder::new();
        d.feed_fds([fd.clone(), fd.clone()]);
        d.feed(&bytes);
        assert!(d.next_frame().unwrap().unwrap().fds.is_empty());
        assert_eq!(d.next_frame().unwrap().unwrap(), with);
        d.finish().unwrap();
    }

    #[test]
    fn a_frame_whose_descriptors_never_came_is_an_error() {
        let mut patched = encoded(&[Frame::new(Kind::Done, 1, 1, vec![])]);
        patched[21] = 3;
        let mut d = Decoder::new();
        d.feed(&patched);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::MissingFds { wanted: 3, have: 0 })
        );
    }

    #[test]
    fn consumed_space_is_reclaimed() {
        let mut d = Decoder::new();
        let one = encoded(&[Frame::new(Kind::Done, 1, 1, vec![0; 4096])]);
        for _ in 0..2000 {
            d.feed(&one);
            d.feed(&one[..10]);
            assert!(d.next_frame().unwrap().is_some());
            d.feed(&one[10..]);
            assert!(d.next_frame().unwrap().is_some());
        }
        assert!(d.buf.len() < 4 << 20, "buffer grew to {}", d.buf.len());
    }
}
