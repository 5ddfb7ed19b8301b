//! The frame decoder's contract, checked on arbitrary bytes. The cargo-fuzz
//! target (`crates/shoal-core/fuzz`) and the proptest cases below call the
//! same [`check_decoder`], so the fuzzer and `cargo test` check one thing.
//! Compiled for tests and under the `fuzzing` feature only.
//!
//! A violation panics, which is how both harnesses learn of it.

use crate::error::FrameError;
use crate::frame::{Decoder, Frame, Kind, HEADER_LEN, SPARE_CAPACITY};

/// Checks the decoder on one fuzz input, laid out as: a byte `n`, then `n`
/// read sizes of one byte each, then the stream. The stream is fed in reads
/// of those sizes, in turn; a size of 0 (or no sizes at all) feeds all that
/// is left at once.
pub fn check_decoder(input: &[u8]) {
    let (&n, rest) = match input.split_first() {
        Some(split) => split,
        None => (&0, input),
    };
    let (read_sizes, stream) = rest.split_at(usize::from(n).min(rest.len()));
    check_decoder_reads(stream, read_sizes);
}

/// Feeds `stream` to a [`Decoder`] in reads of `read_sizes` (see
/// [`check_decoder`]) and checks, after every read, that the decoder:
///
/// - has yielded exactly the frames that lie wholly in the bytes fed so far,
///   each of which encodes back to the very bytes it came from (so its kind
///   is a real one and its body is as long as its header says);
/// - has reported an unknown kind as soon as that byte was fed, and a frame
///   that says descriptors come with it (none are fed here) as soon as all
///   of it was fed, then only that same error, never another frame;
/// - counts as pending exactly the bytes fed and not yet decoded, and holds
///   no more buffer than the bound in [`crate::frame`]'s docs.
///
/// At the end, [`Decoder::finish`] must report exactly the bytes left over.
pub fn check_decoder_reads(stream: &[u8], read_sizes: &[u8]) {
    let expected = Expected::parse(stream);
    let mut decoder = Decoder::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut error: Option<FrameError> = None;
    let mut sizes = read_sizes.iter().cycle();
    let mut fed = 0;
    while fed < stream.len() {
        let size = match sizes.next() {
            Some(&size) if size > 0 => usize::from(size),
            _ => stream.len(),
        };
        let read = &stream[fed..stream.len().min(fed + size)];
        decoder.feed(read);
        fed += read.len();
        let bound = 4 * decoder.pending() + SPARE_CAPACITY;
        take_frames(&mut decoder, &mut frames, &mut error);
        assert!(
            decoder.buffered_capacity() <= bound,
            "the decoder holds {} bytes of buffer after {fed} bytes, over its bound of {bound}",
            decoder.buffered_capacity(),
        );

        let due = expected.ends.partition_point(|&end| end <= fed);
        assert_eq!(frames.len(), due, "frames yielded after {fed} bytes");
        let wanted_error = expected.error.as_ref().filter(|(at, _)| *at < fed);
        assert_eq!(
            error.as_ref(),
            wanted_error.map(|(_, e)| e),
            "error after {fed} bytes"
        );
        let decoded = due.checked_sub(1).map_or(0, |last| expected.ends[last]);
        assert_eq!(
            decoder.pending(),
            fed - decoded,
            "pending after {fed} bytes"
        );
    }

    let mut start = 0;
    for (frame, &end) in frames.iter().zip(&expected.ends) {
        let mut again = Vec::new();
        frame.encode_into(&mut again).expect("a decoded body fits");
        assert_eq!(again, stream[start..end], "frame at byte {start}");
        start = end;
    }

    decoder.feed(&[]);
    match error {
        Some(e) => assert_eq!(decoder.next_frame(), Err(e), "the error sticks"),
        None => {
            assert_eq!(decoder.next_frame(), Ok(None));
            let expected_finish = match stream.len() - start {
                0 => Ok(()),
                left => Err(FrameError::Truncated(left)),
            };
            assert_eq!(decoder.finish(), expected_finish, "at the end");
        }
    }
}

/// Takes every frame the decoder has ready, up to its first error.
fn take_frames(decoder: &mut Decoder, frames: &mut Vec<Frame>, error: &mut Option<FrameError>) {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                assert!(error.is_none(), "a frame came after {error:?}");
                frames.push(frame);
            }
            Ok(None) => {
                assert!(error.is_none(), "the decoder forgot {error:?}");
                return;
            }
            Err(e) => {
                if let Some(first) = error {
                    assert_eq!(*first, e, "the error changed");
                }
                *error = Some(e);
                return;
            }
        }
    }
}

/// What the whole stream holds, read plainly from the wire layout.
struct Expected {
    /// Where each complete frame ends.
    ends: Vec<usize>,
    /// The offset of the first bad byte, and the error it must cause.
    error: Option<(usize, FrameError)>,
}

