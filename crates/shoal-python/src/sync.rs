//! `SharedLock`: a lock stored in a shared segment (see
//! `shoal_core::lock`), the base of `shoal.Lock` and `shoal.Value`.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shoal_core::lock::{SharedLock, LOCK_SIZE};
use shoal_core::shm::{Access, Mapping};

use crate::blocking::{seconds, wait_interruptibly};
use crate::shm::PySegment;

#[pyclass(frozen, name = "SharedLock", module = "shoal._shoal")]
pub(crate) struct PySharedLock {
    /// Keeps the page mapped while the lock is in use.
    map: Arc<Mapping>,
    offset: usize,
}

impl PySharedLock {
    fn lock(&self) -> &SharedLock {
        // SAFETY: `new` checked that `offset` is 4-aligned and that
        // LOCK_SIZE bytes fit in the shared mapping, which `self.map` keeps
        // alive for as long as the returned reference (tied to `self`).
        unsafe { SharedLock::at(self.map.as_ptr().add(self.offset)) }
    }
}

#[pymethods]
impl PySharedLock {
    /// The lock at `offset` in a shared, writable `segment` (zeroed bytes
    /// are a free lock).
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        let map = segment.map.clone();
        let fits = offset
            .checked_add(LOCK_SIZE)
            .is_some_and(|end| end <= map.len());
        if map.access() != Access::Shared || offset % 4 != 0 || !fits {
            return Err(PyValueError::new_err(
                "a lock needs 8 aligned bytes of a shared, writable segment",
            ));
        }
        Ok(PySharedLock { map, offset })
    }

    /// Takes the lock; waits at most `timeout` seconds (forever if None).
    /// Returns whether it was taken. Ctrl-C interrupts the wait.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        if self.lock().try_acquire() {
            return Ok(true);
        }
        if !block {
            return Ok(false);
        }
        let timeout = seconds(timeout)?;
        let got = wait_interruptibly(py, timeout, |slice| {
            self.lock().acquire_within(slice).then_some(())
        })?;
        Ok(got.is_some())
    }

    fn release(&self) -> PyResult<()> {
        self.lock()
            .release()
            .map_err(|_| PyValueError::new_err("release of a lock that is not held"))
    }

    fn locked(&self) -> bool {
        self.lock().is_locked()
    }
}
