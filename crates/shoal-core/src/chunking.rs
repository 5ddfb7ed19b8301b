//! How many items go in one task: the one sizing rule every call uses.
//!
//! A task costs a hand-over (pickling, a frame, a wake-up) whatever its
//! size, so small items are grouped; but a few large tasks leave workers
//! idle at the end of a call. The rules:
//! - an input of known length is cut into about four chunks per worker
//!   (as multiprocessing does), since the scheduler keeps each worker's
//!   queue full and fewer, larger chunks cost nothing more;
//! - a checkpointed input of known length is cut by its length alone (a
//!   fixed number of chunks), so that a re-run with any number of workers
//!   makes the same chunks and finds them stored;
//! - a lazy input (`imap`) starts with one item per chunk and grows chunks
//!   from measured run times until each runs about [`TARGET_CHUNK_NS`].

/// Chunks per worker for an input of known length.
pub const CHUNKS_PER_WORKER: usize = 4;
/// Chunks of a checkpointed input of known length (fewer for short inputs).
pub const CHECKPOINT_CHUNKS: usize = 64;
/// Run time a measured chunk aims at, ns.
pub const TARGET_CHUNK_NS: f64 = 5_000_000.0;
/// The largest measured chunk, in items.
pub const MAX_MEASURED_CHUNK: usize = 1024;

/// Items per chunk for `items` items of known length on `workers` workers.
pub fn chunk_size(items: usize, workers: usize, checkpointed: bool) -> usize {
    let chunks = if checkpointed {
        CHECKPOINT_CHUNKS
    } else {
        workers.max(1) * CHUNKS_PER_WORKER
    };
    items.div_ceil(chunks).max(1)
}

/// Items per chunk of a lazy input, given the measured run time of one
/// item (0 or less before anything was measured).
pub fn measured_chunk_size(item_ns: f64) -> usize {
    if item_ns.is_nan() || item_ns <= 0.0 {
        return 1;
    }
    // Truncation is the intent: a chunk runs at most about the target.
    let size = (TARGET_CHUNK_NS / item_ns).min(MAX_MEASURED_CHUNK as f64);
    (size as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_length_makes_four_chunks_per_worker() {
        assert_eq!(chunk_size(100, 2, false), 13);
        assert_eq!(chunk_size(8, 2, false), 1);
        assert_eq!(chunk_size(0, 2, false), 1);
        assert_eq!(chunk_size(7, 0, false), 2);
    }

    #[test]
    fn checkpointed_chunks_depend_on_the_length_alone() {
        assert_eq!(chunk_size(6400, 2, true), chunk_size(6400, 64, true));
        assert_eq!(chunk_size(6400, 2, true), 100);
        assert_eq!(chunk_size(10, 2, true), 1);
    }

    #[test]
    fn measured_chunks_aim_at_the_target_run_time() {
        assert_eq!(measured_chunk_size(0.0), 1);
        assert_eq!(measured_chunk_size(-3.0), 1);
        assert_eq!(measured_chunk_size(f64::NAN), 1);
        assert_eq!(measured_chunk_size(1_000_000.0), 5);
        assert_eq!(measured_chunk_size(1.0), MAX_MEASURED_CHUNK);
        assert_eq!(measured_chunk_size(1e12), 1);
    }
}
