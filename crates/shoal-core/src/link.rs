//! The worker's end of its connection to the parent: blocking receive of
//! frame batches, buffered send, and the status page.
//!
//! The receiving and sending halves lock separately: the worker's main
//! thread may block in [`WorkerLink::recv_batch`] while another thread of
//! the user's code prints, and that output must still leave.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use crate::error::{CoreError, Result};
use crate::fds::{send_all_with_fds, FdReceiver, SharedFd};
use crate::frame::{encode_into, encode_parts_into, Decoder, Frame, Kind};
use crate::spawn::{WORKER_SOCKET_FD, WORKER_STATUS_FD};
use crate::status::StatusPage;
use crate::timing::{monotonic_ns, process_cpu_ns, RunTiming};

/// How stale the CPU time sent with answers may get.
const CPU_REFRESH_NS: u64 = 10_000_000;

const READ_CHUNK: usize = 256 * 1024;

struct Receiving {
    sock: UnixStream,
    decoder: Decoder,
    chunk: Vec<u8>,
    receiver: FdReceiver,
    fds: Vec<SharedFd>,
}

struct Sending {
    sock: UnixStream,
    out: Vec<u8>,
    /// Descriptors the frames in `out` carry.
    out_fds: Vec<SharedFd>,
    /// When the current task started (`CLOCK_MONOTONIC` ns).
    started_ns: u64,
    /// The process's CPU time, and when it was read.
    cpu_ns: u64,
    cpu_read_at_ns: u64,
}

pub struct WorkerLink {
    receiving: Mutex<Receiving>,
    sending: Mutex<Sending>,
    status: StatusPage,
}

