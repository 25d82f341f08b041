//! A staging directory on the daemon's disk: selected entries of a container's tar stream are
//! unpacked into it (modes, symlinks and empty directories kept), and it is walked in sorted
//! order to write archives.

use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use super::ArchiveError;
use super::select::{Matcher, Verdict};

/// What a walk of the staging directory finds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(String),
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// Relative, with `/`.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub size: u64,
}

/// Counts of one selection pass, for the trace.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Entries taken per `paths` rule.
    pub per_rule: Vec<u64>,
    /// Entries dropped per `exclude` rule.
    pub excluded: Vec<u64>,
    /// Files, symlinks and directories taken.
    pub taken: u64,
}

/// Unpacks the entries of `tar` that `matcher` takes into `staging`. The tar is a container's
/// archive of `base` (project-relative; `""` = the project directory itself), whose entries are
/// named after the last component of what was asked for.
pub(crate) fn unpack_selected(
    tar: impl Read,
    base: &str,
    matcher: &Matcher,
    staging: &Path,
    tally: &mut Tally,
) -> Result<(), ArchiveError> {
    let parent = match base.rfind('/') {
        Some(i) => &base[..i],
        None => "",
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive
        .entries()
        .map_err(ArchiveError::io("reading a tar stream"))?
    {
        let mut entry = entry.map_err(ArchiveError::io("reading a tar stream"))?;
        let name = entry
            .path()
            .map_err(ArchiveError::io("reading a tar entry's name"))?
            .into_owned();
        let mut parts = Vec::new();
        for component in name.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                // A container's own archive never has these; never follow them.
                _ => continue,
            }
        }
        if base.is_empty() {
            // The project directory's own name comes first.
            if parts.is_empty() {
                continue;
            }
            parts.remove(0);
        }
        if parts.is_empty() {
            continue;
        }
        let rel = match parent {
            "" => parts.join("/"),
            p => format!("{p}/{}", parts.join("/")),
        };
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            // Pipes, sockets, devices; hard links (a second name of a file taken as well).
            continue;
        }
        match matcher.verdict(&rel) {
            Verdict::Skipped => continue,
            Verdict::Excluded(i) => {
                if !kind.is_dir() {
                    tally.excluded[i] += 1;
                }
                continue;
            }
            Verdict::Taken(rule) => {
                if let Some(i) = rule {
                    tally.per_rule[i] += 1;
                }
            }
        }
        let dest = staging.join(&rel);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(ArchiveError::io("creating a staging directory"))?;
        }
        if kind.is_dir() && dest.is_dir() {
            continue;
        }
        entry.set_preserve_mtime(true);
        entry
            .unpack(&dest)
            .map_err(ArchiveError::io("unpacking into the staging directory"))?;
        tally.taken += 1;
    }
    Ok(())
}

/// Every entry under `root`, sorted by path, directories before their contents; symlinks are
/// not followed.
pub(crate) fn walk(root: &Path) -> Result<Vec<Entry>, ArchiveError> {
    let mut out = Vec::new();
    walk_into(root, "", &mut out)?;
    Ok(out)
}

fn walk_into(root: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<(), ArchiveError> {
    use std::os::unix::fs::MetadataExt;
    let dir = root.join(rel);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(ArchiveError::io("reading the staging directory"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(ArchiveError::io("reading the staging directory"))?;
    names.sort();
    for name in names {
        let path = match rel {
            "" => name,
            r => format!("{r}/{name}"),
        };
        let full = root.join(&path);
        let meta =
            fs::symlink_metadata(&full).map_err(ArchiveError::io("reading a staged file"))?;
        let kind = if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(ArchiveError::io("reading a symlink"))?;
            Kind::Symlink(target.to_string_lossy().into_owned())
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let is_dir = kind == Kind::Dir;
        out.push(Entry {
            path: path.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            size: if is_dir { 0 } else { meta.len() },
        });
        if is_dir {
            walk_into(root, &path, out)?;
        }
    }
    Ok(())
}
