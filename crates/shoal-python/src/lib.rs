//! `shoal._shoal`: the PyO3 binding of `shoal-core`. It converts values,
//! releases the GIL around every blocking call, and maps errors; the
//! behaviour lives in the core crate and in `python/shoal`.

mod blocking;
mod completion;
mod engine;
mod errors;
mod link;
mod process;
mod queue;
mod shm;
mod spmd;
mod store;
mod sync;
mod value;

use pyo3::prelude::*;

#[pymodule]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<link::PyLink>()?;
    m.add_class::<shm::PyFd>()?;
    m.add_class::<shm::PySegment>()?;
    m.add_class::<sync::PySharedLock>()?;
    m.add_class::<sync::PySharedRLock>()?;
    m.add_class::<sync::PySharedSemaphore>()?;
    m.add_class::<sync::PySharedEvent>()?;
    m.add_class::<sync::PySharedCounter>()?;
    m.add_class::<sync::PySharedBarrier>()?;
    m.add_class::<sync::PySharedCondvar>()?;
    m.add_class::<value::PySharedValue>()?;
    sync::add_sizes(m)?;
    m.add_class::<queue::PyMessageQueue>()?;
    m.add_class::<process::PyChild>()?;
    m.add_function(wrap_pyfunction!(shm::copy_to_segment, m)?)?;
    m.add_function(wrap_pyfunction!(shm::locate, m)?)?;
    m.add_function(wrap_pyfunction!(shm::same_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(shm::find_segment_at, m)?)?;
    m.add_function(wrap_pyfunction!(shm::scan_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(shm::all_plain, m)?)?;
    shm::add_access_codes(m)?;
    m.add_function(wrap_pyfunction!(cpu_report, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_size, m)?)?;
    m.add_function(wrap_pyfunction!(measured_chunk_size, m)?)?;
    m.add_class::<completion::Outcome>()?;
    m.add_class::<completion::Completion>()?;
    m.add_class::<completion::RunInfo>()?;
    m.add_class::<completion::Stream>()?;
    m.add_class::<completion::WorkerOutput>()?;
    m.add_class::<completion::Batch>()?;
    m.add_class::<completion::WorkerRecord>()?;
    m.add_class::<link::TaskFrame>()?;
    m.add_class::<link::FunctionFrame>()?;
    m.add_class::<link::ForgetFrame>()?;
    m.add_class::<link::InitFrame>()?;
    m.add_class::<link::ExitFrame>()?;
    store::add_store_items(m)?;
    spmd::add_spmd_items(m)?;
    Ok(())
}

/// `(count, machine, affinity, cgroup_quota, slurm)`: see `shoal.cpu_count`.
#[pyfunction]
fn cpu_report() -> (usize, usize, Option<usize>, Option<f64>, Option<usize>) {
    let r = shoal_core::cpus::cpu_report();
    (r.count, r.machine, r.affinity, r.cgroup_quota, r.slurm)
}

/// Items per chunk for `items` items of known length on `workers` workers
/// (see `shoal_core::chunking`).
#[pyfunction]
fn chunk_size(items: usize, workers: usize, checkpointed: bool) -> usize {
    shoal_core::chunking::chunk_size(items, workers, checkpointed)
}

/// Items per chunk of a lazy input, given one item's measured run time.
#[pyfunction]
fn measured_chunk_size(item_ns: f64) -> usize {
    shoal_core::chunking::measured_chunk_size(item_ns)
}
