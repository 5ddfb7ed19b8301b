//! A quick look inside a fresh pickle, to tell whether it must be made
//! again another way:
//!
//! - it names `__main__`: the other process's `__main__` is not the user's
//!   script, so what lives there must go by value;
//! - it holds large binary data written in-band (`bytes`, `bytearray`, a
//!   contiguous array's data), worth moving to shared memory; or it rebuilds
//!   an array in-band (numpy's `_reconstruct`), which may be a strided view
//!   of a shared array that must travel as a handle.
//!
//! The pickle is walked opcode by opcode, so data is never mistaken for an
//! opcode: the bytes of a list of a million integers hold no false match.
//! A pickle the walk does not understand (an unknown opcode, or one cut
//! short) is sent the careful way: a needless second pickling, never a
//! missed buffer.

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

/// How each opcode's argument is laid out (see `pickletools`), one byte per
/// opcode so the walk is a table lookup: `0..=8` a fixed number of bytes;
/// `COUNTED | w` a `w`-byte little-endian length, then that many bytes;
/// `LINE` text up to a newline; `TWO_LINES` a module and a name (`GLOBAL`,
/// `INST`); `UNKNOWN` not an opcode of protocols 0 to 5.
const COUNTED: u8 = 0x10;
const LINE: u8 = 0x20;
const TWO_LINES: u8 = 0x30;
const UNKNOWN: u8 = 0xff;

static ARG: [u8; 256] = {
    let mut table = [UNKNOWN; 256];
    let none: &[u8] = b"(.012NQRabd}el]ostu)";
    let mut i = 0;
    while i < none.len() {
        table[none[i] as usize] = 0;
        i += 1;
    }
    let more_none: [u8; 14] = [
        0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98,
    ];
    let mut i = 0;
    while i < more_none.len() {
        table[more_none[i] as usize] = 0;
        i += 1;
    }
    table[b'K' as usize] = 1;
    table[b'h' as usize] = 1;
    table[b'q' as usize] = 1;
    table[0x80] = 1;
    table[0x82] = 1;
    table[b'M' as usize] = 2;
    table[0x83] = 2;
    table[b'J' as usize] = 4;
    table[b'j' as usize] = 4;
    table[b'r' as usize] = 4;
    table[0x84] = 4;
    table[b'G' as usize] = 8;
    table[0x95] = 8;
    table[b'U' as usize] = COUNTED | 1;
    table[b'C' as usize] = COUNTED | 1;
    table[0x8a] = COUNTED | 1;
    table[0x8c] = COUNTED | 1;
    table[b'T' as usize] = COUNTED | 4;
    table[b'X' as usize] = COUNTED | 4;
    table[b'B' as usize] = COUNTED | 4;
    table[0x8b] = COUNTED | 4;
    table[0x8d] = COUNTED | 8;
    table[0x8e] = COUNTED | 8;
    table[0x96] = COUNTED | 8;
    let lines: &[u8] = b"FILPSVgp";
    let mut i = 0;
    while i < lines.len() {
        table[lines[i] as usize] = LINE;
        i += 1;
    }
    table[b'c' as usize] = TWO_LINES;
    table[b'i' as usize] = TWO_LINES;
    table
};

/// Opcodes whose counted argument is binary data (`BINBYTES`, `BINBYTES8`,
/// `BYTEARRAY8`), and those whose argument is a string (which may be a
/// module or a name a later `STACK_GLOBAL` reads).
fn is_binary(op: u8) -> bool {
    matches!(op, b'B' | 0x8e | 0x96)
}

fn is_text(op: u8) -> bool {
    matches!(op, b'X' | 0x8c | 0x8d)
}

/// What a module or name tells about the pickle, if anything.
fn name_verdict(text: &[u8]) -> Option<Verdict> {
    match text {
        b"__main__" => Some(Verdict::ByValue),
        b"_reconstruct" => Some(Verdict::OutOfBand),
        _ => None,
    }
}

/// Looks at a pickle made by plain pickle; buffers of at least `threshold`
/// bytes belong in shared memory.
pub fn scan(pickle: &[u8], threshold: usize) -> Verdict {
    let mut verdict = Verdict::Plain;
    let mut at = 0;
    while at < pickle.len() {
        let op = pickle[at];
        at += 1;
        let arg = ARG[op as usize];
        let next = if arg <= 8 {
            at + arg as usize // a number or nothing: the common case
        } else if arg & 0xf0 == COUNTED {
            let width = (arg & 0x0f) as usize;
            let Some(data) = read_len(pickle, at, width).and_then(|len| {
                let start = at + width;
                pickle.get(start..start.checked_add(len)?)
            }) else {
                return Verdict::OutOfBand.max(verdict); // cut short: not ours to judge
            };
            if is_binary(op) && data.len() >= threshold {
                verdict = verdict.max(Verdict::OutOfBand);
            } else if is_text(op) {
                if let Some(v) = name_verdict(data) {
                    verdict = verdict.max(v);
                }
            }
            at + width + data.len()
        } else if arg == LINE || arg == TWO_LINES {
            let Some(first) = line_end(pickle, at) else {
                return Verdict::OutOfBand.max(verdict);
            };
            if arg == LINE {
                first
            } else {
                let Some(second) = line_end(pickle, first) else {
                    return Verdict::OutOfBand.max(verdict);
                };
                for text in [&pickle[at..first - 1], &pickle[first..second - 1]] {
                    if let Some(v) = name_verdict(text) {
                        verdict = verdict.max(v);
                    }
                }
                second
            }
        } else {
            return Verdict::OutOfBand.max(verdict); // not an opcode we know
        };
        if next > pickle.len() {
            return Verdict::OutOfBand.max(verdict);
        }
        if verdict == Verdict::ByValue || op == b'.' {
            return verdict;
        }
        at = next;
    }
    verdict
}

