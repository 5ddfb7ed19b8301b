//! The synchronisation primitives that live in shared segments (see
//! `shoal_core::sync`: `lock`, `rlock`, `semaphore`, `event`, `counter`, `barrier`
//! and `condvar`), the base of `shoal.Lock`, `RLock`, `Semaphore`,
//! `Event`, `Condition`, `Barrier`, `Value` and the queues' counts.
//!
//! Each object is given a shared, writable segment and an offset; it keeps
//! the mapping alive. Every wait goes through `wait_interruptibly`, so it
//! releases the GIL and Ctrl-C interrupts it.

use std::marker::PhantomData;
use std::sync::Arc;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use shoal_core::shm::{Access, Mapping};
use shoal_core::sync::barrier::{Arrival, SharedBarrier, Waited};
use shoal_core::sync::condvar::SharedCondvar;
use shoal_core::sync::counter::SharedCounter;
use shoal_core::sync::event::SharedEvent;
use shoal_core::sync::futex::InSharedMemory;
use shoal_core::sync::lock::SharedLock;
use shoal_core::sync::rlock::SharedRLock;
use shoal_core::sync::semaphore::{ReleaseError, SharedSemaphore};

use crate::blocking::{seconds, wait_interruptibly};
use crate::shm::PySegment;

/// Where a `T` lies: a shared mapping (kept alive) and an offset in it,
/// checked once, so [`Region::get`] needs no further checks.
pub(crate) struct Region<T> {
    map: Arc<Mapping>,
    offset: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T: InSharedMemory> Region<T> {
    fn new(segment: &PySegment, offset: usize, what: &str) -> PyResult<Self> {
        let map = segment.map.clone();
        let fits = offset
            .checked_add(T::SIZE)
            .is_some_and(|end| end <= map.len());
        let aligned = (map.as_ptr() as usize + offset) % T::ALIGN == 0;
        if map.access() != Access::Shared || !aligned || !fits {
            return Err(PyValueError::new_err(format!(
                "a {what} needs {} bytes, aligned to {}, of a shared, writable segment",
                T::SIZE,
                T::ALIGN
            )));
        }
        Ok(Region {
            map,
            offset,
            _type: PhantomData,
        })
    }

    fn get(&self) -> &T {
        // SAFETY: `new` checked that `offset` is aligned for T and that
        // T::SIZE bytes fit in the shared mapping, which `self.map` keeps
        // mapped for as long as the returned reference (tied to `self`).
        unsafe { T::at(self.map.as_ptr().add(self.offset)) }
    }
}

/// Waits until `step(slice)` says yes, at most `timeout` (forever if None;
/// one try with no wait if `block` is false). Ctrl-C interrupts.
fn wait_until(
    py: Python<'_>,
    block: bool,
    timeout: Option<f64>,
    step: impl Fn(std::time::Duration) -> bool + Send + Sync,
) -> PyResult<bool> {
    if !block {
        return Ok(step(std::time::Duration::ZERO));
    }
    // As multiprocessing's: a negative timeout means "do not wait".
    let timeout = seconds(timeout.map(|t| if t < 0.0 { 0.0 } else { t }))?;
    let got = wait_interruptibly(py, timeout, |slice| step(slice).then_some(()))?;
    Ok(got.is_some())
}

#[pyclass(frozen, name = "SharedLock", module = "shoal._shoal")]
pub(crate) struct PySharedLock {
    region: Region<SharedLock>,
}

#[pymethods]
impl PySharedLock {
    /// The lock at `offset` in a shared, writable `segment` (zeroed bytes
    /// are a free lock).
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        Ok(PySharedLock {
            region: Region::new(segment, offset, "lock")?,
        })
    }

    /// Takes the lock; waits at most `timeout` seconds (forever if None).
    /// Returns whether it was taken. Ctrl-C interrupts the wait.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let lock = self.region.get();
        if lock.try_acquire() {
            return Ok(true);
        }
        wait_until(py, block, timeout, |slice| lock.acquire_within(slice))
    }

    fn release(&self) -> PyResult<()> {
        self.region
            .get()
            .release()
            .map_err(|_| PyValueError::new_err("release of a lock that is not held"))
    }

    fn locked(&self) -> bool {
        self.region.get().is_locked()
    }

    /// Pid of the process that holds it, or None.
    fn owner(&self) -> Option<u32> {
        self.region.get().owner()
    }

    /// Whether this process holds it.
    fn held_here(&self) -> bool {
        self.region.get().held_here()
    }
}

#[pyclass(frozen, name = "SharedRLock", module = "shoal._shoal")]
pub(crate) struct PySharedRLock {
    region: Region<SharedRLock>,
}

fn not_owner() -> PyErr {
    PyRuntimeError::new_err("cannot release un-acquired lock")
}

