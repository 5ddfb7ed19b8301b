//! `Link`: the worker process's end of its connection, used by
//! `shoal.worker`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shoal_core::frame::{Frame, Kind};
use shoal_core::link::WorkerLink;

use crate::completion::{fds_object, Stream};
use crate::errors::to_py;
use crate::shm::shared_fds;

/// `Init`: the pool's set-up for this worker, which has slot `slot`.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct InitFrame {
    slot: u64,
    body: Py<PyBytes>,
    fds: Option<Py<PyList>>,
}

/// A function the worker keeps until told to forget it.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct FunctionFrame {
    fn_id: u64,
    body: Py<PyBytes>,
    fds: Option<Py<PyList>>,
}

/// A task: call function `fn_id` on the arguments in `body`.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct TaskFrame {
    task_id: u64,
    fn_id: u64,
    body: Py<PyBytes>,
    fds: Option<Py<PyList>>,
}

/// The worker may drop function `fn_id`.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub(crate) struct ForgetFrame {
    fn_id: u64,
}

/// Finish what you hold, then exit.
#[pyclass(frozen, module = "shoal._shoal")]
pub(crate) struct ExitFrame;

/// The Python object for a frame the parent sent.
fn frame_object(py: Python<'_>, f: Frame) -> PyResult<Py<PyAny>> {
    let body = || PyBytes::new(py, &f.body).unbind();
    Ok(match f.kind {
        Kind::Task => Py::new(
            py,
            TaskFrame {
                task_id: f.a,
                fn_id: f.b,
                body: body(),
                fds: fds_object(py, f.fds)?,
            },
        )?
        .into_any(),
        Kind::Func => Py::new(
            py,
            FunctionFrame {
                fn_id: f.a,
                body: body(),
                fds: fds_object(py, f.fds)?,
            },
        )?
        .into_any(),
        Kind::Forget => Py::new(py, ForgetFrame { fn_id: f.a })?.into_any(),
        Kind::Init => Py::new(
            py,
            InitFrame {
                slot: f.b,
                body: body(),
                fds: fds_object(py, f.fds)?,
            },
        )?
        .into_any(),
        Kind::Exit => Py::new(py, ExitFrame)?.into_any(),
        other => {
            return Err(PyValueError::new_err(format!(
                "shoal internal error: a worker received a {other:?} frame, which only workers send"
            )))
        }
    })
}

/// Thread-safe: user code may print from its own threads while the main
/// thread waits in `recv`.
#[pyclass(frozen, name = "Link", module = "shoal._shoal")]
pub(crate) struct PyLink {
    inner: WorkerLink,
}

/// A thread worker's link, made by the engine's thread launcher.
impl From<WorkerLink> for PyLink {
    fn from(inner: WorkerLink) -> Self {
        PyLink { inner }
    }
}

#[pymethods]
impl PyLink {
    /// Takes over the descriptors the engine gave this worker.
    #[new]
    fn new() -> PyResult<Self> {
        Ok(PyLink {
            inner: WorkerLink::from_inherited().map_err(to_py)?,
        })
    }

    /// Blocks (GIL released) for the next frames (`TaskFrame`,
    /// `FunctionFrame`, `ForgetFrame`, `InitFrame`, `ExitFrame`); an empty
    /// list if `timeout` seconds pass first. Raises EOFError when the parent
    /// has gone.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<Py<PyAny>>> {
        let inner = &self.inner;
        let wait = crate::blocking::seconds(timeout)?;
        let frames = py.detach(|| inner.recv_batch_within(wait)).map_err(to_py)?;
        frames.into_iter().map(|f| frame_object(py, f)).collect()
    }

    /// Queues "initialised, ready for tasks"; replies leave with `flush()`.
    fn ready(&self) -> PyResult<()> {
        let pid = u64::from(std::process::id());
        self.inner.queue(Kind::Ready, pid, 0, b"").map_err(to_py)
    }

    /// Queues the pickled exception the pool's initializer raised.
    fn init_failed(&self, body: &[u8]) -> PyResult<()> {
        self.inner
            .queue(Kind::InitFailed, 0, 0, body)
            .map_err(to_py)
    }

    /// Queues "over the memory limit, leaving": the tasks this worker holds
    /// beyond those answered go to a fresh worker.
    fn retire(&self) -> PyResult<()> {
        self.inner.queue(Kind::Retire, 0, 0, b"").map_err(to_py)
    }

    /// Queues whole lines of text the worker wrote to `stream`.
    fn output(&self, stream: Stream, text: &[u8]) -> PyResult<()> {
        let code = match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
            Stream::Log => {
                return Err(PyValueError::new_err(
                    "log records go through Link.log(), not Link.output()",
                ))
            }
        };
        self.inner.queue(Kind::Output, code, 0, text).map_err(to_py)
    }

    /// Queues one pickled `logging` record.
    fn log(&self, record: &[u8]) -> PyResult<()> {
        self.inner.queue(Kind::Log, 0, 0, record).map_err(to_py)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.flush()).map_err(to_py)
    }

    /// Marks `task_id` as running (the engine reads this if the worker
    /// dies or the task's deadline passes) and returns True; returns False
    /// (and marks nothing) if the engine withdrew the task after sending it:
    /// skip it, and send no answer.
    fn begin(&self, task_id: u64) -> bool {
        self.inner.begin(task_id)
    }

    /// Marks the worker idle and queues the task's result, with the time
    /// spent unpickling its arguments and pickling the result. `body`:
    /// bytes, or `(bytes, [Fd | Segment])` when parts of it are in shared
    /// memory.
    #[pyo3(signature = (task_id, body, deser_ns=0, result_ser_ns=0))]
    fn done(
        &self,
        task_id: u64,
        body: &Bound<'_, PyAny>,
        deser_ns: u64,
        result_ser_ns: u64,
    ) -> PyResult<()> {
        if let Ok(bytes) = body.cast::<PyBytes>() {
            return self
                .inner
                .finish(
                    Kind::Done,
                    task_id,
                    bytes.as_bytes(),
                    &[],
                    deser_ns,
                    result_ser_ns,
                )
                .map_err(to_py);
        }
        let (body, fds): (Vec<u8>, Bound<'_, PyAny>) = body.extract()?;
        let fds = shared_fds(&fds)?;
        self.inner
            .finish(Kind::Done, task_id, &body, &fds, deser_ns, result_ser_ns)
            .map_err(to_py)
    }

    /// Marks the worker idle and queues the task's pickled exception;
    /// `retryable` if the task's `retry_on` names it.
    #[pyo3(signature = (task_id, body, retryable=false, deser_ns=0))]
    fn failed(&self, task_id: u64, body: &[u8], retryable: bool, deser_ns: u64) -> PyResult<()> {
        let kind = if retryable {
            Kind::Retryable
        } else {
            Kind::Failed
        };
        self.inner
            .finish(kind, task_id, body, &[], deser_ns, 0)
            .map_err(to_py)
    }

    /// Hangs up on the engine now (a thread worker's last act: its link may
    /// be kept alive by a traceback that refers to the worker's frame).
    fn close(&self) {
        self.inner.close();
    }

    /// This process's resident memory in bytes (None if unknown).
    fn rss(&self) -> Option<u64> {
        shoal_core::memory::rss_bytes(None)
    }
}
