//! The parent's handle on one worker (a process, or a thread of this
//! process): its status page, and the threads that serve it, so that a
//! slow or stuck worker blocks only itself.
//!
//! The reader turns bytes into frames and hands them to the scheduler a read
//! at a time; the writer drains every queued buffer into one `write`, so many
//! small tasks cost one system call. A worker process also has a watcher,
//! which waits for the process to end and then shuts this end of its socket
//! down: a child the worker forked (which holds a copy of the socket) must
//! not keep the reader waiting for an end-of-file that would come only when
//! that child exits.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{CoreError, FrameError, Result};
use crate::event::{Event, WorkerId};
use crate::fds::{send_all_with_fds, FdReceiver, SharedFd};
use crate::frame::{encode_with_fds, Decoder, Kind};
use crate::launch::{launch_thread, Launch};
use crate::spawn::spawn_worker;
use crate::status::StatusPage;
use crate::task::Payload;
use crate::timing::monotonic_ns;

const READ_CHUNK: usize = 256 * 1024;
/// How long a worker whose socket closed may take to exit before SIGKILL.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// One write for the writer thread: encoded frames, the descriptors they
/// carry, and the tasks among them (to fail if the write does).
struct Outgoing {
    bytes: Vec<u8>,
    fds: Vec<SharedFd>,
    tasks: Vec<u64>,
}

/// A task sent to a worker and not yet answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) task: u64,
    /// Its place in the worker's stream of tasks (1 for the first), which
    /// is how a take-back names it ([`crate::status::StatusPage::take_back`]).
    pub(crate) position: u64,
}

pub(crate) struct WorkerHandle {
    pub(crate) id: WorkerId,
    /// Its place in the pool, `0..workers`: a replacement takes the slot of
    /// the worker it replaces, so traces and output tags stay readable.
    pub(crate) slot: usize,
    /// The worker process's pid; this process's for a thread worker.
    pub(crate) pid: u32,
    runner: Runner,
    /// This end of the socket, to hang up on the worker.
    sock: UnixStream,
    /// The socket has closed; the worker is being reaped.
    gone: bool,
    pub(crate) status: StatusPage,
    /// Writes for the writer thread; `None` once hung up.
    outbox: Option<Sender<Outgoing>>,
    /// Frames being batched for the next send, with their descriptors and
    /// the tasks among them.
    pending: Outgoing,
    threads: Vec<JoinHandle<()>>,
    /// Tasks sent to this worker and not yet answered, in the order sent.
    pub(crate) inflight: VecDeque<Held>,
    /// Functions this worker has cached.
    pub(crate) known_fns: HashSet<u64>,
    /// Tasks sent over its lifetime (for `maxtasksperchild`, and each
    /// one's [`Held::position`]).
    pub(crate) tasks_sent: u64,
    /// Has answered `Ready` (its initializer ran).
    pub(crate) ready: bool,
    /// Told to exit; gets no more tasks.
    pub(crate) retiring: bool,
    /// Said it is over its memory limit and exits: the tasks it still
    /// holds did not run.
    pub(crate) left_over_memory: bool,
    /// Why the scheduler killed it, if it did.
    pub(crate) kill_reason: Option<KillReason>,
    /// `CLOCK_MONOTONIC` ns when it was started.
    pub(crate) started_ns: u64,
    /// `CLOCK_MONOTONIC` ns when it last showed progress: started, said
    /// Ready, answered a task, or was given work while it held none. A
    /// worker that holds tasks but runs none is starting up or loading a
    /// function; the time since this counts against its first task's
    /// timeout.
    pub(crate) progress_ns: u64,
    /// CPU time it reported with its last answer, ns.
    pub(crate) cpu_ns: u64,
}

