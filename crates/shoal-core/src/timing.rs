//! How a task's run went, as its worker measured it: sent at the end of
//! every answer (`Done`, `Failed`, `Retryable`) so traces can show when and
//! where each task ran and where its time went.
//!
//! Wire layout: the last [`TIMING_LEN`] bytes of the answer's body, four
//! little-endian u64s.

/// Bytes the timing adds to the end of an answer's body.
pub const TIMING_LEN: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTiming {
    /// `CLOCK_MONOTONIC` ns when the task started (the same clock in every
    /// process on the machine).
    pub start_ns: u64,
    /// Time spent unpickling the arguments, ns.
    pub deser_ns: u64,
    /// Time spent pickling the result, ns.
    pub result_ser_ns: u64,
    /// CPU time (user + system) the worker process had used by about then,
    /// ns; refreshed at most every few milliseconds, as reading it costs a
    /// system call.
    pub cpu_ns: u64,
}

impl RunTiming {
    pub fn to_bytes(&self) -> [u8; TIMING_LEN] {
        let mut out = [0u8; TIMING_LEN];
        let fields = [
            self.start_ns,
            self.deser_ns,
            self.result_ser_ns,
            self.cpu_ns,
        ];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Removes the timing from the end of `body`; `None` (and `body`
    /// untouched) if it is too short to hold one.
    pub fn split_from(body: &mut Vec<u8>) -> Option<RunTiming> {
        let at = body.len().checked_sub(TIMING_LEN)?;
        let mut v = [0u64; 4];
        for (i, chunk) in body[at..].chunks_exact(8).enumerate() {
            v[i] = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        body.truncate(at);
        Some(RunTiming {
            start_ns: v[0],
            deser_ns: v[1],
            result_ser_ns: v[2],
            cpu_ns: v[3],
        })
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this process has used, ns.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_end_of_a_body() {
        let t = RunTiming {
            start_ns: 1,
            deser_ns: 2,
            result_ser_ns: 3,
            cpu_ns: u64::MAX,
        };
        let mut body = b"pickle".to_vec();
        body.extend_from_slice(&t.to_bytes());
        assert_eq!(body.len(), 6 + TIMING_LEN);
        assert_eq!(RunTiming::split_from(&mut body), Some(t));
        assert_eq!(body, b"pickle");
    }

    #[test]
    fn a_short_body_has_no_timing_and_is_left_alone() {
        let mut body = vec![7u8; TIMING_LEN - 1];
        assert_eq!(RunTiming::split_from(&mut body), None);
        assert_eq!(body.len(), TIMING_LEN - 1);
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let before = process_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        assert!(process_cpu_ns() > before, "{x}");
    }
}
