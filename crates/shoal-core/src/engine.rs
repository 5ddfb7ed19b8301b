//! The engine's public handle: start it, submit tasks, take completions,
//! close or terminate. Every method is cheap and thread-safe; the work
//! happens on the scheduler thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::completions::Completions;
pub use crate::completions::{Batch, Next};
use crate::error::{CoreError, Result};
use crate::frame::MAX_BODY;
use crate::launch::Launch;
use crate::scheduler::{EngineConfig, Event, Roster, Scheduler};
use crate::task::{Payload, Submission};

pub struct Engine {
    events: Sender<Event>,
    completions: Arc<Completions>,
    roster: Arc<Mutex<Roster>>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the scheduler thread and the workers. Fails if the workers
    /// cannot be started at all (e.g. the interpreter path is wrong).
    pub fn start(config: EngineConfig) -> Result<Engine> {
        if config.workers == 0 {
            return Err(CoreError::Config("a pool needs at least one worker".into()));
        }
        if matches!(config.launch, Launch::Thread(_)) && config.max_memory.is_some() {
            return Err(CoreError::Config(
                "max_memory limits worker processes; thread workers share this process's memory"
                    .into(),
            ));
        }
        if config.max_tasks_per_child == Some(0) {
            return Err(CoreError::Config(
                "max_tasks_per_child must be at least 1".into(),
            ));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let completions = Arc::new(Completions::default());
        let roster = Arc::new(Mutex::new(Roster::default()));
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let mut scheduler =
            Scheduler::new(config, tx.clone(), rx, completions.clone(), roster.clone());
        // Workers are spawned from the scheduler thread: PR_SET_PDEATHSIG
        // fires when the *thread* that forked exits, and this one lives as
        // long as the pool.
        let thread = std::thread::Builder::new()
            .name("shoal-scheduler".into())
            .spawn(move || match scheduler.start_workers() {
                Ok(()) => {
                    let _ = started_tx.send(Ok(()));
                    scheduler.run();
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| CoreError::io("start scheduler thread", e))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(CoreError::Config(
                    "the scheduler thread stopped at start".into(),
                ));
            }
        }
        Ok(Engine {
            events: tx,
            completions,
            roster,
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, ev: Event) -> Result<()> {
        self.events.send(ev).map_err(|_| CoreError::Closed)
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(CoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Makes a function known under `id`; tasks name it by id.
    pub fn register_function(&self, id: u64, body: impl Into<Payload>) -> Result<()> {
        let body = body.into();
        self.ensure_open()?;
        check_size(body.body.len())?;
        self.send(Event::RegisterFn(id, body))
    }

    /// The owner is done with `id`; it is dropped once its tasks finish.
    pub fn release_function(&self, id: u64) {
        let _ = self.send(Event::ReleaseFn(id));
    }

    pub fn submit(&self, submission: Submission) -> Result<()> {
        self.ensure_open()?;
        for (_, payload) in &submission.tasks {
            check_size(payload.body.len())?;
        }
        self.send(Event::Submit(submission))
    }

    /// Cancels tasks: they complete as cancelled. Tasks not yet sent to a
    /// worker never run. With `stop_running`, a task already running is
    /// stopped by killing its worker (a new one takes its place), and tasks
    /// queued at a worker are dropped when they come back; without it,
    /// those are left to finish and complete normally.
    pub fn cancel(&self, tasks: Vec<u64>, stop_running: bool) {
        let _ = self.send(Event::Cancel(tasks, stop_running));
    }

    /// Cancels those of `tasks` that no worker holds yet (they complete as
    /// cancelled, never having run) and returns them; the others are left
    /// alone. A future's `cancel()`: it succeeds only for a task not yet
    /// handed to a worker. Empty once the scheduler has stopped.
    pub fn withdraw(&self, tasks: Vec<u64>) -> Vec<u64> {
        self.ask(|reply| Event::Withdraw(tasks, reply))
    }

    /// Those of `tasks` that a worker holds now: running, or queued at it
    /// behind the task it runs. Empty once the scheduler has stopped.
    pub fn held(&self, tasks: Vec<u64>) -> Vec<u64> {
        self.ask(|reply| Event::Held(tasks, reply))
    }

    /// Sends the scheduler a question and waits for its answer (it answers
    /// every event it takes; if it has stopped, the reply channel closes).
    fn ask(&self, event: impl FnOnce(Sender<Vec<u64>>) -> Event) -> Vec<u64> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.send(event(tx)).is_err() {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }

    /// Waits up to `timeout` (forever if `None`) for completed tasks.
    pub fn next_completions(&self, timeout: Option<Duration>) -> Next {
        self.completions.wait(timeout.map(|t| Instant::now() + t))
    }

    /// Every worker process this engine has run (up to the last 10,000
    /// ended ones), in the order they started.
    pub fn workers(&self) -> Vec<crate::task::WorkerRecord> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.send(Event::Workers(tx)).is_ok() {
            if let Ok(records) = rx.recv() {
                return records;
            }
        }
        // The scheduler has stopped (or is stopping): wait for its last word.
        self.join(None);
        self.roster().at_stop.clone().unwrap_or_default()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.roster().pids.clone()
    }

    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No new submissions; workers exit once every task has finished.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.send(Event::Close);
        }
    }

    /// Kills the workers now; unfinished tasks complete as cancelled.
    pub fn terminate(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.send(Event::Terminate);
    }

    /// Waits for the scheduler thread to stop. Returns false on timeout.
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut guard = self.thread.lock().unwrap_or_else(|e| e.into_inner());
            let Some(handle) = guard.as_ref() else {
                return true;
            };
            if handle.is_finished() {
                if let Some(handle) = guard.take() {
                    let _ = handle.join();
                }
                return true;
            }
            drop(guard);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.terminate();
        self.join(None);
    }
}

fn check_size(len: usize) -> Result<()> {
    if len > MAX_BODY {
        return Err(crate::error::FrameError::TooLarge {
            len: len as u64,
            max: MAX_BODY as u64,
        }
        .into());
    }
    Ok(())
}
