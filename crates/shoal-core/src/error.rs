//! The engine's one error type. The binding maps each variant to a Python
//! exception in one place.

use std::io;
use std::path::PathBuf;

/// A frame that could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "unknown frame kind {0}: the stream is corrupt, or its two ends run \
         different versions of shoal"
    )]
    UnknownKind(u8),
    #[error("frame body of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("connection closed in the middle of a frame ({0} bytes left over)")]
    Truncated(usize),
    #[error("a frame names {wanted} file descriptors but {have} arrived")]
    MissingFds { wanted: usize, have: usize },
    #[error("a frame can carry at most 65535 file descriptors, not {0}")]
    TooManyFds(usize),
}

impl FrameError {
    /// What this error means for a payload that could not be sent, in the
    /// words of the Python side (arguments, results, buffers).
    pub fn as_payload_size(&self) -> String {
        match self {
            FrameError::TooLarge { len, max } => format!(
                "its pickle is {len} bytes, more than the {max} bytes one message may carry \
                 (large buffers such as numpy arrays and bytes travel in shared memory and do \
                 not count: this is a pickle of many small objects; split it, or write it \
                 to a file)"
            ),
            FrameError::TooManyFds(n) => format!(
                "it holds {n} shared-memory buffers, queues or locks, more than the 65535 one \
                 message may carry (split it into smaller parts, or gather the buffers into \
                 fewer, larger arrays)"
            ),
            other => other.to_string(),
        }
    }
}

/// What is wrong with a checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not a shoal checkpoint store ({0}); give another file name")]
    NotAStore(String),
    #[error(
        "written by a newer shoal (store format {found}; this shoal reads format \
         {supported}); upgrade shoal or give another file name"
    )]
    NewerFormat { found: i32, supported: i32 },
    #[error(
        "written by an older shoal (store format {found}; this shoal reads format \
         {supported}); delete it to start over (its tasks are recomputed) or give another \
         file name"
    )]
    OlderFormat { found: i32, supported: i32 },
    #[error(
        "cannot open or write it ({0}); check that its folder exists and that you may write there"
    )]
    CannotOpen(String),
    #[error("the file is damaged ({0}); delete it to start over")]
    Damaged(String),
    #[error("results could not be stored: {0}")]
    WriteFailed(String),
    #[error("the store is closed")]
    Closed,
    #[error("{0}")]
    Unsafe(String),
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("could not start worker process `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("bad frame from the other side: {0}")]
    Frame(#[from] FrameError),
    #[error("{what} cannot be sent: {}", .source.as_payload_size())]
    TooLarge {
        what: &'static str,
        source: FrameError,
    },
    #[error(
        "this {what} belongs to the process that created it (pid {pid}); a child made from \
         it by fork() cannot use it: create a new one in the child"
    )]
    Forked { what: &'static str, pid: u32 },
    #[error("the pool has been shut down; no new tasks can be submitted")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the connection to the parent process is closed")]
    Disconnected,
    #[error("checkpoint store {}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

impl CoreError {
    pub(crate) fn io(context: &'static str, source: io::Error) -> CoreError {
        CoreError::Io { context, source }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
