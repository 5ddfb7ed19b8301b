//! What reaches the scheduler thread: the engine's calls and its workers'
//! I/O threads report here, on one channel. A module of its own so that the
//! scheduler depends on the workers and the workers on nothing above them.

use std::process::ExitStatus;

use crossbeam_channel::{Receiver, Sender};

use crate::frame::Frame;
use crate::task::{Payload, Submission, WorkerRecord};

/// The engine's own number for a worker, never reused within an engine.
pub(crate) type WorkerId = u64;

pub(crate) enum Event {
    Submit(Submission),
    RegisterFn(u64, Payload),
    ReleaseFn(u64),
    /// Tasks to cancel; `true` also stops those already at a worker.
    Cancel(Vec<u64>, bool),
    /// Tasks to cancel if no worker holds them yet; the reply lists those
    /// cancelled.
    Withdraw(Vec<u64>, Sender<Vec<u64>>),
    /// The reply lists which of these tasks a worker holds (running, or
    /// queued at it).
    Held(Vec<u64>, Sender<Vec<u64>>),
    /// Finish every task, then stop the workers and the scheduler.
    Close,
    /// Kill the workers now; unfinished tasks end as cancelled.
    Terminate,
    Frames(WorkerId, Vec<Frame>),
    /// A worker's socket closed: it exited, was killed, or sent a bad frame
    /// (then it is killed).
    Gone(WorkerId),
    /// A worker sent bytes that are not a valid frame; its reader stopped.
    BadStream(WorkerId),
    /// Bytes for a worker could not be sent (not because it had gone: that
    /// is [`Event::Gone`]): the tasks whose frames they held, and why. Part
    /// of the write may have left, so the link is broken.
    SendFailed(WorkerId, Vec<u64>, String),
    /// A gone worker's process has been waited for.
    Reaped(WorkerId, Option<ExitStatus>),
    /// Every worker this engine has run, alive or ended, for traces.
    Workers(Sender<Vec<WorkerRecord>>),
    /// Makes the scheduler panic: how the tests check that a failure of
    /// the scheduler leaves no caller waiting.
    #[cfg(test)]
    Panic,
}

pub(crate) type EventReceiver = Receiver<Event>;
