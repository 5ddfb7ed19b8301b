//! `Child`: a process started for `shoal.Process` (see
//! `shoal_core::process`), sent its work as one frame with descriptors.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use pyo3::prelude::*;
use shoal_core::fds::send_all_with_fds;
use shoal_core::frame::{encode_with_fds, Kind};
use shoal_core::process::ChildProcess;
use shoal_core::WorkerCommand;

use crate::blocking::{seconds, wait_interruptibly};
use crate::errors::to_py;
use crate::shm::shared_fds;

#[pyclass(frozen, name = "Child", module = "shoal._shoal")]
pub(crate) struct PyChild {
    inner: ChildProcess,
}

fn exitcode(status: std::process::ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| -s))
}

#[pymethods]
impl PyChild {
    /// Starts `program args...` and sends it `body` (with `fds`) as one
    /// Task frame on its socket.
    #[new]
    fn new(
        py: Python<'_>,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        body: Vec<u8>,
        fds: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let fds = shared_fds(fds)?;
        let command = WorkerCommand { program, args, env };
        py.detach(move || {
            // Encoded first: a frame that can't be sent starts no process.
            let mut frame = Vec::new();
            encode_with_fds(&mut frame, Kind::Task, 0, 0, &body, fds.len())?;
            let (inner, mut sock) = ChildProcess::start(command)?;
            use std::os::fd::AsRawFd;
            let sent = if fds.is_empty() {
                sock.write_all(&frame)
            } else {
                send_all_with_fds(sock.as_raw_fd(), &frame, &fds)
            };
            // A child that died at once is reported by its exit code.
            drop(sent);
            Ok(PyChild { inner })
        })
        .map_err(to_py)
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The exit code (negative: killed by that signal), or None if running.
    fn poll(&self) -> PyResult<Option<i32>> {
        Ok(self.inner.poll().map_err(to_py)?.and_then(exitcode))
    }

    /// Waits at most `timeout` seconds (forever if None); the exit code or
    /// None if still running.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<i32>> {
        let timeout = seconds(timeout)?;
        let status =
            wait_interruptibly(py, timeout, |slice| match self.inner.wait_within(slice) {
                Ok(None) => None,
                other => Some(other),
            })?;
        match status {
            None => Ok(None),
            Some(status) => Ok(status.map_err(to_py)?.and_then(exitcode)),
        }
    }

    fn signal(&self, signal: i32) -> PyResult<()> {
        self.inner.signal(signal).map_err(to_py)
    }
}
