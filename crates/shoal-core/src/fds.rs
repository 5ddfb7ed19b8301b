//! File descriptors that travel between processes: a shareable owned
//! descriptor, and sending or receiving bytes with descriptors attached
//! over a Unix socket (`SCM_RIGHTS`).
//!
//! The kernel attaches descriptors to the first bytes of the `sendmsg`
//! that carries them and hands them over with the `recvmsg` that reads
//! those bytes. So a receiver that queues descriptors as they arrive has
//! every descriptor of a frame by the time the frame's last byte is in:
//! frames name how many they carry, and take them from that queue.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most descriptors one `sendmsg` may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MSG: usize = 253;

// ---------------------------------------------------------------------------
// The limit on open files.
// ---------------------------------------------------------------------------

/// Descriptors left below the soft limit when it is raised: more than one
/// `recvmsg` can bring at once, so no message ever finds the table full.
const HEADROOM: i64 = 2 * MAX_FDS_PER_MSG as i64 + 64;

/// A descriptor number from which on the soft limit is raised; 0 until
/// read, `i64::MAX` once raised (or when it cannot be).
static RAISE_AT: AtomicI64 = AtomicI64::new(0);
/// The soft limit this process started with, for the processes the engine
/// starts (0 until it is raised).
static ORIGINAL_SOFT: AtomicI64 = AtomicI64::new(0);

fn nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a valid, writable struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Raises this process's soft limit on open files to its hard limit. Every
/// shared memory segment in flight is a descriptor, and a map over many
/// large arrays soon reaches the usual soft limit of 1024. It is raised
/// only when needed ([`note_descriptor`], or a call that failed for want
/// of descriptors), because the processes this one starts inherit it (some
/// programs misbehave with a high one: `select` stops at 1024); the
/// engine's own workers start with the original limit again
/// ([`original_soft_limit`]). Returns whether there is more room now.
pub fn raise_fd_limit() -> bool {
    let Some(mut lim) = nofile() else {
        return false;
    };
    RAISE_AT.store(i64::MAX, Ordering::Relaxed);
    if lim.rlim_cur >= lim.rlim_max {
        return false;
    }
    let original = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit with a valid struct.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0;
    if raised {
        let _ = ORIGINAL_SOFT.compare_exchange(
            0,
            original.min(i64::MAX as u64) as i64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    raised
}

/// The soft limit before shoal raised it, if it did.
pub fn original_soft_limit() -> Option<u64> {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    (soft > 0).then_some(soft as u64)
}

/// Call with each descriptor shoal opens or receives: once their numbers
/// come near the soft limit, it is raised (descriptors are numbered from
/// the lowest free one, so a high number means many are open). One atomic
/// load when nothing needs doing.
pub fn note_descriptor(fd: RawFd) {
    let mut at = RAISE_AT.load(Ordering::Relaxed);
    if at == 0 {
        at = match nofile() {
            Some(lim) if lim.rlim_cur < lim.rlim_max => {
                (lim.rlim_cur.min(i64::MAX as u64) as i64 - HEADROOM).max(1)
            }
            _ => i64::MAX,
        };
        RAISE_AT.store(at, Ordering::Relaxed);
    }
    if i64::from(fd) >= at {
        raise_fd_limit();
    }
}

/// Whether an error means the process (or its user) ran out of
/// descriptors: raising the soft limit may help.
pub fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ETOOMANYREFS)
    )
}

/// Waits up to `wait` for `events` on `fd`: true if they came, false on
/// timeout or when a signal cut the wait short (the caller looks again).
/// Waits too long for `poll`'s milliseconds are waited in parts.
pub fn wait_for(fd: RawFd, events: libc::c_short, wait: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // Rounded up, so a wait of less than a millisecond does not spin.
    let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: polling one valid pollfd.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

/// [`wait_for`] readability.
pub fn wait_readable(fd: RawFd, wait: Duration) -> io::Result<bool> {
    wait_for(fd, libc::POLLIN, wait)
}

/// An open descriptor shared by reference count: a task's segments stay
/// open while the scheduler may still resend the task, and close when the
/// last holder lets go.
#[derive(Debug, Clone)]
pub struct SharedFd(Arc<OwnedFd>);

impl SharedFd {
    pub fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(Arc::new(fd))
    }

    /// A new descriptor for the same open file, owned by the caller.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl PartialEq for SharedFd {
    fn eq(&self, other: &SharedFd) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedFd {}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One `sendmsg` of `data` carrying `fds` (at most [`MAX_FDS_PER_MSG`],
/// `data` not empty); returns the bytes sent.
fn send_once(sock: RawFd, data: &[u8], fds: &[SharedFd], flags: libc::c_int) -> io::Result<usize> {
    debug_assert!(!data.is_empty() && fds.len() <= MAX_FDS_PER_MSG);
    // u64 words keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; cmsg_space(fds.len()).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields we use are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: `msg` points at `control`, which is large enough for one
        // header and `fds.len()` descriptors (CMSG_SPACE above), so the
        // first header and its data area lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len =
                libc::CMSG_LEN((fds.len() * std::mem::size_of::<RawFd>()) as u32) as _;
            let slots = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                slots.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let mut raised = false;
    loop {
        // SAFETY: `msg` and everything it points to are valid for the call;
        // the descriptors stay open (we hold them) until it returns.
        let n = unsafe { libc::sendmsg(sock, &msg, flags | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            // More descriptors in flight than this process's soft limit
            // (the kernel counts them against it): raise it and try again.
            Some(libc::ETOOMANYREFS) if !raised && !fds.is_empty() && raise_fd_limit() => {
                raised = true;
            }
            _ => return Err(err),
        }
    }
}

/// Writes all of `data` to a blocking socket with `fds` attached to its
/// first bytes (several `sendmsg`s when there are more than the kernel
/// takes at once; each needs at least one byte to ride on).
pub fn send_all_with_fds(sock: RawFd, data: &[u8], fds: &[SharedFd]) -> io::Result<()> {
    let mut data = data;
    let mut fds = fds;
    while !fds.is_empty() {
        if data.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptors need at least one byte each group to travel with",
            ));
        }
        let group = fds.len().min(MAX_FDS_PER_MSG);
        let take = if fds.len() > group { 1 } else { data.len() };
        let sent = send_once(sock, &data[..take], &fds[..group], 0)?;
        data = &data[sent..];
        fds = &fds[group..];
    }
    write_all(sock, data)
}

