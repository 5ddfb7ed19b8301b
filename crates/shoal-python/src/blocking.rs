//! The one helper every blocking call goes through: wait in short slices
//! with the GIL released, and between slices let Python run its signal
//! handlers, so Ctrl-C raises `KeyboardInterrupt` promptly.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

const SLICE: Duration = Duration::from_millis(50);

/// Calls `step(slice)` until it returns `Some`, the timeout passes (then
/// `Ok(None)`), or a signal handler raises.
pub(crate) fn wait_interruptibly<T, F>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut step: F,
) -> PyResult<Option<T>>
where
    T: Send,
    F: FnMut(Duration) -> Option<T> + Send,
{
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        };
        if let Some(value) = py.detach(|| step(slice)) {
            return Ok(Some(value));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// Timeouts from this many seconds (about 31 years) on mean "no timeout":
/// larger ones would overflow `Duration` and `Instant`.
const FOREVER_SECONDS: f64 = 1e9;

/// A Python timeout in seconds, checked.
pub(crate) fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= FOREVER_SECONDS && t.is_finite() => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {t}"
        ))),
    }
}
