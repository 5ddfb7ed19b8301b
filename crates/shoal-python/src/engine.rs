//! `Engine`: a pool's handle on the scheduler.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shoal_core::link::WorkerLink;
use shoal_core::{
    BrokenPool, Completion, Engine, EngineConfig, Launch, Next, Outcome, Payload, RunInfo, Stream,
    Submission, TaskOptions, ThreadLauncher, WorkerCommand, WorkerEnds, WorkerOutput,
};

use crate::blocking::{seconds, wait_interruptibly};
use crate::errors::to_py;
use crate::link::PyLink;
use crate::shm::{fd_list, shared_fds};

/// A payload from Python: pickled bytes, or `(bytes, [Fd | Segment])` when
/// parts of it live in shared memory.
fn payload(item: &Bound<'_, PyAny>) -> PyResult<Payload> {
    if let Ok(bytes) = item.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec().into());
    }
    let (body, fds): (Vec<u8>, Bound<'_, PyAny>) = item.extract()?;
    Ok(Payload {
        body,
        fds: shared_fds(&fds)?,
    })
}

/// The Python form of a payload: bytes, or `(bytes, [Fd])`.
fn payload_object(py: Python<'_>, p: Payload) -> PyResult<Bound<'_, PyAny>> {
    let body = PyBytes::new(py, &p.body).into_any();
    if p.fds.is_empty() {
        return Ok(body);
    }
    Ok((body, fd_list(py, p.fds)?).into_pyobject(py)?.into_any())
}

/// Completion codes, exported as `OUTCOME_*` constants.
const DONE: u8 = 0;
const FAILED: u8 = 1;
const LOST: u8 = 2;
const TIMED_OUT: u8 = 3;
const CANCELLED: u8 = 4;
const INIT_FAILED: u8 = 5;
const CANNOT_START: u8 = 6;
const OVER_MEMORY: u8 = 7;
const ERROR: u8 = 8;

/// Where a worker's output goes, exported as `STREAM_*` constants.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const LOG: u8 = 3;

pub(crate) fn add_outcome_codes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("OUTCOME_DONE", DONE)?;
    m.add("OUTCOME_FAILED", FAILED)?;
    m.add("OUTCOME_LOST", LOST)?;
    m.add("OUTCOME_TIMED_OUT", TIMED_OUT)?;
    m.add("OUTCOME_CANCELLED", CANCELLED)?;
    m.add("OUTCOME_INIT_FAILED", INIT_FAILED)?;
    m.add("OUTCOME_CANNOT_START", CANNOT_START)?;
    m.add("OUTCOME_OVER_MEMORY", OVER_MEMORY)?;
    m.add("OUTCOME_ERROR", ERROR)?;
    m.add("STREAM_STDOUT", STDOUT)?;
    m.add("STREAM_STDERR", STDERR)?;
    m.add("STREAM_LOG", LOG)?;
    Ok(())
}

