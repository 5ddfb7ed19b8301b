//! A checkpoint store's files, checked before SQLite opens them.
//!
//! A store holds pickles, and loading a pickle runs whatever code its
//! author chose: a store must be trusted as much as a program. So shoal
//! creates a store as a new file only this user may read or write (`0600`,
//! never through a symbolic link), and refuses a store, or its write-ahead
//! log (`-wal`) or shared-memory index (`-shm`), that another user owns or
//! that the group or others may write.
//!
//! On a network filesystem (NFS, Lustre, GPFS, CIFS, ...) SQLite's WAL mode
//! is unsafe: its index lives in memory shared between the processes on
//! one machine, and processes on other machines do not see it. There the
//! store uses SQLite's rollback journal instead (see [`Journal`]).

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// How the store keeps its changes safe until they are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// SQLite's write-ahead log: readers and one writer at a time, fast
    /// commits. Needs memory shared by every process using the store.
    Wal,
    /// SQLite's rollback journal, for a store on a network filesystem (its
    /// kind named here): every commit writes the file under a lock, which
    /// every machine that uses the store must see (NFS: `lockd`; Lustre:
    /// mounted with `-o flock`).
    Delete { filesystem: &'static str },
}

/// Checks (and, with `create`, makes) the store's files; returns the
/// journal to use.
pub(crate) fn prepare(path: &Path, create: bool) -> Result<Journal, StoreError> {
    if create {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(_) => {}
            // A file (or a link) is there already: checked below.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::CannotOpen(e.to_string())),
        }
    }
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound && !create => {
            return Err(StoreError::NotAStore("there is no such file".into()));
        }
        Err(_) => {}
    }
    check(path, None)?;
    for suffix in ["-wal", "-shm"] {
        check(&with_suffix(path, suffix), Some(suffix))?;
    }
    if !create && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(StoreError::NotAStore("it is empty".into()));
    }
    Ok(match network_filesystem(path) {
        Some(filesystem) => Journal::Delete { filesystem },
        None => Journal::Wal,
    })
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Refuses `path` (the store, or with `suffix` one of its side files) if it
/// is not this user's alone to write. A file that is not there passes.
fn check(path: &Path, suffix: Option<&str>) -> Result<(), StoreError> {
    let what = match suffix {
        None => "the store".to_string(),
        Some("-wal") => format!("its write-ahead log {}", path.display()),
        Some(_) => format!("its shared-memory index {}", path.display()),
    };
    let link = match std::fs::symlink_metadata(path) {
        Ok(link) => link,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::CannotOpen(e.to_string())),
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let trust = "a checkpoint store holds pickles, and loading one runs whatever code its \
                 author chose";
    if link.file_type().is_symlink() && link.uid() != me {
        return Err(StoreError::Unsafe(format!(
            "refused: {what} is a symbolic link made by {}, not by you ({}); {trust}: give \
             another file name",
            user(link.uid()),
            user(me)
        )));
    }
    let file = match std::fs::metadata(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StoreError::Unsafe(format!(
                "refused: {what} is a symbolic link to {}, which does not exist; shoal makes a \
                 store only as a new file of its own, never through a link: remove the link \
                 or give another file name",
                std::fs::read_link(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into())
            )));
        }
        Err(e) => return Err(StoreError::CannotOpen(e.to_string())),
    };
    let kind = file.file_type();
    if !kind.is_file() {
        let is = if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(match suffix {
            None => StoreError::NotAStore(format!("it is {is}")),
            Some(_) => StoreError::Unsafe(format!("refused: {what} is {is}")),
        });
    }
    if file.uid() != me {
        return Err(StoreError::Unsafe(format!(
            "refused: {what} belongs to {}, not to you ({}); {trust}: use only stores you made. \
             If you trust it, copy it (the copy is yours); else give another file name",
            user(file.uid()),
            user(me)
        )));
    }
    let mode = file.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and everyone else",
            (true, false) => "its group",
            _ => "everyone",
        };
        let target = path.display();
        return Err(StoreError::Unsafe(format!(
            "refused: {who} may write {what} (mode {mode:o}), and {trust}: whoever can write it \
             could make this program run their code. If you trust what is in it, run \
             `chmod go-w {target}`; else give another file name"
        )));
    }
    Ok(())
}

/// `uid 1000 (alice)`, or `uid 1000` when the name is unknown.
fn user(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is valid for getpwuid_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `entry` and `buf` (of the length
    // given) and sets `found`; the name it points to lives in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: a NUL-terminated name inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    format!("uid {uid} ({})", name.to_string_lossy())
}

/// Filesystems whose files other machines share, by `statfs`'s `f_type`.
const NETWORK_FILESYSTEMS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x00C3_6400, "CephFS"),
    (0x1983_0326, "BeeGFS"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x7375_7245, "Coda"),
    (0x0102_1997, "9P"),
    (0xAAD7_AAEA, "PanFS"),
    (0x2003_0528, "OrangeFS"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
];

/// The network filesystem a `statfs` type names, if it is one.
pub(crate) fn network_kind(f_type: i64) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == f_type)
        .map(|(_, name)| *name)
}

/// The network filesystem `path` is on, if it is on one.
fn network_filesystem(path: &Path) -> Option<&'static str> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statfs is valid for statfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable struct.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        return None;
    }
    // `f_type`'s width differs between platforms; the magic numbers are
    // 32-bit values.
    network_kind(fs.f_type as i64 & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_known_by_their_magic_numbers() {
        assert_eq!(network_kind(0x6969), Some("NFS"));
        assert_eq!(network_kind(0x0BD0_0BD0), Some("Lustre"));
        assert_eq!(network_kind(0xEF53), None, "ext4 is local");
        assert_eq!(network_kind(0x0102_1994), None, "tmpfs is local");
        let here = std::env::temp_dir();
        assert_eq!(
            network_filesystem(&here),
            None,
            "{} is local",
            here.display()
        );
    }
}
