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
        let Some(rel) = relative(&name, base, parent) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            // A second name of a file met earlier in the stream: a file of its own in archives.
            let target = entry
                .link_name()
                .map_err(ArchiveError::io("reading a tar entry's link"))?
                .and_then(|t| relative(&t, base, parent));
            let staged = target.map(|t| staging.join(t)).filter(|t| t.is_file());
            if let (Some(staged), Verdict::Taken(rule)) = (staged, matcher.verdict(&rel)) {
                let dest = staging.join(&rel);
                if let Some(dir) = dest.parent() {
                    fs::create_dir_all(dir)
                        .map_err(ArchiveError::io("creating a staging directory"))?;
                }
                fs::copy(&staged, &dest).map_err(ArchiveError::io("staging a hard link"))?;
                if let Some(i) = rule {
                    tally.per_rule[i] += 1;
                }
                tally.taken += 1;
            }
            continue;
        }
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            // Pipes, sockets, devices: GitLab Runner skips them too.
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

/// The project-relative path of a tar entry `name` from the archive of `base` (whose parent is
/// `parent`); `None` for the archive's root when that is the project directory itself.
fn relative(name: &Path, base: &str, parent: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            // A container's own archive never has `..` or `/`; never follow them.
            Component::CurDir
            | Component::ParentDir
            | Component::RootDir
            | Component::Prefix(_) => {}
        }
    }
    if base.is_empty() && !parts.is_empty() {
        // The project directory's own name comes first.
        parts.remove(0);
    }
    if parts.is_empty() {
        return None;
    }
    Some(match parent {
        "" => parts.join("/"),
        p => format!("{p}/{}", parts.join("/")),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Selection;

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header
    }

    /// What the engine sends for `GET archive?path=/builds/p`: entries under `p/`.
    fn project_tar() -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755),
            "p/",
            std::io::empty(),
        )
        .unwrap();
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755),
            "p/out/",
            std::io::empty(),
        )
        .unwrap();
        let mut file = header(tar::EntryType::Regular, 0o700);
        file.set_size(5);
        tar.append_data(&mut file, "p/out/a", &b"hello"[..])
            .unwrap();
        tar.append_link(
            &mut header(tar::EntryType::Link, 0o700),
            "p/out/b",
            "p/out/a",
        )
        .unwrap();
        tar.append_link(&mut header(tar::EntryType::Symlink, 0o777), "p/out/c", "a")
            .unwrap();
        tar.append_data(
            &mut header(tar::EntryType::Fifo, 0o644),
            "p/out/fifo",
            std::io::empty(),
        )
        .unwrap();
        let mut other = header(tar::EntryType::Regular, 0o644);
        other.set_size(1);
        tar.append_data(&mut other, "p/other.txt", &b"x"[..])
            .unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn hard_links_become_files_and_special_files_are_skipped() {
        let selection = Selection {
            paths: vec!["**/out".into()],
            ..Default::default()
        };
        let matcher = selection.compile("/builds/p").unwrap();
        assert_eq!(matcher.bases(), [""]);
        let dir = tempfile::tempdir().unwrap();
        let mut tally = Tally {
            per_rule: vec![0],
            excluded: vec![],
            taken: 0,
        };
        unpack_selected(&project_tar()[..], "", &matcher, dir.path(), &mut tally).unwrap();
        let entries: Vec<_> = walk(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.kind, e.mode))
            .collect();
        assert_eq!(
            entries,
            [
                ("out".to_string(), Kind::Dir, 0o755),
                ("out/a".to_string(), Kind::File, 0o700),
                ("out/b".to_string(), Kind::File, 0o700),
                ("out/c".to_string(), Kind::Symlink("a".into()), 0o777),
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("out/b")).unwrap(),
            "hello"
        );
        assert_eq!(tally.taken, 4);
    }
}
