//! Starting one worker process: a fresh interpreter joined to the parent by
//! a socketpair and a status page, and killed by the kernel if the parent dies.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::{CoreError, Result};
use crate::status::StatusPage;

/// The descriptor number the worker finds its end of the socketpair at.
pub const WORKER_SOCKET_FD: RawFd = 3;
/// The descriptor number the worker finds its status page at.
pub const WORKER_STATUS_FD: RawFd = 4;

/// How to start a worker: `program args...` with extra environment.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A started worker, seen from the parent.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub sock: UnixStream,
    pub status: StatusPage,
}

/// Duplicates `fd` to a number of at least 10, close-on-exec, so the child
/// can `dup2` it onto 3 or 4 without clobbering the other.
fn dup_high(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; checked below.
    let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if raw < 0 {
        return Err(CoreError::io(
            "fcntl(F_DUPFD_CLOEXEC)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// What a child process does between `fork` and `exec`: die with its
/// parent (closing the race where the parent died already), ignore Ctrl-C
/// (which reaches the whole process group: the parent decides what happens
/// to its children), and move its descriptors to the numbers it expects
/// (`(source, number)` pairs; a number of its own clears close-on-exec).
///
/// # Safety
///
/// Only in a forked child before `exec`: it calls only async-signal-safe
/// functions (prctl, getppid, signal, setrlimit, dup2, _exit) and
/// allocates nothing; `map` was made before the fork, and no source is
/// another pair's number.
pub(crate) unsafe fn prepare_child(
    parent_pid: libc::pid_t,
    map: &[(RawFd, RawFd)],
    soft_limit: Option<&libc::rlimit>,
) -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls in a forked child (the caller's promise).
    unsafe {
        // Die with the parent, and close the race where it died already.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent_pid {
            libc::_exit(1);
        }
        // Ctrl-C in a terminal reaches the whole process group; the parent
        // decides what happens to its children, so they ignore it (a worker
        // keeps ignoring it in a way its own children do not inherit: see
        // `link`).
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        if let Some(lim) = soft_limit {
            libc::setrlimit(libc::RLIMIT_NOFILE, lim);
        }
        // dup2 onto a different number clears close-on-exec.
        for &(src, dst) in map {
            if libc::dup2(src, dst) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The limit on open files a child should start with: if shoal raised this
/// process's, the one this process started with (the child raises its own
/// if it needs to), so the programs it runs do not inherit a raised one.
pub(crate) fn child_soft_limit() -> Option<libc::rlimit> {
    crate::fds::original_soft_limit().and_then(|soft| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit on a valid, writable struct.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then(|| libc::rlimit {
            rlim_cur: (soft as libc::rlim_t).min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        })
    })
}

pub fn spawn_worker(cmd: &WorkerCommand) -> Result<Spawned> {
    let (parent_end, child_end) = UnixStream::pair().map_err(|e| CoreError::io("socketpair", e))?;
    let (status, status_fd) = StatusPage::create()?;
    let child_sock = dup_high(child_end.as_raw_fd())?;
    let child_status = dup_high(status_fd.as_raw_fd())?;
    drop(child_end);
    drop(status_fd);
    let (sock_fd, stat_fd) = (child_sock.as_raw_fd(), child_status.as_raw_fd());
    let parent_pid = std::process::id() as libc::pid_t;
    let soft_limit = child_soft_limit();

    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    let map = [(sock_fd, WORKER_SOCKET_FD), (stat_fd, WORKER_STATUS_FD)];
    // SAFETY: the closure runs in the forked child before exec and only
    // calls `prepare_child`, which is made for that; `map` is made above.
    unsafe {
        command.pre_exec(move || prepare_child(parent_pid, &map, soft_limit.as_ref()));
    }
    let child = command.spawn().map_err(|source| CoreError::Spawn {
        program: cmd.program.display().to_string(),
        source,
    })?;
    // Our copies of the child's ends close here; the child holds its own.
    drop(child_sock);
    drop(child_status);
    Ok(Spawned {
        child,
        sock: parent_end,
        status,
    })
}
