//! Resident memory of a process, for `max_memory`.

/// The memory process `pid` (this process if `None`) holds of its own, in
/// bytes: its resident set less the resident pages it shares (files and
/// shared memory segments, from `/proc/<pid>/statm`), which is its
/// anonymous memory. Shared memory segments are left out because they are
/// allocated once, however many workers map them: a 1 GB shared array
/// that every worker reads is not 1 GB per worker. `None` if it cannot be
/// read (the process is gone, or this is not Linux).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields: size resident shared text lib data dt, in pages; `shared` is
    // the resident pages backed by files and shared memory.
    let mut fields = text.split_ascii_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared) * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tests measure this whole process's memory: tests running on
    /// other threads at the same time (this one allocating 64 MiB) would
    /// show in the other's numbers.
    static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn this_process_has_resident_memory_and_it_grows() {
        let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let before = rss_bytes(None).unwrap();
        assert!(before > 0);
        // Touch 64 MiB so it becomes resident.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = rss_bytes(Some(std::process::id())).unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(block);
    }

    #[test]
    fn shared_memory_it_maps_is_not_its_own() {
        use crate::fds::SharedFd;
        use crate::shm::{create, Access, Mapping};

        let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let len = 64 << 20;
        let segment = Mapping::map(SharedFd::new(create(len).unwrap()), Access::Shared).unwrap();
        let before = rss_bytes(None).unwrap();
        // SAFETY: the mapping is `len` writable bytes, alive until `segment` drops.
        unsafe { std::ptr::write_bytes(segment.as_ptr(), 1, len) };
        let after = rss_bytes(None).unwrap();
        assert!(after < before + (16 << 20), "{before} -> {after}");
    }

    #[test]
    fn a_missing_process_has_none() {
        assert_eq!(rss_bytes(Some(u32::MAX)), None);
    }
}
