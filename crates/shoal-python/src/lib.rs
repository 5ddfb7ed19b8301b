//! `shoal._shoal`: the PyO3 binding of `shoal-core`. It converts values,
//! releases the GIL around every blocking call, and maps errors; the
//! behaviour lives in the core crate and in `python/shoal`.

mod blocking;
mod engine;
mod errors;
mod link;
mod process;
mod queue;
mod shm;
mod spmd;
mod store;
mod sync;

use pyo3::prelude::*;

#[pymodule]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<link::PyLink>()?;
    m.add_class::<shm::PyFd>()?;
    m.add_class::<shm::PySegment>()?;
    m.add_class::<sync::PySharedLock>()?;
    m.add_class::<queue::PyMessageQueue>()?;
    m.add_class::<process::PyChild>()?;
    m.add_function(wrap_pyfunction!(shm::copy_to_segment, m)?)?;
    m.add_function(wrap_pyfunction!(shm::locate, m)?)?;
    m.add_function(wrap_pyfunction!(shm::find_segment_at, m)?)?;
    m.add_function(wrap_pyfunction!(shm::scan_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(shm::all_plain, m)?)?;
    shm::add_access_codes(m)?;
    m.add_function(wrap_pyfunction!(cpu_report, m)?)?;
    m.add("ShoalError", m.py().get_type::<errors::ShoalError>())?;
    m.add(
        "CheckpointError",
        m.py().get_type::<errors::CheckpointError>(),
    )?;
    m.add("QueueClosed", m.py().get_type::<errors::QueueClosed>())?;
    store::add_store_items(m)?;
    spmd::add_spmd_items(m)?;
    engine::add_outcome_codes(m)?;
    link::add_frame_kinds(m)?;
    Ok(())
}

/// `(count, machine, affinity, cgroup_quota, slurm)`: see `shoal.cpu_count`.
#[pyfunction]
fn cpu_report() -> (usize, usize, Option<usize>, Option<f64>, Option<usize>) {
    let r = shoal_core::cpus::cpu_report();
    (r.count, r.machine, r.affinity, r.cgroup_quota, r.slurm)
}
