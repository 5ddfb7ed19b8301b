//! Single processes started on the user's behalf (`shoal.Process`).
//!
//! They are spawned like workers ([`crate::spawn`]): a fresh interpreter
//! with a socket and `PR_SET_PDEATHSIG`, so none outlives its parent. That
//! signal fires when the *thread* that forked exits, so every spawn happens
//! on one launcher thread that lives as long as the process: a Process
//! started from a short-lived Python thread must not die with that thread.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{CoreError, Result};
use crate::fork::Owner;
use crate::spawn::{spawn_worker, WorkerCommand};

type Job = Box<dyn FnOnce() + Send>;
type Launcher = Mutex<mpsc::Sender<Job>>;

/// The launcher thread's queue, started on first use (and again if it
/// could not be started then).
fn launcher() -> Result<&'static Launcher> {
    static LAUNCHER: OnceLock<Launcher> = OnceLock::new();
    if let Some(launcher) = LAUNCHER.get() {
        return Ok(launcher);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("shoal-launcher".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .map_err(|e| CoreError::io("start shoal's launcher thread", e))?;
    // Two first uses at once: one thread's queue wins, the other's thread
    // ends when its queue is dropped here.
    Ok(LAUNCHER.get_or_init(|| Mutex::new(tx)))
}

/// Runs `f` on the thread that starts every child process of shoal's (a
/// thread that lives as long as the process, so that `PR_SET_PDEATHSIG`
/// fires only when the process dies) and returns what it returned.
pub fn on_launcher_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (reply_tx, reply_rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(f());
    });
    launcher()?
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| CoreError::Config("shoal's launcher thread has stopped".into()))?;
    reply_rx
        .recv()
        .map_err(|_| CoreError::Config("shoal's launcher thread has stopped".into()))
}

/// A started child: waited for with a timeout, signalled only while it
/// has not been reaped (so a recycled pid is never hit).
pub struct ChildProcess {
    /// A forked child of this process cannot wait for or signal it.
    owner: Owner,
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    /// Readable when the child exits (`pidfd_open`); `None` if the kernel
    /// lacks it, and then waits poll.
    pidfd: Option<OwnedFd>,
}

impl ChildProcess {
    /// Starts `command`; returns the child and the parent's end of its
    /// socket (the child finds its end at descriptor 3).
    pub fn start(command: WorkerCommand) -> Result<(ChildProcess, UnixStream)> {
        let (child, sock) =
            on_launcher_thread(move || spawn_worker(&command).map(|s| (s.child, s.sock)))??;
        let pid = child.id();
        // SAFETY: pidfd_open on the pid of a child we have not reaped.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a new descriptor nothing else owns, if the call succeeded.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
        Ok((
            ChildProcess {
                owner: Owner::here(),
                pid,
                child: Mutex::new(child),
                status: Mutex::new(None),
                pidfd,
            },
            sock,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the child has ended (reaping it). In a process
    /// forked from its parent, an error: the child is not this process's.
    pub fn poll(&self) -> Result<Option<ExitStatus>> {
        self.owner.check("process handle")?;
        Ok(self.poll_here())
    }

    fn poll_here(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            *status = child.try_wait().ok().flatten();
        }
        *status
    }

    /// Waits at most `wait` for the child to end. In a process forked
    /// from its parent, an error at once.
    pub fn wait_within(&self, wait: Duration) -> Result<Option<ExitStatus>> {
        self.owner.check("process handle")?;
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.poll_here() {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => {
                    // A signal cutting the wait short just means looking again.
                    let _ = crate::fds::wait_readable(fd.as_raw_fd(), left);
                }
                None => std::thread::sleep(left.min(Duration::from_millis(2))),
            }
        }
    }

    /// Sends `signal` unless the child has already been reaped.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.owner.check("process handle")?;
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(());
        }
        let _child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: signalling our own unreaped child (its pid cannot have
        // been recycled while we hold the lock that reaping takes).
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(CoreError::io("signal a child process", err));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sh(script: &str) -> WorkerCommand {
        WorkerCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
        }
    }

    #[test]
    fn exit_codes_and_signals_are_reported() {
        let (child, _sock) = ChildProcess::start(sh("exit 3")).unwrap();
        let status = child.wait_within(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));

        let (child, _sock) = ChildProcess::start(sh("sleep 30")).unwrap();
        assert!(child
            .wait_within(Duration::from_millis(50))
            .unwrap()
            .is_none());
        child.signal(libc::SIGKILL).unwrap();
        let status = child.wait_within(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        child.signal(libc::SIGKILL).unwrap();
    }

    #[test]
    fn a_child_outlives_the_thread_that_started_it() {
        let (child, _sock) = std::thread::spawn(|| ChildProcess::start(sh("sleep 0.3; exit 7")))
            .join()
            .unwrap()
            .unwrap();
        let status = child.wait_within(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(status.code(), Some(7));
    }
}
