//! The core's one hash: xxh3 of a value's bincode encoding, used by the core's digest. The id
//! maps' records hash the same bytes written by hand (`record_bytes.rs`), checked against this.

use serde::Serialize;

/// xxh3 of a value's bincode encoding, without allocating a copy of it. A record (the per-event
/// case) is encoded on the stack and hashed in one shot, which gives the same hash as feeding the
/// streaming hasher piece by piece at a fraction of the cost; a larger value is streamed.
pub(crate) fn hash_of<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut buf = [0u8; 256];
    if let Ok(n) = bincode::serde::encode_into_slice(value, &mut buf, bincode::config::standard()) {
        return xxhash_rust::xxh3::xxh3_64(&buf[..n]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed<T: Serialize + ?Sized>(value: &T) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        feed(&mut hasher, value);
        hasher.digest()
    }

    #[test]
    fn one_shot_and_streamed_hashes_agree() {
        // Around the stack buffer's size: one shot below it, streamed above it.
        for len in [
            0usize, 1, 17, 100, 239, 240, 241, 250, 253, 254, 255, 256, 300, 5000,
        ] {
            let v: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            assert_eq!(hash_of(&v), streamed(&v), "{len} bytes");
            let t = (len as u64, "machine-name", Some(u32::MAX), &v);
            assert_eq!(hash_of(&t), streamed(&t), "tuple around {len} bytes");
        }
    }
}
