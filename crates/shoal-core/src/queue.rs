//! A multi-producer, multi-consumer message queue between processes: one
//! `SOCK_SEQPACKET` socketpair that every process holding the queue shares.
//! The kernel keeps each message whole, in order, and gives it to exactly
//! one receiver; file descriptors (shared memory) ride along with it.
//!
//! Closing shuts the sending side down for every process at once:
//! receivers drain what is left and then see the end, and a put fails.
//! A message longer than fits in one packet travels in a sealed memfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::error::{CoreError, Result};
use crate::fds::{FdReceiver, SharedFd, MAX_FDS_PER_MSG};

/// Bodies up to this size travel inside the packet; larger ones in a memfd.
const INLINE_MAX: usize = 32 * 1024;
/// Send buffer asked for (the kernel caps it at `net.core.wmem_max`): it
/// bounds how many messages can wait in the queue before `put` blocks.
const SEND_BUFFER: libc::c_int = 8 << 20;

const INLINE: u8 = 0;
const IN_MEMFD: u8 = 1;

/// What a `get` found.
#[derive(Debug)]
pub enum Received {
    Message(Vec<u8>, Vec<SharedFd>),
    /// Nothing arrived in time.
    Empty,
    /// The queue was closed and everything in it has been taken.
    Closed,
}

#[derive(Debug, Clone)]
pub struct MessageQueue {
    /// Producers send here...
    tx: SharedFd,
    /// ...and consumers receive here.
    rx: SharedFd,
}

fn os_error(context: &'static str) -> CoreError {
    CoreError::io(context, std::io::Error::last_os_error())
}

/// A message made ready to put: packed once, however often a full queue
/// makes `put` try again.
#[derive(Debug)]
pub struct Prepared {
    packet: Vec<u8>,
    fds: Vec<SharedFd>,
}

