//! What every primitive that lives in shared memory stands on: futex waits
//! and wakes on a word that several processes map, whether a process that
//! held something is gone, and the promise that a type may be placed over
//! zeroed shared bytes.
//!
//! Futexes here are never `FUTEX_PRIVATE`: the words are shared between
//! processes. Every wait has a timeout, and callers wait in short slices so
//! that they can look for a dead holder (and Python can run its signal
//! handlers) between them.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Longest single futex wait: waiters wake at least this often to check for
/// a dead holder.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A type made only of atomics, laid over bytes of a shared segment.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, made only of atomics (valid for any
/// bit pattern, all zeros included), and hold no pointers: every process
/// maps the bytes at its own address.
pub unsafe trait InSharedMemory: Sized {
    /// Bytes it takes in a segment.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Alignment its offset in a segment needs.
    const ALIGN: usize = std::mem::align_of::<Self>();

    /// The value stored at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be aligned to [`Self::ALIGN`], point to [`Self::SIZE`]
    /// bytes of shared memory used only as this type, and stay mapped for
    /// `'a`.
    unsafe fn at<'a>(ptr: *mut u8) -> &'a Self {
        // SAFETY: the caller promises alignment, size and lifetime; the
        // trait's contract makes any bit pattern a valid value.
        unsafe { &*ptr.cast::<Self>() }
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout` (spurious
/// wake-ups happen: callers re-check in a loop).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a futex wait on a live atomic word with a valid timeout; not
    // FUTEX_PRIVATE, because the word is shared between processes. EAGAIN,
    // EINTR and timeouts are left to the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` processes or threads sleeping on `word`.
pub fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: a futex wake on a live atomic word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes everyone sleeping on `word`.
pub fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX);
}

/// This process's pid, cached per thread (getpid is a system call; every
/// lock operation needs it) and read again in a forked child.
pub fn my_pid() -> u32 {
    thread_local! {
        /// (fork generation, pid) as this thread last read them.
        static CACHED: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((u64::MAX, 0)) };
    }
    let generation = crate::fork::generation();
    CACHED.with(|cell| {
        let (seen, pid) = cell.get();
        if seen == generation {
            return pid;
        }
        let pid = std::process::id();
        cell.set((generation, pid));
        pid
    })
}

thread_local! {
    /// (fork generation, tid) of this thread.
    static TID: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((u64::MAX, 0)) };
}

/// This thread's kernel id (unique in the system while the thread lives),
/// cached per thread (read again in a forked child).
pub fn my_tid() -> u32 {
    TID.with(|cell| {
        let generation = crate::fork::generation();
        let (seen, tid) = cell.get();
        if seen == generation && tid != 0 {
            return tid;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        cell.set((generation, tid));
        tid
    })
}

/// Whether process `pid` has ended: gone, or a zombie (killed, not yet
/// reaped by its parent), which runs no more code.
pub fn is_dead(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            Some(after_name.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::fds::SharedFd;
    use crate::shm::{create, Access, Mapping};

    /// A fresh shared, zeroed page.
    pub(crate) fn page() -> Arc<Mapping> {
        Mapping::map(SharedFd::new(create(4096).unwrap()), Access::Shared).unwrap()
    }

    /// The pid of a process that has ended (and been reaped).
    pub(crate) fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }
}