#[pyclass(frozen, name = "Engine", module = "shoal._shoal")]
pub(crate) struct PyEngine {
    inner: Engine,
    /// Completions carry where and how each task ran (for traces).
    trace: bool,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor
    #[pyo3(signature = (
        workers, program, args, env, init, max_tasks_per_child=None, max_memory=None, trace=false
    ))]
    fn new(
        py: Python<'_>,
        workers: usize,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        init: &Bound<'_, PyAny>,
        max_tasks_per_child: Option<u64>,
        max_memory: Option<u64>,
        trace: bool,
    ) -> PyResult<Self> {
        let config = EngineConfig {
            workers,
            launch: Launch::Process(WorkerCommand { program, args, env }),
            init: payload(init)?,
            max_tasks_per_child,
            max_memory,
        };
        let inner = py.detach(|| Engine::start(config)).map_err(to_py)?;
        Ok(PyEngine { inner, trace })
    }

    /// An engine whose workers are threads of this process: for each one
    /// it calls `start_worker(link, slot)`, which must start a thread that
    /// serves `link` (a `Link`) and return.
    #[staticmethod]
    #[pyo3(signature = (workers, start_worker, trace=false))]
    fn with_threads(
        py: Python<'_>,
        workers: usize,
        start_worker: Py<PyAny>,
        trace: bool,
    ) -> PyResult<Self> {
        let config = EngineConfig {
            workers,
            launch: Launch::Thread(thread_launcher(start_worker)),
            init: Payload::default(),
            max_tasks_per_child: None,
            max_memory: None,
        };
        let inner = py.detach(|| Engine::start(config)).map_err(to_py)?;
        Ok(PyEngine { inner, trace })
    }

    /// `body`: the pickled function, bytes or `(bytes, [Fd])`.
    fn register_function(&self, fn_id: u64, body: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .register_function(fn_id, payload(body)?)
            .map_err(to_py)
    }

    fn release_function(&self, fn_id: u64) {
        self.inner.release_function(fn_id);
    }

    /// Submits `payloads` as tasks numbered `first_id`, `first_id + 1`, ...
    #[pyo3(signature = (fn_id, first_id, payloads, timeout=None, retries=0))]
    fn submit(
        &self,
        fn_id: u64,
        first_id: u64,
        payloads: &Bound<'_, PyList>,
        timeout: Option<f64>,
        retries: u32,
    ) -> PyResult<()> {
        let mut tasks = Vec::with_capacity(payloads.len());
        for (i, item) in payloads.iter().enumerate() {
            tasks.push((first_id + i as u64, payload(&item)?));
        }
        self.send(fn_id, tasks, timeout, retries)
    }

    /// Submits one task (the `apply_async`/`submit` path: no list).
    #[pyo3(signature = (fn_id, task_id, payload, timeout=None, retries=0))]
    fn submit_one(
        &self,
        fn_id: u64,
        task_id: u64,
        payload: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        retries: u32,
    ) -> PyResult<()> {
        let task = self::payload(payload)?;
        self.send(fn_id, vec![(task_id, task)], timeout, retries)
    }

    /// Cancels tasks; `stop_running` also stops those a worker already has
    /// (a running one by killing its worker).
    #[pyo3(signature = (task_ids, stop_running=false))]
    fn cancel(&self, task_ids: Vec<u64>, stop_running: bool) {
        self.inner.cancel(task_ids, stop_running);
    }

    /// `(completions, output)`: completed tasks as `(task_id, code,
    /// payload, duration_ns, run)` and workers' output as `(slot, pid,
    /// stream, bytes)`, output first in time; both empty if `timeout`
    /// passed first; `None` once the engine has stopped and everything was
    /// taken. `run` is `(slot, pid, start_ns, deser_ns, result_ser_ns)` if
    /// the engine traces and a worker answered, else `None`.
    #[pyo3(signature = (timeout=None))]
    fn wait_completions<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let timeout = seconds(timeout)?;
        let next = wait_interruptibly(py, timeout, |slice| {
            match self.inner.next_completions(Some(slice)) {
                Next::TimedOut => None,
                other => Some(other),
            }
        })?;
        let batch = match next {
            Some(Next::Finished) => return Ok(None),
            None | Some(Next::TimedOut) => Default::default(),
            Some(Next::Batch(batch)) => batch,
        };
        let done = batch
            .done
            .into_iter()
            .map(|c| completion_tuple(py, c, self.trace))
            .collect::<PyResult<Vec<_>>>()?;
        let output = batch
            .output
            .into_iter()
            .map(|o| output_tuple(py, o))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Some(
            (PyList::new(py, done)?, PyList::new(py, output)?).into_pyobject(py)?,
        ))
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_pids()
    }

    /// Every worker process the engine has run: `(slot, pid, started_ns,
    /// ended_ns or None, cpu_ns)`, in the order they started.
    fn workers(&self, py: Python<'_>) -> Vec<(usize, u32, u64, Option<u64>, u64)> {
        py.detach(|| self.inner.workers())
            .into_iter()
            .map(|r| (r.slot, r.pid, r.started_ns, r.ended_ns, r.cpu_ns))
            .collect()
    }

    fn close(&self) {
        self.inner.close();
    }

    fn terminate(&self) {
        self.inner.terminate();
    }

    /// Waits for the engine to stop; returns False if `timeout` passed.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = seconds(timeout)?;
        let done = wait_interruptibly(py, timeout, |slice| {
            self.inner.join(Some(slice)).then_some(())
        })?;
        Ok(done.is_some())
    }
}

