//! Shared memory for Python: `Fd` (a descriptor that can travel to another
//! process), `Segment` (a mapping that exports the buffer protocol, so
//! numpy arrays and memoryviews sit on it without a copy), and the calls
//! `_serialize` needs to move buffers out of band.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_core::fds::SharedFd;
use shoal_core::pickle_scan::Verdict;
use shoal_core::shm::{self, Access, Mapping};

use crate::errors::to_py;

const READ_ONLY: u8 = 0;
const OWNED: u8 = 1;
const SHARED: u8 = 2;

pub(crate) fn add_access_codes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ACCESS_READ_ONLY", READ_ONLY)?;
    m.add("ACCESS_OWNED", OWNED)?;
    m.add("ACCESS_SHARED", SHARED)?;
    Ok(())
}

fn access_code(access: Access) -> u8 {
    match access {
        Access::ReadOnly => READ_ONLY,
        Access::Owned => OWNED,
        Access::Shared => SHARED,
    }
}

fn access_from(code: u8) -> PyResult<Access> {
    match code {
        READ_ONLY => Ok(Access::ReadOnly),
        OWNED => Ok(Access::Owned),
        SHARED => Ok(Access::Shared),
        other => Err(PyValueError::new_err(format!(
            "unknown access code {other}"
        ))),
    }
}

/// An open file descriptor (a segment, a socket) that can be sent to
/// another process; closed when the last holder lets go.
#[pyclass(frozen, name = "Fd", module = "shoal._shoal")]
pub(crate) struct PyFd {
    pub(crate) fd: SharedFd,
}

#[pymethods]
impl PyFd {
    /// A duplicate of descriptor `fileno` (a socket, say), owned by the
    /// new `Fd` (close-on-exec).
    #[staticmethod]
    fn dup(fileno: i32) -> PyResult<PyFd> {
        use std::os::fd::BorrowedFd;
        if fileno < 0 {
            return Err(PyValueError::new_err(format!("not a descriptor: {fileno}")));
        }
        // SAFETY: the caller says `fileno` is open; it is only borrowed for
        // the duplicate, which we then own.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fileno) };
        let owned = borrowed.try_clone_to_owned().map_err(PyErr::from)?;
        Ok(PyFd {
            fd: SharedFd::new(owned),
        })
    }

    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Size of the file behind it, in bytes.
    fn size(&self) -> PyResult<usize> {
        shm::size(&self.fd).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("<shoal Fd {}>", self.fileno())
    }
}

/// A segment mapped into this process. Exports its bytes through the buffer
/// protocol (read-only for `ACCESS_READ_ONLY`); unmapped when the last
/// object using it (an array, a memoryview) is gone.
#[pyclass(frozen, name = "Segment", module = "shoal._shoal")]
pub(crate) struct PySegment {
    pub(crate) map: Arc<Mapping>,
}

#[pymethods]
impl PySegment {
    /// A new zero-filled segment of `nbytes`, mapped shared and writable;
    /// `label` names it "shoal-LABEL" in `/proc/PID/maps` (else "shoal-shm").
    #[staticmethod]
    #[pyo3(signature = (nbytes, label=None))]
    fn create(nbytes: usize, label: Option<&str>) -> PyResult<PySegment> {
        let fd = match label {
            None => shm::create(nbytes),
            Some(label) => {
                let name = std::ffi::CString::new(format!("shoal-{label}"))
                    .map_err(|_| PyValueError::new_err("a segment's label holds no NUL"))?;
                shm::create_named(nbytes, &name)
            }
        };
        let fd = SharedFd::new(fd.map_err(to_py)?);
        let map = Mapping::map(fd, Access::Shared).map_err(to_py)?;
        Ok(PySegment { map })
    }

    /// Maps the segment behind `fd` with `access` (an `ACCESS_*` code).
    #[staticmethod]
    fn map(fd: &PyFd, access: u8) -> PyResult<PySegment> {
        let map = Mapping::map(fd.fd.clone(), access_from(access)?).map_err(to_py)?;
        Ok(PySegment { map })
    }

