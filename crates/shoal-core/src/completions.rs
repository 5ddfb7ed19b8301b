//! Where finished tasks and workers' output wait for the caller: the
//! scheduler pushes batches, the binding's result thread takes them with the
//! GIL released.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::task::{Completion, WorkerOutput};

#[derive(Default)]
struct State {
    ready: Batch,
    /// The scheduler has stopped; nothing more will arrive.
    finished: bool,
}

#[derive(Default)]
pub(crate) struct Completions {
    state: Mutex<State>,
    cond: Condvar,
}

/// What the scheduler published since the last wait. Output comes before
/// the completions of the same pass, as the worker wrote it before it
/// answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub output: Vec<WorkerOutput>,
    pub done: Vec<Completion>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.output.is_empty() && self.done.is_empty()
    }
}

/// What a wait for completions found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Completed tasks or output, at least one of either.
    Batch(Batch),
    /// The deadline passed with nothing new.
    TimedOut,
    /// The engine has stopped and every completion has been taken.
    Finished,
}

impl Completions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later call into a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, done: Vec<Completion>, output: Vec<WorkerOutput>) {
        let mut state = self.lock();
        let was_empty = state.ready.is_empty();
        state.ready.done.extend(done);
        state.ready.output.extend(output);
        if was_empty {
            self.cond.notify_all();
        }
    }

    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.cond.notify_all();
    }

    /// Waits until something completes, the engine finishes, or `deadline`.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Next {
        let mut state = self.lock();
        loop {
            if !state.ready.is_empty() {
                return Next::Batch(std::mem::take(&mut state.ready));
            }
            if state.finished {
                return Next::Finished;
            }
            match deadline {
                None => state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Next::TimedOut;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}