/// A poisoned lock only means another thread panicked mid-call; the buffers
/// are still consistent enough to carry on (or to report the error).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WorkerLink {
    /// Takes over the descriptors the engine left at 3 and 4.
    pub fn from_inherited() -> Result<WorkerLink> {
        for fd in [WORKER_SOCKET_FD, WORKER_STATUS_FD] {
            // Processes the user's code starts must not hold our socket open
            // (the parent would never see this worker's end).
            // SAFETY: setting a flag on a descriptor number; an invalid one
            // just fails, which we report.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(CoreError::io(
                    "worker descriptors missing (not started by shoal?)",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        // SAFETY: the engine handed these descriptors to this process for it
        // alone; we take ownership once, here.
        let (sock, status) = unsafe {
            (
                OwnedFd::from_raw_fd(WORKER_SOCKET_FD),
                OwnedFd::from_raw_fd(WORKER_STATUS_FD),
            )
        };
        Self::from_fds(sock, status)
    }

    /// A link on a socket and a status page's memfd: the ends the engine
    /// hands a thread worker ([`crate::launch::WorkerEnds`]).
    pub fn from_fds(sock: OwnedFd, status: OwnedFd) -> Result<WorkerLink> {
        // Segments arrive as descriptors; many may be open at once.
        crate::shm::raise_fd_limit();
        let sock = UnixStream::from(sock);
        let status = StatusPage::map(&status)?; // the mapping outlives the descriptor
        let read_sock = sock
            .try_clone()
            .map_err(|e| CoreError::io("dup worker socket", e))?;
        Ok(WorkerLink {
            receiving: Mutex::new(Receiving {
                sock: read_sock,
                decoder: Decoder::new(),
                chunk: vec![0u8; READ_CHUNK],
                receiver: FdReceiver::default(),
                fds: Vec::new(),
            }),
            sending: Mutex::new(Sending {
                sock,
                out: Vec::new(),
                out_fds: Vec::new(),
                started_ns: 0,
                cpu_ns: 0,
                cpu_read_at_ns: 0,
            }),
            status,
        })
    }

    /// Blocks until at least one frame has arrived; returns every complete
    /// frame received so far. `Disconnected` when the parent has gone.
    pub fn recv_batch(&self) -> Result<Vec<Frame>> {
        self.recv_batch_within(None)
    }

    /// As [`WorkerLink::recv_batch`], but returns no frames if none has
    /// arrived after `wait` (when given).
    pub fn recv_batch_within(&self, wait: Option<std::time::Duration>) -> Result<Vec<Frame>> {
        let mut guard = lock(&self.receiving);
        let r = &mut *guard;
        let mut frames = Vec::new();
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        loop {
            while let Some(frame) = r.decoder.next_frame()? {
                frames.push(frame);
            }
            if !frames.is_empty() {
                return Ok(frames);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let mut p = libc::pollfd {
                    fd: r.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polling one valid pollfd.
                let ready = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int) };
                if ready == 0 {
                    return Ok(frames);
                }
            }
            let n = match r
                .receiver
                .recv(r.sock.as_raw_fd(), &mut r.chunk, 0, &mut r.fds)
            {
                Ok(0) => return Err(CoreError::Disconnected),
                Ok(n) => n,
                Err(e) => return Err(CoreError::io("read from parent", e)),
            };
            r.decoder.feed_fds(r.fds.drain(..));
            r.decoder.feed(&r.chunk[..n]);
        }
    }

    /// Buffers a frame for the next [`WorkerLink::flush`].
    pub fn queue(&self, kind: Kind, a: u64, b: u64, body: &[u8]) -> Result<()> {
        Ok(encode_into(&mut lock(&self.sending).out, kind, a, b, body)?)
    }

    pub fn flush(&self) -> Result<()> {
        let mut s = lock(&self.sending);
        if s.out.is_empty() {
            return Ok(());
        }
        let Sending {
            sock, out, out_fds, ..
        } = &mut *s;
        let res = if out_fds.is_empty() {
            sock.write_all(out)
        } else {
            send_all_with_fds(sock.as_raw_fd(), out, out_fds)
        };
        out.clear();
        out_fds.clear();
        res.map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CoreError::Disconnected,
            _ => CoreError::io("write to parent", e),
        })
    }

    /// Marks `task` as running from now.
    pub fn begin(&self, task: u64) {
        self.status.mark_start(task);
        lock(&self.sending).started_ns = monotonic_ns();
    }

    /// Marks the worker idle and queues the task's answer (`Done`, `Failed`
    /// or `Retryable`) with the time since [`WorkerLink::begin`] and its
    /// [`RunTiming`]; `deser_ns` and `result_ser_ns` are what the caller
    /// measured of that time. `fds` (the result's shared memory) travel
    /// with it.
    pub fn finish(
        &self,
        kind: Kind,
        task: u64,
        body: &[u8],
        fds: &[SharedFd],
        deser_ns: u64,
        result_ser_ns: u64,
    ) -> Result<()> {
        let mut s = lock(&self.sending);
        let now = monotonic_ns();
        self.status.mark_idle();
        if now.saturating_sub(s.cpu_read_at_ns) > CPU_REFRESH_NS {
            s.cpu_ns = process_cpu_ns();
            s.cpu_read_at_ns = now;
        }
        let timing = RunTiming {
            start_ns: s.started_ns,
            deser_ns,
            result_ser_ns,
            cpu_ns: s.cpu_ns,
        };
        let ran = now.saturating_sub(s.started_ns);
        encode_parts_into(
            &mut s.out,
            kind,
            task,
            ran,
            &[body, &timing.to_bytes()],
            fds.len(),
        )?;
        s.out_fds.extend_from_slice(fds);
        Ok(())
    }

    pub fn status(&self) -> &StatusPage {
        &self.status
    }

    /// Hangs up: the parent sees end-of-file now, whoever still holds this
    /// link (a thread worker's link may outlive its loop, e.g. referenced
    /// from a traceback).
    pub fn close(&self) {
        let _ = lock(&self.sending).sock.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_link_talks_to_the_other_end() {
        let (parent, child) = UnixStream::pair().unwrap();
        let (page, page_fd) = StatusPage::create().unwrap();
        let link = WorkerLink::from_fds(child.into(), page_fd).unwrap();

        let mut bytes = Vec::new();
        Frame::new(Kind::Task, 5, 1, b"args".to_vec())
            .encode_into(&mut bytes)
            .unwrap();
        Frame::new(Kind::Exit, 0, 0, vec![])
            .encode_into(&mut bytes)
            .unwrap();
        (&parent).write_all(&bytes).unwrap();
        let got = link.recv_batch().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].a, 5);

        link.status().mark_start(5);
        assert_eq!(page.running().map(|r| r.0), Some(5));

        link.queue(Kind::Done, 5, 10, b"result").unwrap();
        link.flush().unwrap();
        let mut d = Decoder::new();
        let mut buf = [0u8; 64];
        let n = (&parent).read(&mut buf).unwrap();
        d.feed(&buf[..n]);
        assert_eq!(d.next_frame().unwrap().unwrap().body, b"result");

        drop(parent);
        assert!(matches!(link.recv_batch(), Err(CoreError::Disconnected)));
    }
}
