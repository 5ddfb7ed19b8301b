//! `SharedValue`: one number in a shared segment, read and written with a
//! single atomic load or store, under its lock when it has one (as
//! `multiprocessing.Value`'s synchronized wrapper takes its lock for each
//! read and each write). `v.value += 1` is then two locked steps with a
//! gap between them, which is where concurrent increments get lost; `with
//! v.get_lock(): v.value += 1` holds the (re-entrant) lock across both.

use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
use std::sync::Arc;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_core::shm::{Access, Mapping};
use shoal_core::sync::futex::InSharedMemory;
use shoal_core::sync::lock::SharedLock;
use shoal_core::sync::rlock::SharedRLock;

use crate::blocking::wait_interruptibly;
use crate::shm::PySegment;

/// The lock a value takes for each access.
enum Guard {
    None,
    Lock(Arc<Mapping>, usize),
    RLock(Arc<Mapping>, usize),
}

fn size_of_code(code: char) -> Option<usize> {
    Some(match code {
        'b' | 'B' | '?' | 'c' => 1,
        'h' | 'H' => 2,
        'i' | 'I' | 'f' => 4,
        'l' | 'L' | 'q' | 'Q' | 'd' => 8,
        _ => return None,
    })
}

#[pyclass(frozen, name = "SharedValue", module = "shoal._shoal")]
pub(crate) struct PySharedValue {
    map: Arc<Mapping>,
    offset: usize,
    code: char,
    guard: Guard,
}

fn region_of(
    segment: &PySegment,
    offset: usize,
    size: usize,
    what: &str,
) -> PyResult<Arc<Mapping>> {
    let map = segment.map.clone();
    let fits = offset.checked_add(size).is_some_and(|end| end <= map.len());
    let aligned = (map.as_ptr() as usize + offset) % size.max(1) == 0;
    if map.access() != Access::Shared || !fits || !aligned {
        return Err(PyValueError::new_err(format!(
            "a {what} needs {size} aligned bytes of a shared, writable segment"
        )));
    }
    Ok(map)
}

impl PySharedValue {
    fn ptr(&self) -> *mut u8 {
        // SAFETY: `new` checked that the value's bytes lie in the mapping,
        // which `self.map` keeps alive.
        unsafe { self.map.as_ptr().add(self.offset) }
    }

    /// Runs `f` with the value's lock held (taken for the access, unless
    /// the calling thread holds it already).
    fn locked<T>(&self, py: Python<'_>, f: impl FnOnce() -> T) -> PyResult<T> {
        match &self.guard {
            Guard::None => Ok(f()),
            Guard::RLock(map, offset) => {
                // SAFETY: `new` checked the lock's bytes and alignment;
                // `map` keeps them mapped.
                let lock = unsafe { SharedRLock::at(map.as_ptr().add(*offset)) };
                if !lock.try_acquire() {
                    wait_interruptibly(py, None, |slice| lock.acquire_within(slice).then_some(()))?;
                }
                let out = f();
                let _ = lock.release();
                Ok(out)
            }
            Guard::Lock(map, offset) => {
                // SAFETY: as above.
                let lock = unsafe { SharedLock::at(map.as_ptr().add(*offset)) };
                if lock.held_here() {
                    return Ok(f()); // held around this access by the caller
                }
                if !lock.try_acquire() {
                    wait_interruptibly(py, None, |slice| lock.acquire_within(slice).then_some(()))?;
                }
                let out = f();
                let _ = lock.release();
                Ok(out)
            }
        }
    }
}

macro_rules! atomic_at {
    ($ty:ty, $ptr:expr) => {
        // SAFETY: `new` checked that the bytes lie in the mapping and are
        // aligned to the item's size; an atomic of that size is valid for
        // any bit pattern.
        unsafe { &*($ptr as *const $ty) }
    };
}

fn out_of_range(code: char, value: &Bound<'_, PyAny>) -> PyErr {
    PyOverflowError::new_err(format!(
        "{} does not fit in a shared value of typecode {code:?}",
        value.repr().map(|r| r.to_string()).unwrap_or_default()
    ))
}

