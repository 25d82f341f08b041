//! docker-machine's storage as drover reads it: one directory per machine under `machines/`,
//! complete once docker-machine saved its `config.json`.

use std::path::{Path, PathBuf};

use crate::{ProviderError, ProviderErrorKind};

/// What the storage holds for a name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    Absent,
    /// A directory without `config.json`: docker-machine saves the config before it asks the
    /// cloud for a VM, so no VM was asked for by it, and docker-machine itself can neither use
    /// nor remove it.
    Debris,
    Present,
}

/// `<storage>/machines`.
pub(super) struct Storage {
    machines_dir: PathBuf,
}

impl Storage {
    pub fn new(storage: &Path) -> Storage {
        Storage {
            machines_dir: storage.join("machines"),
        }
    }

    pub async fn stored(&self, name: &str) -> Result<Stored, ProviderError> {
        let dir = self.machines_dir.join(name);
        let exists = |path: PathBuf| async move {
            match tokio::fs::symlink_metadata(&path).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(ProviderError::new(
                    name,
                    ProviderErrorKind::Retryable,
                    format!("reading docker-machine's storage {}: {e}", path.display()),
                )),
            }
        };
        Ok(
            match (
                exists(dir.clone()).await?,
                exists(dir.join("config.json")).await?,
            ) {
                (false, _) => Stored::Absent,
                (true, false) => Stored::Debris,
                (true, true) => Stored::Present,
            },
        )
    }

    /// Deletes a machine's directory (debris docker-machine cannot remove); absent is fine.
    pub async fn remove_dir(&self, name: &str) -> Result<(), ProviderError> {
        let dir = self.machines_dir.join(name);
        tracing::info!(machine = name, dir = %dir.display(), "removing an unfinished machine directory");
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::new(
                name,
                ProviderErrorKind::Retryable,
                format!("removing {}: {e}", dir.display()),
            )),
            _ => Ok(()),
        }
    }

    /// The machines (complete or not) whose names start with `prefix`, sorted, as GitLab Runner
    /// lists them: the directories of the storage.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let mut entries = match tokio::fs::read_dir(&self.machines_dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(prefix, e)),
        };
        let mut names = Vec::new();
        loop {
            let entry = match entries.next_entry().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => return Err(self.error(prefix, e)),
            };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            if is_dir && !name.starts_with('.') && name.starts_with(prefix) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn error(&self, prefix: &str, err: std::io::Error) -> ProviderError {
        ProviderError::new(
            prefix,
            ProviderErrorKind::Retryable,
            format!(
                "listing docker-machine's machines in {}: {err}",
                self.machines_dir.display()
            ),
        )
    }
}
