//! `Store`, the checkpoint store, and the hashing of task keys; used by
//! `shoal._checkpoint`. SQLite work and hashing run with the GIL released.

use std::path::PathBuf;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shoal_core::digest::{Digest, Key, KEY_LEN};
use shoal_core::store::{Journal, Store, FORMAT_VERSION};

use crate::blocking::wait_interruptibly;
use crate::errors::to_py;

/// Parts at least this large are hashed with the GIL released.
const DETACH_BYTES: usize = 1 << 16;

pub(crate) fn add_store_items(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_function(wrap_pyfunction!(digest, m)?)?;
    m.add_function(wrap_pyfunction!(task_keys, m)?)?;
    m.add("KEY_LEN", KEY_LEN)?;
    m.add("STORE_FORMAT_VERSION", FORMAT_VERSION)?;
    Ok(())
}

/// The 16-byte key of `parts` (bytes-like objects, e.g. a pickle and its
/// out-of-band buffers), read in place: a large array is not copied.
#[pyfunction]
fn digest<'py>(py: Python<'py>, parts: Vec<PyBuffer<u8>>) -> PyResult<Bound<'py, PyBytes>> {
    let mut slices = Vec::with_capacity(parts.len());
    for part in &parts {
        if !part.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "digest: every part must be a contiguous buffer",
            ));
        }
        if part.len_bytes() == 0 {
            slices.push(&[][..]); // an empty buffer's pointer may be null
            continue;
        }
        // SAFETY: the buffer is C-contiguous (checked above), non-empty, of
        // item type u8 (PyBuffer<u8> checked its format), and `parts` keeps
        // the exporting objects alive and their buffers pinned until after
        // the slices are last used, at the end of this function. The bytes
        // are only read.
        slices.push(unsafe {
            std::slice::from_raw_parts(part.buf_ptr() as *const u8, part.len_bytes())
        });
    }
    let hash = |slices: &[&[u8]]| {
        let mut d = Digest::new();
        for s in slices {
            d.part(s);
        }
        d.key()
    };
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let key = if total >= DETACH_BYTES {
        py.detach(|| hash(&slices))
    } else {
        hash(&slices)
    };
    Ok(PyBytes::new(py, &key))
}

/// The keys of many tasks at once: `digest([salt, payload])` for each
/// payload, concatenated (`KEY_LEN` bytes each).
#[pyfunction]
fn task_keys<'py>(
    py: Python<'py>,
    salt: &[u8],
    payloads: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut prefix = Digest::new();
    prefix.part(salt);
    let mut out = Vec::with_capacity(payloads.len() * KEY_LEN);
    for item in payloads.iter() {
        let bytes = item.cast::<PyBytes>()?;
        let mut d = prefix.clone();
        out.extend_from_slice(&d.part(bytes.as_bytes()).key());
    }
    Ok(PyBytes::new(py, &out))
}

fn split_keys(keys: &[u8]) -> PyResult<Vec<Key>> {
    if keys.len() % KEY_LEN != 0 {
        return Err(PyValueError::new_err(format!(
            "keys must be a multiple of {KEY_LEN} bytes, got {}",
            keys.len()
        )));
    }
    Ok(keys
        .chunks_exact(KEY_LEN)
        .filter_map(|k| k.try_into().ok())
        .collect())
}

#[pyclass(frozen, name = "Store", module = "shoal._shoal")]
pub(crate) struct PyStore {
    inner: Store,
}

#[pymethods]
impl PyStore {
    /// Opens the checkpoint store at `path`; with `create` (the default),
    /// a missing or empty file becomes a new store, else it is refused. On
    /// a network filesystem the store uses a rollback journal instead of
    /// WAL, and says so with a `RuntimeWarning`.
    #[new]
    #[pyo3(signature = (path, create=true))]
    fn new(py: Python<'_>, path: PathBuf, create: bool) -> PyResult<Self> {
        let inner = py
            .detach(|| {
                if create {
                    Store::open(&path)
                } else {
                    Store::open_existing(&path)
                }
            })
            .map_err(to_py)?;
        if let Journal::Delete { filesystem } = inner.journal() {
            let message = format!(
                "checkpoint store {}: it is on a network filesystem ({filesystem}), where \
                 SQLite's WAL mode is unsafe (its index is memory shared only between the \
                 processes of one machine); shoal uses SQLite's rollback journal there instead: \
                 commits are slower, and every machine that writes the store must see the \
                 others' file locks (NFS: lockd; Lustre: mounted with -o flock)",
                path.display()
            );
            let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            let message = std::ffi::CString::new(message)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            PyErr::warn(py, &category, &message, 1)?;
        }
        Ok(PyStore { inner })
    }