impl MessageQueue {
    pub fn new() -> Result<MessageQueue> {
        let mut pair = [0 as RawFd; 2];
        // SAFETY: socketpair writes two descriptors into `pair`.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(os_error("socketpair for a queue"));
        }
        // SAFETY: both are new descriptors nothing else owns.
        let (tx, rx) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        // SAFETY: setting an int option on our socket; a smaller buffer
        // than asked for is fine.
        unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(MessageQueue {
            tx: SharedFd::new(tx),
            rx: SharedFd::new(rx),
        })
    }

    /// The queue behind descriptors another process sent.
    pub fn from_fds(tx: SharedFd, rx: SharedFd) -> MessageQueue {
        MessageQueue { tx, rx }
    }

    /// The descriptors to send to another process.
    pub fn fds(&self) -> [&SharedFd; 2] {
        [&self.tx, &self.rx]
    }

    /// Puts one message, waiting at most `wait` for room; false if the
    /// queue stayed full. An error if it was closed.
    pub fn put(&self, body: &[u8], fds: &[SharedFd], wait: Duration) -> Result<bool> {
        self.put_prepared(&MessageQueue::prepare(body, fds)?, wait)
    }

    /// Packs a message for [`MessageQueue::put_prepared`]: a large body is
    /// copied into shared memory here, once.
    pub fn prepare(body: &[u8], fds: &[SharedFd]) -> Result<Prepared> {
        if fds.len() >= MAX_FDS_PER_MSG {
            return Err(CoreError::Config(format!(
                "a queue item may hold at most {} shared buffers, queues or locks, not {}",
                MAX_FDS_PER_MSG - 1,
                fds.len()
            )));
        }
        let mut all_fds = fds.to_vec();
        let packet = if body.len() <= INLINE_MAX {
            let mut packet = Vec::with_capacity(1 + body.len());
            packet.push(INLINE);
            packet.extend_from_slice(body);
            packet
        } else {
            all_fds.push(SharedFd::new(crate::shm::create_copy(body, true)?));
            vec![IN_MEMFD]
        };
        Ok(Prepared {
            packet,
            fds: all_fds,
        })
    }

    /// Puts a prepared message, waiting at most `wait` for room; false if
    /// the queue stayed full (the message can be put again later). An
    /// error if it was closed.
    pub fn put_prepared(&self, message: &Prepared, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            match crate::fds::send_packet(self.tx.as_raw_fd(), &message.packet, &message.fds) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Err(CoreError::Closed),
                Err(e) => return Err(CoreError::io("put on a queue", e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            crate::fds::wait_for(self.tx.as_raw_fd(), libc::POLLOUT, left)
                .map_err(|e| CoreError::io("wait to put on a queue", e))?;
        }
    }

    /// Takes one message, waiting at most `wait`.
    pub fn get(&self, wait: Duration) -> Result<Received> {
        // A packet's buffer and descriptor space, kept per thread: making
        // (and zeroing) 32 KiB on every get cost more than the get itself.
        thread_local! {
            static SPACE: std::cell::RefCell<(Vec<u8>, FdReceiver)> =
                std::cell::RefCell::new((vec![0u8; 1 + INLINE_MAX], FdReceiver::default()));
        }
        SPACE.with(|space| match space.try_borrow_mut() {
            Ok(mut space) => {
                let (buf, receiver) = &mut *space;
                self.get_into(wait, buf, receiver)
            }
            // Re-entered on this thread (cannot happen today): fresh space.
            Err(_) => self.get_into(
                wait,
                &mut vec![0u8; 1 + INLINE_MAX],
                &mut FdReceiver::default(),
            ),
        })
    }

    fn get_into(
        &self,
        wait: Duration,
        buf: &mut [u8],
        receiver: &mut FdReceiver,
    ) -> Result<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let mut fds = Vec::new();
            let got = receiver.recv(self.rx.as_raw_fd(), buf, libc::MSG_DONTWAIT, &mut fds);
            match got {
                Ok(0) => return Ok(Received::Closed),
                Ok(n) => return unpack(&buf[..n], fds).map(|(b, f)| Received::Message(b, f)),
                // Empty, or another consumer took the message first.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(CoreError::io("get from a queue", e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Received::Empty);
            }
            crate::fds::wait_readable(self.rx.as_raw_fd(), left)
                .map_err(|e| CoreError::io("wait to get from a queue", e))?;
        }
    }

    /// Whether no message is waiting (true also once closed and drained).
    pub fn is_empty(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: peeking one byte into a valid buffer; without a control
        // buffer no descriptor is installed by the peek.
        let n = unsafe {
            libc::recv(
                self.rx.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n <= 0
    }

    /// Waits at most `wait` until a `get` would not wait: a message is
    /// there, or the queue is closed and drained (the get then says so).
    pub fn poll(&self, wait: Duration) -> bool {
        // An error polling our own socket means a get would not wait either.
        crate::fds::wait_readable(self.rx.as_raw_fd(), wait).unwrap_or(true)
    }

    /// No more puts, in any process; getters drain what is left.
    pub fn close(&self) {
        // SAFETY: shutting down the sending direction of our socket.
        unsafe { libc::shutdown(self.tx.as_raw_fd(), libc::SHUT_WR) };
    }
}

/// A message as it came: its body, inline or in the last descriptor.
///
/// A body in a descriptor is only trusted as a sealed memfd (as `put` makes
/// it): its size can then no longer change, and it is read into memory
/// allocated for that size, or refused if that much cannot be allocated.
fn unpack(packet: &[u8], mut fds: Vec<SharedFd>) -> Result<(Vec<u8>, Vec<SharedFd>)> {
    let malformed = |why: &str| CoreError::Config(format!("a malformed queue message: {why}"));
    match packet.split_first() {
        Some((&INLINE, body)) => Ok((body.to_vec(), fds)),
        Some((&IN_MEMFD, [])) => {
            let Some(holder) = fds.pop() else {
                return Err(malformed("its body's descriptor is missing"));
            };
            if !crate::shm::is_sealed(&holder) {
                return Err(malformed(
                    "its body is not in sealed shared memory (not put by a shoal.Queue?)",
                ));
            }
            let len = crate::shm::size(&holder)?;
            let mut body = Vec::new();
            body.try_reserve_exact(len).map_err(|_| {
                CoreError::Config(format!(
                    "a queue message of {len} bytes does not fit in this process's memory"
                ))
            })?;
            body.resize(len, 0);
            let file = std::fs::File::from(
                holder
                    .duplicate()
                    .map_err(|e| CoreError::io("dup a queue message", e))?,
            );
            file.read_exact_at(&mut body, 0)
                .map_err(|e| CoreError::io("read a queue message", e))?;
            Ok((body, fds))
        }
        _ => Err(malformed("an unknown kind of packet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_whole_and_in_order() {
        let q = MessageQueue::new().unwrap();
        let big = vec![9u8; 200_000];
        assert!(q.is_empty());
        assert!(q.put(b"one", &[], Duration::ZERO).unwrap());
        assert!(q.put(&big, &[], Duration::ZERO).unwrap());
        assert!(!q.is_empty());
        match q.get(Duration::ZERO).unwrap() {
            Received::Message(body, fds) => {
                assert_eq!((body.as_slice(), fds.len()), (&b"one"[..], 0))
            }
            other => panic!("{other:?}"),
        }
        match q.get(Duration::ZERO).unwrap() {
            Received::Message(body, fds) => assert_eq!((body, fds.len()), (big, 0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            q.get(Duration::from_millis(10)).unwrap(),
            Received::Empty
        ));
    }

    #[test]
    fn a_body_in_memory_anyone_may_still_change_is_refused() {
        let q = MessageQueue::new().unwrap();
        // A peer that sends its body in a memfd it did not seal (and could
        // grow to any size before we read it).
        let unsealed = SharedFd::new(crate::shm::create_copy(&[1u8; 64], false).unwrap());
        crate::fds::send_packet(q.tx.as_raw_fd(), &[IN_MEMFD], &[unsealed]).unwrap();
        let err = q.get(Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("sealed"), "{err}");
    }

    #[test]
    fn a_large_message_is_copied_once_however_often_it_is_tried() {
        let q = MessageQueue::new().unwrap();
        let big = vec![5u8; 200_000];
        let message = MessageQueue::prepare(&big, &[]).unwrap();
        let copy = message.fds.last().unwrap().clone();
        // Fill the queue, so the large message finds no room a few times.
        let small = MessageQueue::prepare(&[0u8; 1000], &[]).unwrap();
        while q.put_prepared(&small, Duration::ZERO).unwrap() {}
        for _ in 0..3 {
            assert!(!q.put_prepared(&message, Duration::from_millis(5)).unwrap());
        }
        // Its one copy is what finally travels.
        while !matches!(q.get(Duration::ZERO).unwrap(), Received::Empty) {}
        assert!(q.put_prepared(&message, Duration::ZERO).unwrap());
        drop(message);
        match q.get(Duration::ZERO).unwrap() {
            Received::Message(body, _) => assert_eq!(body, big),
            other => panic!("{other:?}"),
        }
        assert!(crate::shm::is_sealed(&copy));
    }

    #[test]
    fn closing_drains_then_ends() {
        let q = MessageQueue::new().unwrap();
        let other = MessageQueue::from_fds(
            SharedFd::new(q.tx.duplicate().unwrap()),
            SharedFd::new(q.rx.duplicate().unwrap()),
        );
        q.put(b"last", &[], Duration::ZERO).unwrap();
        other.close();
        assert!(matches!(
            q.put(b"more", &[], Duration::ZERO),
            Err(CoreError::Closed)
        ));
        assert!(matches!(
            q.get(Duration::ZERO).unwrap(),
            Received::Message(..)
        ));
        assert!(matches!(q.get(Duration::ZERO).unwrap(), Received::Closed));
        assert!(q.is_empty());
    }
}
