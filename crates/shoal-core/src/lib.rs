//! shoal's engine: a scheduler thread driving worker processes (or threads)
//! over socketpairs. Pure Rust; the Python binding lives in `shoal-python`.
//!
//! - [`engine::Engine`]: the handle a pool holds.
//! - [`scheduler`]: dispatch, retries, timeouts, worker replacement.
//! - [`worker`] / [`spawn`] / [`launch`]: one worker, its I/O threads, and
//!   how it starts (a process, or a thread the embedding program runs).
//! - [`frame`]: the wire format. [`link`]: the worker's side of it.
//! - [`status`]: the shared page that says which task a worker runs.
//!   [`timing`]: how a task's run went, as its worker measured it.
//! - [`cpus`]: how many cores this process may use. [`memory`]: how much
//!   memory a process holds.
//! - [`store`] / [`digest`]: the checkpoint store and its task keys.
//! - [`fds`]: descriptors passed between processes. [`shm`]: shared memory
//!   segments. [`lock`], [`queue`], [`process`]: the primitives
//!   `shoal.Lock`, `shoal.Queue` and `shoal.Process` stand on.
//!   [`pickle_scan`]: spots large binary data inside a pickle.
//! - [`spmd`]: message passing between ranks (`shoal run`), and its launcher.
//!   [`futex`]: waiting on a word of shared memory.

mod completions;
pub mod cpus;
pub mod digest;
pub mod engine;
pub mod error;
pub mod fds;
pub mod frame;
pub mod futex;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod launch;
pub mod link;
pub mod lock;
pub mod memory;
pub mod pickle_scan;
pub mod process;
pub mod queue;
mod scheduler;
pub mod shm;
pub mod spawn;
pub mod spmd;
pub mod status;
pub mod store;
pub mod task;
pub mod timing;
mod worker;

pub use engine::{Batch, Engine, Next};
pub use error::{CoreError, FrameError, Result, StoreError};
pub use launch::{Launch, ThreadLauncher, WorkerEnds};
pub use scheduler::EngineConfig;
pub use spawn::WorkerCommand;
pub use task::{
    BrokenPool, Completion, ExitInfo, Outcome, Payload, RunInfo, Stream, Submission, TaskOptions,
    WorkerOutput, WorkerRecord,
};
pub use timing::RunTiming;