    /// The id of a function version, registered on first use.
    fn function_id(
        &self,
        py: Python<'_>,
        digest: &[u8],
        module: &str,
        qualname: &str,
    ) -> PyResult<i64> {
        py.detach(|| self.inner.function_id(digest, module, qualname))
            .map_err(to_py)
    }

    /// The stored result (bytes) of each key, or None; `keys` is the keys
    /// concatenated.
    fn get_many<'py>(&self, py: Python<'py>, keys: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let keys = split_keys(keys)?;
        let found = py.detach(|| self.inner.get_many(&keys)).map_err(to_py)?;
        PyList::new(
            py,
            found
                .into_iter()
                .map(|v| v.map(|bytes| PyBytes::new(py, &bytes))),
        )
    }

    /// A writer id for one call's rows: a commit that loses them is
    /// reported to that call (its next `put_many` or `flush` with it).
    fn new_writer(&self) -> u64 {
        self.inner.new_writer()
    }

    /// Stores `values[i]` (bytes) under the i-th key of `keys`, for function
    /// `function`; committed within a fraction of a second. `tasks[i]`, when
    /// given, is how many tasks' results `values[i]` holds (else one).
    #[pyo3(signature = (function, keys, values, tasks=None, writer=0))]
    fn put_many(
        &self,
        function: i64,
        keys: &[u8],
        values: &Bound<'_, PyList>,
        tasks: Option<Vec<i64>>,
        writer: u64,
    ) -> PyResult<()> {
        let keys = split_keys(keys)?;
        let counts = tasks.unwrap_or_else(|| vec![1; keys.len()]);
        if keys.len() != values.len() || keys.len() != counts.len() {
            return Err(PyValueError::new_err(format!(
                "{} keys but {} values and {} task counts",
                keys.len(),
                values.len(),
                counts.len()
            )));
        }
        let mut rows = Vec::with_capacity(keys.len());
        for ((key, value), n) in keys.into_iter().zip(values.iter()).zip(counts) {
            rows.push((key, n, value.cast::<PyBytes>()?.as_bytes().to_vec()));
        }
        self.inner.put_rows(writer, function, rows).map_err(to_py)
    }

    /// Commits everything stored so far and waits for it (Ctrl-C stops the
    /// wait, not the commit).
    #[pyo3(signature = (writer=0))]
    fn flush(&self, py: Python<'_>, writer: u64) -> PyResult<()> {
        let generation = self.inner.start_flush();
        let done = wait_interruptibly(py, None, |slice| {
            self.inner.wait_flushed(writer, generation, slice)
        })?;
        match done {
            Some(done) => done.map_err(to_py),
            // Without a timeout the wait ends only with an answer.
            None => Ok(()),
        }
    }

    /// `(format_version, tasks, bytes_on_disk, [(module, qualname, versions,
    /// tasks, bytes, first, last)])`; times in Unix seconds.
    #[allow(clippy::type_complexity)]
    fn info(
        &self,
        py: Python<'_>,
    ) -> PyResult<(
        i32,
        u64,
        u64,
        Vec<(String, String, u64, u64, u64, Option<i64>, Option<i64>)>,
    )> {
        let info = py.detach(|| self.inner.info()).map_err(to_py)?;
        let functions = info
            .functions
            .into_iter()
            .map(|f| {
                (
                    f.module, f.qualname, f.versions, f.tasks, f.bytes, f.first, f.last,
                )
            })
            .collect();
        Ok((
            info.format_version,
            info.tasks,
            info.bytes_on_disk,
            functions,
        ))
    }

    /// Removes the results of the functions named `function` (qualname or
    /// module.qualname), or all; returns `(functions, tasks)` removed.
    #[pyo3(signature = (function=None))]
    fn clear(&self, py: Python<'_>, function: Option<&str>) -> PyResult<(u64, u64)> {
        let cleared = py.detach(|| self.inner.clear(function)).map_err(to_py)?;
        Ok((cleared.functions, cleared.tasks))
    }

    /// Commits what is buffered and stops the writer; lookups still work.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(to_py)
    }
}
