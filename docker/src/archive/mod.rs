//! Archives of a job's files, made and unpacked by the daemon: artifacts and caches.
//!
//! The job's files live in the builds volume on the machine's engine. [`collect`] reads the
//! files a [`Selection`] takes out of a container through the engine's archive endpoint, stages
//! them on the daemon's disk, and writes a zip, gzip or raw archive file; [`extract`] turns a zip
//! into a tar and streams it into a container under a directory. Any container with the builds
//! volume mounted serves, including one that is created and never started: no network of the job
//! is involved, and no token or URL ever enters the build environment.
//!
//! Formats follow GitLab Runner (`zip`: sorted `/` paths, `dir/` entries, Deflate, symlinks and
//! modes kept; `gzip`: one member per file; `raw`: one file verbatim). The blocking parts (tar,
//! zip, gzip) run on tokio's blocking pool.

mod gzip;
pub mod select;
pub(crate) mod transfer;
mod tree;
mod zip;

use std::path::{Path, PathBuf};

use bollard::Docker;

pub use self::select::Selection;
pub use self::zip::Counts;

/// Why an archive could not be made or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker engine: {action}: {source}")]
    Engine {
        action: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{context}: {message}")]
    Zip {
        context: &'static str,
        message: String,
    },
    /// The archive to unpack is not a valid zip (or leaves its directory).
    #[error("corrupt archive: {message}")]
    Corrupt { message: String },
    #[error("only one file can be sent as raw")]
    TooManyForRaw,
}

impl ArchiveError {
    pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> ArchiveError {
        move |source| ArchiveError::Io { context, source }
    }
}

/// How the selected files are packed (GitLab's `artifact_format`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Zip,
    Gzip,
    Raw,
}

impl Format {
    /// GitLab's name; an empty format is `zip`. `None` for formats drover cannot write.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "" | "zip" => Some(Format::Zip),
            "gzip" => Some(Format::Gzip),
            "raw" => Some(Format::Raw),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Gzip => "gzip",
            Format::Raw => "raw",
        }
    }

    /// The uploaded file's name, as GitLab Runner makes it from the entry's `name`: the base name
    /// (default `artifacts`; `.` or `/` become `default`) with `.zip` or `.gz`.
    pub fn file_name(self, name: &str) -> String {
        let name = if name.is_empty() { "artifacts" } else { name };
        let base = name
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty() && *b != ".")
            .unwrap_or("default");
        match self {
            Format::Zip => format!("{base}.zip"),
            Format::Gzip => format!("{base}.gz"),
            Format::Raw => base.to_string(),
        }
    }
}

/// What [`collect`] did, for the trace.
#[derive(Debug, Default)]
pub struct Collected {
    /// Files, directories and symlinks in the archive; 0: nothing matched (no archive worth
    /// sending).
    pub entries: u64,
    /// The archive's size in bytes.
    pub size: u64,
    /// GitLab Runner's warnings: paths outside the project, rules with no match.
    pub warnings: Vec<String>,
    /// Informational lines: `<rule>: found N matching artifact files and directories`, exclusions.
    pub notes: Vec<String>,
}

