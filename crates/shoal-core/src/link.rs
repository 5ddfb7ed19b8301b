//! The worker's end of its connection to the parent: blocking receive of
//! frame batches, buffered send, and the status page.
//!
//! The receiving and sending halves lock separately: the worker's main
//! thread may block in [`WorkerLink::recv_batch`] while another thread of
//! the user's code prints, and that output must still leave.

use std::collections::HashSet;
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
/// Withdrawn tasks a worker remembers while it waits to meet them; past
/// this many (a task withdrawn after it had already run never comes), the
/// set starts afresh and a withdrawn task may run after all, its answer
/// dropped.
const MAX_REVOKED_KEPT: usize = 4 * crate::status::REVOKED_RING;

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
    /// Withdrawals read from the status page so far, and the tasks among
    /// them not yet met.
    revoked_seen: u64,
    revoked: HashSet<u64>,
    /// Task frames met so far (begun or skipped): the position in this
    /// worker's stream of the last one, as the scheduler counts them.
    tasks_met: u64,
    /// Positions of tasks the scheduler took back (to give to an idle
    /// worker) that have not come up yet.
    taken_back: HashSet<u64>,
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
    /// Takes over the descriptors the engine left at 3 and 4 (a worker
    /// process's start).
    pub fn from_inherited() -> Result<WorkerLink> {
        keep_ignoring_sigint_but_not_in_children();
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
                revoked_seen: 0,
                revoked: HashSet::new(),
                tasks_met: 0,
                taken_back: HashSet::new(),
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
                if left.is_zero() {
                    return Ok(frames);
                }
                if !crate::fds::wait_readable(r.sock.as_raw_fd(), left)
                    .map_err(|e| CoreError::io("wait for the parent", e))?
                {
                    // Timed out, or a signal cut the wait short: look again.
                    continue;
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

    /// Marks `task` as running from now, and returns true; or, if the
    /// engine withdrew it after sending it (it was cancelled, or taken back
    /// for another worker), returns false with the worker idle: skip it,
    /// and send no answer. Call it for every task frame, in the order they
    /// arrive: the engine names a task it takes back by its place in that
    /// order.
    pub fn begin(&self, task: u64) -> bool {
        let mut s = lock(&self.sending);
        s.tasks_met += 1;
        let position = s.tasks_met;
        if let Some(taken) = self.status.note_reached(position) {
            s.taken_back.insert(taken);
        }
        if !s.taken_back.is_empty() && s.taken_back.remove(&position) {
            return false; // never marked running: it runs at another worker
        }
        self.status.mark_start(task);
        let count = self.status.revoked_count();
        if count != s.revoked_seen {
            if s.revoked.len() > MAX_REVOKED_KEPT {
                s.revoked.clear();
            }
            let seen = s.revoked_seen;
            self.status.revoked_since(seen, count, &mut s.revoked);
            s.revoked_seen = count;
        }
        if !s.revoked.is_empty() && s.revoked.remove(&task) {
            self.status.mark_idle();
            return false;
        }
        s.started_ns = monotonic_ns();
        true
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
        )
        .map_err(|source| CoreError::TooLarge {
            what: "the task's result",
            source,
        })?;
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

/// A worker process starts with SIGINT ignored (the engine sets that before
/// exec: Ctrl-C in a terminal reaches the whole process group, and the
/// parent decides what happens to its workers). An ignored signal stays
/// ignored across `exec`, so every program a task starts (`subprocess`)
/// would ignore Ctrl-C too. A handler that does nothing ignores it just as
/// well here, and `exec` resets a handled signal to its default: the
/// worker's children get SIGINT as they would from a shell.
fn keep_ignoring_sigint_but_not_in_children() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: reads the current disposition into a zeroed struct, then
    // installs a handler that does nothing (async-signal-safe), restarting
    // interrupted system calls, only if SIGINT was ignored.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) != 0
            || old.sa_sigaction != libc::SIG_IGN
        {
            return;
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
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

        assert!(link.begin(5));
        assert_eq!(page.running().map(|r| r.0), Some(5));
        page.revoke(6);
        assert!(!link.begin(6), "a withdrawn task is skipped");
        assert_eq!(page.running(), None);
        assert!(link.begin(7));
        assert!(
            page.take_back(5),
            "task 9, fifth in the stream, is queued behind 7"
        );
        assert!(link.begin(8), "8 was not taken back");
        assert!(!link.begin(9), "a task taken back is skipped");
        assert_eq!(
            page.running().map(|r| r.0),
            Some(8),
            "and never shown running"
        );
        assert!(
            !page.take_back(4),
            "8, begun before the skipped 9, cannot be taken back"
        );
        assert!(!page.take_back(3), "nor can 6, skipped as withdrawn");

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

    #[test]
    fn a_wait_longer_than_poll_can_express_still_waits() {
        let (parent, child) = UnixStream::pair().unwrap();
        let (_page, page_fd) = StatusPage::create().unwrap();
        let link = WorkerLink::from_fds(child.into(), page_fd).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut bytes = Vec::new();
            Frame::new(Kind::Exit, 0, 0, vec![])
                .encode_into(&mut bytes)
                .unwrap();
            (&parent).write_all(&bytes).unwrap();
            parent
        });
        // 2^32 + 5 ms: as a C int of milliseconds, 5 ms.
        let wait = std::time::Duration::from_millis((1u64 << 32) + 5);
        let started = std::time::Instant::now();
        let got = link.recv_batch_within(Some(wait)).unwrap();
        assert_eq!(got.len(), 1, "returned empty after {:?}", started.elapsed());
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_signal_does_not_turn_a_timed_wait_into_an_endless_one() {
        use std::os::unix::thread::JoinHandleExt;
        use std::time::Duration;
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: installs a do-nothing handler for SIGUSR2 without
        // SA_RESTART, so the signal interrupts poll with EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
        }
        let (parent, child) = UnixStream::pair().unwrap();
        let (_page, page_fd) = StatusPage::create().unwrap();
        let link = WorkerLink::from_fds(child.into(), page_fd).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let got = link.recv_batch_within(Some(Duration::from_millis(200)));
            let _ = tx.send((got.map(|f| f.len()), started.elapsed()));
        });
        let thread = waiter.as_pthread_t();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let outcome = loop {
            // SAFETY: the waiter thread is joined below, so its id is live.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(outcome) => break Some(outcome),
                Err(_) if std::time::Instant::now() > deadline => break None,
                Err(_) => {}
            }
        };
        // Unblocks a waiter stuck in a blocking read, so a failure is not a hang.
        parent.shutdown(std::net::Shutdown::Both).unwrap();
        waiter.join().unwrap();
        let (got, took) = outcome.expect("a 200 ms wait, interrupted by signals, never returned");
        assert_eq!(got.unwrap(), 0);
        assert!(took < Duration::from_secs(2), "a 200 ms wait took {took:?}");
    }
}