/// What runs the worker, and so how it is stopped and reaped.
enum Runner {
    /// The child process; taken by the reaper thread once the socket closed.
    Process(Option<Child>),
    /// A thread of this process, which cannot be killed: stopping it hangs
    /// up this end of its socket (the thread sees end-of-file and exits
    /// when its current call returns) and forgets it.
    Thread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// The task with this id passed its deadline.
    Timeout(u64),
    /// The worker went over `max_memory` (`rss` bytes) while running `task`.
    OverMemory { task: u64, rss: u64 },
    /// The task with this id was cancelled while running.
    Cancel(u64),
    /// The pool is being terminated.
    Terminate,
    /// A write to it failed part way: its stream cannot be trusted. The
    /// tasks of that write were failed; the others it held never ran, or
    /// their answers are lost: they are run again.
    LinkBroken,
}

impl KillReason {
    /// The one task a kill for this reason is about, if any.
    pub(crate) fn task(self) -> Option<u64> {
        match self {
            KillReason::Timeout(task)
            | KillReason::OverMemory { task, .. }
            | KillReason::Cancel(task) => Some(task),
            KillReason::Terminate | KillReason::LinkBroken => None,
        }
    }
}

fn dup(sock: &UnixStream) -> Result<UnixStream> {
    sock.try_clone()
        .map_err(|e| CoreError::io("dup worker socket", e))
}

fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| CoreError::io("start a thread for a worker", e))
}

