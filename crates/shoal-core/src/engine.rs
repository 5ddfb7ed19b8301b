//! The engine's public handle: start it, submit tasks, take completions,
//! close or terminate. Every method is cheap and thread-safe; the work
//! happens on the scheduler thread.
//!
//! A child made by `fork()` inherits a copy of the handle but not the
//! scheduler thread: there, submitting fails with a clear error, and
//! dropping, closing, joining or terminating does nothing (see
//! [`crate::fork`]).

use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::completions::Completions;
pub use crate::completions::{Batch, Next};
use crate::error::{CoreError, FrameError, Result};
use crate::event::Event;
use crate::fork::Owner;
use crate::frame::{MAX_BODY, MAX_FRAME_FDS};
use crate::launch::Launch;
use crate::scheduler::{EngineConfig, Roster, Scheduler};
use crate::task::{Payload, Submission};

pub struct Engine {
    owner: Owner,
    /// Left alone (never dropped) in a forked child: its threads are not
    /// there, and its locks may have been held by them.
    parts: ManuallyDrop<Parts>,
}

struct Parts {
    events: Sender<Event>,
    completions: Arc<Completions>,
    roster: Arc<Mutex<Roster>>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Publishes the end of the completions however the scheduler thread ends,
/// so a waiting caller always wakes.
struct FinishOnDrop(Arc<Completions>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
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
        check_payload("the pool's initializer and its arguments", &config.init)?;
        let owner = Owner::here();
        let (tx, rx) = crossbeam_channel::unbounded();
        let completions = Arc::new(Completions::default());
        let roster = Arc::new(Mutex::new(Roster::default()));
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let mut scheduler =
            Scheduler::new(config, tx.clone(), rx, completions.clone(), roster.clone());
        let last_word = FinishOnDrop(completions.clone());
        // Workers are spawned from the scheduler thread: PR_SET_PDEATHSIG
        // fires when the *thread* that forked exits, and this one lives as
        // long as the pool.
        let thread = std::thread::Builder::new()
            .name("shoal-scheduler".into())
            .spawn(move || {
                let _last_word = last_word;
                // A failed start drops the scheduler, which kills and reaps
                // the workers it had started.
                match catch_unwind(AssertUnwindSafe(|| scheduler.start_workers())) {
                    Ok(Ok(())) => {
                        let _ = started_tx.send(Ok(()));
                    }
                    Ok(Err(e)) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                    Err(panic) => {
                        let _ = started_tx.send(Err(CoreError::Config(format!(
                            "shoal internal error starting the pool: {}",
                            panic_message(panic.as_ref())
                        ))));
                        return;
                    }
                }
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| scheduler.run())) {
                    let why = panic_message(panic.as_ref());
                    eprintln!("shoal: internal error: the scheduler thread panicked: {why}");
                    scheduler.fail_after_panic(&why);
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
            owner,
            parts: ManuallyDrop::new(Parts {
                events: tx,
                completions,
                roster,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Whether this is the process that started the engine (false in a
    /// child forked since: everything but submitting is then a no-op).
    fn at_home(&self) -> bool {
        self.owner.is_here()
    }

    fn send(&self, ev: Event) -> Result<()> {
        self.parts.events.send(ev).map_err(|_| CoreError::Closed)
    }

    fn ensure_open(&self) -> Result<()> {
        self.owner.check("pool")?;
        if self.parts.closed.load(Ordering::Acquire) {
            Err(CoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Makes a function known under `id`; tasks name it by id.
    pub fn register_function(&self, id: u64, body: impl Into<Payload>) -> Result<()> {
        let body = body.into();
        self.ensure_open()?;
        check_payload("the function", &body)?;
        self.send(Event::RegisterFn(id, body))
    }

    /// The owner is done with `id`; it is dropped once its tasks finish.
    pub fn release_function(&self, id: u64) {
        if self.at_home() {
            let _ = self.send(Event::ReleaseFn(id));
        }
    }

    /// Submits tasks. Every task is checked first: one that could not be
    /// sent to a worker (too large a pickle, too many descriptors) fails
    /// the whole call, and none of it is submitted.
    pub fn submit(&self, submission: Submission) -> Result<()> {
        self.ensure_open()?;
        for (_, payload) in &submission.tasks {
            check_payload("a task's arguments", payload)?;
        }
        self.send(Event::Submit(submission))
    }

    /// Cancels tasks: they complete as cancelled. Tasks not yet sent to a
    /// worker never run. With `stop_running`, a task a worker holds but has
    /// not started is withdrawn (the worker skips it), and one already
    /// running is stopped by killing its worker (a new one takes its
    /// place); without it, those are left to finish and complete normally.
    pub fn cancel(&self, tasks: Vec<u64>, stop_running: bool) {
        if self.at_home() {
            let _ = self.send(Event::Cancel(tasks, stop_running));
        }
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

    /// Waits up to `timeout` (forever if `None`) for completed tasks. In a
    /// forked child: `Finished` at once.
    pub fn next_completions(&self, timeout: Option<Duration>) -> Next {
        if !self.at_home() {
            return Next::Finished;
        }
        self.parts
            .completions
            .wait(timeout.map(|t| Instant::now() + t))
    }

    /// Every worker process this engine has run (up to the last 10,000
    /// ended ones), in the order they started.
    pub fn workers(&self) -> Vec<crate::task::WorkerRecord> {
        if !self.at_home() {
            return Vec::new();
        }
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
        if !self.at_home() {
            return Vec::new();
        }
        self.roster().pids.clone()
    }

    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.parts.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No new submissions; workers exit once every task has finished.
    pub fn close(&self) {
        if self.at_home() && !self.parts.closed.swap(true, Ordering::AcqRel) {
            let _ = self.send(Event::Close);
        }
    }

    /// Kills the workers now; unfinished tasks complete as cancelled.
    pub fn terminate(&self) {
        if self.at_home() {
            self.parts.closed.store(true, Ordering::Release);
            let _ = self.send(Event::Terminate);
        }
    }

    /// Waits for the scheduler thread to stop. Returns false on timeout.
    /// In a forked child there is nothing to wait for: true at once.
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        if !self.at_home() {
            return true;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut guard = self.parts.thread.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Makes the scheduler thread panic (tests of what follows).
    #[cfg(test)]
    fn inject_panic(&self) {
        let _ = self.send(Event::Panic);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.at_home() {
            // A forked child's copy: leave its memory alone (see `parts`).
            return;
        }
        self.terminate();
        self.join(None);
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.parts) };
    }
}

/// Checks that `payload` fits in one frame; the error says what to do.
fn check_payload(what: &'static str, payload: &Payload) -> Result<()> {
    let source = if payload.body.len() > MAX_BODY {
        FrameError::TooLarge {
            len: payload.body.len() as u64,
            max: MAX_BODY as u64,
        }
    } else if payload.fds.len() > MAX_FRAME_FDS {
        FrameError::TooManyFds(payload.fds.len())
    } else {
        return Ok(());
    };
    Err(CoreError::TooLarge { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::{ThreadLauncher, WorkerEnds};
    use crate::task::{Outcome, TaskOptions};
    use std::io::Read;

    /// Thread workers that never answer: they read until hung up on.
    fn silent_workers() -> ThreadLauncher {
        Arc::new(|ends: WorkerEnds| {
            std::thread::spawn(move || {
                let mut sock = std::os::unix::net::UnixStream::from(ends.sock);
                let _status = ends.status;
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
            });
            Ok(())
        })
    }

    fn engine() -> Engine {
        Engine::start(EngineConfig {
            workers: 2,
            launch: Launch::Thread(silent_workers()),
            init: Payload::default(),
            max_tasks_per_child: None,
            max_memory: None,
        })
        .unwrap()
    }

    fn submission(ids: std::ops::Range<u64>) -> Submission {
        Submission {
            fn_id: 1,
            tasks: ids.map(|id| (id, Payload::from(b"x".to_vec()))).collect(),
            options: TaskOptions::default(),
        }
    }

    /// Takes completions until `want` have come or the engine finished;
    /// gives up after 10 s rather than hang.
    fn take(engine: &Engine, want: usize) -> (Vec<crate::task::Completion>, bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            match engine.next_completions(Some(Duration::from_millis(50))) {
                Next::Batch(batch) => got.extend(batch.done),
                Next::TimedOut => {}
                Next::Finished => return (got, true),
            }
        }
        (got, false)
    }

    #[test]
    fn a_scheduler_that_panics_fails_every_task_and_leaves_nobody_waiting() {
        let engine = engine();
        engine.register_function(1, b"f".to_vec()).unwrap();
        engine.submit(submission(1..5)).unwrap();
        engine.inject_panic();
        engine.submit(submission(5..8)).unwrap();
        let (got, _) = take(&engine, 7);
        let mut ids: Vec<u64> = got.iter().map(|c| c.task).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..8).collect::<Vec<_>>());
        for c in &got {
            match &c.outcome {
                Outcome::Error(why) => assert!(why.contains("scheduler"), "{why}"),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        engine.close();
        assert!(engine.join(Some(Duration::from_secs(10))));
        assert_eq!(take(&engine, 1), (Vec::new(), true));
    }

    #[test]
    fn a_task_with_more_descriptors_than_a_frame_carries_is_refused_at_submit() {
        let engine = engine();
        let fd = crate::fds::SharedFd::new(crate::shm::create(1).unwrap());
        let payload = Payload {
            body: b"x".to_vec(),
            fds: vec![fd; MAX_FRAME_FDS + 1],
        };
        let err = engine
            .submit(Submission {
                fn_id: 1,
                tasks: vec![(1, payload)],
                options: TaskOptions::default(),
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("65536 shared-memory buffers"),
            "{err}"
        );
    }
}
