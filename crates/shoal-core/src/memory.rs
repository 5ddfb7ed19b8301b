//! Resident memory of a process, for `max_memory`.

/// Resident set size of process `pid` (this process if `None`) in bytes,
/// from `/proc/<pid>/statm`; `None` if it cannot be read (the process is
/// gone, or this is not Linux).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields: size resident shared text lib data dt, in pages.
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_resident_memory_and_it_grows() {
        let before = rss_bytes(None).unwrap();
        assert!(before > 0);
        // Touch 64 MiB so it becomes resident.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = rss_bytes(Some(std::process::id())).unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(block);
    }

    #[test]
    fn a_missing_process_has_none() {
        assert_eq!(rss_bytes(Some(u32::MAX)), None);
    }
}
