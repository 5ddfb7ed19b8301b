//! How the engine starts a worker: a fresh process (see [`crate::spawn`]),
//! or a thread of this process that the embedding program starts.
//!
//! Both kinds speak the same frames over a socketpair and share a status
//! page, so one scheduler drives both. For a thread worker the engine makes
//! the socketpair and the page and hands the worker's ends to a
//! [`ThreadLauncher`]; the launcher starts a thread that builds a
//! [`crate::link::WorkerLink`] from them and runs a worker loop.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::error::{CoreError, Result};
use crate::spawn::WorkerCommand;
use crate::status::StatusPage;

/// The worker's ends of a thread worker's connection, for the launcher.
#[derive(Debug)]
pub struct WorkerEnds {
    /// The worker's end of the socketpair (close-on-exec).
    pub sock: OwnedFd,
    /// The status page's memfd (close-on-exec).
    pub status: OwnedFd,
    /// The worker's slot in the pool, `0..workers`.
    pub slot: usize,
}

/// Starts a thread that runs a worker loop on the given ends. It must
/// return promptly (the scheduler calls it); an error means no thread was
/// started. A thread that ends closes its socket, which the engine handles
/// as a worker that exited.
pub type ThreadLauncher = Arc<dyn Fn(WorkerEnds) -> std::io::Result<()> + Send + Sync>;

#[derive(Clone)]
pub enum Launch {
    /// Each worker is a fresh process running this command.
    Process(WorkerCommand),
    /// Each worker is a thread of this process. A thread cannot be killed:
    /// to stop one (timeout, cancel, terminate) the engine hangs up its
    /// socket and forgets it; the thread ends when its current call returns.
    Thread(ThreadLauncher),
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Launch::Process(cmd) => f.debug_tuple("Process").field(cmd).finish(),
            Launch::Thread(_) => f.write_str("Thread(..)"),
        }
    }
}

/// Makes a thread worker's socketpair and status page, and hands the
/// worker's ends to `launcher`. Returns the parent's ends.
pub(crate) fn launch_thread(
    launcher: &ThreadLauncher,
    slot: usize,
) -> Result<(UnixStream, StatusPage)> {
    let (parent_end, worker_end) =
        UnixStream::pair().map_err(|e| CoreError::io("socketpair", e))?;
    let (status, status_fd) = StatusPage::create()?;
    launcher(WorkerEnds {
        sock: worker_end.into(),
        status: status_fd,
        slot,
    })
    .map_err(|e| CoreError::io("start a worker thread", e))?;
    Ok((parent_end, status))
}
