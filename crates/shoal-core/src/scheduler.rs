//! The scheduler: one engine thread that owns the task queue, the record of
//! which worker holds which task, retries, timeouts and worker replacement.
//! It never touches Python; everything reaches it as an [`Event`].
//!
//! Dispatch keeps a small window of tasks in flight per worker, sized from
//! measured task durations: about [`WINDOW_TARGET_NS`] of work, so tiny
//! tasks stream through without a round trip each, and at least one task
//! queued behind the running one, so a worker never waits for its answer to
//! reach this thread and the next task to come back (on a machine whose
//! cores the workers keep busy, that trip waits for a core, for up to a few
//! milliseconds). No worker hoards work another could start: once nothing
//! is left to send, a worker with nothing to do takes back a task queued
//! at another, before it starts ([`StatusPage::take_back`]).
//!
//! [`StatusPage::take_back`]: crate::status::StatusPage::take_back

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::completions::Completions;
use crate::event::{Event, EventReceiver, WorkerId};
use crate::frame::{Frame, Kind};
use crate::launch::Launch;
use crate::memory::rss_bytes;
use crate::task::{
    BrokenPool, Completion, ExitInfo, Outcome, Payload, RunInfo, Stream, Submission, TaskOptions,
    WorkerOutput, WorkerRecord,
};
use crate::timing::monotonic_ns;
use crate::timing::RunTiming;
use crate::worker::{KillReason, WorkerHandle};

/// Work kept queued at each worker, in nanoseconds of measured run time.
const WINDOW_TARGET_NS: u64 = 2_000_000;
/// Most tasks in flight to one worker.
const MAX_WINDOW: usize = 512;
/// Workers dying before `Ready` this many times in a row break the pool.
const MAX_START_FAILURES: u32 = 3;
/// How often running tasks with a timeout are checked.
const TIMEOUT_POLL: Duration = Duration::from_millis(20);
/// How often workers' memory is checked when the pool has `max_memory`.
const MEMORY_POLL: Duration = Duration::from_millis(100);
/// Ended workers remembered for traces (a pool recycling workers after
/// every task must not grow without bound).
const MAX_ENDED_RECORDS: usize = 10_000;

/// What the scheduler publishes about its workers for the engine's
/// callers to read without asking it.
#[derive(Default)]
pub(crate) struct Roster {
    /// Current workers' pids, sorted.
    pub(crate) pids: Vec<u32>,
    /// Every worker's record, stored once the scheduler has stopped.
    pub(crate) at_stop: Option<Vec<WorkerRecord>>,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    /// How each worker is started: a process or a thread.
    pub launch: Launch,
    /// Body of the `Init` frame every worker receives first.
    pub init: Payload,
    pub max_tasks_per_child: Option<u64>,
    /// Resident memory a worker may use, in bytes. Over it, a worker is
    /// killed mid-task (the task fails, or is retried) or, between tasks,
    /// replaced.
    pub max_memory: Option<u64>,
}

struct TaskState {
    fn_id: u64,
    payload: Payload,
    options: TaskOptions,
    /// Worker deaths while running this task so far.
    failures: u32,
    /// Holding worker, if dispatched.
    worker: Option<WorkerId>,
}

struct FnState {
    body: Payload,
    /// Tasks using it that have not completed.
    live_tasks: usize,
    /// The owner released it; drop when `live_tasks` reaches 0.
    released: bool,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Running,
    /// No new work; stop once every task is done.
    Closing,
    /// Workers told to exit or killed; stop once all are gone.
    Stopping,
}

pub(crate) struct Scheduler {
    config: EngineConfig,
    events_tx: Sender<Event>,
    events: EventReceiver,
    completions: Arc<Completions>,
    roster: Arc<std::sync::Mutex<Roster>>,
    workers: HashMap<WorkerId, WorkerHandle>,
    next_worker_id: WorkerId,
    queue: VecDeque<u64>,
    tasks: HashMap<u64, TaskState>,
    functions: HashMap<u64, FnState>,
    /// Mean task run time, smoothed; `None` until the first result.
    mean_task_ns: Option<f64>,
    start_failures: u32,
    broken: Option<BrokenPool>,
    phase: Phase,
    done: Vec<Completion>,
    output: Vec<WorkerOutput>,
    last_memory_check: Instant,
    ended: VecDeque<WorkerRecord>,
}

