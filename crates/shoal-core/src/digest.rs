//! Task keys for the checkpoint store: a BLAKE3 hash of byte strings,
//! truncated to 128 bits.
//!
//! BLAKE3 is cryptographic, so two different tasks never share a key by
//! accident (a stored result is never returned for other arguments), and it
//! hashes large buffers at several GB/s per core, so a big numpy argument
//! costs little next to the task itself.

/// Length of a task key in bytes.
pub const KEY_LEN: usize = 16;

/// A task's key in the checkpoint store.
pub type Key = [u8; KEY_LEN];

/// Incremental hashing of several parts. Each part is prefixed by its length,
/// so `["ab", "c"]` and `["a", "bc"]` hash differently.
#[derive(Default, Clone)]
pub struct Digest {
    hasher: blake3::Hasher,
}

impl Digest {
    pub fn new() -> Digest {
        Digest::default()
    }

    pub fn part(&mut self, bytes: &[u8]) -> &mut Digest {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    pub fn key(&self) -> Key {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.hasher.finalize().as_bytes()[..KEY_LEN]);
        key
    }
}

/// The key of `parts`, hashed in order.
pub fn digest(parts: &[&[u8]]) -> Key {
    let mut d = Digest::new();
    for part in parts {
        d.part(part);
    }
    d.key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_boundaries_matter() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_ne!(digest(&[b"abc"]), digest(&[b"abc", b""]));
    }

    #[test]
    fn same_parts_same_key() {
        let big = vec![7u8; 1 << 20];
        assert_eq!(digest(&[b"f", &big]), digest(&[b"f", &big]));
        let mut other = big.clone();
        other[123_456] = 8;
        assert_ne!(digest(&[b"f", &big]), digest(&[b"f", &other]));
    }
}