#[pymethods]
impl PySharedValue {
    /// The value of typecode `code` at `offset` in `segment`; its lock (a
    /// lock if `lock_kind` is "lock", a re-entrant one if "rlock") at
    /// `lock_offset` in `lock_segment`.
    #[new]
    #[pyo3(signature = (segment, offset, code, lock_segment=None, lock_offset=0, lock_kind="rlock"))]
    fn new(
        segment: &PySegment,
        offset: usize,
        code: char,
        lock_segment: Option<&PySegment>,
        lock_offset: usize,
        lock_kind: &str,
    ) -> PyResult<Self> {
        let size = size_of_code(code)
            .ok_or_else(|| PyTypeError::new_err(format!("bad typecode {code:?}")))?;
        let map = region_of(segment, offset, size, "value")?;
        let guard = match (lock_segment, lock_kind) {
            (None, _) => Guard::None,
            (Some(seg), "rlock") => Guard::RLock(
                region_of(seg, lock_offset, SharedRLock::SIZE, "lock")?,
                lock_offset,
            ),
            (Some(seg), "lock") => Guard::Lock(
                region_of(seg, lock_offset, SharedLock::SIZE, "lock")?,
                lock_offset,
            ),
            (Some(_), other) => {
                return Err(PyValueError::new_err(format!(
                    "unknown lock kind {other:?}"
                )))
            }
        };
        if let Guard::RLock(m, o) | Guard::Lock(m, o) = &guard {
            if (m.as_ptr() as usize + o) % SharedRLock::ALIGN != 0 {
                return Err(PyValueError::new_err("a lock needs 4-byte alignment"));
            }
        }
        Ok(PySharedValue {
            map,
            offset,
            code,
            guard,
        })
    }

    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let p = self.ptr();
        let code = self.code;
        let raw: u64 = self.locked(py, || match code {
            'b' => atomic_at!(AtomicI8, p).load(Ordering::SeqCst) as i64 as u64,
            'B' | '?' | 'c' => u64::from(atomic_at!(AtomicU8, p).load(Ordering::SeqCst)),
            'h' => atomic_at!(AtomicI16, p).load(Ordering::SeqCst) as i64 as u64,
            'H' => u64::from(atomic_at!(AtomicU16, p).load(Ordering::SeqCst)),
            'i' => atomic_at!(AtomicI32, p).load(Ordering::SeqCst) as i64 as u64,
            'I' | 'f' => u64::from(atomic_at!(AtomicU32, p).load(Ordering::SeqCst)),
            'l' | 'q' => atomic_at!(AtomicI64, p).load(Ordering::SeqCst) as u64,
            _ => atomic_at!(AtomicU64, p).load(Ordering::SeqCst),
        })?;
        Ok(match code {
            'b' | 'h' | 'i' | 'l' | 'q' => (raw as i64).into_pyobject(py)?.into_any(),
            'B' | 'H' | 'I' | 'L' | 'Q' => raw.into_pyobject(py)?.into_any(),
            '?' => pyo3::types::PyBool::new(py, raw != 0).to_owned().into_any(),
            'c' => PyBytes::new(py, &[raw as u8]).into_any(),
            'f' => f64::from(f32::from_bits(raw as u32))
                .into_pyobject(py)?
                .into_any(),
            _ => f64::from_bits(raw).into_pyobject(py)?.into_any(),
        })
    }

    fn set(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let code = self.code;
        // Converted (and checked) before the lock is taken.
        let bits: u64 = match code {
            'b' => value
                .extract::<i8>()
                .map_err(|_| out_of_range(code, value))? as u8 as u64,
            'B' => u64::from(
                value
                    .extract::<u8>()
                    .map_err(|_| out_of_range(code, value))?,
            ),
            'h' => value
                .extract::<i16>()
                .map_err(|_| out_of_range(code, value))? as u16 as u64,
            'H' => u64::from(
                value
                    .extract::<u16>()
                    .map_err(|_| out_of_range(code, value))?,
            ),
            'i' => value
                .extract::<i32>()
                .map_err(|_| out_of_range(code, value))? as u32 as u64,
            'I' => u64::from(
                value
                    .extract::<u32>()
                    .map_err(|_| out_of_range(code, value))?,
            ),
            'l' | 'q' => value
                .extract::<i64>()
                .map_err(|_| out_of_range(code, value))? as u64,
            'L' | 'Q' => value
                .extract::<u64>()
                .map_err(|_| out_of_range(code, value))?,
            '?' => u64::from(value.is_truthy()?),
            'c' => {
                let b = value.cast::<PyBytes>().ok().map(|b| b.as_bytes().to_vec());
                match b.as_deref() {
                    Some([one]) => u64::from(*one),
                    _ => {
                        return Err(PyTypeError::new_err(format!(
                            "a shared value of typecode 'c' holds one byte (b'x'), not {}",
                            value.repr()?
                        )))
                    }
                }
            }
            'f' => u64::from((value.extract::<f64>()? as f32).to_bits()),
            _ => value.extract::<f64>()?.to_bits(),
        };
        let p = self.ptr();
        self.locked(py, || match code {
            'b' | 'B' | '?' | 'c' => atomic_at!(AtomicU8, p).store(bits as u8, Ordering::SeqCst),
            'h' | 'H' => atomic_at!(AtomicU16, p).store(bits as u16, Ordering::SeqCst),
            'i' | 'I' | 'f' => atomic_at!(AtomicU32, p).store(bits as u32, Ordering::SeqCst),
            _ => atomic_at!(AtomicU64, p).store(bits, Ordering::SeqCst),
        })
    }
}
