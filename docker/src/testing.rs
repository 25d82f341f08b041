//! Test support (cargo feature `testing`): the local test images and access to the engine.
//!
//! There is no registry in CI, so the images are built from the host's own binaries and loaded
//! (`docker load`) through the engine API: `drover-test/busybox:1` (Debian's static busybox and its
//! applet links), `drover-test/busybox-healthcheck:1` (the same with a health check) and
//! `drover-test/git:2` (busybox plus the host's `git` and the shared libraries `ldd` lists).
//!
//! The image archives are byte-for-byte deterministic (fixed timestamps, fixed creation date), so an
//! image's id is a function of its content: processes that build the same image at the same time
//! load the very same image, and no untagged copy is left behind. Building is once per process.

use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::body_full;
use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::engine::EngineConfig;

pub mod aws;
pub mod leftovers;
pub mod registry;
pub mod s3;
pub mod sshd;

/// A shell with the usual tools (`sh`, `echo`, `sleep`, `wget`, `httpd`, ...), no git.
pub const BUSYBOX_IMAGE: &str = "drover-test/busybox:1";
/// The busybox image plus `git` (with the shell scripts `git submodule` needs).
pub const GIT_IMAGE: &str = "drover-test/git:3";
/// The busybox image with a health check: healthy once `/tmp/ready` exists.
pub const HEALTHCHECK_IMAGE: &str = "drover-test/busybox-healthcheck:1";

/// Why the test images could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("building the test images: {0}")]
pub struct TestImageError(String);

static IMAGES: OnceCell<Result<(), TestImageError>> = OnceCell::const_new();

/// Connects to the local engine for a test, with the test images in place. Without an engine: in
/// CI (`CI` set) it panics, naming the problem; elsewhere it says so on stderr and returns `None` so
/// the test can return early.
pub async fn engine_for_tests() -> Option<Docker> {
    let connected = match EngineConfig::local().connect().await {
        Ok(docker) => docker
            .ping()
            .await
            .map(|_| docker)
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match connected {
        Ok(docker) => {
            if let Err(err) = ensure_test_images().await {
                panic!("{err}");
            }
            Some(docker)
        }
        Err(err) if std::env::var_os("CI").is_some() => {
            panic!("these tests need a Docker engine and CI is set, but none is reachable: {err}")
        }
        Err(err) => {
            eprintln!("SKIPPED: no Docker engine reachable ({err}); CI would fail here");
            None
        }
    }
}

/// Builds the test images unless the engine has them. Safe to call from many tests at once.
pub async fn ensure_test_images() -> Result<(), TestImageError> {
    IMAGES.get_or_init(build_missing).await.clone()
}

/// What a test image is made of.
#[derive(Clone, Copy)]
struct Recipe {
    name: &'static str,
    git: bool,
    /// A shell command for a `HEALTHCHECK`.
    healthcheck: Option<&'static str>,
}

const RECIPES: [Recipe; 3] = [
    Recipe {
        name: BUSYBOX_IMAGE,
        git: false,
        healthcheck: None,
    },
    Recipe {
        name: GIT_IMAGE,
        git: true,
        healthcheck: None,
    },
    Recipe {
        name: HEALTHCHECK_IMAGE,
        git: false,
        healthcheck: Some("test -f /tmp/ready"),
    },
];

async fn build_missing() -> Result<(), TestImageError> {
    let docker = EngineConfig::local()
        .connect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    for recipe in RECIPES {
        if docker.inspect_image(recipe.name).await.is_ok() {
            continue;
        }
        let archive = tokio::task::spawn_blocking(move || image_archive(&recipe))
            .await
            .map_err(|e| fail(e.to_string()))??;
        load(&docker, recipe.name, archive).await?;
    }
    Ok(())
}

pub(crate) fn fail(message: impl Into<String>) -> TestImageError {
    TestImageError(message.into())
}

pub(crate) async fn load(
    docker: &Docker,
    image: &str,
    archive: Vec<u8>,
) -> Result<(), TestImageError> {
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut progress = docker.import_image(options, body_full(Bytes::from(archive)), None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| fail(format!("loading {image}: {e}")))?;
    }
    docker
        .inspect_image(image)
        .await
        .map_err(|e| fail(format!("{image} is missing after its load: {e}")))?;
    Ok(())
}

/// A `docker save` archive of a one-layer image: `manifest.json`, the config, the layer.
fn image_archive(recipe: &Recipe) -> Result<Vec<u8>, TestImageError> {
    let layer = rootfs(recipe.git)?;
    let mut config = serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    });
    if let Some(check) = recipe.healthcheck {
        config["Healthcheck"] = serde_json::json!({
            "Test": ["CMD-SHELL", check],
            "Interval": 100_000_000u64,
        });
    }
    archive_of(recipe.name, layer, config)
}