/// Writes the files of `project_dir` (in `container`) that `selection` takes into `out`, packed as
/// `format`. `work` is a directory of the daemon's for temporary files (it must exist; the
/// caller removes it).
pub async fn collect(
    docker: &Docker,
    container: &str,
    project_dir: &str,
    selection: &Selection,
    format: Format,
    work: &Path,
    out: &Path,
) -> Result<Collected, ArchiveError> {
    let matcher = selection.compile(project_dir)?;
    let mut result = Collected::default();
    for path in matcher.outside() {
        result.warnings.push(format!(
            "{path}: artifact path is not a subpath of project directory: {project_dir}"
        ));
    }
    let project = project_dir.trim_end_matches('/');
    let mut tars = Vec::new();
    for (i, base) in matcher.bases().iter().enumerate() {
        let path = match base.as_str() {
            "" => project.to_string(),
            b => format!("{project}/{b}"),
        };
        let tar = work.join(format!("collect-{i}.tar"));
        if transfer::fetch(docker, container, &path, &tar).await? {
            tars.push((base.clone(), tar));
        }
    }
    // Fresh each time: `work` may serve several archives.
    let staging =
        tempfile::tempdir_in(work).map_err(ArchiveError::io("creating the staging dir"))?;
    let out_file = out.to_path_buf();
    let ((tally, matcher), entries) = tokio::task::spawn_blocking(move || {
        let staging = staging.path();
        let mut tally = tree::Tally {
            per_rule: vec![0; matcher.path_rules()],
            excluded: vec![0; matcher.exclude_rules()],
            taken: 0,
        };
        for (base, tar) in &tars {
            let file = std::fs::File::open(tar).map_err(ArchiveError::io("opening a tar file"))?;
            tree::unpack_selected(
                std::io::BufReader::new(file),
                base,
                &matcher,
                staging,
                &mut tally,
            )?;
            // Staged now: the tar is not needed any more.
            let _ = std::fs::remove_file(tar);
        }
        let entries = if tally.taken == 0 {
            0
        } else {
            match format {
                Format::Zip => zip::write_tree(staging, &out_file)?,
                Format::Gzip => gzip::write_members(staging, &out_file)?,
                Format::Raw => gzip::write_raw(staging, &out_file)?,
            }
        };
        Ok::<_, ArchiveError>(((tally, matcher), entries))
    })
    .await
    .map_err(joined)??;
    for (i, count) in tally.per_rule.iter().enumerate() {
        let rule = matcher.path_rule(i);
        if *count == 0 {
            result.warnings.push(format!(
                "{rule}: no matching files. Ensure that the artifact path is relative to the working directory ({project_dir})"
            ));
        } else {
            result.notes.push(format!(
                "{rule}: found {count} matching artifact files and directories"
            ));
        }
    }
    for (i, count) in tally.excluded.iter().enumerate() {
        if *count > 0 {
            let rule = matcher.exclude_rule(i);
            result.notes.push(format!("{rule}: excluded {count} files"));
        }
    }
    result.entries = entries;
    if entries > 0 {
        result.size = tokio::fs::metadata(out)
            .await
            .map_err(ArchiveError::io("reading the archive's size"))?
            .len();
    }
    Ok(result)
}

/// Unpacks the zip `archive` into `dir` of `container` (created if missing; existing files are
/// overwritten). `work` is a directory of the daemon's for temporary files.
pub async fn extract(
    docker: &Docker,
    container: &str,
    dir: &str,
    archive: &Path,
    work: &Path,
) -> Result<Counts, ArchiveError> {
    let tar: PathBuf = work.join("extract.tar");
    let (zip_path, tar_path) = (archive.to_path_buf(), tar.clone());
    // Under `/` with the full path: the engine creates missing directories on the way.
    let prefix = dir.trim_matches('/').to_string();
    let counts = tokio::task::spawn_blocking(move || zip::to_tar(&zip_path, &prefix, &tar_path))
        .await
        .map_err(joined)??;
    transfer::put(docker, container, "/", &tar).await?;
    let _ = tokio::fs::remove_file(&tar).await;
    Ok(counts)
}

fn joined(err: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::Io {
        context: "archiving",
        source: std::io::Error::other(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_gitlab_runner() {
        assert_eq!(Format::Zip.file_name(""), "artifacts.zip");
        assert_eq!(Format::Zip.file_name("test-output"), "test-output.zip");
        assert_eq!(Format::Gzip.file_name("junit.xml"), "junit.xml.gz");
        assert_eq!(Format::Gzip.file_name(".env"), ".env.gz");
        assert_eq!(
            Format::Raw.file_name("gl-code-quality-report.json"),
            "gl-code-quality-report.json"
        );
        assert_eq!(Format::Zip.file_name("dir/sub/name"), "name.zip");
        assert_eq!(Format::Zip.file_name("."), "default.zip");
        assert_eq!(Format::Zip.file_name("/"), "default.zip");
        assert_eq!(Format::parse(""), Some(Format::Zip));
        assert_eq!(Format::parse("tarzstd"), None);
    }
}