#[pymethods]
impl PySharedRLock {
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        Ok(PySharedRLock {
            region: Region::new(segment, offset, "re-entrant lock")?,
        })
    }

    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let lock = self.region.get();
        if lock.try_acquire() {
            return Ok(true);
        }
        wait_until(py, block, timeout, |slice| lock.acquire_within(slice))
    }

    fn release(&self) -> PyResult<()> {
        self.region.get().release().map_err(|_| not_owner())
    }

    /// Releases every level; returns how many, for `restore`.
    fn release_all(&self) -> PyResult<u32> {
        self.region.get().release_all().map_err(|_| not_owner())
    }

    fn restore(&self, count: u32) {
        self.region.get().restore(count);
    }

    fn locked(&self) -> bool {
        self.region.get().is_locked()
    }

    /// Whether the calling thread holds it.
    fn held_by_me(&self) -> bool {
        self.region.get().held_by_me()
    }

    /// `(pid, tid, count)` of the holder, or None.
    fn holder(&self) -> Option<(u32, u32, u32)> {
        self.region.get().holder()
    }
}

#[pyclass(frozen, name = "SharedSemaphore", module = "shoal._shoal")]
pub(crate) struct PySharedSemaphore {
    region: Region<SharedSemaphore>,
}

#[pymethods]
impl PySharedSemaphore {
    /// The semaphore at `offset`; given `value`, sets up fresh (zeroed)
    /// memory as a semaphore of that value (bounded by it if `bounded`).
    #[new]
    #[pyo3(signature = (segment, offset, value=None, bounded=false))]
    fn new(
        segment: &PySegment,
        offset: usize,
        value: Option<u32>,
        bounded: bool,
    ) -> PyResult<Self> {
        let region = Region::<SharedSemaphore>::new(segment, offset, "semaphore")?;
        if let Some(value) = value {
            region.get().init(value, bounded);
        }
        Ok(PySharedSemaphore { region })
    }

    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let sem = self.region.get();
        if sem.try_acquire() {
            return Ok(true);
        }
        wait_until(py, block, timeout, |slice| sem.acquire_within(slice))
    }

    fn release(&self) -> PyResult<()> {
        match self.region.get().release() {
            Ok(()) => Ok(()),
            Err(ReleaseError::AboveBound) => Err(PyValueError::new_err(
                "semaphore or lock released too many times",
            )),
            Err(ReleaseError::Overflow) => Err(PyOverflowError::new_err(
                "the semaphore's value would overflow",
            )),
        }
    }

    fn get_value(&self) -> u32 {
        self.region.get().value()
    }

    /// Units this process holds.
    fn held_here(&self) -> u32 {
        self.region.get().held_here()
    }

    #[getter]
    fn initial(&self) -> u32 {
        self.region.get().initial()
    }

    #[getter]
    fn bounded(&self) -> bool {
        self.region.get().is_bounded()
    }
}

#[pyclass(frozen, name = "SharedEvent", module = "shoal._shoal")]
pub(crate) struct PySharedEvent {
    region: Region<SharedEvent>,
}

#[pymethods]
impl PySharedEvent {
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        Ok(PySharedEvent {
            region: Region::new(segment, offset, "event")?,
        })
    }

    fn is_set(&self) -> bool {
        self.region.get().is_set()
    }

    fn set(&self) {
        self.region.get().set();
    }

    fn clear(&self) {
        self.region.get().clear();
    }

    /// Waits at most `timeout` seconds (forever if None); returns the flag.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let event = self.region.get();
        wait_until(py, true, timeout, |slice| event.wait_within(slice))
    }
}

#[pyclass(frozen, name = "SharedCounter", module = "shoal._shoal")]
pub(crate) struct PySharedCounter {
    region: Region<SharedCounter>,
}

#[pymethods]
impl PySharedCounter {
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        Ok(PySharedCounter {
            region: Region::new(segment, offset, "counter")?,
        })
    }

    fn get(&self) -> u32 {
        self.region.get().get()
    }

    /// Counts up if below `limit` (0: no limit), waiting for room as
    /// `block`/`timeout` say; returns whether it counted.
    #[pyo3(signature = (limit, block=true, timeout=None))]
    fn increment_below(
        &self,
        py: Python<'_>,
        limit: u32,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let counter = self.region.get();
        wait_until(py, block, timeout, |slice| {
            counter.increment_below(limit, slice)
        })
    }

    /// Counts down; ValueError below zero.
    fn decrement(&self) -> PyResult<u32> {
        self.region
            .get()
            .decrement()
            .map_err(|_| PyValueError::new_err("counted down below zero"))
    }

    /// Waits at most `timeout` seconds (forever if None) for zero.
    #[pyo3(signature = (timeout=None))]
    fn wait_zero(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let counter = self.region.get();
        wait_until(py, true, timeout, |slice| counter.wait_zero_within(slice))
    }
}

