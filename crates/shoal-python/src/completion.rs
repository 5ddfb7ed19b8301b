//! What the engine hands Python about finished tasks and workers: typed
//! objects, so the Python side reads names (`c.outcome == Outcome.Lost`,
//! `c.pid`) rather than integer codes and positions in tuples.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_core::{BrokenPool, ExitInfo, RunInfo as CoreRunInfo, Stream as CoreStream};

use crate::shm::fd_list;

/// How a task ended.
#[pyclass(eq, eq_int, frozen, hash, from_py_object, module = "shoal._shoal")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// The function returned; `payload` is its result.
    Done,
    /// The function raised; `payload` is the pickled `(exception, traceback)`.
    Failed,
    /// The worker died while running it (`pid`, `exitcode`, `signal`).
    Lost,
    /// It ran past its timeout (`timeout` seconds); its worker was stopped.
    TimedOut,
    /// Its worker went over `max_memory` (`rss`, `limit`) and was killed.
    OverMemory,
    /// Cancelled, or the pool was terminated.
    Cancelled,
    /// The pool's initializer raised; `payload` is the pickled exception.
    InitFailed,
    /// Workers keep dying before they are ready (`pid`, `exitcode`, `signal`
    /// of the last one).
    CannotStart,
    /// The engine could not run it (it could not be sent to a worker, or the
    /// engine itself failed); `payload` is the message saying why.
    Error,
}

/// Where and how a task ran, for traces.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct RunInfo {
    slot: usize,
    pid: u32,
    /// `CLOCK_MONOTONIC` ns when the task started.
    start_ns: u64,
    deser_ns: u64,
    result_ser_ns: u64,
}

#[pymethods]
impl RunInfo {
    /// A run as a set of workers written in Python reports it.
    #[new]
    fn new(slot: usize, pid: u32, start_ns: u64, deser_ns: u64, result_ser_ns: u64) -> Self {
        RunInfo {
            slot,
            pid,
            start_ns,
            deser_ns,
            result_ser_ns,
        }
    }
}

impl From<CoreRunInfo> for RunInfo {
    fn from(run: CoreRunInfo) -> Self {
        RunInfo {
            slot: run.slot,
            pid: run.pid,
            start_ns: run.timing.start_ns,
            deser_ns: run.timing.deser_ns,
            result_ser_ns: run.timing.result_ser_ns,
        }
    }
}

/// The end of one task. Built by the engine; a set of workers written in
/// Python (a thread pool's hand-off, the ranks of an MPI job) builds them too.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct Completion {
    task_id: u64,
    outcome: Outcome,
    /// `Done`: the result, `bytes` or `(bytes, [Fd])` when parts of it are in
    /// shared memory (or the value itself, from workers that do not pickle);
    /// `Failed`, `InitFailed`: the pickled exception; otherwise None.
    payload: Py<PyAny>,
    /// Nanoseconds the function ran (0 if it did not run).
    duration_ns: u64,
    /// The worker process concerned, where there is one.
    pid: Option<u32>,
    exitcode: Option<i32>,
    signal: Option<i32>,
    /// `TimedOut`: the task's timeout in seconds, and whether the task had
    /// started (else its worker spent the timeout starting up or loading
    /// the function).
    timeout: Option<f64>,
    started: Option<bool>,
    /// `OverMemory`: the worker's own resident bytes, and the limit.
    rss: Option<u64>,
    limit: Option<u64>,
    /// Set when the engine traces and a worker answered.
    run: Option<Py<RunInfo>>,
}

#[pymethods]
impl Completion {
    #[new]
    #[pyo3(signature = (
        task_id, outcome, payload=None, duration_ns=0, *,
        pid=None, exitcode=None, signal=None, timeout=None, started=None, rss=None, limit=None,
        run=None
    ))]
    #[allow(clippy::too_many_arguments)] // keyword arguments, each optional
    fn new(
        py: Python<'_>,
        task_id: u64,
        outcome: Outcome,
        payload: Option<Py<PyAny>>,
        duration_ns: u64,
        pid: Option<u32>,
        exitcode: Option<i32>,
        signal: Option<i32>,
        timeout: Option<f64>,
        started: Option<bool>,
        rss: Option<u64>,
        limit: Option<u64>,
        run: Option<Py<RunInfo>>,
    ) -> Self {
        Completion {
            task_id,
            outcome,
            payload: payload.unwrap_or_else(|| py.None()),
            duration_ns,
            pid,
            exitcode,
            signal,
            timeout,
            started,
            rss,
            limit,
            run,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Completion(task_id={}, outcome={:?})",
            self.task_id, self.outcome
        )
    }
}

impl Completion {
    fn empty(py: Python<'_>, task_id: u64, outcome: Outcome, duration_ns: u64) -> Self {
        Completion {
            task_id,
            outcome,
            payload: py.None(),
            duration_ns,
            pid: None,
            exitcode: None,
            signal: None,
            timeout: None,
            started: None,
            rss: None,
            limit: None,
            run: None,
        }
    }

    fn with_exit(mut self, exit: ExitInfo) -> Self {
        self.pid = Some(exit.pid);
        self.exitcode = exit.code;
        self.signal = exit.signal;
        self
    }