    fn __len__(&self) -> usize {
        self.map.len()
    }

    #[getter]
    fn access(&self) -> u8 {
        access_code(self.map.access())
    }

    /// Its descriptor.
    fn fd(&self) -> PyFd {
        PyFd {
            fd: self.map.fd().clone(),
        }
    }

    /// Address of its first byte (for tests and diagnostics).
    #[getter]
    fn address(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// # Safety
    ///
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let map = &slf.get().map;
        let readonly = map.access() == Access::ReadOnly;
        if readonly && flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err(
                "this shared memory is read-only (it is shared between tasks); \
                 copy it to change it",
            ));
        }
        // SAFETY: `view` is valid (the caller's promise); the mapping is
        // `len` bytes and lives as long as `slf`, which the filled view holds
        // a reference to.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                map.as_ptr().cast::<c_void>(),
                map.len() as ffi::Py_ssize_t,
                c_int::from(readonly),
                flags,
            )
        };
        if rc < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let access = match self.map.access() {
            Access::ReadOnly => "read-only",
            Access::Owned => "owned",
            Access::Shared => "shared",
        };
        format!("<shoal Segment {} bytes, {access}>", self.map.len())
    }
}

/// A contiguous buffer of a Python object (C or Fortran order), released
/// when dropped (with the GIL held, as the Python API requires).
pub(crate) struct RawBuffer {
    view: ffi::Py_buffer,
}

impl RawBuffer {
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<RawBuffer> {
        RawBuffer::get_with(obj, ffi::PyBUF_STRIDES)
    }

    /// A writable contiguous buffer of `obj`.
    pub(crate) fn get_writable(obj: &Bound<'_, PyAny>) -> PyResult<RawBuffer> {
        RawBuffer::get_with(obj, ffi::PyBUF_STRIDES | ffi::PyBUF_WRITABLE)
    }

    fn get_with(obj: &Bound<'_, PyAny>, flags: c_int) -> PyResult<RawBuffer> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: asks `obj` to fill `view`; on success the view is
        // initialised and must be released (Drop does).
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: initialised by the successful call above.
        let view = unsafe { view.assume_init() };
        let raw = RawBuffer { view };
        // SAFETY: asking about a view we hold.
        if unsafe { ffi::PyBuffer_IsContiguous(&raw.view, b'A' as std::ffi::c_char) } == 0 {
            return Err(PyBufferError::new_err(
                "the buffer is not contiguous; make a contiguous copy first",
            ));
        }
        Ok(raw)
    }

    pub(crate) fn addr(&self) -> usize {
        self.view.buf as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.view.len as usize
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // SAFETY: releasing a view obtained with PyObject_GetBuffer; every
        // RawBuffer is created and dropped with the GIL held.
        unsafe { ffi::PyBuffer_Release(&mut self.view) };
    }
}

/// A segment holding a copy of `buffer` (any contiguous buffer), made with
/// the GIL released; sealed (immutable) if `sealed`.
#[pyfunction]
pub(crate) fn copy_to_segment(
    py: Python<'_>,
    buffer: &Bound<'_, PyAny>,
    sealed: bool,
) -> PyResult<PyFd> {
    let raw = RawBuffer::get(buffer)?;
    let (addr, len) = (raw.addr(), raw.len());
    let fd = py.detach(move || {
        // SAFETY: `raw` holds the exporter's buffer (and a reference to it)
        // until after this closure returns, so the `len` bytes at `addr`
        // stay valid; we never write them. With the GIL released another
        // Python thread may write them meanwhile (as while numpy copies
        // without the GIL): the slice is only handed to `pwrite`, so the
        // kernel reads it, and such a copy is torn, never out of bounds.
        let data = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
        shm::create_copy(data, sealed)
    });
    drop(raw);
    Ok(PyFd {
        fd: SharedFd::new(fd.map_err(to_py)?),
    })
}

