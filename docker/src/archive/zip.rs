//! Zip archives as GitLab Runner writes and reads them: project-relative `/` paths in sorted order,
//! directories as `dir/` entries, Deflate for files, symlinks as entries with the symlink mode
//! whose content is the target, Unix modes and modification times kept.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use chrono::{DateTime, Datelike, Timelike};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::ArchiveError;
use super::tree::{Entry, Kind, walk};

fn zip_error(context: &'static str) -> impl Fn(zip::result::ZipError) -> ArchiveError {
    move |e| ArchiveError::Zip {
        context,
        message: e.to_string(),
    }
}

fn zip_time(mtime: i64) -> zip::DateTime {
    DateTime::from_timestamp(mtime, 0)
        .and_then(|t| {
            zip::DateTime::from_date_and_time(
                u16::try_from(t.year()).ok()?,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Writes every entry under `root` into a new zip at `out`. Returns the number of entries.
pub(crate) fn write_tree(root: &Path, out: &Path) -> Result<u64, ArchiveError> {
    let entries = walk(root)?;
    let file = File::create(out).map_err(ArchiveError::io("creating the archive file"))?;
    let mut zip = ZipWriter::new(BufWriter::new(file));
    for entry in &entries {
        add(&mut zip, root, entry)?;
    }
    let mut inner = zip.finish().map_err(zip_error("finishing the zip"))?;
    inner
        .flush()
        .map_err(ArchiveError::io("writing the archive file"))?;
    Ok(entries.len() as u64)
}

fn add<W: Write + Seek>(
    zip: &mut ZipWriter<W>,
    root: &Path,
    entry: &Entry,
) -> Result<(), ArchiveError> {
    let options = SimpleFileOptions::default()
        .last_modified_time(zip_time(entry.mtime))
        .unix_permissions(entry.mode)
        .large_file(entry.size >= u32::MAX as u64);
    match &entry.kind {
        Kind::Dir => zip
            .add_directory(format!("{}/", entry.path), options)
            .map_err(zip_error("adding a directory")),
        Kind::Symlink(target) => zip
            .add_symlink(&entry.path, target, options)
            .map_err(zip_error("adding a symlink")),
        Kind::File => {
            zip.start_file(
                &entry.path,
                options.compression_method(CompressionMethod::Deflated),
            )
            .map_err(zip_error("adding a file"))?;
            let mut source = File::open(root.join(&entry.path))
                .map_err(ArchiveError::io("reading a staged file"))?;
            io::copy(&mut source, zip).map_err(ArchiveError::io("compressing a file"))?;
            Ok(())
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
}

/// Rewrites the zip at `zip_path` as a tar at `tar_path` whose entries lie under `prefix` (a
/// relative path, e.g. `builds/acme/widget`), for the engine's archive endpoint. Entries that
/// would leave the prefix (`..`, absolute names) make the archive corrupt.
pub(crate) fn to_tar(
    zip_path: &Path,
    prefix: &str,
    tar_path: &Path,
) -> Result<Counts, ArchiveError> {
    let file = File::open(zip_path).map_err(ArchiveError::io("opening the archive"))?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| ArchiveError::Corrupt {
        message: e.to_string(),
    })?;
    let out = File::create(tar_path).map_err(ArchiveError::io("creating a tar file"))?;
    let mut tar = tar::Builder::new(BufWriter::new(out));
    let mut counts = Counts::default();
    let mut links = std::collections::HashSet::new();
    let prefix = prefix.trim_matches('/');
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| ArchiveError::Corrupt {
            message: e.to_string(),
        })?;
        let corrupt = |message: String| ArchiveError::Corrupt { message };
        let name = entry
            .enclosed_name()
            .ok_or_else(|| corrupt(format!("the entry {:?} leaves its directory", entry.name())))?;
        let rel = name.to_string_lossy().trim_end_matches('/').to_string();
        if rel.is_empty() {
            continue;
        }
        // Docker writes the tar as root: an entry below a symlink this archive made would be
        // written wherever the link points (`x -> /`, then `x/etc/...`).
        if let Some(link) = rel
            .match_indices('/')
            .map(|(i, _)| &rel[..i])
            .find(|parent| links.contains(*parent))
        {
            return Err(corrupt(format!(
                "the entry {rel} lies below the symlink {link} of the same archive"
            )));
        }
        let path = match prefix {
            "" => rel.clone(),
            p => format!("{p}/{rel}"),
        };
        let mut header = tar::Header::new_gnu();
        let mtime = entry
            .last_modified()
            .and_then(|t| {
                let date = chrono::NaiveDate::from_ymd_opt(
                    t.year().into(),
                    t.month().into(),
                    t.day().into(),
                )?;
                let time =
                    date.and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())?;
                Some(time.and_utc().timestamp().max(0) as u64)
            })
            .unwrap_or(0);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        let mode = entry.unix_mode().map(|m| m & 0o7777);
        let write = |e: io::Error| ArchiveError::Io {
            context: "writing a tar file",
            source: e,
        };
        if entry.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode.unwrap_or(0o755));
            header.set_size(0);
            tar.append_data(&mut header, &path, io::empty())
                .map_err(write)?;
            counts.dirs += 1;
        } else if entry.is_symlink() {
            // The archive declares the target's size: read no more than a path can be.
            let mut target = String::new();
            (&mut entry)
                .take(SYMLINK_TARGET_MAX + 1)
                .read_to_string(&mut target)
                .map_err(|e| corrupt(format!("the symlink {path}: {e}")))?;
            if target.len() as u64 > SYMLINK_TARGET_MAX {
                return Err(corrupt(format!(
                    "the symlink {path} points to a target over {SYMLINK_TARGET_MAX} bytes"
                )));
            }
            links.insert(rel);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(mode.unwrap_or(0o777));
            header.set_size(0);
            tar.append_link(&mut header, &path, &target)
                .map_err(write)?;
            counts.symlinks += 1;
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode.unwrap_or(0o644));
            header.set_size(entry.size());
            let declared = entry.size();
            let mut reader = Checked {
                inner: &mut entry,
                failed: None,
                read: 0,
            };
            let result = tar.append_data(&mut header, &path, &mut reader);
            if let Some(message) = reader.failed {
                return Err(corrupt(format!("{path}: {message}")));
            }
            // The tar header promised `declared` bytes: fewer would shift every later header.
            if result.is_ok() && reader.read != declared {
                return Err(corrupt(format!(
                    "{path}: {} bytes where the archive declares {declared}",
                    reader.read
                )));
            }
            result.map_err(write)?;
            counts.files += 1;
        }
    }
    let mut inner = tar
        .into_inner()
        .map_err(ArchiveError::io("writing a tar file"))?;
    inner
        .flush()
        .map_err(ArchiveError::io("writing a tar file"))?;
    Ok(counts)
}