/// Sends one whole packet on a packet socket without blocking
/// (`WouldBlock` when there is no room).
pub fn send_packet(sock: RawFd, data: &[u8], fds: &[SharedFd]) -> io::Result<()> {
    send_once(sock, data, fds, libc::MSG_DONTWAIT).map(drop)
}

fn write_all(sock: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice to a descriptor we were given.
        let n = unsafe { libc::send(sock, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Takes ownership of descriptor `n` that this process inherited (and
/// marks it close-on-exec); an error if it is not open. The caller must
/// adopt each inherited number once.
pub fn adopt_inherited(n: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if n < 0 || unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("descriptor {n} is not open"),
        ));
    }
    // SAFETY: close-on-exec on a descriptor that is open (checked above).
    unsafe { libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open and, by the caller's promise, owned by
    // nothing else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Receive buffer for the descriptors of one `recvmsg`.
pub struct FdReceiver {
    control: Vec<u64>,
}

impl Default for FdReceiver {
    fn default() -> Self {
        FdReceiver {
            control: vec![0u64; cmsg_space(MAX_FDS_PER_MSG).div_ceil(8)],
        }
    }
}

impl FdReceiver {
    /// One `recvmsg` into `buf` with `flags`; descriptors that arrive are
    /// appended to `fds` (close-on-exec). Returns the bytes read (0 at end
    /// of stream). Descriptors the kernel had to drop (`MSG_CTRUNC`) are an
    /// error: the stream can no longer be trusted.
    pub fn recv(
        &mut self,
        sock: RawFd,
        buf: &mut [u8],
        flags: libc::c_int,
        fds: &mut Vec<SharedFd>,
    ) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the fields we use are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.control.as_mut_ptr().cast();
        msg.msg_controllen = (self.control.len() * 8) as _;
        let n = loop {
            // SAFETY: `msg` points at `buf` and `self.control`, both valid
            // and writable for the lengths given.
            let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        // SAFETY: the kernel filled `msg.msg_control` with well-formed
        // headers up to `msg_controllen`; the CMSG macros walk exactly those.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        let raw = data.cast::<RawFd>().add(i).read_unaligned();
                        note_descriptor(raw);
                        // The kernel installed this descriptor for us alone.
                        fds.push(SharedFd::new(OwnedFd::from_raw_fd(raw)));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file descriptors sent to this process were dropped (too many open files?)",
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn memfd() -> SharedFd {
        // SAFETY: a valid name and flags; checked below.
        let raw = unsafe { libc::memfd_create(c"fds-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a new descriptor nothing else owns.
        SharedFd::new(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    fn same_file(a: RawFd, b: RawFd) -> bool {
        // SAFETY: fstat into zeroed, writable structs.
        unsafe {
            let mut sa: libc::stat = std::mem::zeroed();
            let mut sb: libc::stat = std::mem::zeroed();
            libc::fstat(a, &mut sa) == 0
                && libc::fstat(b, &mut sb) == 0
                && (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        }
    }

    #[test]
    fn descriptors_arrive_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent: Vec<SharedFd> = (0..3).map(|_| memfd()).collect();
        send_all_with_fds(a.as_raw_fd(), b"hello", &sent).unwrap();
        let mut rx = FdReceiver::default();
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        let n = rx.recv(b.as_raw_fd(), &mut buf, 0, &mut got).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(got.len(), 3);
        for (s, g) in sent.iter().zip(&got) {
            assert_ne!(s.as_raw_fd(), g.as_raw_fd());
            assert!(same_file(s.as_raw_fd(), g.as_raw_fd()));
        }
    }

    #[test]
    fn more_descriptors_than_one_message_takes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let one = memfd();
        let sent = vec![one.clone(); 600];
        let writer = std::thread::spawn(move || {
            send_all_with_fds(a.as_raw_fd(), &[7u8; 100], &sent).unwrap();
            a
        });
        let mut rx = FdReceiver::default();
        let mut got = Vec::new();
        let mut bytes = Vec::new();
        while bytes.len() < 100 {
            let mut buf = [0u8; 64];
            let n = rx.recv(b.as_raw_fd(), &mut buf, 0, &mut got).unwrap();
            bytes.extend_from_slice(&buf[..n]);
        }
        drop(writer.join().unwrap());
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(bytes, vec![7u8; 100]);
        assert_eq!(got.len(), 600);
        assert!(got
            .iter()
            .all(|g| same_file(g.as_raw_fd(), one.as_raw_fd())));
    }

    #[test]
    fn descriptors_need_bytes() {
        let (a, _b) = UnixStream::pair().unwrap();
        let err = send_all_with_fds(a.as_raw_fd(), b"", &[memfd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
