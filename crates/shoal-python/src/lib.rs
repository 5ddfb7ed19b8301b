//! `shoal._shoal`: the PyO3 binding of `shoal-core`. It converts values,
//! releases the GIL around every blocking call, and maps errors; the
//! behaviour lives in the core crate and in `python/shoal`.

mod blocking;
mod engine;
mod errors;
mod link;
mod store;

use pyo3::prelude::*;

#[pymodule]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<link::PyLink>()?;
    m.add_function(wrap_pyfunction!(cpu_report, m)?)?;
    m.add("ShoalError", m.py().get_type::<errors::ShoalError>())?;
    m.add(
        "CheckpointError",
        m.py().get_type::<errors::CheckpointError>(),
    )?;
    store::add_store_items(m)?;
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