#[pyclass(frozen, name = "SharedBarrier", module = "shoal._shoal")]
pub(crate) struct PySharedBarrier {
    region: Region<SharedBarrier>,
}

const PASSED: u8 = 0;
const BROKEN: u8 = 1;
const PENDING: u8 = 2;

fn waited_code(w: Waited) -> u8 {
    match w {
        Waited::Passed => PASSED,
        Waited::Broken => BROKEN,
        Waited::Pending => PENDING,
    }
}

#[pymethods]
impl PySharedBarrier {
    /// The barrier at `offset`; given `parties`, sets up fresh memory.
    #[new]
    #[pyo3(signature = (segment, offset, parties=None))]
    fn new(segment: &PySegment, offset: usize, parties: Option<u32>) -> PyResult<Self> {
        let region = Region::<SharedBarrier>::new(segment, offset, "barrier")?;
        if let Some(parties) = parties {
            region.get().init(parties);
        }
        Ok(PySharedBarrier { region })
    }

    /// `(last, index, generation)`, or None if the barrier is broken.
    fn arrive(&self) -> Option<(bool, u32, u32)> {
        match self.region.get().arrive() {
            Ok(Arrival::Wait { index, generation }) => Some((false, index, generation)),
            Ok(Arrival::Last { index, generation }) => Some((true, index, generation)),
            Err(_) => None,
        }
    }

    /// Waits for `generation` to pass: 0 passed, 1 broken, 2 still
    /// pending when `timeout` (None: forever) ran out.
    #[pyo3(signature = (generation, timeout=None))]
    fn wait_pass(&self, py: Python<'_>, generation: u32, timeout: Option<f64>) -> PyResult<u8> {
        let barrier = self.region.get();
        let timeout = seconds(timeout)?;
        let got = wait_interruptibly(py, timeout, |slice| {
            match barrier.wait_pass(generation, slice) {
                Waited::Pending => None,
                done => Some(done),
            }
        })?;
        Ok(got.map_or(PENDING, waited_code))
    }

    /// A waiter gives up: 0 if the generation passed meanwhile, else 1
    /// (the barrier is now broken).
    fn give_up(&self, generation: u32) -> u8 {
        waited_code(self.region.get().give_up(generation))
    }

    #[pyo3(name = "pass_generation")]
    fn pass_generation(&self, generation: u32) {
        self.region.get().pass(generation);
    }

    fn abort(&self) {
        self.region.get().abort();
    }

    fn reset(&self) {
        self.region.get().reset();
    }

    #[getter]
    fn parties(&self) -> u32 {
        self.region.get().parties()
    }

    #[getter]
    fn n_waiting(&self) -> u32 {
        self.region.get().n_waiting()
    }

    #[getter]
    fn broken(&self) -> bool {
        self.region.get().is_broken()
    }
}

#[pyclass(frozen, name = "SharedCondvar", module = "shoal._shoal")]
pub(crate) struct PySharedCondvar {
    region: Region<SharedCondvar>,
}

#[pymethods]
impl PySharedCondvar {
    #[new]
    fn new(segment: &PySegment, offset: usize) -> PyResult<Self> {
        Ok(PySharedCondvar {
            region: Region::new(segment, offset, "condition")?,
        })
    }

    /// Joins the waiters (lock held); returns the sequence to sleep on.
    fn enter(&self) -> u32 {
        self.region.get().enter()
    }

    fn current(&self) -> u32 {
        self.region.get().current()
    }

    /// Sleeps until a notify after `seq` (lock released), at most
    /// `timeout` seconds; returns whether one came.
    #[pyo3(signature = (seq, timeout=None))]
    fn sleep(&self, py: Python<'_>, seq: u32, timeout: Option<f64>) -> PyResult<bool> {
        let cv = self.region.get();
        wait_until(py, true, timeout, |slice| cv.sleep(seq, slice))
    }

    fn claim(&self) -> bool {
        self.region.get().claim()
    }

    fn leave(&self) {
        self.region.get().leave();
    }

    fn notify(&self, n: u32) -> u32 {
        self.region.get().notify(n)
    }

    fn counts(&self) -> (u32, u32) {
        self.region.get().counts()
    }
}

/// Bytes each primitive takes in a segment, by name, for the Python side's
/// layouts.
pub(crate) fn add_sizes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let sizes = [
        ("lock", SharedLock::SIZE),
        ("rlock", SharedRLock::SIZE),
        ("semaphore", SharedSemaphore::SIZE),
        ("event", SharedEvent::SIZE),
        ("counter", SharedCounter::SIZE),
        ("barrier", SharedBarrier::SIZE),
        ("condvar", SharedCondvar::SIZE),
    ];
    let dict = pyo3::types::PyDict::new(m.py());
    for (name, size) in sizes {
        dict.set_item(name, size)?;
    }
    m.add("SYNC_SIZES", dict)
}
