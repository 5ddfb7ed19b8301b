//! `Engine`: a pool's handle on the scheduler.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shoal_core::link::WorkerLink;
use shoal_core::{
    Engine, EngineConfig, Launch, Next, Payload, Submission, TaskOptions, ThreadLauncher,
    WorkerCommand, WorkerEnds,
};

use crate::blocking::{seconds, wait_interruptibly};
use crate::completion::{Batch, WorkerRecord};
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
pub(crate) fn payload_object(py: Python<'_>, p: Payload) -> PyResult<Bound<'_, PyAny>> {
    let body = PyBytes::new(py, &p.body).into_any();
    if p.fds.is_empty() {
        return Ok(body);
    }
    Ok((body, fd_list(py, p.fds)?).into_pyobject(py)?.into_any())
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

    /// Cancels those tasks that no worker holds yet (they complete as
    /// cancelled) and returns their ids: what `Future.cancel()` may cancel.
    fn withdraw(&self, py: Python<'_>, task_ids: Vec<u64>) -> Vec<u64> {
        py.detach(|| self.inner.withdraw(task_ids))
    }

    /// Those tasks a worker holds now (running, or queued at it).
    fn held(&self, py: Python<'_>, task_ids: Vec<u64>) -> Vec<u64> {
        py.detach(|| self.inner.held(task_ids))
    }

    /// The next `Batch` of workers' output and completed tasks (empty if
    /// `timeout` passed first); `None` once the engine has stopped and
    /// everything was taken.
    #[pyo3(signature = (timeout=None))]
    fn wait_completions(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Batch>> {
        let timeout = seconds(timeout)?;
        let next = wait_interruptibly(py, timeout, |slice| {
            match self.inner.next_completions(Some(slice)) {
                Next::TimedOut => None,
                other => Some(other),
            }
        })?;
        match next {
            Some(Next::Finished) => Ok(None),
            None | Some(Next::TimedOut) => Ok(Some(Batch::empty(py))),
            Some(Next::Batch(batch)) => Ok(Some(Batch::from_core(py, batch, self.trace)?)),
        }
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_pids()
    }

    /// Every worker process the engine has run, in the order they started.
    fn workers(&self, py: Python<'_>) -> Vec<WorkerRecord> {
        py.detach(|| self.inner.workers())
            .into_iter()
            .map(WorkerRecord::from)
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
