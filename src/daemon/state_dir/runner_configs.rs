//! The copies of the config file kept per runner (`runners/<hex name>.toml`, private: they hold
//! tokens), so a runner deleted from the file while drover was down can still be drained.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context;

use super::StateDir;
use crate::files::write_private;

impl StateDir {
    fn runner_config_file(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.root.join("runners").join(format!("{hex}.toml"))
    }

    /// Keeps `text`, the config file that defines runner `name`, unless it is already kept.
    pub fn save_runner_config(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.runner_config_file(name);
        if fs::read_to_string(&path).is_ok_and(|kept| kept == text) {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.join("runners"))
            .with_context(|| format!("creating {}", self.root.join("runners").display()))?;
        write_private(&path, text.as_bytes())
    }

    /// The config file kept for runner `name`, if any.
    pub fn load_runner_config(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.runner_config_file(name)).ok()
    }

    /// The names of the runners whose config is kept.
    pub fn kept_runner_configs(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("runners")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name();
                let hex = file.to_str()?.strip_suffix(".toml")?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                String::from_utf8(bytes).ok()
            })
            .collect();
        names.sort();
        names
    }

    pub fn forget_runner_config(&self, name: &str) {
        let _ = fs::remove_file(self.runner_config_file(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kept_runner_configs_round_trip_any_name_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let names = ["docker autoscaler / eu", "ünïcode", "plain"];
        for (i, name) in names.iter().enumerate() {
            state.save_runner_config(name, &format!("# {i}\n")).unwrap();
        }
        let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        expected.sort();
        assert_eq!(state.kept_runner_configs(), expected);
        assert_eq!(
            state.load_runner_config("ünïcode").as_deref(),
            Some("# 1\n")
        );
        let file = state.runner_config_file("plain");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);

        state.forget_runner_config("plain");
        assert_eq!(state.load_runner_config("plain"), None);
        assert_eq!(state.kept_runner_configs().len(), 2);
    }
}
