//! `MessageQueue`: the socket under `shoal.Queue` (see
//! `shoal_core::queue`). Messages are pickles with their descriptors.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use shoal_core::queue::{MessageQueue, Received};
use shoal_core::CoreError;

use crate::blocking::{seconds, wait_interruptibly};
use crate::errors::{queue_closed, to_py};
use crate::shm::{fd_list, shared_fds, PyFd};

#[pyclass(frozen, name = "MessageQueue", module = "shoal._shoal")]
pub(crate) struct PyMessageQueue {
    inner: MessageQueue,
}

fn closed() -> PyErr {
    queue_closed()
}

#[pymethods]
impl PyMessageQueue {
    /// A new queue, or (given both) the queue behind descriptors another
    /// process sent.
    #[new]
    #[pyo3(signature = (tx=None, rx=None))]
    fn new(tx: Option<&PyFd>, rx: Option<&PyFd>) -> PyResult<Self> {
        let inner = match (tx, rx) {
            (Some(tx), Some(rx)) => MessageQueue::from_fds(tx.fd.clone(), rx.fd.clone()),
            (None, None) => MessageQueue::new().map_err(to_py)?,
            _ => return Err(PyValueError::new_err("give both descriptors or neither")),
        };
        Ok(PyMessageQueue { inner })
    }

    /// Its two descriptors `(tx, rx)`, to send to another process.
    fn fds(&self) -> (PyFd, PyFd) {
        let [tx, rx] = self.inner.fds();
        (PyFd { fd: tx.clone() }, PyFd { fd: rx.clone() })
    }

    /// Puts a message; waits at most `timeout` seconds for room (forever
    /// if None). Returns False if there was none. ValueError if closed.
    #[pyo3(signature = (body, fds, timeout=None))]
    fn put(
        &self,
        py: Python<'_>,
        body: &[u8],
        fds: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let fds = shared_fds(fds)?;
        let timeout = seconds(timeout)?;
        // Packed once (a large body is copied to shared memory here), then
        // tried until there is room.
        let message = py
            .detach(|| MessageQueue::prepare(body, &fds))
            .map_err(to_py)?;
        let sent = wait_interruptibly(py, timeout, |slice| {
            match self.inner.put_prepared(&message, slice) {
                Ok(false) => None,
                other => Some(other),
            }
        })?;
        match sent {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(CoreError::Closed)) => Err(closed()),
            Some(Err(e)) => Err(to_py(e)),
        }
    }

    /// `(body, [Fd])`, or None if nothing came within `timeout` seconds
    /// (forever if None). ValueError once closed and drained.
    #[pyo3(signature = (timeout=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let timeout = seconds(timeout)?;
        let got = wait_interruptibly(py, timeout, |slice| match self.inner.get(slice) {
            Ok(Received::Empty) => None,
            other => Some(other),
        })?;
        match got {
            None => Ok(None),
            Some(Ok(Received::Message(body, fds))) => Ok(Some(
                (PyBytes::new(py, &body), fd_list(py, fds)?).into_pyobject(py)?,
            )),
            Some(Ok(Received::Closed)) => Err(closed()),
            Some(Ok(Received::Empty)) => Ok(None),
            Some(Err(e)) => Err(to_py(e)),
        }
    }

    fn empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Waits at most `timeout` seconds (forever if None) until a `get`
    /// would not wait (a message, or the end); returns whether it came.
    #[pyo3(signature = (timeout=None))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.inner.poll(std::time::Duration::ZERO) {
            return Ok(true);
        }
        let timeout = seconds(timeout)?;
        let got = wait_interruptibly(py, timeout, |slice| self.inner.poll(slice).then_some(()))?;
        Ok(got.is_some())
    }

    fn close(&self) {
        self.inner.close();
    }
}
