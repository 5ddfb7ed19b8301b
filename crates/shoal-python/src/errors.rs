//! The one place engine errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyEOFError, PyException, PyValueError};
use pyo3::PyErr;
use shoal_core::CoreError;

create_exception!(
    _shoal,
    ShoalError,
    PyException,
    "Base class of every error shoal raises for its own reasons."
);

create_exception!(
    _shoal,
    CheckpointError,
    ShoalError,
    "A checkpoint store could not be used: not a store, a newer format, damaged, or unwritable."
);

create_exception!(
    _shoal,
    QueueClosed,
    PyValueError,
    "The queue was closed: no more puts, and every item has been taken."
);

pub(crate) fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::Closed => PyValueError::new_err("Pool not running"),
        CoreError::Config(msg) => PyValueError::new_err(msg),
        CoreError::Disconnected => PyEOFError::new_err(err.to_string()),
        CoreError::Store { .. } => CheckpointError::new_err(error_chain(&err)),
        CoreError::Forked { .. } => ShoalError::new_err(err.to_string()),
        other => ShoalError::new_err(error_chain(&other)),
    }
}

/// The error and its causes on one line, so nothing is lost in the message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
