//! What goes in (tasks) and what comes out (completions).

use std::time::Duration;

use crate::fds::SharedFd;
use crate::timing::RunTiming;

/// A pickle and the descriptors (shared memory segments, sockets) its
/// out-of-band parts live in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub body: Vec<u8>,
    pub fds: Vec<SharedFd>,
}

impl From<Vec<u8>> for Payload {
    fn from(body: Vec<u8>) -> Payload {
        Payload {
            body,
            fds: Vec::new(),
        }
    }
}

/// A batch of tasks that share a function and options, as one `map` makes.
#[derive(Debug, Clone)]
pub struct Submission {
    pub fn_id: u64,
    /// Per task: its id (unique, non-zero) and pickled arguments.
    pub tasks: Vec<(u64, Payload)>,
    pub options: TaskOptions,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskOptions {
    /// A task running longer than this is stopped by killing its worker.
    pub timeout: Option<Duration>,
    /// How many times a task whose worker died is run again.
    pub retries: u32,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub pid: u32,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
}

/// The end of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function returned; the pickled result.
    Done(Payload),
    /// The function raised; the pickled exception (and traceback text).
    Failed(Vec<u8>),
    /// The worker died while running this task, and no retry was left.
    Lost(ExitInfo),
    /// The task ran past its timeout; its worker was killed. `started` is
    /// false when the worker had not started it: it spent the timeout
    /// starting up (the initializer) or loading the function.
    TimedOut {
        pid: u32,
        timeout: Duration,
        started: bool,
    },
    /// Its worker went over `max_memory` while running it and was killed
    /// (and no retry was left). Sizes in bytes.
    OverMemory { pid: u32, rss: u64, limit: u64 },
    /// Cancelled (before it started, or stopped while running), or the
    /// pool was terminated.
    Cancelled,
    /// The pool cannot run tasks: the initializer raised (pickled
    /// exception) or workers could not start.
    Broken(BrokenPool),
    /// The engine could not run the task: it could not be sent to a
    /// worker, or the engine itself failed. The message says why.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokenPool {
    /// The pickled exception the initializer raised.
    InitializerFailed(Vec<u8>),
    /// Workers keep dying before they are ready; the last one's end.
    WorkersCannotStart(ExitInfo),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub task: u64,
    pub outcome: Outcome,
    /// Time the function ran in the worker, in nanoseconds (0 if it did not).
    pub duration_ns: u64,
    /// Where and how it ran, if a worker answered for it.
    pub run: Option<RunInfo>,
}

/// The worker that answered for a task, and what it measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    pub slot: usize,
    pub pid: u32,
    pub timing: RunTiming,
}

/// One worker process of a pool, alive or ended, for traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerRecord {
    pub slot: usize,
    pub pid: u32,
    /// `CLOCK_MONOTONIC` ns when it was started, and when it was reaped.
    pub started_ns: u64,
    pub ended_ns: Option<u64>,
    /// CPU time it had used by its last answer, ns.
    pub cpu_ns: u64,
}

/// Where a worker's output goes in the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A pickled `logging` record.
    Log,
}

/// Something a worker wrote: whole lines of text, or one log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOutput {
    /// The worker's slot, `0..workers`; a replacement takes its
    /// predecessor's slot.
    pub slot: usize,
    pub pid: u32,
    pub stream: Stream,
    pub body: Vec<u8>,
}