impl WorkerHandle {
    pub(crate) fn start(
        id: WorkerId,
        slot: usize,
        launch: &Launch,
        events: &Sender<Event>,
    ) -> Result<WorkerHandle> {
        let (runner, sock, status, pid) = match launch {
            Launch::Process(command) => {
                let spawned = spawn_worker(command)?;
                let pid = spawned.child.id();
                let runner = Runner::Process(Some(spawned.child));
                (runner, spawned.sock, spawned.status, pid)
            }
            Launch::Thread(launcher) => {
                let (sock, status) = launch_thread(launcher, slot)?;
                (Runner::Thread, sock, status, std::process::id())
            }
        };
        let mut handle = WorkerHandle {
            id,
            slot,
            pid,
            runner,
            sock,
            gone: false,
            status,
            outbox: None,
            pending: Outgoing {
                bytes: Vec::new(),
                fds: Vec::new(),
                tasks: Vec::new(),
            },
            threads: Vec::new(),
            inflight: VecDeque::new(),
            known_fns: HashSet::new(),
            tasks_sent: 0,
            ready: false,
            retiring: false,
            left_over_memory: false,
            kill_reason: None,
            started_ns: monotonic_ns(),
            progress_ns: monotonic_ns(),
            cpu_ns: 0,
        };
        // Should a thread fail to start, dropping the handle kills and
        // reaps the process (see `Drop`).
        if matches!(handle.runner, Runner::Process(_)) {
            let watched = dup(&handle.sock)?;
            let pidfd = open_pidfd(pid);
            handle
                .threads
                .push(spawn_thread(format!("shoal-watch-{pid}"), move || {
                    wait_for_exit(pid, pidfd);
                    // The worker is gone: whoever else holds the socket (a
                    // child it forked), the reader sees its end now and the
                    // writer stops waiting for room.
                    let _ = watched.shutdown(std::net::Shutdown::Both);
                })?);
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Outgoing>();
        let read_sock = dup(&handle.sock)?;
        let write_sock = dup(&handle.sock)?;
        let reader_events = events.clone();
        handle
            .threads
            .push(spawn_thread(format!("shoal-read-{pid}"), move || {
                read_loop(id, read_sock, reader_events)
            })?);
        let writer_events = events.clone();
        handle
            .threads
            .push(spawn_thread(format!("shoal-write-{pid}"), move || {
                write_loop(id, write_sock, rx, writer_events)
            })?);
        handle.outbox = Some(tx);
        Ok(handle)
    }

    /// Queues a frame without a body (`Exit`, `Forget`).
    pub(crate) fn queue_control(&mut self, kind: Kind, a: u64) {
        // An empty body with no descriptors always encodes.
        let encoded = encode_with_fds(&mut self.pending.bytes, kind, a, 0, &[], 0);
        debug_assert!(encoded.is_ok());
    }

    /// Queues a frame whose body and descriptors are `payload`; it leaves
    /// with the next [`WorkerHandle::flush`]. An error (nothing queued) if
    /// the payload is too large for a frame, which the engine checks at
    /// submit.
    pub(crate) fn queue_parts(
        &mut self,
        kind: Kind,
        a: u64,
        b: u64,
        payload: &Payload,
    ) -> Result<(), FrameError> {
        let (body, fds) = (&payload.body, &payload.fds);
        encode_with_fds(&mut self.pending.bytes, kind, a, b, body, fds.len())?;
        self.pending.fds.extend_from_slice(fds);
        Ok(())
    }

    /// Queues task `task` of function `fn_id` and records it as held.
    pub(crate) fn queue_task(
        &mut self,
        task: u64,
        fn_id: u64,
        payload: &Payload,
    ) -> Result<(), FrameError> {
        self.queue_parts(Kind::Task, task, fn_id, payload)?;
        self.pending.tasks.push(task);
        if self.inflight.is_empty() {
            self.progress_ns = monotonic_ns();
        }
        self.tasks_sent += 1;
        self.inflight.push_back(Held {
            task,
            position: self.tasks_sent,
        });
        Ok(())
    }

    pub(crate) fn flush(&mut self) {
        if self.pending.bytes.is_empty() {
            return;
        }
        let out = std::mem::replace(
            &mut self.pending,
            Outgoing {
                bytes: Vec::new(),
                fds: Vec::new(),
                tasks: Vec::new(),
            },
        );
        if let Some(outbox) = &self.outbox {
            // A send fails only when the writer gave up on a dead socket;
            // the reader reports the death.
            let _ = outbox.send(out);
        }
    }

    /// Sends SIGKILL (a thread worker is hung up on instead). The reader
    /// then sees end-of-file and reports it.
    pub(crate) fn kill(&mut self, reason: KillReason) {
        self.kill_reason.get_or_insert(reason);
        self.stop();
    }

    fn stop(&mut self) {
        match &mut self.runner {
            Runner::Process(Some(child)) => {
                let _ = child.kill();
            }
            Runner::Process(None) => {}
            Runner::Thread => {
                let _ = self.sock.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Its current task started more than `ns` before `now`.
    pub(crate) fn running_longer_than(&self, ns: u64, now: u64) -> bool {
        self.status
            .running()
            .is_some_and(|(_, started)| now.saturating_sub(started) > ns)
    }

    /// Tells it to finish what it holds, then exit; it gets no more tasks.
    pub(crate) fn retire(&mut self) {
        if !self.retiring {
            self.retiring = true;
            self.queue_control(Kind::Exit, 0);
        }
    }

    /// This worker as traces describe it; `ended_ns` if it has been reaped.
    pub(crate) fn record(&self, ended_ns: Option<u64>) -> crate::task::WorkerRecord {
        crate::task::WorkerRecord {
            slot: self.slot,
            pid: self.pid,
            started_ns: self.started_ns,
            ended_ns,
            cpu_ns: self.cpu_ns,
        }
    }

    /// Can take new tasks: not retiring, not killed, not gone.
    pub(crate) fn accepts_work(&self) -> bool {
        !self.retiring && self.alive()
    }

    /// Neither killed nor gone: it will run what it holds.
    pub(crate) fn alive(&self) -> bool {
        self.kill_reason.is_none() && !self.gone
    }

    /// Called once the reader has seen the end of the stream: waits for the
    /// process on a thread of its own (a worker closing its socket may take
    /// a moment to exit, and its real exit status matters), giving it
    /// [`EXIT_GRACE`] before SIGKILL, then reports [`Event::Reaped`]. A
    /// thread worker is reported at once: there is nothing to wait for.
    pub(crate) fn start_reaping(&mut self, events: &Sender<Event>) {
        if self.gone {
            return;
        }
        self.gone = true;
        self.outbox = None;
        let mut child = match &mut self.runner {
            Runner::Process(child) => match child.take() {
                Some(child) => child,
                None => return,
            },
            Runner::Thread => {
                let _ = events.send(Event::Reaped(self.id, None));
                return;
            }
        };
        let (id, reaped) = (self.id, events.clone());
        let reap = move || {
            let deadline = std::time::Instant::now() + EXIT_GRACE;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    _ => {
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            };
            let _ = reaped.send(Event::Reaped(id, status));
        };
        if let Err(e) = std::thread::Builder::new()
            .name("shoal-reaper".into())
            .spawn(reap)
        {
            // Out of threads: report without the status rather than hang.
            eprintln!("shoal: could not start a reaper thread: {e}");
            let _ = events.send(Event::Reaped(self.id, None));
        }
    }

    /// SIGKILL (or a hang-up) for a worker that broke the protocol:
    /// handled as a crash.
    pub(crate) fn kill_as_crashed(&mut self) {
        self.stop();
    }

    /// Joins its threads (they end once the socket is closed, the outbox
    /// dropped and the process gone).
    pub(crate) fn join_threads(&mut self) {
        self.outbox = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    /// A worker dropped without having been reaped (the pool failed to
    /// start, or the scheduler stopped abnormally): kill it, wait for it,
    /// and join its threads, so no zombie or thread is left behind.
    fn drop(&mut self) {
        if let Runner::Process(Some(child)) = &mut self.runner {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.join_threads();
    }
}

/// A pidfd for `pid` (our unreaped child), if the kernel has them.
fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on the pid of a child we have not reaped.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a new descriptor nothing else owns, if the call succeeded.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// Blocks until the child `pid` has exited, without reaping it (the reaper
/// collects its status). By pidfd where the kernel has them, so a pid
/// reaped and reused meanwhile is never mistaken for it.
fn wait_for_exit(pid: u32, pidfd: Option<OwnedFd>) {
    let (idtype, id) = match &pidfd {
        Some(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        None => (libc::P_PID, pid as libc::id_t),
    };
    loop {
        // SAFETY: an all-zero siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child (or its pidfd), into a valid
        // siginfo_t; WNOWAIT leaves it to be reaped by the reaper.
        let rc = unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // ECHILD: already reaped. EINVAL: P_PIDFD unknown to this kernel.
            Some(libc::EINVAL) if pidfd.is_some() => return wait_for_exit(pid, None),
            _ => return,
        }
    }
}

fn read_loop(id: WorkerId, sock: UnixStream, events: Sender<Event>) {
    let mut decoder = Decoder::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut receiver = FdReceiver::default();
    let mut fds = Vec::new();
    loop {
        let n = match receiver.recv(sock.as_raw_fd(), &mut chunk, 0, &mut fds) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    eprintln!("shoal: {e}; the worker will be replaced");
                    let _ = events.send(Event::BadStream(id));
                    return;
                }
                break;
            }
        };
        decoder.feed_fds(fds.drain(..));
        decoder.feed(&chunk[..n]);
        let mut frames = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("shoal: bad frame from a worker ({e}); it will be replaced");
                    let _ = events.send(Event::Frames(id, frames));
                    let _ = events.send(Event::BadStream(id));
                    return;
                }
            }
        }
        if !frames.is_empty() && events.send(Event::Frames(id, frames)).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Gone(id));
}

/// A write that failed because the worker is gone (the reader reports
/// that) rather than because of what was written.
fn peer_gone(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
    )
}

fn write_loop(
    id: WorkerId,
    mut sock: UnixStream,
    outbox: Receiver<Outgoing>,
    events: Sender<Event>,
) {
    while let Ok(mut out) = outbox.recv() {
        // Coalesce whatever else is queued into the same write.
        while let Ok(more) = outbox.try_recv() {
            out.bytes.extend_from_slice(&more.bytes);
            out.fds.extend(more.fds);
            out.tasks.extend(more.tasks);
        }
        let sent = if out.fds.is_empty() {
            sock.write_all(&out.bytes)
        } else {
            send_all_with_fds(sock.as_raw_fd(), &out.bytes, &out.fds)
        };
        // Our references to the descriptors go here; the worker has its own.
        drop(out.fds);
        if let Err(e) = sent {
            if !peer_gone(&e) {
                // The worker may be alive and waiting for the rest of a
                // frame: the scheduler fails these tasks and replaces it.
                let _ = events.send(Event::SendFailed(id, out.tasks, e.to_string()));
            }
            // Drain until hung up.
            while outbox.recv().is_ok() {}
            return;
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}