impl PyEngine {
    fn send(
        &self,
        fn_id: u64,
        tasks: Vec<(u64, Payload)>,
        timeout: Option<f64>,
        retries: u32,
    ) -> PyResult<()> {
        let options = TaskOptions {
            timeout: seconds(timeout)?,
            retries,
        };
        self.inner
            .submit(Submission {
                fn_id,
                tasks,
                options,
            })
            .map_err(to_py)
    }
}

/// The scheduler calls the launcher and never waits for the interpreter, so
/// the call into Python happens on a short-lived helper thread. The worker
/// itself then runs on a thread that Python starts (`start_worker` starts a
/// `threading.Thread`): its stack holds only Python's own frames while it
/// runs the user's code, so an abandoned thread still running at
/// interpreter exit is stopped as any daemon thread is.
fn thread_launcher(start_worker: Py<PyAny>) -> ThreadLauncher {
    let start_worker = Arc::new(start_worker);
    Arc::new(move |ends: WorkerEnds| {
        let link = WorkerLink::from_fds(ends.sock, ends.status).map_err(std::io::Error::other)?;
        let start_worker = start_worker.clone();
        std::thread::Builder::new()
            .name(format!("shoal-start-{}", ends.slot))
            .spawn(move || {
                // None when the interpreter is gone or going: the link is
                // dropped, and the engine sees a worker that never started.
                Python::try_attach(|py| {
                    let started = Py::new(py, PyLink::from(link))
                        .and_then(|link| start_worker.call1(py, (link, ends.slot)));
                    if let Err(err) = started {
                        err.print(py);
                    }
                });
            })?;
        Ok(())
    })
}

fn exit_tuple(py: Python<'_>, e: shoal_core::ExitInfo) -> PyResult<Bound<'_, PyTuple>> {
    (e.pid, e.code, e.signal).into_pyobject(py)
}

fn run_tuple(py: Python<'_>, run: RunInfo) -> PyResult<Bound<'_, PyAny>> {
    let t = run.timing;
    Ok((run.slot, run.pid, t.start_ns, t.deser_ns, t.result_ser_ns)
        .into_pyobject(py)?
        .into_any())
}

fn completion_tuple(py: Python<'_>, c: Completion, trace: bool) -> PyResult<Bound<'_, PyTuple>> {
    let (code, payload): (u8, Bound<'_, PyAny>) = match c.outcome {
        Outcome::Done(result) => (DONE, payload_object(py, result)?),
        Outcome::Failed(body) => (FAILED, PyBytes::new(py, &body).into_any()),
        Outcome::Lost(exit) => (LOST, exit_tuple(py, exit)?.into_any()),
        Outcome::TimedOut {
            pid,
            timeout,
            started,
        } => (
            TIMED_OUT,
            (pid, timeout.as_secs_f64(), started)
                .into_pyobject(py)?
                .into_any(),
        ),
        Outcome::OverMemory { pid, rss, limit } => {
            (OVER_MEMORY, (pid, rss, limit).into_pyobject(py)?.into_any())
        }
        Outcome::Cancelled => (CANCELLED, py.None().into_bound(py)),
        Outcome::Error(why) => (ERROR, why.into_pyobject(py)?.into_any()),
        Outcome::Broken(BrokenPool::InitializerFailed(body)) => {
            (INIT_FAILED, PyBytes::new(py, &body).into_any())
        }
        Outcome::Broken(BrokenPool::WorkersCannotStart(exit)) => {
            (CANNOT_START, exit_tuple(py, exit)?.into_any())
        }
    };
    let run = match c.run {
        Some(run) if trace => run_tuple(py, run)?,
        _ => py.None().into_bound(py),
    };
    (c.task, code, payload, c.duration_ns, run).into_pyobject(py)
}

fn output_tuple(py: Python<'_>, o: WorkerOutput) -> PyResult<Bound<'_, PyTuple>> {
    let stream = match o.stream {
        Stream::Stdout => STDOUT,
        Stream::Stderr => STDERR,
        Stream::Log => LOG,
    };
    (o.slot, o.pid, stream, PyBytes::new(py, &o.body)).into_pyobject(py)
}
