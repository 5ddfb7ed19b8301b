//! `Link`: the worker process's end of its connection, used by
//! `shoal.worker`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shoal_core::frame::Kind;
use shoal_core::link::WorkerLink;

use crate::errors::to_py;
use crate::shm::{fd_list, shared_fds};

pub(crate) fn add_frame_kinds(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (name, kind) in [
        ("KIND_INIT", Kind::Init),
        ("KIND_FUNC", Kind::Func),
        ("KIND_TASK", Kind::Task),
        ("KIND_FORGET", Kind::Forget),
        ("KIND_EXIT", Kind::Exit),
        ("KIND_READY", Kind::Ready),
        ("KIND_DONE", Kind::Done),
        ("KIND_FAILED", Kind::Failed),
        ("KIND_INIT_FAILED", Kind::InitFailed),
        ("KIND_OUTPUT", Kind::Output),
        ("KIND_LOG", Kind::Log),
        ("KIND_RETIRE", Kind::Retire),
    ] {
        m.add(name, kind as u8)?;
    }
    Ok(())
}

fn kind_from(byte: u8) -> PyResult<Kind> {
    Kind::from_u8(byte)
        .ok()
        .filter(|k| k.is_from_worker())
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "a worker cannot send frame kind {byte}"
            ))
        })
}

/// A received frame as Python sees it: `(kind, a, b, body, fds)`, with
/// `fds` a list of `Fd`s, or None when none came (the common case).
type FrameTuple<'py> = (
    u8,
    u64,
    u64,
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyList>>,
);

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

    /// Blocks (GIL released) for the next frames: `[(kind, a, b, body,
    /// fds)]`; an empty list if `timeout` seconds pass first. Raises
    /// EOFError when the parent has gone.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Vec<FrameTuple<'py>>> {
        let inner = &self.inner;
        let wait = crate::blocking::seconds(timeout)?;
        let frames = py.detach(|| inner.recv_batch_within(wait)).map_err(to_py)?;
        frames
            .into_iter()
            .map(|f| {
                let fds = if f.fds.is_empty() {
                    None
                } else {
                    Some(fd_list(py, f.fds)?)
                };
                Ok((f.kind as u8, f.a, f.b, PyBytes::new(py, &f.body), fds))
            })
            .collect()
    }

    /// Queues a reply; it leaves with `flush()`.
    fn send(&self, kind: u8, a: u64, b: u64, body: &[u8]) -> PyResult<()> {
        self.inner
            .queue(kind_from(kind)?, a, b, body)
            .map_err(to_py)
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
