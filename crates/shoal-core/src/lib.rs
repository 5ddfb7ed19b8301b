//! shoal's engine: a scheduler thread driving worker processes over
//! socketpairs. Pure Rust; the Python binding lives in `shoal-python`.
//!
//! - [`engine::Engine`]: the handle a pool holds.
//! - [`scheduler`]: dispatch, retries, timeouts, worker replacement.
//! - [`worker`] / [`spawn`]: one worker process and its I/O threads.
//! - [`frame`]: the wire format. [`link`]: the worker's side of it.
//! - [`status`]: the shared page that says which task a worker runs.
//! - [`cpus`]: how many cores this process may use. [`memory`]: how much
//!   memory a process holds.
//! - [`fds`]: descriptors passed between processes. [`shm`]: shared memory
//!   segments. [`lock`], [`queue`], [`process`]: the primitives
//!   `shoal.Lock`, `shoal.Queue` and `shoal.Process` stand on.
//!   [`pickle_scan`]: spots large binary data inside a pickle.

mod completions;
pub mod cpus;
pub mod engine;
pub mod error;
pub mod fds;
pub mod frame;
pub mod link;
pub mod lock;
pub mod memory;
pub mod pickle_scan;
pub mod process;
pub mod queue;
mod scheduler;
pub mod shm;
pub mod spawn;
pub mod status;
pub mod task;
mod worker;

pub use engine::{Batch, Engine, Next};
pub use error::{CoreError, FrameError, Result};
pub use scheduler::EngineConfig;
pub use spawn::WorkerCommand;
pub use task::{
    BrokenPool, Completion, ExitInfo, Outcome, Payload, Stream, Submission, TaskOptions,
    WorkerOutput,
};