/// Remembers a read error of the zip (a bad CRC, a truncated stream) so that it is reported as a
/// corrupt archive, not as a failure to write the tar.
struct Checked<'a, R> {
    inner: &'a mut R,
    failed: Option<String>,
    /// Bytes read so far.
    read: u64,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.failed = Some(e.to_string());
        })?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Linux's `PATH_MAX`: no symlink target is longer.
const SYMLINK_TARGET_MAX: u64 = 4096;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn modes_symlinks_and_empty_dirs_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("out/empty")).unwrap();
        fs::create_dir_all(root.join("out/bin")).unwrap();
        fs::write(root.join("out/app.txt"), "hello\n").unwrap();
        fs::write(root.join("out/bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(
            root.join("out/bin/run.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        symlink("../app.txt", root.join("out/bin/link")).unwrap();
        let zip_path = dir.path().join("a.zip");
        assert_eq!(write_tree(&root, &zip_path).unwrap(), 6);

        // The zip itself, as GitLab reads it.
        let mut zip = ZipArchive::new(File::open(&zip_path).unwrap()).unwrap();
        let names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                "out/",
                "out/app.txt",
                "out/bin/",
                "out/bin/link",
                "out/bin/run.sh",
                "out/empty/"
            ]
        );
        assert_eq!(
            zip.by_name("out/bin/run.sh").unwrap().unix_mode().unwrap() & 0o7777,
            0o750
        );
        assert!(zip.by_name("out/bin/link").unwrap().is_symlink());

        // Back as a tar under a prefix, unpacked on disk.
        let tar_path = dir.path().join("a.tar");
        let counts = to_tar(&zip_path, "builds/p", &tar_path).unwrap();
        assert_eq!(
            counts,
            Counts {
                files: 2,
                dirs: 3,
                symlinks: 1
            }
        );
        let back = dir.path().join("back");
        tar::Archive::new(File::open(&tar_path).unwrap())
            .unpack(&back)
            .unwrap();
        let p = back.join("builds/p");
        assert_eq!(
            fs::read_to_string(p.join("out/app.txt")).unwrap(),
            "hello\n"
        );
        assert_eq!(
            fs::metadata(p.join("out/bin/run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o750
        );
        assert_eq!(
            fs::read_link(p.join("out/bin/link")).unwrap().to_str(),
            Some("../app.txt")
        );
        assert!(p.join("out/empty").is_dir());
        assert_eq!(fs::read_dir(p.join("out/empty")).unwrap().count(), 0);
    }

    #[test]
    fn entries_leaving_the_directory_and_garbage_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("evil.zip");
        let mut zip = ZipWriter::new(File::create(&evil).unwrap());
        zip.start_file("../escape.txt", SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
        let tar = dir.path().join("t.tar");
        assert!(matches!(
            to_tar(&evil, "p", &tar),
            Err(ArchiveError::Corrupt { .. })
        ));
        let garbage = dir.path().join("garbage.zip");
        fs::write(&garbage, b"this is not a zip file at all").unwrap();
        assert!(matches!(
            to_tar(&garbage, "p", &tar),
            Err(ArchiveError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_entry_below_a_symlink_of_the_same_archive_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("link.zip");
        let mut zip = ZipWriter::new(File::create(&evil).unwrap());
        // A link anywhere is fine (a virtualenv's `bin/python -> /usr/bin/python3`) ...
        zip.add_symlink(
            "venv/python",
            "/usr/bin/python3",
            SimpleFileOptions::default(),
        )
        .unwrap();
        // ... writing through one is not.
        zip.add_symlink("x", "/", SimpleFileOptions::default())
            .unwrap();
        zip.start_file("x/etc/evil", SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
        let tar = dir.path().join("t.tar");
        match to_tar(&evil, "p", &tar) {
            Err(ArchiveError::Corrupt { message }) => {
                assert!(message.contains("below the symlink x"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_symlink_target_longer_than_a_path_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("long.zip");
        let mut zip = ZipWriter::new(File::create(&evil).unwrap());
        zip.add_symlink("l", "a".repeat(10_000), SimpleFileOptions::default())
            .unwrap();
        zip.finish().unwrap();
        let tar = dir.path().join("t.tar");
        assert!(matches!(
            to_tar(&evil, "p", &tar),
            Err(ArchiveError::Corrupt { .. })
        ));
    }
}