/// Whether two contiguous buffers hold the same bytes: a `memcmp` with the
/// GIL released (a `CopyCache` checks that an array still matches the copy
/// an earlier call made of it).
#[pyfunction]
pub(crate) fn same_bytes(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let (a, b) = (RawBuffer::get(a)?, RawBuffer::get(b)?);
    if a.len() != b.len() {
        return Ok(false);
    }
    let (a_addr, b_addr, len) = (a.addr(), b.addr(), a.len());
    let same = py.detach(move || {
        if len == 0 {
            return true; // an empty buffer's pointer may be null
        }
        // SAFETY: `a` and `b` hold their exporters' buffers (and references
        // to them) until after this closure returns, so `len` bytes at each
        // address stay valid; they are only read. Another Python thread may
        // write them meanwhile (the GIL is released): the answer is then
        // that of some interleaving, never an out-of-bounds read.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(a_addr as *const u8, len),
                std::slice::from_raw_parts(b_addr as *const u8, len),
            )
        };
        x == y
    });
    drop((a, b));
    Ok(same)
}

/// `(address, nbytes, segment, offset)` of a contiguous buffer: `segment`
/// (with the bytes at `offset`) if they lie in a shareable segment mapped
/// in this process (a shared array, or what a task received), else None.
#[pyfunction]
pub(crate) fn locate(
    buffer: &Bound<'_, PyAny>,
) -> PyResult<(usize, usize, Option<PySegment>, usize)> {
    let raw = RawBuffer::get(buffer)?;
    let (addr, len) = (raw.addr(), raw.len());
    Ok(match shm::find(addr, len) {
        Some((map, offset)) => (addr, len, Some(PySegment { map }), offset),
        None => (addr, len, None, 0),
    })
}

/// `(segment, offset)` for `nbytes` at `address` (a strided array's span).
#[pyfunction]
pub(crate) fn find_segment_at(address: usize, nbytes: usize) -> Option<(PySegment, usize)> {
    shm::find(address, nbytes).map(|(map, offset)| (PySegment { map }, offset))
}

/// What a fresh plain pickle needs (see `shoal_core::pickle_scan`): 0 fine
/// as it is, 1 pickled again out of band, 2 pickled again by value.
#[pyfunction]
pub(crate) fn scan_pickle(pickle: &Bound<'_, PyBytes>, threshold: usize) -> u8 {
    match shoal_core::pickle_scan::scan(pickle.as_bytes(), threshold) {
        Verdict::Plain => 0,
        Verdict::OutOfBand => 1,
        Verdict::ByValue => 2,
    }
}

/// Whether every pickle in `pickles` is fine as it is (`scan_pickle` gives
/// 0 for each): the fast path of a whole `map`'s chunks in one call.
#[pyfunction]
pub(crate) fn all_plain(
    pickles: &Bound<'_, pyo3::types::PyList>,
    threshold: usize,
) -> PyResult<bool> {
    for item in pickles.iter() {
        let bytes = item.cast::<PyBytes>()?;
        if shoal_core::pickle_scan::scan(bytes.as_bytes(), threshold) != Verdict::Plain {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The descriptors of a list of `Fd`s and `Segment`s, to send.
pub(crate) fn shared_fds(items: &Bound<'_, PyAny>) -> PyResult<Vec<SharedFd>> {
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let item = item?;
        if let Ok(fd) = item.cast::<PyFd>() {
            out.push(fd.get().fd.clone());
        } else if let Ok(seg) = item.cast::<PySegment>() {
            out.push(seg.get().map.fd().clone());
        } else {
            return Err(PyValueError::new_err(format!(
                "expected shoal Fd or Segment objects to send, got {}",
                item.get_type().name()?
            )));
        }
    }
    Ok(out)
}

/// Received descriptors as a list of `Fd`s.
pub(crate) fn fd_list(
    py: Python<'_>,
    fds: Vec<SharedFd>,
) -> PyResult<Bound<'_, pyo3::types::PyList>> {
    pyo3::types::PyList::new(py, fds.into_iter().map(|fd| PyFd { fd }))
}
