//! Shared memory segments: memfds (anonymous files that vanish once the
//! last descriptor and mapping are gone, so nothing is left in /dev/shm
//! when a process is killed), their mappings, and a registry of this
//! process's shareable mappings by address.
//!
//! A segment is passed to another process as its descriptor (see
//! [`crate::fds`]). Copies of data made for a transfer are sealed
//! (`F_SEAL_WRITE`): nobody can change them afterwards, so any number of
//! processes may map them and pass them on by handle.
//!
//! The registry is what lets a buffer that already lives in a shareable
//! segment (a shared array, or an argument a task received) travel as a
//! handle instead of a copy: given an address, [`find`] says which
//! mapping holds it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{CoreError, Result};
use crate::fds::SharedFd;

/// How a segment is mapped. Read-only and shared mappings are the
/// segment's own bytes (`MAP_SHARED`), so the segment can stand for them in
/// another process; an owned mapping is private (copy-on-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only: a sealed copy that several tasks read.
    ReadOnly,
    /// Writable and private (`MAP_PRIVATE`): a task's own copy of an
    /// argument, or a result. Pages are copied only when written, and the
    /// segment keeps what was sent, so a retried task sees it unchanged.
    Owned,
    /// Writable by every process that maps it: a shared array.
    Shared,
}

fn os_error(context: &'static str) -> CoreError {
    CoreError::io(context, std::io::Error::last_os_error())
}

/// A new zero-filled memfd of `len` bytes (at least one: an empty mapping
/// is not allowed), which can be sealed.
pub fn create(len: usize) -> Result<OwnedFd> {
    create_named(len, c"shoal-shm")
}

/// [`create`], with the name the memfd shows in `/proc/PID/maps` (shoal's
/// own bookkeeping pages are told apart from data that way).
pub fn create_named(len: usize, name: &std::ffi::CStr) -> Result<OwnedFd> {
    let fd = memfd(name, libc::MFD_ALLOW_SEALING)
        .map_err(|e| CoreError::io("memfd_create for shared memory", e))?;
    // SAFETY: resizing a memfd we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len.max(1) as libc::off_t) } < 0 {
        return Err(os_error("resize shared memory (out of memory?)"));
    }
    Ok(fd)
}

/// A new, empty memfd named `name` (close-on-exec and `flags`); when the
/// process is out of descriptors, the soft limit is raised and it is tried
/// once more.
pub fn memfd(name: &std::ffi::CStr, flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    let mut raised = false;
    loop {
        // SAFETY: the name is a valid C string; flags are plain constants.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_CLOEXEC) };
        if raw >= 0 {
            crate::fds::note_descriptor(raw);
            // SAFETY: `raw` is a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        let err = std::io::Error::last_os_error();
        if raised || !crate::fds::out_of_descriptors(&err) || !crate::fds::raise_fd_limit() {
            return Err(err);
        }
        raised = true;
    }
}

/// A memfd holding a copy of `data`, written with `pwrite` (the kernel
/// copies straight into the segment's pages, with no page faults); sealed
/// (immutable) if `sealed`.
pub fn create_copy(data: &[u8], sealed: bool) -> Result<OwnedFd> {
    let fd = create(data.len())?;
    let file = File::from(fd);
    file.write_all_at(data, 0)
        .map_err(|e| CoreError::io("copy into shared memory (out of memory?)", e))?;
    let fd = OwnedFd::from(file);
    if sealed {
        seal(&fd)?;
    }
    Ok(fd)
}

/// Forbids writing, resizing and further seals: the contents are final.
pub fn seal(fd: &impl AsRawFd) -> Result<()> {
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: adding seals to a memfd we hold; failure is checked.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(os_error("seal shared memory"));
    }
    Ok(())
}

/// Whether `fd` is a sealed (immutable) segment.
pub fn is_sealed(fd: &impl AsRawFd) -> bool {
    // SAFETY: reading the seals of a descriptor we hold.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

/// The size of the file behind `fd`.
pub fn size(fd: &impl AsRawFd) -> Result<usize> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we hold, into a writable struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(os_error("fstat shared memory"));
    }
    Ok(st.st_size as usize)
}

/// A segment mapped into this process. Unmapped when the last `Arc` goes.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
    /// Kept so the segment can be passed on.
    fd: SharedFd,
}

// SAFETY: the mapping is plain memory valid for the life of `Mapping`;
// synchronising what is written to it is the users' business, as for any
// shared memory.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself is immutable after creation.
unsafe impl Sync for Mapping {}

