//! A quick look inside a fresh pickle, to tell whether it must be made
//! again another way:
//!
//! - it names `__main__`: the other process's `__main__` is not the user's
//!   script, so what lives there must go by value;
//! - it holds large binary data written in-band (`bytes`, `bytearray`, a
//!   non-contiguous array's copy), worth moving to shared memory; or it
//!   rebuilds an array in-band (numpy's `_reconstruct`), which may be a
//!   strided view of a shared array that must travel as a handle.
//!
//! Large binary data is spotted by the opcodes that start it (`BINBYTES`,
//! `BINBYTES8`, `BYTEARRAY8`) followed by a length that is large and fits
//! in what is left. A match elsewhere (inside other data) costs only a
//! needless second pickling; real large binary data is never missed.

use memchr::memmem;

const BINBYTES: u8 = b'B';
const BINBYTES8: u8 = 0x8e;
const BYTEARRAY8: u8 = 0x96;

/// What a pickle needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine as it is.
    Plain,
    /// Pickle again, moving data out of band.
    OutOfBand,
    /// Pickle again by value (and out of band).
    ByValue,
}

/// Looks at a pickle made by plain pickle; buffers of at least `threshold`
/// bytes belong in shared memory.
pub fn scan(pickle: &[u8], threshold: usize) -> Verdict {
    if memmem::find(pickle, b"__main__").is_some() {
        Verdict::ByValue
    } else if memmem::find(pickle, b"_reconstruct").is_some()
        || may_hold_large_binary(pickle, threshold)
    {
        Verdict::OutOfBand
    } else {
        Verdict::Plain
    }
}

/// Whether `pickle` may hold in-band binary data of at least `threshold`
/// bytes.
pub fn may_hold_large_binary(pickle: &[u8], threshold: usize) -> bool {
    if pickle.len() < threshold {
        return false;
    }
    let fits = |at: usize, len: u64| {
        len >= threshold as u64 && (len as u128) <= (pickle.len() - at) as u128
    };
    for i in memchr::memchr3_iter(BINBYTES, BINBYTES8, BYTEARRAY8, pickle) {
        let rest = &pickle[i + 1..];
        let found = match pickle[i] {
            BINBYTES if rest.len() >= 4 => {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                fits(i + 5, u64::from(len))
            }
            BINBYTES8 | BYTEARRAY8 if rest.len() >= 8 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&rest[..8]);
                fits(i + 9, u64::from_le_bytes(len))
            }
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binbytes(len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 5];
        p.push(BINBYTES);
        p.extend_from_slice(&(len as u32).to_le_bytes());
        p.extend(std::iter::repeat_n(0u8, len));
        p.push(b'.');
        p
    }

    #[test]
    fn finds_large_bytes_and_ignores_small_ones() {
        assert!(may_hold_large_binary(&binbytes(100_000), 65_536));
        assert!(!may_hold_large_binary(&binbytes(1000), 65_536));
        assert!(!may_hold_large_binary(&binbytes(60_000), 65_536));
    }

    #[test]
    fn finds_bytearray8() {
        let mut p = vec![0x80, 5, BYTEARRAY8];
        p.extend_from_slice(&(70_000u64).to_le_bytes());
        p.extend(std::iter::repeat_n(1u8, 70_000));
        assert!(may_hold_large_binary(&p, 65_536));
    }

    #[test]
    fn verdicts() {
        assert_eq!(scan(b"\x80\x05K\x01.", 65_536), Verdict::Plain);
        assert_eq!(scan(b"c__main__\nf\n.", 65_536), Verdict::ByValue);
        assert_eq!(
            scan(b"numpy._core.multiarray\n_reconstruct", 65_536),
            Verdict::OutOfBand
        );
        assert_eq!(scan(&binbytes(100_000), 65_536), Verdict::OutOfBand);
    }

    #[test]
    fn a_length_past_the_end_is_not_data() {
        let mut p = vec![BINBYTES];
        p.extend_from_slice(&(1u32 << 30).to_le_bytes());
        p.extend(std::iter::repeat_n(b'K', 100_000));
        assert!(!may_hold_large_binary(&p, 65_536));
    }
}
