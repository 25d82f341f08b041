//! Where drover keeps its files by default, as GitLab Runner does for its own.

use std::path::{Path, PathBuf};

/// The config file when `-c/--config` is not given: `/etc/drover/config.toml` for root,
/// `$XDG_CONFIG_HOME/drover/config.toml` (or `~/.config/drover/config.toml`) otherwise.
pub fn default_config_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/drover/config.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("drover").join("config.toml")
}

fn is_root() -> bool {
    // The effective uid of this process; /proc is always there on Linux.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// `-c/--config FILE`, shared by every command that reads config.toml.
#[derive(clap::Args, Clone, Debug)]
pub struct ConfigArg {
    /// The config file [default: /etc/drover/config.toml as root, else ~/.config/drover/config.toml]
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(default_config_path)
    }
}

/// The directory a file is in (`.` for a bare file name).
pub fn dir_of(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A file named in config.toml (`tls-ca-file`): a relative path is relative to the config's
/// directory, so the daemon and every command read the same file whatever their working
/// directory. (GitLab Runner reads it relative to its working directory; `register` writes
/// absolute paths, so files it wrote mean the same to both.)
pub fn in_config_dir(config: &Path, file: &Path) -> PathBuf {
    if file.is_relative() {
        dir_of(config).join(file)
    } else {
        file.to_path_buf()
    }
}

/// The state directory of a config when `--state-dir` is not given: `<config dir>/.drover-state/<config stem>`.
pub fn default_state_dir(config: &Path) -> PathBuf {
    let dir = dir_of(config);
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    dir.join(".drover-state").join(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_named_in_the_config_are_relative_to_its_directory() {
        let config = Path::new("/etc/drover/config.toml");
        assert_eq!(
            in_config_dir(config, Path::new("certs/ca.pem")),
            Path::new("/etc/drover/certs/ca.pem")
        );
        assert_eq!(
            in_config_dir(config, Path::new("/srv/ca.pem")),
            Path::new("/srv/ca.pem")
        );
        assert_eq!(
            in_config_dir(Path::new("config.toml"), Path::new("ca.pem")),
            Path::new("./ca.pem")
        );
        assert_eq!(
            in_config_dir(Path::new("conf/c.toml"), Path::new("../ca.pem")),
            Path::new("conf/../ca.pem")
        );
    }
}