impl Expected {
    fn parse(stream: &[u8]) -> Expected {
        let mut ends = Vec::new();
        let mut at = 0;
        while let Some(&kind) = stream.get(at + 4) {
            if let Err(e) = Kind::from_u8(kind) {
                return Expected {
                    ends,
                    error: Some((at + 4, e)),
                };
            }
            let len = stream[at..at + 4]
                .try_into()
                .expect("4 bytes before the kind");
            let len = u32::from_le_bytes(len) as usize;
            let end = at + HEADER_LEN + len;
            if end > stream.len() {
                break;
            }
            let nfds = u16::from_le_bytes([stream[at + 21], stream[at + 22]]);
            if nfds > 0 {
                let wanted = usize::from(nfds);
                return Expected {
                    ends,
                    error: Some((end - 1, FrameError::MissingFds { wanted, have: 0 })),
                };
            }
            ends.push(end);
            at = end;
        }
        Expected { ends, error: None }
    }
}

/// Small inputs in [`check_decoder`]'s layout, for the fuzzer to start from;
/// committed under `fuzz/seeds/decoder`.
pub fn seed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let frames = [
        Frame::new(Kind::Init, 0, 0, b"init".to_vec()),
        Frame::new(Kind::Func, 1, 0, b"function".to_vec()),
        Frame::new(Kind::Task, 7, 1, b"arguments".to_vec()),
        Frame::new(Kind::Forget, 1, 0, Vec::new()),
        Frame::new(Kind::Exit, 0, 0, Vec::new()),
        Frame::new(Kind::Ready, 4242, 0, Vec::new()),
        Frame::new(Kind::Done, 7, 1500, b"result".to_vec()),
        Frame::new(Kind::Failed, 8, 900, b"exception".to_vec()),
        Frame::new(Kind::InitFailed, 0, 0, b"exception".to_vec()),
        Frame::new(Kind::Output, 1, 0, b"a line\n".to_vec()),
        Frame::new(Kind::Log, 0, 0, b"record".to_vec()),
        Frame::new(Kind::Retryable, 9, 700, b"exception".to_vec()),
        Frame::new(Kind::Retire, 0, 0, Vec::new()),
    ];
    let mut stream = Vec::new();
    for frame in &frames {
        frame.encode_into(&mut stream).expect("small frame");
    }
    let with_reads = |sizes: &[u8], stream: &[u8]| {
        let count = u8::try_from(sizes.len()).expect("few sizes");
        [&[count], sizes, stream].concat()
    };
    let mut bad_kind = stream.clone();
    bad_kind[HEADER_LEN + 4 + 4] = 99;
    let mut missing_fds = Vec::new();
    crate::frame::encode_with_fds(&mut missing_fds, Kind::Task, 7, 1, b"arguments", 2)
        .expect("small frame");
    vec![
        ("every-kind-in-one-read", with_reads(&[], &stream)),
        (
            "every-kind-in-small-reads",
            with_reads(&[1, 7, 21, 3], &stream),
        ),
        ("truncated", with_reads(&[5], &stream[..stream.len() - 3])),
        ("unknown-kind", with_reads(&[30], &bad_kind)),
        ("missing-fds", with_reads(&[], &missing_fds)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn kind() -> impl Strategy<Value = Kind> {
        prop::sample::select(vec![
            Kind::Init,
            Kind::Func,
            Kind::Task,
            Kind::Forget,
            Kind::Exit,
            Kind::Ready,
            Kind::Done,
            Kind::Failed,
            Kind::InitFailed,
        ])
    }

    fn frame() -> impl Strategy<Value = Frame> {
        (
            kind(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(kind, a, b, body)| Frame::new(kind, a, b, body))
    }

    /// Well-formed frames, maybe with one byte changed and the end cut off,
    /// so most cases reach deep into the decoder instead of failing at byte 4.
    fn damaged_stream() -> impl Strategy<Value = Vec<u8>> {
        use prop::sample::Index;
        (
            prop::collection::vec(frame(), 0..6),
            prop::option::of((any::<Index>(), any::<u8>())),
            prop::option::of(any::<Index>()),
        )
            .prop_map(|(frames, change, cut)| {
                let mut stream = Vec::new();
                for frame in &frames {
                    frame.encode_into(&mut stream).unwrap();
                }
                if let (Some((at, byte)), false) = (change, stream.is_empty()) {
                    let at = at.index(stream.len());
                    stream[at] = byte;
                }
                if let Some(cut) = cut {
                    stream.truncate(cut.index(stream.len() + 1));
                }
                stream
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_keep_the_contract(input in prop::collection::vec(any::<u8>(), 0..512)) {
            check_decoder(&input);
        }

        #[test]
        fn damaged_frames_keep_the_contract(
            stream in damaged_stream(),
            read_sizes in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            check_decoder_reads(&stream, &read_sizes);
        }
    }

    /// The committed seeds are exactly [`seed_inputs`]. To rewrite them:
    /// `SHOAL_WRITE_SEEDS=1 cargo test -p shoal-core committed_seeds`.
    #[test]
    fn committed_seeds_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decoder");
        let write = std::env::var_os("SHOAL_WRITE_SEEDS").is_some();
        for (name, input) in seed_inputs() {
            check_decoder(&input);
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &input).unwrap();
            }
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; see this test's docs", path.display()));
            assert_eq!(committed, input, "{} is stale", path.display());
        }
    }
}