impl Scheduler {
    pub(crate) fn new(
        config: EngineConfig,
        events_tx: Sender<Event>,
        events: EventReceiver,
        completions: Arc<Completions>,
        roster: Arc<std::sync::Mutex<Roster>>,
    ) -> Scheduler {
        Scheduler {
            config,
            events_tx,
            events,
            completions,
            roster,
            workers: HashMap::new(),
            next_worker_id: 1,
            queue: VecDeque::new(),
            tasks: HashMap::new(),
            functions: HashMap::new(),
            mean_task_ns: None,
            start_failures: 0,
            broken: None,
            phase: Phase::Running,
            done: Vec::new(),
            output: Vec::new(),
            last_memory_check: Instant::now(),
            ended: VecDeque::new(),
        }
    }

    /// Starts the first workers; an error here means none could start.
    pub(crate) fn start_workers(&mut self) -> crate::error::Result<()> {
        for _ in 0..self.config.workers {
            self.spawn_one()?;
        }
        self.publish_pids();
        Ok(())
    }

    /// The scheduler's loop, until the pool has stopped. If it ever
    /// panics, the engine calls [`Scheduler::fail_after_panic`].
    pub(crate) fn run(&mut self) {
        loop {
            let first = if let Some(poll) = self.poll_interval() {
                match self.events.recv_timeout(poll) {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.events.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                }
            };
            if let Some(ev) = first {
                self.handle(ev);
            }
            while let Ok(ev) = self.events.try_recv() {
                self.handle(ev);
            }
            self.check_timeouts();
            self.check_memory();
            // Spawning successors can make room for more dispatch, and
            // dispatch can retire workers (maxtasksperchild): repeat until
            // neither changes anything. The process cap bounds the loop.
            while self.maintain_workers() {
                self.dispatch();
            }
            self.dispatch();
            self.publish();
            if self.phase == Phase::Stopping && self.workers.is_empty() {
                break;
            }
        }
        self.stopped();
    }

    /// Publishes the last word: every worker's record; the completions'
    /// end is published by the engine's thread as it ends.
    fn stopped(&self) {
        self.roster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .at_stop = Some(self.worker_records());
    }

    /// After [`Scheduler::run`] panicked: fails every task it knew of, and
    /// every task submitted until the pool is closed or terminated, with
    /// an error saying what happened; stops the workers. Nothing is left
    /// waiting.
    pub(crate) fn fail_after_panic(mut self, why: &str) {
        let message = format!(
            "shoal internal error: the engine's scheduler thread failed ({why}); this pool \
             cannot run tasks any more: start a new one (and please report this)"
        );
        let failed = |id: u64| Completion {
            task: id,
            outcome: Outcome::Error(message.clone()),
            duration_ns: 0,
            run: None,
        };
        let mut done: Vec<Completion> = std::mem::take(&mut self.done);
        done.extend(self.tasks.keys().copied().map(failed));
        self.tasks.clear();
        self.queue.clear();
        self.completions
            .push(done, std::mem::take(&mut self.output));
        for w in self.workers.values_mut() {
            w.kill(KillReason::Terminate);
        }
        self.roster.lock().unwrap_or_else(|e| e.into_inner()).pids = Vec::new();
        while let Ok(ev) = self.events.recv() {
            match ev {
                Event::Submit(sub) => {
                    let done = sub.tasks.iter().map(|(id, _)| failed(*id)).collect();
                    self.completions.push(done, Vec::new());
                }
                Event::Workers(reply) => {
                    let _ = reply.send(self.worker_records());
                }
                Event::Close | Event::Terminate => break,
                _ => {}
            }
        }
        self.stopped();
        // Dropping the workers kills and reaps them.
    }

