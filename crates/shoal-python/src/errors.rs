//! The one place engine errors become Python exceptions. The exception
//! classes themselves are defined once, in `shoal.errors`.

use pyo3::exceptions::{PyEOFError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::PyErr;
use shoal_core::CoreError;

/// `shoal.errors.<name>`, looked up once.
fn shoal_exception<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "shoal.errors", name)
}

static SHOAL_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CHECKPOINT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static QUEUE_CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An instance of `shoal.errors.<name>` with `message`.
fn raise(cell: &'static PyOnceLock<Py<PyType>>, name: &str, message: String) -> PyErr {
    Python::attach(|py| match shoal_exception(py, cell, name) {
        Ok(class) => PyErr::from_type(class.clone(), message),
        Err(import_failed) => import_failed,
    })
}

pub(crate) fn queue_closed() -> PyErr {
    raise(&QUEUE_CLOSED, "QueueClosed", "the queue is closed".into())
}

pub(crate) fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::Closed => PyValueError::new_err("Pool not running"),
        CoreError::Config(msg) => PyValueError::new_err(msg),
        CoreError::Disconnected => PyEOFError::new_err(err.to_string()),
        CoreError::Store { .. } => raise(&CHECKPOINT_ERROR, "CheckpointError", error_chain(&err)),
        other => raise(&SHOAL_ERROR, "ShoalError", error_chain(&other)),
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