/// The little-endian length of `width` bytes at `at`, if they are there.
fn read_len(pickle: &[u8], at: usize, width: usize) -> Option<usize> {
    let bytes = pickle.get(at..at.checked_add(width)?)?;
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(bytes);
    usize::try_from(u64::from_le_bytes(buf)).ok()
}

/// Where the line starting at `at` ends (just past its newline).
fn line_end(pickle: &[u8], at: usize) -> Option<usize> {
    memchr::memchr(b'\n', pickle.get(at..)?).map(|i| at + i + 1)
}

impl Verdict {
    /// The stronger of two verdicts: by value is also out of band.
    fn max(self, other: Verdict) -> Verdict {
        use Verdict::*;
        match (self, other) {
            (ByValue, _) | (_, ByValue) => ByValue,
            (OutOfBand, _) | (_, OutOfBand) => OutOfBand,
            _ => Plain,
        }
    }
}

/// Whether `pickle` may hold in-band binary data of at least `threshold`
/// bytes (or, to be safe, cannot be read).
pub fn may_hold_large_binary(pickle: &[u8], threshold: usize) -> bool {
    pickle.len() >= threshold && scan(pickle, threshold) != Verdict::Plain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binbytes(len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 5];
        p.push(b'B');
        p.extend_from_slice(&(len as u32).to_le_bytes());
        p.extend(std::iter::repeat_n(0u8, len));
        p.push(b'.');
        p
    }

    #[test]
    fn finds_large_bytes_and_ignores_small_ones() {
        assert!(may_hold_large_binary(&binbytes(100_000), 65_536));
        assert!(!may_hold_large_binary(&binbytes(1000), 65_536));
        assert!(!may_hold_large_binary(&binbytes(70_000), 80_000));
    }

    #[test]
    fn finds_bytearray8() {
        let mut p = vec![0x80, 5, 0x96];
        p.extend_from_slice(&(70_000u64).to_le_bytes());
        p.extend(std::iter::repeat_n(1u8, 70_000));
        p.push(b'.');
        assert!(may_hold_large_binary(&p, 65_536));
    }

    #[test]
    fn verdicts() {
        assert_eq!(scan(b"\x80\x05K\x01.", 65_536), Verdict::Plain);
        assert_eq!(scan(b"c__main__\nf\n.", 65_536), Verdict::ByValue);
        assert_eq!(
            scan(b"cnumpy._core.multiarray\n_reconstruct\n.", 65_536),
            Verdict::OutOfBand
        );
        // Protocol 4+: module and name pushed as strings, then STACK_GLOBAL.
        assert_eq!(
            scan(b"\x8c\x08__main__\x8c\x01f\x93.", 65_536),
            Verdict::ByValue
        );
        assert_eq!(scan(&binbytes(100_000), 65_536), Verdict::OutOfBand);
    }

    #[test]
    fn data_is_never_read_as_opcodes() {
        // BININT arguments that spell `B` and a large length: data, not an opcode.
        let mut p = vec![0x80, 5, b']', b'('];
        for _ in 0..1000 {
            p.push(b'J');
            p.extend_from_slice(&[b'B', 0xff, 0xff, 0x7f]);
        }
        p.extend_from_slice(b"e.");
        assert_eq!(scan(&p, 4096), Verdict::Plain);
        // And a string whose text contains `__main__` is not the module.
        assert_eq!(scan(b"\x8c\x09__main__x.", 65_536), Verdict::Plain);
    }

    #[test]
    fn what_cannot_be_read_goes_the_careful_way() {
        let mut p = vec![b'B'];
        p.extend_from_slice(&(1u32 << 30).to_le_bytes());
        p.extend(std::iter::repeat_n(b'K', 100));
        assert_eq!(scan(&p, 65_536), Verdict::OutOfBand); // a length past the end
        assert_eq!(scan(b"\x80\x05\xff.", 65_536), Verdict::OutOfBand); // unknown opcode
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_a_verdict_without_a_panic(bytes: Vec<u8>, threshold in 0usize..512) {
            let verdict = scan(&bytes, threshold);
            proptest::prop_assert!(matches!(
                verdict,
                Verdict::Plain | Verdict::OutOfBand | Verdict::ByValue
            ));
        }
    }

    #[test]
    fn real_pickles_of_python_data() {
        // pickle.dumps(list(range(1_100_000)), 5)[:64] style: frames and BININTs.
        let mut p = vec![0x80, 5, 0x95];
        p.extend_from_slice(&(0u64).to_le_bytes());
        p.extend_from_slice(b"]\x94(");
        for i in 0..300_000u32 {
            p.push(b'J');
            p.extend_from_slice(&i.to_le_bytes());
        }
        p.extend_from_slice(b"e.");
        assert_eq!(scan(&p, 128 * 1024), Verdict::Plain);
    }
}