    fn worker_records(&self) -> Vec<WorkerRecord> {
        let mut all: Vec<WorkerRecord> = self.ended.iter().copied().collect();
        all.extend(self.workers.values().map(|w| w.record(None)));
        all.sort_by_key(|r| r.started_ns);
        all
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Submit(sub) => self.submit(sub),
            Event::RegisterFn(id, body) => {
                self.functions.insert(
                    id,
                    FnState {
                        body,
                        live_tasks: 0,
                        released: false,
                    },
                );
            }
            Event::ReleaseFn(id) => {
                if let Some(f) = self.functions.get_mut(&id) {
                    f.released = true;
                }
                self.maybe_forget(id);
            }
            Event::Cancel(ids, stop_running) => self.cancel(ids, stop_running),
            Event::Withdraw(ids, reply) => {
                let withdrawn: Vec<u64> = ids
                    .into_iter()
                    .filter(|id| self.tasks.get(id).is_some_and(|t| t.worker.is_none()))
                    .collect();
                for &id in &withdrawn {
                    self.finish(id, Outcome::Cancelled);
                }
                let _ = reply.send(withdrawn);
            }
            Event::Held(ids, reply) => {
                let held = ids
                    .into_iter()
                    .filter(|id| self.tasks.get(id).is_some_and(|t| t.worker.is_some()))
                    .collect();
                let _ = reply.send(held);
            }
            Event::Close => {
                if self.phase == Phase::Running {
                    self.phase = Phase::Closing;
                }
            }
            Event::Terminate => self.terminate(),
            Event::Frames(wid, frames) => {
                for frame in frames {
                    self.on_frame(wid, frame);
                }
            }
            Event::Gone(wid) => self.on_gone(wid),
            Event::BadStream(wid) => {
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.kill_as_crashed();
                }
                self.on_gone(wid);
            }
            Event::Reaped(wid, status) => self.on_reaped(wid, status),
            Event::SendFailed(wid, tasks, why) => self.on_send_failed(wid, tasks, &why),
            #[cfg(test)]
            Event::Panic => panic!("a panic a test asked for"),
            Event::Workers(reply) => {
                let _ = reply.send(self.worker_records());
            }
        }
    }

    fn submit(&mut self, sub: Submission) {
        if let Some(f) = self.functions.get_mut(&sub.fn_id) {
            f.live_tasks += sub.tasks.len();
        }
        for (id, payload) in sub.tasks {
            self.tasks.insert(
                id,
                TaskState {
                    fn_id: sub.fn_id,
                    payload,
                    options: sub.options,
                    failures: 0,
                    worker: None,
                },
            );
            // A function that was never registered reaches the worker as an
            // unknown id, and the worker fails the task saying so.
            if let Some(broken) = self.broken.clone() {
                self.finish(id, Outcome::Broken(broken));
            } else {
                self.queue.push_back(id);
            }
        }
    }

    fn on_frame(&mut self, wid: WorkerId, frame: Frame) {
        match frame.kind {
            Kind::Ready => {
                self.start_failures = 0;
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.ready = true;
                    w.progress_ns = monotonic_ns();
                }
            }
            Kind::Done | Kind::Failed | Kind::Retryable => {
                let (task, mut body) = (frame.a, frame.body);
                let Some(w) = self.workers.get_mut(&wid) else {
                    return;
                };
                // Answers come in the order tasks were sent.
                if let Some(pos) = w.inflight.iter().position(|h| h.task == task) {
                    w.inflight.remove(pos);
                }
                w.progress_ns = monotonic_ns();
                let timing = RunTiming::split_from(&mut body).unwrap_or_default();
                w.cpu_ns = w.cpu_ns.max(timing.cpu_ns);
                let run = RunInfo {
                    slot: w.slot,
                    pid: w.pid,
                    timing,
                };
                self.observe_duration(frame.b);
                if frame.kind == Kind::Retryable && self.retry(task) {
                    return;
                }
                let outcome = if frame.kind == Kind::Done {
                    Outcome::Done(Payload {
                        body,
                        fds: frame.fds,
                    })
                } else {
                    Outcome::Failed(body)
                };
                self.finish_ran(task, outcome, frame.b, run);
            }
            Kind::Output | Kind::Log => {
                let Some(w) = self.workers.get(&wid) else {
                    return;
                };
                let stream = match (frame.kind, frame.a) {
                    (Kind::Log, _) => Stream::Log,
                    (_, 2) => Stream::Stderr,
                    _ => Stream::Stdout,
                };
                self.output.push(WorkerOutput {
                    slot: w.slot,
                    pid: w.pid,
                    stream,
                    body: frame.body,
                });
            }
            Kind::Retire => {
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.retiring = true;
                    w.left_over_memory = true;
                }
            }
            Kind::InitFailed => {
                self.break_pool(BrokenPool::InitializerFailed(frame.body));
            }
            // A worker sent a parent-to-worker kind: a protocol violation,
            // handled as a crash (its reader reports the end).
            Kind::Init | Kind::Func | Kind::Task | Kind::Forget | Kind::Exit => {
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.kill_as_crashed();
                }
            }
        }
    }

    /// Charges a failed run of `task` to its retries: requeues it and
    /// returns true if one was left.
    fn retry(&mut self, task: u64) -> bool {
        let Some(t) = self.tasks.get_mut(&task) else {
            return false;
        };
        t.worker = None;
        t.failures += 1;
        if t.failures > t.options.retries {
            return false;
        }
        self.queue.push_front(task);
        true
    }

    fn cancel(&mut self, ids: Vec<u64>, stop_running: bool) {
        for id in ids {
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            match task.worker {
                None => self.finish(id, Outcome::Cancelled),
                Some(_) if !stop_running => {}
                Some(wid) => {
                    // Withdrawn: the worker skips it if it has not started
                    // it. If it is running now, its worker is killed and
                    // the other tasks it holds are requeued. An answer that
                    // still comes finds no task and is dropped.
                    self.finish(id, Outcome::Cancelled);
                    if let Some(w) = self.workers.get_mut(&wid) {
                        w.status.revoke(id);
                        if let Some(pos) = w.inflight.iter().position(|h| h.task == id) {
                            w.inflight.remove(pos);
                        }
                        if w.status.running().is_some_and(|(t, _)| t == id) {
                            w.kill(KillReason::Cancel(id));
                        }
                    }
                }
            }
        }
    }

    fn observe_duration(&mut self, ns: u64) {
        let ns = ns as f64;
        self.mean_task_ns = Some(match self.mean_task_ns {
            None => ns,
            Some(mean) => mean * 0.8 + ns * 0.2,
        });
    }

    /// The worker's socket closed. Its process may still be finishing
    /// (Python closes the socket during shutdown), so it is reaped on a
    /// thread of its own and accounted for when [`Event::Reaped`] arrives.
    fn on_gone(&mut self, wid: WorkerId) {
        if let Some(w) = self.workers.get_mut(&wid) {
            w.start_reaping(&self.events_tx);
        }
    }

    /// A write to a worker failed, not because it had gone: the tasks in
    /// that write fail (sending them again would fail again), and the
    /// worker, which may hold part of a frame, is replaced; what else it
    /// held runs elsewhere.
    fn on_send_failed(&mut self, wid: WorkerId, tasks: Vec<u64>, why: &str) {
        let Some(w) = self.workers.get_mut(&wid) else {
            return;
        };
        eprintln!(
            "shoal: could not send tasks to worker process {} ({why}); it will be replaced",
            w.pid
        );
        let pid = w.pid;
        w.inflight.retain(|h| !tasks.contains(&h.task));
        w.kill(KillReason::LinkBroken);
        for task in tasks {
            self.finish(
                task,
                Outcome::Error(format!(
                    "it could not be sent to worker process {pid}: {why}"
                )),
            );
        }
    }

    fn on_reaped(&mut self, wid: WorkerId, status: Option<ExitStatus>) {
        let Some(mut w) = self.workers.remove(&wid) else {
            return;
        };
        w.join_threads();
        if self.ended.len() == MAX_ENDED_RECORDS {
            self.ended.pop_front();
        }
        self.ended.push_back(w.record(Some(monotonic_ns())));
        let running = w.status.running().map(|(task, _)| task);
        let pid = w.pid;
        let held: Vec<u64> = w.inflight.drain(..).map(|h| h.task).collect();
        let exit = exit_info(pid, status);
        self.publish_pids();

        // A worker that marked a task as started got through its start-up;
        // one that neither did that nor said Ready failed to start.
        let started = w.ready || running.is_some();
        if started {
            self.start_failures = 0;
        } else if !w.retiring && w.kill_reason.is_none() && self.phase != Phase::Stopping {
            self.start_failures += 1;
            if self.start_failures >= MAX_START_FAILURES {
                self.break_pool(BrokenPool::WorkersCannotStart(exit));
                return;
            }
        }
        let blamed = match w.kill_reason {
            // Killed because of one task: that task, if its answer did not
            // beat the kill; whatever else was running then is not at fault.
            // Killed for another reason: no task is to blame.
            Some(reason) => reason.task().filter(|task| held.contains(task)),
            // It left on its own, over its memory limit: what it held never ran.
            None if w.left_over_memory => None,
            // Otherwise the task marked as running (none, if that one had
            // been withdrawn); if none was marked but the worker had
            // started, the first one it held.
            None if started => match running {
                Some(task) => held.contains(&task).then_some(task),
                None => held.first().copied(),
            },
            None => None,
        };
        // Requeue the rest at the front, in their original order: they never
        // ran, or ran but their answers were lost with the worker.
        for &task in held.iter().rev() {
            if Some(task) == blamed {
                continue;
            }
            if let Some(t) = self.tasks.get_mut(&task) {
                t.worker = None;
                self.queue.push_front(task);
            }
        }
        let Some(task) = blamed else { return };
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        let timeout = t.options.timeout.unwrap_or_default();
        match w.kill_reason {
            Some(KillReason::Timeout(_)) => {
                let started = running == Some(task);
                self.finish(
                    task,
                    Outcome::TimedOut {
                        pid,
                        timeout,
                        started,
                    },
                );
            }
            Some(KillReason::Terminate | KillReason::Cancel(_) | KillReason::LinkBroken) => {
                self.finish(task, Outcome::Cancelled);
            }
            Some(KillReason::OverMemory { rss, .. }) => {
                if !self.retry(task) {
                    let limit = self.config.max_memory.unwrap_or_default();
                    self.finish(task, Outcome::OverMemory { pid, rss, limit });
                }
            }
            None => {
                if !self.retry(task) {
                    self.finish(task, Outcome::Lost(exit));
                }
            }
        }
    }

    fn break_pool(&mut self, why: BrokenPool) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(why.clone());
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.finish(id, Outcome::Broken(why.clone()));
        }
        self.queue.clear();
        for w in self.workers.values_mut() {
            w.kill(KillReason::Terminate);
        }
    }

    fn terminate(&mut self) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.finish(id, Outcome::Cancelled);
        }
        self.queue.clear();
        for w in self.workers.values_mut() {
            w.kill(KillReason::Terminate);
        }
        self.phase = Phase::Stopping;
    }

    /// Records the end of a task no worker answered for, and forgets it.
    fn finish(&mut self, id: u64, outcome: Outcome) {
        self.record_end(id, outcome, 0, None);
    }

    /// Records the end of a task its worker answered for, and forgets it.
    fn finish_ran(&mut self, id: u64, outcome: Outcome, duration_ns: u64, run: RunInfo) {
        self.record_end(id, outcome, duration_ns, Some(run));
    }

    fn record_end(&mut self, id: u64, outcome: Outcome, duration_ns: u64, run: Option<RunInfo>) {
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        if let Some(f) = self.functions.get_mut(&task.fn_id) {
            f.live_tasks = f.live_tasks.saturating_sub(1);
        }
        self.maybe_forget(task.fn_id);
        self.done.push(Completion {
            task: id,
            outcome,
            duration_ns,
            run,
        });
    }

    /// How long the loop may sleep without missing a deadline or a memory
    /// check; `None` when nothing needs watching.
    fn poll_interval(&self) -> Option<Duration> {
        if self.has_timed_tasks() {
            Some(TIMEOUT_POLL)
        } else {
            self.config.max_memory.map(|_| MEMORY_POLL)
        }
    }

    /// Kills a worker over `max_memory` that is running a task (the task is
    /// blamed) and retires one that is idle (nothing fails).
    fn check_memory(&mut self) {
        let Some(limit) = self.config.max_memory else {
            return;
        };
        if self.last_memory_check.elapsed() < MEMORY_POLL {
            return;
        }
        self.last_memory_check = Instant::now();
        let mut retired = false;
        for w in self.workers.values_mut() {
            if !w.accepts_work() || !w.ready {
                continue;
            }
            let Some(rss) = rss_bytes(Some(w.pid)).filter(|&rss| rss > limit) else {
                continue;
            };
            match w.status.running() {
                Some((task, _)) => w.kill(KillReason::OverMemory { task, rss }),
                None => {
                    w.retire();
                    w.flush();
                    retired = true;
                }
            }
        }
        if retired {
            self.publish_pids();
        }
    }

    fn maybe_forget(&mut self, fn_id: u64) {
        let Some(f) = self.functions.get(&fn_id) else {
            return;
        };
        if !f.released || f.live_tasks > 0 {
            return;
        }
        self.functions.remove(&fn_id);
        for w in self.workers.values_mut() {
            if w.known_fns.remove(&fn_id) {
                w.queue_control(Kind::Forget, fn_id);
            }
        }
    }

    fn has_timed_tasks(&self) -> bool {
        self.workers.values().any(|w| {
            w.inflight.iter().any(|h| {
                self.tasks
                    .get(&h.task)
                    .is_some_and(|t| t.options.timeout.is_some())
            })
        })
    }

    /// Kills a worker whose running task passed its timeout, and one that
    /// holds tasks but has run none of them for longer than the first one's
    /// timeout: it is stuck starting up (in the initializer) or loading the
    /// function.
    fn check_timeouts(&mut self) {
        let now = monotonic_ns();
        for w in self.workers.values_mut() {
            if w.kill_reason.is_some() {
                continue;
            }
            let (task, since) = match w.status.running() {
                Some(running) => running,
                None => match w.inflight.front() {
                    Some(first) => (first.task, w.progress_ns),
                    None => continue,
                },
            };
            let Some(timeout) = self.tasks.get(&task).and_then(|t| t.options.timeout) else {
                continue;
            };
            if now.saturating_sub(since) > timeout.as_nanos() as u64 {
                w.kill(KillReason::Timeout(task));
            }
        }
    }

    fn spawn_one(&mut self) -> crate::error::Result<()> {
        let id = self.next_worker_id;
        self.next_worker_id += 1;
        // The lowest slot no working worker holds.
        let slot = (0..)
            .find(|&s| {
                !self
                    .workers
                    .values()
                    .any(|w| w.slot == s && w.accepts_work())
            })
            .unwrap_or_default();
        let mut w = WorkerHandle::start(id, slot, &self.config.launch, &self.events_tx)?;
        // The engine checked the Init payload's size when it started.
        w.queue_parts(Kind::Init, id, slot as u64, &self.config.init)
            .map_err(|source| crate::error::CoreError::TooLarge {
                what: "the pool's initializer and its arguments",
                source,
            })?;
        w.flush();
        self.workers.insert(id, w);
        Ok(())
    }

    /// Keeps the number of working (not retiring) workers at the target,
    /// and stops them once a closing pool has no work left. Retiring workers
    /// still count towards a cap of twice the target, so a pool with
    /// `maxtasksperchild=1` never runs more than that many processes.
    /// Returns whether it started any.
    fn maintain_workers(&mut self) -> bool {
        if self.phase == Phase::Closing && self.tasks.is_empty() {
            for w in self.workers.values_mut() {
                w.retire();
                w.flush();
            }
            self.phase = Phase::Stopping;
        }
        if self.phase == Phase::Stopping || self.broken.is_some() {
            return false;
        }
        let working = self.workers.values().filter(|w| !w.retiring).count();
        let room = (2 * self.config.workers).saturating_sub(self.workers.len());
        let wanted = self.config.workers.saturating_sub(working).min(room);
        let mut spawned = false;
        for _ in 0..wanted {
            if let Err(e) = self.spawn_one() {
                // Could not start a replacement (out of processes or memory):
                // with no worker left, nothing could ever run.
                if self.workers.is_empty() {
                    eprintln!("shoal: {e}");
                    self.break_pool(BrokenPool::WorkersCannotStart(ExitInfo {
                        pid: 0,
                        code: None,
                        signal: None,
                    }));
                }
                break;
            }
            spawned = true;
        }
        if spawned {
            self.publish_pids();
        }
        spawned
    }

    /// Tasks to keep at each worker: one until durations are known (the
    /// first tasks may be long), then about [`WINDOW_TARGET_NS`] of work and
    /// never less than two.
    fn window(&self) -> usize {
        match self.mean_task_ns {
            None => 1,
            Some(mean) => {
                let w = (WINDOW_TARGET_NS as f64 / mean.max(1.0)).ceil() as usize;
                w.clamp(2, MAX_WINDOW)
            }
        }
    }

    fn dispatch(&mut self) {
        loop {
            self.send_queued();
            if !self.queue.is_empty() || !self.take_back_for_an_idle_worker() {
                break;
            }
        }
        for w in self.workers.values_mut() {
            w.flush();
        }
    }

    /// Nothing is left to send and a ready worker holds nothing: takes back
    /// the last task queued at the worker holding the most, and requeues
    /// it (for [`Scheduler::send_queued`] to give to the idle worker).
    /// Returns whether it did; it cannot once that worker has begun the
    /// task.
    fn take_back_for_an_idle_worker(&mut self) -> bool {
        let idle = self
            .workers
            .values()
            .any(|w| w.ready && w.accepts_work() && w.inflight.is_empty());
        if !idle {
            return false;
        }
        let Some(holder) = self
            .workers
            .values_mut()
            .filter(|w| w.inflight.len() >= 2 && w.alive())
            .max_by_key(|w| (w.inflight.len(), std::cmp::Reverse(w.id)))
        else {
            return false;
        };
        let Some(&last) = holder.inflight.back() else {
            return false;
        };
        if !holder.status.take_back(last.position) {
            return false;
        }
        holder.inflight.pop_back();
        if let Some(t) = self.tasks.get_mut(&last.task) {
            t.worker = None;
            self.queue.push_front(last.task);
        }
        true
    }

    /// Sends queued tasks to the workers with room in their window.
    fn send_queued(&mut self) {
        let window = self.window();
        // A worker whose current task has run well past the expected time is
        // not given more work to queue behind it: it may be a long task in a
        // map of short ones, and an idle worker should take the rest.
        let stall_ns = self
            .mean_task_ns
            .map_or(WINDOW_TARGET_NS, |m| (4.0 * m) as u64)
            .max(WINDOW_TARGET_NS);
        let now = monotonic_ns();
        let limit = self.config.max_tasks_per_child;
        let mut retired_any = false;
        let mut unsendable = Vec::new();
        while let Some(&task_id) = self.queue.front() {
            let Some(task) = self.tasks.get(&task_id) else {
                self.queue.pop_front(); // cancelled
                continue;
            };
            let best = self
                .workers
                .values_mut()
                .filter(|w| {
                    let cap = if w.running_longer_than(stall_ns, now) {
                        1
                    } else {
                        window
                    };
                    w.accepts_work() && w.inflight.len() < cap
                })
                .min_by_key(|w| (w.inflight.len(), w.id));
            let Some(w) = best else { break };
            self.queue.pop_front();
            if !w.known_fns.contains(&task.fn_id) {
                if let Some(f) = self.functions.get(&task.fn_id) {
                    // Sizes were checked when the function was registered.
                    if w.queue_parts(Kind::Func, task.fn_id, 0, &f.body).is_ok() {
                        w.known_fns.insert(task.fn_id);
                    }
                }
            }
            // Sizes were checked at submit; should one not fit after all,
            // the task fails instead of the scheduler.
            if let Err(e) = w.queue_task(task_id, task.fn_id, &task.payload) {
                unsendable.push((task_id, e));
                continue;
            }
            if limit.is_some_and(|max| w.tasks_sent >= max) {
                w.retire();
                retired_any = true;
            }
            let wid = w.id;
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.worker = Some(wid);
            }
        }
        for (task, e) in unsendable {
            let why = crate::error::CoreError::TooLarge {
                what: "the task",
                source: e,
            };
            self.finish(task, Outcome::Error(why.to_string()));
        }
        if retired_any {
            self.publish_pids();
        }
    }

    fn publish(&mut self) {
        if !self.done.is_empty() || !self.output.is_empty() {
            self.completions.push(
                std::mem::take(&mut self.done),
                std::mem::take(&mut self.output),
            );
        }
    }

    fn publish_pids(&self) {
        let mut pids: Vec<u32> = self
            .workers
            .values()
            .filter(|w| !w.retiring)
            .map(|w| w.pid)
            .collect();
        pids.sort_unstable();
        self.roster.lock().unwrap_or_else(|e| e.into_inner()).pids = pids;
    }
}

fn exit_info(pid: u32, status: Option<ExitStatus>) -> ExitInfo {
    ExitInfo {
        pid,
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
    }
}
