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

/// Waits up to `wait` for `events` on `fd`; returns whether any (or a
/// hang-up or an error) came.
fn poll_one(fd: RawFd, events: libc::c_short, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: polling one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
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
        let mut packet;
        let mut all_fds = fds.to_vec();
        if body.len() <= INLINE_MAX {
            packet = Vec::with_capacity(1 + body.len());
            packet.push(INLINE);
            packet.extend_from_slice(body);
        } else {
            all_fds.push(SharedFd::new(crate::shm::create_copy(body, true)?));
            packet = vec![IN_MEMFD];
        }
        if all_fds.len() > MAX_FDS_PER_MSG {
            return Err(CoreError::Config(format!(
                "a queue item may hold at most {} shared buffers, not {}",
                MAX_FDS_PER_MSG - 1,
                fds.len()
            )));
        }
        let deadline = Instant::now() + wait;
        loop {
            match crate::fds::send_packet(self.tx.as_raw_fd(), &packet, &all_fds) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Err(CoreError::Closed),
                Err(e) => return Err(CoreError::io("put on a queue", e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            poll_one(self.tx.as_raw_fd(), libc::POLLOUT, left);
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
            poll_one(self.rx.as_raw_fd(), libc::POLLIN, left);
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
        poll_one(self.rx.as_raw_fd(), libc::POLLIN, wait)
    }

    /// No more puts, in any process; getters drain what is left.
    pub fn close(&self) {
        // SAFETY: shutting down the sending direction of our socket.
        unsafe { libc::shutdown(self.tx.as_raw_fd(), libc::SHUT_WR) };
    }
}

fn unpack(packet: &[u8], mut fds: Vec<SharedFd>) -> Result<(Vec<u8>, Vec<SharedFd>)> {
    match packet.split_first() {
        Some((&INLINE, body)) => Ok((body.to_vec(), fds)),
        Some((&IN_MEMFD, [])) if !fds.is_empty() => {
            let holder = fds.pop().expect("checked non-empty");
            let len = crate::shm::size(&holder)?;
            let mut body = vec![0u8; len];
            let file = std::fs::File::from(
                holder
                    .duplicate()
                    .map_err(|e| CoreError::io("dup a queue message", e))?,
            );
            file.read_exact_at(&mut body, 0)
                .map_err(|e| CoreError::io("read a queue message", e))?;
            Ok((body, fds))
        }
        _ => Err(CoreError::Config("a malformed queue message".into())),
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
