//! The private key drover signs in to instances with: the manager's own ed25519 key, made on
//! first use and kept in the state directory (mode 0600), or an operator's `key_path`.

use std::path::{Path, PathBuf};

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

/// The manager key's file name in the state directory.
pub const MANAGER_KEY_FILE: &str = "ssh-ed25519.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the SSH key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the SSH key {path} is not an unencrypted OpenSSH private key: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("writing the SSH key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the SSH key {path} is readable by others (mode {mode:o}); chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
}

/// Loads an operator's private key (`key_path`). Encrypted keys are refused: drover has no one
/// to ask for a passphrase.
pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(KeyError::Parse {
            path: path.to_path_buf(),
            reason: "it is encrypted with a passphrase".into(),
        });
    }
    Ok(key)
}

/// The manager's key in `state_dir`, made (ed25519, mode 0600) if it is not there yet. A key
/// file others can read is refused rather than used.
pub fn manager_key(state_dir: &Path) -> Result<PrivateKey, KeyError> {
    let path = state_dir.join(MANAGER_KEY_FILE);
    match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed { path, mode });
            }
            load(&path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

fn create(path: &Path) -> Result<PrivateKey, KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let seed: [u8; 32] = rand::random();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    // Written under a temporary name of its own, synced and renamed (the directory synced too),
    // so a crash never leaves half a key; created 0600, never readable by others for an instant.
    crate::files::write_private(path, text.as_bytes()).map_err(write_err)?;
    Ok(key)
}

/// The `authorized_keys` line of a key's public half.
pub fn authorized_key(key: &PrivateKey) -> String {
    key.public_key()
        .to_openssh()
        .unwrap_or_else(|e| format!("# unencodable key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_manager_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = manager_key(dir.path()).unwrap();
        let path = dir.path().join(MANAGER_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(authorized_key(&first).starts_with("ssh-ed25519 "));
        let again = manager_key(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            manager_key(dir.path()),
            Err(KeyError::Exposed { .. })
        ));
    }

    #[test]
    fn a_static_key_that_is_not_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Parse { .. })));
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}