type Registry = BTreeMap<usize, Weak<Mapping>>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: Mutex<Registry> = Mutex::new(BTreeMap::new());
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mapping {
    /// Maps the whole segment behind `fd` and registers the mapping.
    pub fn map(fd: SharedFd, access: Access) -> Result<Arc<Mapping>> {
        let len = size(&fd)?;
        if len == 0 {
            return Err(CoreError::Config("an empty shared memory segment".into()));
        }
        let (prot, flags) = match access {
            Access::ReadOnly => (libc::PROT_READ, libc::MAP_SHARED),
            Access::Owned => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
            Access::Shared => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
        };
        // SAFETY: a fresh mapping of a descriptor we hold, at an address
        // the kernel picks; failure is checked below.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(os_error("map shared memory"));
        }
        let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(CoreError::Config("mmap returned a null address".into()));
        };
        let mapping = Arc::new(Mapping {
            ptr,
            len,
            access,
            fd,
        });
        registry().insert(ptr.as_ptr() as usize, Arc::downgrade(&mapping));
        Ok(mapping)
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The segment's descriptor.
    pub fn fd(&self) -> &SharedFd {
        &self.fd
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let addr = self.ptr.as_ptr() as usize;
        // Unregister before unmapping: once unmapped, the address may be
        // reused (and registered) by a new mapping.
        let mut reg = registry();
        if reg
            .get(&addr)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            reg.remove(&addr);
        }
        drop(reg);
        // SAFETY: unmapping exactly what `map` mapped; no reference into it
        // outlives the last `Arc`, which is being dropped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The mapping that holds `len` bytes at `addr`, and their offset in it.
pub fn find(addr: usize, len: usize) -> Option<(Arc<Mapping>, usize)> {
    let reg = registry();
    let (&start, weak) = reg.range(..=addr).next_back()?;
    let mapping = weak.upgrade()?;
    let offset = addr - start;
    (offset.checked_add(len)? <= mapping.len).then_some((mapping, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(m: &Mapping) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and outlives `m`.
        unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) }
    }

    #[test]
    fn a_sealed_copy_reads_back_and_is_never_written() {
        let fd = SharedFd::new(create_copy(b"hello shared world", true).unwrap());
        assert!(is_sealed(&fd));
        let ro = Mapping::map(fd.clone(), Access::ReadOnly).unwrap();
        assert_eq!(bytes(&ro), b"hello shared world");
        assert!(Mapping::map(fd.clone(), Access::Shared).is_err());
        // A private copy may be written; the sealed bytes stay as they are.
        let own = Mapping::map(fd, Access::Owned).unwrap();
        // SAFETY: writing inside a writable private mapping of 18 bytes.
        unsafe { *own.as_ptr() = b'J' };
        assert_eq!(bytes(&ro), b"hello shared world");
    }

    #[test]
    fn an_owned_mapping_writes_its_own_copy() {
        let fd = SharedFd::new(create_copy(b"hello", false).unwrap());
        assert!(!is_sealed(&fd));
        let owned = Mapping::map(fd.clone(), Access::Owned).unwrap();
        // SAFETY: writing inside a writable mapping of 5 bytes.
        unsafe { *owned.as_ptr() = b'J' };
        assert_eq!(bytes(&owned), b"Jello");
        let again = Mapping::map(fd, Access::ReadOnly).unwrap();
        assert_eq!(bytes(&again), b"hello", "the segment keeps what was sent");
    }

    #[test]
    fn shared_mappings_see_each_others_writes() {
        let fd = SharedFd::new(create(4096).unwrap());
        let a = Mapping::map(fd.clone(), Access::Shared).unwrap();
        let b = Mapping::map(SharedFd::new(fd.duplicate().unwrap()), Access::Shared).unwrap();
        // SAFETY: writing inside a shared writable mapping of 4096 bytes.
        unsafe { *a.as_ptr().add(100) = 42 };
        assert_eq!(bytes(&b)[100], 42);
    }

    #[test]
    fn the_registry_finds_mappings_only_while_they_live() {
        let fd = SharedFd::new(create(8192).unwrap());
        let shared = Mapping::map(fd, Access::Shared).unwrap();
        let base = shared.as_ptr() as usize;
        let (found, offset) = find(base + 100, 50).unwrap();
        assert!(Arc::ptr_eq(&found, &shared));
        assert_eq!(offset, 100);
        assert!(find(base + 8190, 4).is_none(), "runs past the end");
        let heap = [0u8; 16];
        assert!(find(heap.as_ptr() as usize, 16).is_none());
        drop(found);
        drop(shared);
        assert!(find(base + 100, 50).is_none());
    }
}
