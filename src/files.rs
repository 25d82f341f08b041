//! Files drover keeps private: written atomically with mode 0600 (config.toml holds runner
//! tokens, the state directory job payloads and pieces of secrets), and this host's system id.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::paths;

pub use drover_docker::files::sync_dir;

/// [`drover_docker::files::write_private`] (temporary file, sync, rename, directory sync; mode
/// 0600), with the path in the error.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    drover_docker::files::write_private(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The `.runner_system_id` file beside the config.
pub fn system_id_path(config: &Path) -> PathBuf {
    paths::dir_of(config).join(".runner_system_id")
}

/// `s_` or `r_` followed by 12 alphanumerics, as GitLab expects.
fn is_system_id(s: &str) -> bool {
    (s.starts_with("s_") || s.starts_with("r_"))
        && s.len() == 14
        && s[2..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The persisted system id of this host, if any.
pub fn read_system_id(config: &Path) -> anyhow::Result<Option<String>> {
    let path = system_id_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if !is_system_id(id) {
                bail!(
                    "{} holds {id:?}, which is not a system id (s_ or r_ and 12 letters or digits); \
                     delete the file to get a new one",
                    path.display()
                );
            }
            Ok(Some(id.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The system id of this host, created and persisted on first use. drover always makes a random
/// `r_` id: one derived from the machine id would collide with a GitLab Runner on the same host.
pub fn system_id(config: &Path) -> anyhow::Result<String> {
    if let Some(id) = read_system_id(config)? {
        return Ok(id);
    }
    use rand::Rng;
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let id: String = (0..12)
        .map(|_| ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())] as char)
        .collect();
    let id = format!("r_{id}");
    write_private(&system_id_path(config), format!("{id}\n").as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn system_id_is_created_once_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let id = system_id(&config).unwrap();
        assert!(is_system_id(&id) && id.starts_with("r_"), "{id}");
        assert_eq!(system_id(&config).unwrap(), id);
        let mode = std::fs::metadata(system_id_path(&config))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(system_id_path(&config), "garbage").unwrap();
        assert!(read_system_id(&config).is_err());
    }
}
