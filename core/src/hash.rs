//! The core's one hash: xxh3 of a value's bincode encoding, used by the id maps' running digests
//! and by the core's digest.

use serde::Serialize;

/// xxh3 of a value's bincode encoding, without allocating a copy of it.
pub(crate) fn hash_of<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    feed(&mut hasher, value);
    hasher.digest()
}

/// Feeds a value's bincode encoding to a hasher.
pub(crate) fn feed<T: Serialize + ?Sized>(hasher: &mut xxhash_rust::xxh3::Xxh3, value: &T) {
    // Encoding into the hasher directly never fails: the writer takes every byte.
    let _ = bincode::serde::encode_into_std_write(
        value,
        &mut HashWriter(hasher),
        bincode::config::standard(),
    );
}

struct HashWriter<'a>(&'a mut xxhash_rust::xxh3::Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
