//! shoal's engine: a scheduler thread driving worker processes over
//! socketpairs. Pure Rust; the Python binding lives in `shoal-python`.
//!
//! - [`engine::Engine`]: the handle a pool holds.
//! - [`scheduler`]: dispatch, retries, timeouts, worker replacement.
//! - [`worker`] / [`spawn`]: one worker process and its I/O threads.
//! - [`frame`]: the wire format. [`link`]: the worker's side of it.
//! - [`status`]: the shared page that says which task a worker runs.
//! - [`cpus`]: how many cores this process may use.
//! - [`store`] / [`digest`]: the checkpoint store and its task keys.

mod completions;
pub mod cpus;
pub mod digest;
pub mod engine;
pub mod error;
pub mod frame;
pub mod link;
mod scheduler;
pub mod spawn;
pub mod status;
pub mod store;
pub mod task;
mod worker;

pub use engine::{Engine, Next};
pub use error::{CoreError, FrameError, Result, StoreError};
pub use scheduler::EngineConfig;
pub use spawn::WorkerCommand;
pub use task::{BrokenPool, Completion, ExitInfo, Outcome, Submission, TaskOptions};
