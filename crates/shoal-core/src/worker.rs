//! The parent's handle on one worker process: the child, its status page,
//! and two I/O threads so that a slow or stuck worker blocks only itself.
//!
//! The reader turns bytes into frames and hands them to the scheduler a read
//! at a time; the writer drains every queued buffer into one `write`, so many
//! small tasks cost one system call.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::frame::{Decoder, Frame};
use crate::scheduler::Event;
use crate::spawn::{spawn_worker, WorkerCommand};
use crate::status::StatusPage;

/// The engine's own number for a worker, never reused within an engine.
pub(crate) type WorkerId = u64;

const READ_CHUNK: usize = 256 * 1024;

pub(crate) struct WorkerHandle {
    pub(crate) id: WorkerId,
    pub(crate) pid: u32,
    child: Child,
    pub(crate) status: StatusPage,
    /// Encoded frames for the writer thread; `None` once hung up.
    outbox: Option<Sender<Vec<u8>>>,
    /// Frames being batched for the next send.
    pending_out: Vec<u8>,
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
    /// Why the scheduler killed it, if it did.
    pub(crate) kill_reason: Option<KillReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// The task with this id passed its deadline.
    Timeout(u64),
    /// The pool is being terminated.
    Terminate,
}

impl WorkerHandle {
    pub(crate) fn start(
        id: WorkerId,
        command: &WorkerCommand,
        events: &Sender<Event>,
    ) -> Result<WorkerHandle> {
        let spawned = spawn_worker(command)?;
        let pid = spawned.child.id();
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let read_sock = spawned
            .sock
            .try_clone()
            .map_err(|e| crate::error::CoreError::io("dup worker socket", e))?;
        let events = events.clone();
        let reader = std::thread::Builder::new()
            .name(format!("shoal-read-{pid}"))
            .spawn(move || read_loop(id, read_sock, events))
            .map_err(|e| crate::error::CoreError::io("start reader thread", e))?;
        let write_sock = spawned.sock;
        let writer = std::thread::Builder::new()
            .name(format!("shoal-write-{pid}"))
            .spawn(move || write_loop(write_sock, rx))
            .map_err(|e| crate::error::CoreError::io("start writer thread", e))?;
        Ok(WorkerHandle {
            id,
            pid,
            child: spawned.child,
            status: spawned.status,
            outbox: Some(tx),
            pending_out: Vec::new(),
            threads: vec![reader, writer],
            inflight: VecDeque::new(),
            known_fns: HashSet::new(),
            tasks_sent: 0,
            ready: false,
            retiring: false,
            kill_reason: None,
        })
    }

    /// Queues a frame; it leaves with the next [`WorkerHandle::flush`].
    pub(crate) fn queue(&mut self, frame: &Frame) {
        // Bodies over 4 GiB were refused when the task was submitted.
        frame
            .encode_into(&mut self.pending_out)
            .expect("frame size checked at submit");
    }

    pub(crate) fn queue_parts(&mut self, kind: crate::frame::Kind, a: u64, b: u64, body: &[u8]) {
        crate::frame::encode_into(&mut self.pending_out, kind, a, b, body)
            .expect("frame size checked at submit");
    }

    pub(crate) fn flush(&mut self) {
        if self.pending_out.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.pending_out);
        if let Some(outbox) = &self.outbox {
            // A send fails only when the writer gave up on a dead socket;
            // the reader reports the death.
            let _ = outbox.send(buf);
        }
    }

    /// Sends SIGKILL. The reader then sees end-of-file and reports it.
    pub(crate) fn kill(&mut self, reason: KillReason) {
        self.kill_reason.get_or_insert(reason);
        let _ = self.child.kill();
    }

    /// Called once the reader has seen the end: reaps the child and joins
    /// the I/O threads. Returns how the process ended.
    pub(crate) fn reap(mut self) -> Option<ExitStatus> {
        self.outbox = None;
        // The socket is closed; if the process somehow lives on, end it so
        // that `wait` cannot block.
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        status
    }
}

fn read_loop(id: WorkerId, mut sock: UnixStream, events: Sender<Event>) {
    let mut decoder = Decoder::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let error = loop {
        let n = match sock.read(&mut chunk) {
            Ok(0) => break decoder.finish().err().map(|e| e.to_string()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(e.to_string()),
        };
        decoder.feed(&chunk[..n]);
        let mut frames = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    let _ = events.send(Event::Frames(id, frames));
                    let _ = events.send(Event::Gone(id, Some(format!("bad frame: {e}"))));
                    return;
                }
            }
        }
        if !frames.is_empty() && events.send(Event::Frames(id, frames)).is_err() {
            return;
        }
    };
    let _ = events.send(Event::Gone(id, error));
}

fn write_loop(mut sock: UnixStream, outbox: Receiver<Vec<u8>>) {
    while let Ok(mut buf) = outbox.recv() {
        // Coalesce whatever else is queued into the same write.
        while let Ok(more) = outbox.try_recv() {
            buf.extend_from_slice(&more);
        }
        if sock.write_all(&buf).is_err() {
            // The worker is gone; the reader reports it. Drain until hung up.
            while outbox.recv().is_ok() {}
            return;
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Receiver type re-exported for the scheduler's channel.
pub(crate) type EventReceiver = Receiver<Event>;
