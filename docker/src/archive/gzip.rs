//! Report artifacts: `gzip` (one gzip member per regular file, in sorted order: header name = the
//! base name, comment = the project-relative path, mtime kept) and `raw` (exactly one file).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::{Compression, GzBuilder};

use super::ArchiveError;
use super::tree::{Kind, walk};

/// A member's header name: GitLab Runner escapes names that are not plain ASCII (`e:` + URL
/// escaping).
fn header_name(base: &str) -> String {
    if base.is_ascii() && !base.contains('%') {
        return base.to_string();
    }
    let mut out = String::from("e:");
    for byte in base.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Writes the regular files under `root` as concatenated gzip members into `out`. Returns the
/// number of files.
pub(crate) fn write_members(root: &Path, out: &Path) -> Result<u64, ArchiveError> {
    let file = File::create(out).map_err(ArchiveError::io("creating the archive file"))?;
    let mut writer = BufWriter::new(file);
    let mut files = 0;
    for entry in walk(root)?.into_iter().filter(|e| e.kind == Kind::File) {
        let base = entry.path.rsplit('/').next().unwrap_or(&entry.path);
        let mut encoder = GzBuilder::new()
            .filename(header_name(base))
            .comment(entry.path.as_str())
            .mtime(u32::try_from(entry.mtime.max(0)).unwrap_or(u32::MAX))
            .write(&mut writer, Compression::default());
        let mut source = File::open(root.join(&entry.path))
            .map_err(ArchiveError::io("reading a staged file"))?;
        io::copy(&mut source, &mut encoder).map_err(ArchiveError::io("compressing a file"))?;
        encoder
            .finish()
            .map_err(ArchiveError::io("writing the archive file"))?;
        files += 1;
    }
    writer
        .flush()
        .map_err(ArchiveError::io("writing the archive file"))?;
    Ok(files)
}

/// Copies the one regular file under `root` to `out`; more than one is GitLab Runner's error.
pub(crate) fn write_raw(root: &Path, out: &Path) -> Result<u64, ArchiveError> {
    let files: Vec<_> = walk(root)?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    match files.as_slice() {
        [] => Ok(0),
        [one] => {
            std::fs::copy(root.join(&one.path), out)
                .map_err(ArchiveError::io("copying the raw artifact"))?;
            Ok(1)
        }
        _ => Err(ArchiveError::TooManyForRaw),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;

    use flate2::read::MultiGzDecoder;

    use super::*;

    #[test]
    fn one_member_per_file_with_name_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/rspec.xml"), "<testsuite/>").unwrap();
        fs::write(root.join("a/z.xml"), "<z/>").unwrap();
        let out = dir.path().join("junit.xml.gz");
        assert_eq!(write_members(&root, &out).unwrap(), 2);

        let bytes = fs::read(&out).unwrap();
        let mut first = flate2::read::GzDecoder::new(&bytes[..]);
        let mut text = String::new();
        first.read_to_string(&mut text).unwrap();
        assert_eq!(text, "<testsuite/>");
        let header = first.header().unwrap();
        assert_eq!(header.filename(), Some(&b"rspec.xml"[..]));
        assert_eq!(header.comment(), Some(&b"a/b/rspec.xml"[..]));
        let mut all = String::new();
        MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut all)
            .unwrap();
        assert_eq!(all, "<testsuite/><z/>");
        assert_eq!(header_name("résumé.xml"), "e:r%C3%A9sum%C3%A9.xml");
        assert_eq!(header_name("100%.xml"), "e:100%25.xml");
    }

    #[test]
    fn raw_takes_exactly_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("report.json"), "{}").unwrap();
        let out = dir.path().join("out");
        assert_eq!(write_raw(&root, &out).unwrap(), 1);
        assert_eq!(fs::read_to_string(&out).unwrap(), "{}");
        fs::write(root.join("second.json"), "{}").unwrap();
        assert!(matches!(
            write_raw(&root, &out),
            Err(ArchiveError::TooManyForRaw)
        ));
    }
}
