//! `Engine`: a pool's handle on the scheduler.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shoal_core::{
    BrokenPool, Completion, Engine, EngineConfig, Next, Outcome, Payload, Stream, Submission,
    TaskOptions, WorkerCommand, WorkerOutput,
};

use crate::blocking::{seconds, wait_interruptibly};
use crate::errors::to_py;
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
    m.add("STREAM_STDOUT", STDOUT)?;
    m.add("STREAM_STDERR", STDERR)?;
    m.add("STREAM_LOG", LOG)?;
    Ok(())
}

#[pyclass(frozen, name = "Engine", module = "shoal._shoal")]
pub(crate) struct PyEngine {
    inner: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor
    #[pyo3(signature = (workers, program, args, env, init, max_tasks_per_child=None, max_memory=None))]
    fn new(
        py: Python<'_>,
        workers: usize,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        init: &Bound<'_, PyAny>,
        max_tasks_per_child: Option<u64>,
        max_memory: Option<u64>,
    ) -> PyResult<Self> {
        let config = EngineConfig {
            workers,
            command: WorkerCommand { program, args, env },
            init: payload(init)?,
            max_tasks_per_child,
            max_memory,
        };
        let inner = py.detach(|| Engine::start(config)).map_err(to_py)?;
        Ok(PyEngine { inner })
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
    /// payload, duration_ns)` and workers' output as `(slot, pid, stream,
    /// bytes)`, output first in time; both empty if `timeout` passed first;
    /// `None` once the engine has stopped and everything was taken.
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
            .map(|c| completion_tuple(py, c))
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

fn exit_tuple(py: Python<'_>, e: shoal_core::ExitInfo) -> PyResult<Bound<'_, PyTuple>> {
    (e.pid, e.code, e.signal).into_pyobject(py)
}

fn completion_tuple(py: Python<'_>, c: Completion) -> PyResult<Bound<'_, PyTuple>> {
    let (code, payload): (u8, Bound<'_, PyAny>) = match c.outcome {
        Outcome::Done(result) => (DONE, payload_object(py, result)?),
        Outcome::Failed(body) => (FAILED, PyBytes::new(py, &body).into_any()),
        Outcome::Lost(exit) => (LOST, exit_tuple(py, exit)?.into_any()),
        Outcome::TimedOut { pid, timeout } => (
            TIMED_OUT,
            (pid, timeout.as_secs_f64()).into_pyobject(py)?.into_any(),
        ),
        Outcome::OverMemory { pid, rss, limit } => {
            (OVER_MEMORY, (pid, rss, limit).into_pyobject(py)?.into_any())
        }
        Outcome::Cancelled => (CANCELLED, py.None().into_bound(py)),
        Outcome::Broken(BrokenPool::InitializerFailed(body)) => {
            (INIT_FAILED, PyBytes::new(py, &body).into_any())
        }
        Outcome::Broken(BrokenPool::WorkersCannotStart(exit)) => {
            (CANNOT_START, exit_tuple(py, exit)?.into_any())
        }
    };
    (c.task, code, payload, c.duration_ns).into_pyobject(py)
}

fn output_tuple(py: Python<'_>, o: WorkerOutput) -> PyResult<Bound<'_, PyTuple>> {
    let stream = match o.stream {
        Stream::Stdout => STDOUT,
        Stream::Stderr => STDERR,
        Stream::Log => LOG,
    };
    (o.slot, o.pid, stream, PyBytes::new(py, &o.body)).into_pyobject(py)
}
