//! shoal's engine: a scheduler thread driving worker processes (or threads)
//! over socketpairs. Pure Rust; the Python binding lives in `shoal-python`.
//!
//! - [`engine::Engine`]: the handle a pool holds.
//! - [`scheduler`]: dispatch, retries, timeouts, worker replacement; the
//!   [`event`]s it handles.
//! - [`worker`] / [`spawn`] / [`launch`]: one worker, its I/O threads, and
//!   how it starts (a process, or a thread the embedding program runs).
//! - [`frame`]: the wire format. [`link`]: the worker's side of it.
//! - [`status`]: the shared page that says which task a worker runs.
//!   [`timing`]: how a task's run went, as its worker measured it.
//! - [`cpus`]: how many cores this process may use. [`memory`]: how much
//!   memory a process holds.
//! - [`store`] / [`digest`]: the checkpoint store and its task keys;
//!   [`store_file`]: who may write its files, and what they are on.
//! - [`fds`]: descriptors passed between processes. [`shm`]: shared memory
//!   segments. [`sync`] (locks, semaphores, events, conditions, barriers,
//!   counters, on futexes), [`queue`], [`process`]: the primitives
//!   `shoal.Lock`, `shoal.Semaphore`, `shoal.Queue`, `shoal.Process` and the
//!   rest stand on. [`pickle_scan`]: spots large binary data inside a pickle.
//! - [`fork`]: which process an engine or store belongs to, so a forked
//!   child leaves its copies alone.
//! - [`spmd`]: message passing between ranks (`shoal run`), and its launcher.

pub mod chunking;
mod completions;
pub mod cpus;
pub mod digest;
pub mod engine;
pub mod error;
mod event;
pub mod fds;
pub mod fork;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod launch;
pub mod link;
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
pub mod store_file;
pub mod sync;
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
