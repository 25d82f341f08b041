//! A stable hash of the core, for replay checks: xxh3 over its bincode encoding. The encoding of
//! ordered maps and sets is deterministic, so equal states hash equally on every machine.

use crate::scheduler::Core;

pub(crate) fn digest(core: &Core) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    // Encoding into the hasher directly avoids allocating a copy of a large state.
    let _ = bincode::serde::encode_into_std_write(
        core,
        &mut HashWriter(&mut hasher),
        bincode::config::standard(),
    );
    hasher.digest()
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

/// Encodes a core for a snapshot.
pub fn encode_snapshot(core: &Core) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(core, bincode::config::standard())
}

/// Decodes a core from a snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Core, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(core, _)| core)
}
