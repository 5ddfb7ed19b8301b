//! The parent's handle on one worker (a process, or a thread of this
//! process): its status page, and two I/O threads so that a slow or stuck
//! worker blocks only itself.
//!
//! The reader turns bytes into frames and hands them to the scheduler a read
//! at a time; the writer drains every queued buffer into one `write`, so many
//! small tasks cost one system call.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::fds::{send_all_with_fds, FdReceiver, SharedFd};
use crate::frame::{Decoder, Frame};
use crate::launch::{launch_thread, Launch};
use crate::scheduler::Event;
use crate::spawn::spawn_worker;
use crate::status::StatusPage;
use crate::task::Payload;

/// The engine's own number for a worker, never reused within an engine.
pub(crate) type WorkerId = u64;

const READ_CHUNK: usize = 256 * 1024;
/// How long a worker whose socket closed may take to exit before SIGKILL.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) struct WorkerHandle {
    pub(crate) id: WorkerId,
    /// Its place in the pool, `0..workers`: a replacement takes the slot of
    /// the worker it replaces, so traces and output tags stay readable.
    pub(crate) slot: usize,
    /// The worker process's pid; this process's for a thread worker.
    pub(crate) pid: u32,
    runner: Runner,
    /// The socket has closed; the worker is being reaped.
    gone: bool,
    pub(crate) status: StatusPage,
    /// Encoded frames and the descriptors they carry, for the writer
    /// thread; `None` once hung up.
    outbox: Option<Sender<(Vec<u8>, Vec<SharedFd>)>>,
    /// Frames being batched for the next send.
    pending_out: Vec<u8>,
    /// Descriptors the batched frames carry, in frame order.
    pending_fds: Vec<SharedFd>,
    threads: Vec<JoinHandle<()>>,
    /// Task ids sent to this worker and not yet answered, in the order sent.
    pub(crate) inflight: VecDeque<u64>,
    /// Functions this worker has cached.
    pub(crate) known_fns: HashSet<u64>,
    /// Tasks sent over its lifetime (for `maxtasksperchild`).
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
    Thread(UnixStream),
}

impl Runner {
    fn stop(&mut self) {
        match self {
            Runner::Process(Some(child)) => {
                let _ = child.kill();
            }
            Runner::Process(None) => {}
            Runner::Thread(sock) => {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
        }
    }
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
}

impl KillReason {
    /// The one task a kill for this reason is about, if any.
    pub(crate) fn task(self) -> Option<u64> {
        match self {
            KillReason::Timeout(task)
            | KillReason::OverMemory { task, .. }
            | KillReason::Cancel(task) => Some(task),
            KillReason::Terminate => None,
        }
    }
}

impl WorkerHandle {
    pub(crate) fn start(
        id: WorkerId,
        slot: usize,
        launch: &Launch,
        events: &Sender<Event>,
    ) -> Result<WorkerHandle> {
        let dup = |sock: &UnixStream| {
            sock.try_clone()
                .map_err(|e| crate::error::CoreError::io("dup worker socket", e))
        };
        let (runner, sock, status, pid) = match launch {
            Launch::Process(command) => {
                let spawned = spawn_worker(command)?;
                let pid = spawned.child.id();
                let runner = Runner::Process(Some(spawned.child));
                (runner, spawned.sock, spawned.status, pid)
            }
            Launch::Thread(launcher) => {
                let (sock, status) = launch_thread(launcher, slot)?;
                (
                    Runner::Thread(dup(&sock)?),
                    sock,
                    status,
                    std::process::id(),
                )
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded::<(Vec<u8>, Vec<SharedFd>)>();
        let read_sock = dup(&sock)?;
        let events = events.clone();
        let reader = std::thread::Builder::new()
            .name(format!("shoal-read-{pid}"))
            .spawn(move || read_loop(id, read_sock, events))
            .map_err(|e| crate::error::CoreError::io("start reader thread", e))?;
        let writer = std::thread::Builder::new()
            .name(format!("shoal-write-{pid}"))
            .spawn(move || write_loop(sock, rx))
            .map_err(|e| crate::error::CoreError::io("start writer thread", e))?;
        Ok(WorkerHandle {
            id,
            slot,
            pid,
            runner,
            gone: false,
            status,
            outbox: Some(tx),
            pending_out: Vec::new(),
            pending_fds: Vec::new(),
            threads: vec![reader, writer],
            inflight: VecDeque::new(),
            known_fns: HashSet::new(),
            tasks_sent: 0,
            ready: false,
            retiring: false,
            left_over_memory: false,
            kill_reason: None,
            started_ns: crate::timing::monotonic_ns(),
            cpu_ns: 0,
        })
    }

    /// Queues a frame; it leaves with the next [`WorkerHandle::flush`].
    pub(crate) fn queue(&mut self, frame: &Frame) {
        // Bodies over 4 GiB were refused when the task was submitted.
        frame
            .encode_into(&mut self.pending_out)
            .expect("frame size checked at submit");
    }

    /// Queues a frame whose body and descriptors are `payload`.
    pub(crate) fn queue_parts(
        &mut self,
        kind: crate::frame::Kind,
        a: u64,
        b: u64,
        payload: &Payload,
    ) {
        let (body, fds) = (&payload.body, &payload.fds);
        crate::frame::encode_with_fds(&mut self.pending_out, kind, a, b, body, fds.len())
            .expect("frame size checked at submit");
        self.pending_fds.extend_from_slice(fds);
    }

    pub(crate) fn flush(&mut self) {
        if self.pending_out.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.pending_out);
        let fds = std::mem::take(&mut self.pending_fds);
        if let Some(outbox) = &self.outbox {
            // A send fails only when the writer gave up on a dead socket;
            // the reader reports the death.
            let _ = outbox.send((buf, fds));
        }
    }

    /// Sends SIGKILL (a thread worker is hung up on instead). The reader
    /// then sees end-of-file and reports it.
    pub(crate) fn kill(&mut self, reason: KillReason) {
        self.kill_reason.get_or_insert(reason);
        self.runner.stop();
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
            self.queue(&Frame::new(crate::frame::Kind::Exit, 0, 0, Vec::new()));
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
        !self.retiring && self.kill_reason.is_none() && !self.gone
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
            Runner::Thread(_) => {
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
        self.runner.stop();
    }

    /// Joins the I/O threads (both end once the socket is closed and the
    /// outbox dropped).
    pub(crate) fn join_threads(&mut self) {
        self.outbox = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
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

fn write_loop(mut sock: UnixStream, outbox: Receiver<(Vec<u8>, Vec<SharedFd>)>) {
    while let Ok((mut buf, mut fds)) = outbox.recv() {
        // Coalesce whatever else is queued into the same write.
        while let Ok((more, more_fds)) = outbox.try_recv() {
            buf.extend_from_slice(&more);
            fds.extend(more_fds);
        }
        let sent = if fds.is_empty() {
            sock.write_all(&buf)
        } else {
            send_all_with_fds(sock.as_raw_fd(), &buf, &fds)
        };
        // Our references to the descriptors go here; the worker has its own.
        drop(fds);
        if sent.is_err() {
            // The worker is gone; the reader reports it. Drain until hung up.
            while outbox.recv().is_ok() {}
            return;
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Receiver type re-exported for the scheduler's channel.
pub(crate) type EventReceiver = Receiver<Event>;