/// A `docker save` archive of image `name` with one `layer` and the container `config`.
pub(crate) fn archive_of(
    name: &str,
    layer: Vec<u8>,
    config: serde_json::Value,
) -> Result<Vec<u8>, TestImageError> {
    let diff_id = format!("sha256:{:x}", Sha256::digest(&layer));
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let image_config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "created": "2000-01-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config_bytes = serde_json::to_vec(&image_config).map_err(|e| fail(e.to_string()))?;
    let config_name = format!("{:x}.json", Sha256::digest(&config_bytes));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": ["layer/layer.tar"],
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(|e| fail(e.to_string()))?;
    let mut archive = Tarball::default();
    archive.data("manifest.json", &manifest, 0o644)?;
    archive.data(&config_name, &config_bytes, 0o644)?;
    archive.data("layer/layer.tar", &layer, 0o644)?;
    archive.finish()
}

/// A deterministic tar: fixed owner and timestamps, parents before children, each once.
pub(crate) struct Tarball {
    builder: tar::Builder<Vec<u8>>,
    dirs: std::collections::BTreeSet<String>,
}

impl Default for Tarball {
    fn default() -> Tarball {
        Tarball {
            builder: tar::Builder::new(Vec::new()),
            dirs: Default::default(),
        }
    }
}

impl Tarball {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> Result<(), TestImageError> {
        if !self.dirs.insert(path.to_string()) {
            return Ok(());
        }
        let mut header = Tarball::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(io_error)
    }

    fn parents(&mut self, path: &str) -> Result<(), TestImageError> {
        let mut parents: Vec<String> = Path::new(path)
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.display().to_string())
            .collect();
        parents.reverse();
        parents.iter().try_for_each(|dir| self.dir(dir, 0o755))
    }

    pub(crate) fn data(
        &mut self,
        path: &str,
        content: &[u8],
        mode: u32,
    ) -> Result<(), TestImageError> {
        self.parents(path)?;
        let mut header = Tarball::header(tar::EntryType::Regular, mode, content.len() as u64);
        self.builder
            .append_data(&mut header, path, content)
            .map_err(io_error)
    }

    /// Copies a host file (following links) into the tarball.
    pub(crate) fn file(&mut self, host: &Path, path: &str) -> Result<(), TestImageError> {
        let content =
            std::fs::read(host).map_err(|e| fail(format!("reading {}: {e}", host.display())))?;
        self.data(path, &content, 0o755)
    }

    pub(crate) fn link(&mut self, path: &str, target: &str) -> Result<(), TestImageError> {
        self.parents(path)?;
        let mut header = Tarball::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(io_error)
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>, TestImageError> {
        self.builder.into_inner().map_err(io_error)
    }
}

fn io_error(err: std::io::Error) -> TestImageError {
    fail(err.to_string())
}

pub(crate) fn find_program(name: &str) -> Result<PathBuf, TestImageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            fail(format!(
                "`{name}` is not installed on this host (apt-get install busybox-static git)"
            ))
        })
}

pub(crate) fn run(program: &Path, args: &[&str]) -> Result<String, TestImageError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| fail(format!("running {}: {e}", program.display())))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The image's only layer: busybox with its applet links and `/tmp`, and git if asked for.
fn rootfs(with_git: bool) -> Result<Vec<u8>, TestImageError> {
    let mut fs = Tarball::default();
    fs.dir("tmp", 0o1777)?;
    let busybox = find_program("busybox")?;
    fs.file(&busybox, "bin/busybox")?;
    for applet in run(&busybox, &["--list"])?.lines() {
        if !applet.is_empty() && applet != "busybox" {
            fs.link(&format!("bin/{applet}"), "busybox")?;
        }
    }
    if with_git {
        let git = find_program("git")?;
        fs.file(&git, "usr/bin/git")?;
        // Transports run these by name; git dispatches on the name it is called by.
        for alias in ["git-upload-pack", "git-receive-pack", "git-upload-archive"] {
            fs.link(&format!("usr/bin/{alias}"), "git")?;
        }
        // `git submodule` is still a shell script in git's exec path, with its helpers.
        let exec_path = run(&git, &["--exec-path"])?;
        let exec_path = Path::new(exec_path.trim());
        for script in [
            "git-submodule",
            "git-sh-setup",
            "git-sh-i18n",
            "git-sh-i18n--envsubst",
        ] {
            let host = exec_path.join(script);
            if host.is_file() {
                fs.file(&host, host.display().to_string().trim_start_matches('/'))?;
            }
        }
        let ldd = run(Path::new("ldd"), &[&git.display().to_string()])?;
        for library in shared_libraries(&ldd) {
            fs.file(Path::new(&library), library.trim_start_matches('/'))?;
        }
    }
    fs.finish()
}

/// The absolute paths in `ldd`'s output (`libz.so.1 => /lib/…/libz.so.1 (0x…)`, `/lib64/ld-….so.2 (0x…)`).
pub(crate) fn shared_libraries(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f35)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f35)\n\
                   \tlibmissing.so => not found\n";
        assert_eq!(
            shared_libraries(out),
            vec![
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn image_archives_are_deterministic() {
        let a = image_archive(&RECIPES[2]).unwrap();
        let b = image_archive(&RECIPES[2]).unwrap();
        assert!(a == b, "two builds of the same image differ");
    }
}