    /// The Python form of an engine completion; `trace`: keep where it ran.
    pub(crate) fn from_core(
        py: Python<'_>,
        c: shoal_core::Completion,
        trace: bool,
    ) -> PyResult<Completion> {
        use shoal_core::Outcome as Core;
        let bytes = |body: &[u8]| PyBytes::new(py, body).into_any().unbind();
        let mut out = match c.outcome {
            Core::Done(result) => {
                let mut done = Completion::empty(py, c.task, Outcome::Done, c.duration_ns);
                done.payload = crate::engine::payload_object(py, result)?.unbind();
                done
            }
            Core::Failed(body) => {
                let mut failed = Completion::empty(py, c.task, Outcome::Failed, c.duration_ns);
                failed.payload = bytes(&body);
                failed
            }
            Core::Lost(exit) => {
                Completion::empty(py, c.task, Outcome::Lost, c.duration_ns).with_exit(exit)
            }
            Core::TimedOut {
                pid,
                timeout,
                started,
            } => {
                let mut timed_out = Completion::empty(py, c.task, Outcome::TimedOut, c.duration_ns);
                timed_out.pid = Some(pid);
                timed_out.timeout = Some(timeout.as_secs_f64());
                timed_out.started = Some(started);
                timed_out
            }
            Core::OverMemory { pid, rss, limit } => {
                let mut over = Completion::empty(py, c.task, Outcome::OverMemory, c.duration_ns);
                over.pid = Some(pid);
                over.rss = Some(rss);
                over.limit = Some(limit);
                over
            }
            Core::Cancelled => Completion::empty(py, c.task, Outcome::Cancelled, c.duration_ns),
            Core::Error(why) => {
                let mut error = Completion::empty(py, c.task, Outcome::Error, c.duration_ns);
                error.payload = why.into_pyobject(py)?.into_any().unbind();
                error
            }
            Core::Broken(BrokenPool::InitializerFailed(body)) => {
                let mut init = Completion::empty(py, c.task, Outcome::InitFailed, c.duration_ns);
                init.payload = bytes(&body);
                init
            }
            Core::Broken(BrokenPool::WorkersCannotStart(exit)) => {
                Completion::empty(py, c.task, Outcome::CannotStart, c.duration_ns).with_exit(exit)
            }
        };
        if trace {
            if let Some(run) = c.run {
                out.run = Some(Py::new(py, RunInfo::from(run))?);
            }
        }
        Ok(out)
    }
}

/// Which of a worker's outputs a piece of text came from.
#[pyclass(eq, eq_int, frozen, hash, from_py_object, module = "shoal._shoal")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
    /// A pickled `logging` record.
    Log,
}

impl From<CoreStream> for Stream {
    fn from(stream: CoreStream) -> Self {
        match stream {
            CoreStream::Stdout => Stream::Stdout,
            CoreStream::Stderr => Stream::Stderr,
            CoreStream::Log => Stream::Log,
        }
    }
}

/// Whole lines a worker wrote, or one of its log records.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct WorkerOutput {
    /// The worker's slot, `0..workers`.
    slot: usize,
    pid: u32,
    stream: Stream,
    data: Py<PyBytes>,
}

impl WorkerOutput {
    pub(crate) fn from_core(py: Python<'_>, o: shoal_core::WorkerOutput) -> WorkerOutput {
        WorkerOutput {
            slot: o.slot,
            pid: o.pid,
            stream: o.stream.into(),
            data: PyBytes::new(py, &o.body).unbind(),
        }
    }
}

/// What one wait for completions found: workers' output (first in time)
/// and finished tasks.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct Batch {
    output: Py<pyo3::types::PyList>,
    done: Py<pyo3::types::PyList>,
}

impl Batch {
    pub(crate) fn from_core(
        py: Python<'_>,
        batch: shoal_core::Batch,
        trace: bool,
    ) -> PyResult<Batch> {
        let done = batch
            .done
            .into_iter()
            .map(|c| Completion::from_core(py, c, trace))
            .collect::<PyResult<Vec<_>>>()?;
        let output = batch
            .output
            .into_iter()
            .map(|o| WorkerOutput::from_core(py, o));
        Ok(Batch {
            output: pyo3::types::PyList::new(py, output)?.unbind(),
            done: pyo3::types::PyList::new(py, done)?.unbind(),
        })
    }

    pub(crate) fn empty(py: Python<'_>) -> Batch {
        Batch {
            output: pyo3::types::PyList::empty(py).unbind(),
            done: pyo3::types::PyList::empty(py).unbind(),
        }
    }
}

/// A worker process the engine ran, alive or ended, for traces.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct WorkerRecord {
    slot: usize,
    pid: u32,
    /// `CLOCK_MONOTONIC` ns when it started, and when it was reaped.
    started_ns: u64,
    ended_ns: Option<u64>,
    /// CPU time it used, ns.
    cpu_ns: u64,
}

impl From<shoal_core::WorkerRecord> for WorkerRecord {
    fn from(r: shoal_core::WorkerRecord) -> Self {
        WorkerRecord {
            slot: r.slot,
            pid: r.pid,
            started_ns: r.started_ns,
            ended_ns: r.ended_ns,
            cpu_ns: r.cpu_ns,
        }
    }
}

/// `fds` of a received frame as Python sees them: None when none came (the
/// common case), else a list of `Fd`s.
pub(crate) fn fds_object(
    py: Python<'_>,
    fds: Vec<shoal_core::fds::SharedFd>,
) -> PyResult<Option<Py<pyo3::types::PyList>>> {
    if fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(fd_list(py, fds)?.unbind()))
}
