//! Which process an object belongs to. A child made by `fork()` (Python's
//! `os.fork()`, say) inherits a copy of every engine and store of its
//! parent, but none of their threads, and possibly locks that one of
//! those threads held at the moment of the fork. Such a copy must never
//! wait for those threads or take those locks: dropping, joining or
//! closing it in the child does nothing (its memory is left as it was).
//!
//! A `pthread_atfork` child hook bumps a counter in the child, so asking
//! "am I still in the process that made this?" costs one atomic load, not
//! a system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add.
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn register() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain function that only touches an atomic;
        // no handler runs before or after fork in the parent.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
}

/// How many forks this process is away from the program's first process:
/// it changes in a forked child, so values cached per process (a pid) are
/// known to be stale there.
pub fn generation() -> u64 {
    register();
    GENERATION.load(Ordering::Relaxed)
}

/// The process an object was made in.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    generation: u64,
    pid: u32,
}

impl Owner {
    /// This process, now.
    pub fn here() -> Owner {
        register();
        Owner {
            generation: GENERATION.load(Ordering::SeqCst),
            pid: std::process::id(),
        }
    }

    /// Whether this is still the process the object was made in (false in
    /// a child forked since).
    pub fn is_here(&self) -> bool {
        GENERATION.load(Ordering::Relaxed) == self.generation
    }

    /// The pid of the process the object was made in.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Ok` in the owning process; in a forked child, the error that says
    /// `what` cannot be used there.
    pub fn check(&self, what: &'static str) -> crate::error::Result<()> {
        if self.is_here() {
            Ok(())
        } else {
            Err(crate::error::CoreError::Forked {
                what,
                pid: self.pid,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_is_not_the_owner() {
        let owner = Owner::here();
        assert!(owner.is_here());
        // SAFETY: the child only reads an atomic and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if owner.is_here() { 1 } else { 0 };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(owner.is_here());
    }
}
