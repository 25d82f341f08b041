//! Which files of the project directory an artifact or a cache takes, as GitLab Runner's file
//! archiver chooses them: `paths` globs (`**` crosses directories, `*` does not), `exclude` globs,
//! and an explicit list of untracked files. A matched directory brings its whole tree.

use std::collections::BTreeSet;

use globset::{Glob, GlobBuilder, GlobMatcher};

use super::ArchiveError;

/// The rules of one artifact or cache entry, relative to the project directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `paths`: globs, relative to the project directory (or absolute inside it).
    pub paths: Vec<String>,
    /// `exclude`: globs; an excluded directory takes its tree with it.
    pub exclude: Vec<String>,
    /// Files to add as they are (`untracked`: what `git ls-files -o` lists), relative paths.
    pub extra: Vec<String>,
}

/// A [`Selection`] compiled against a project directory.
#[derive(Debug)]
pub struct Matcher {
    paths: Vec<Rule>,
    exclude: Vec<Rule>,
    extra: BTreeSet<String>,
    /// Where to look: relative directories or files (`""` = the whole project directory), none
    /// inside another.
    bases: Vec<String>,
    /// Paths that point outside the project directory: skipped, with GitLab's warning.
    outside: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    /// As the job wrote it, for the trace.
    text: String,
    glob: GlobMatcher,
}

impl Rule {
    fn new(text: &str, relative: &str) -> Result<Rule, ArchiveError> {
        let glob = GlobBuilder::new(relative)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .or_else(|_| Glob::new(&globset::escape(relative)))
            .map_err(|e| ArchiveError::Pattern {
                pattern: text.to_string(),
                message: e.to_string(),
            })?;
        Ok(Rule {
            text: text.to_string(),
            glob: glob.compile_matcher(),
        })
    }

    /// Matches `path` or one of its ancestors.
    fn covers(&self, path: &str) -> bool {
        ancestors(path).any(|p| self.glob.is_match(p))
    }
}

/// `a/b/c`, `a/b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rfind('/').map(|i| &current[..i]);
        Some(current)
    })
}

/// `pattern` relative to `project_dir`, cleaned of `./`, `//` and trailing `/`; `None` when it
/// leaves the project directory.
fn relative(pattern: &str, project_dir: &str) -> Option<String> {
    let project = project_dir.trim_end_matches('/');
    let rest = if let Some(abs) = pattern.strip_prefix('/') {
        let inside = format!("/{abs}")
            .strip_prefix(project)
            .map(str::to_string)?;
        if !inside.is_empty() && !inside.starts_with('/') {
            return None;
        }
        inside
    } else {
        pattern.to_string()
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

fn is_glob(part: &str) -> bool {
    part.contains(['*', '?', '[', '{', '\\'])
}

/// The literal leading directories of a relative pattern: where its matches can be.
fn base_of(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts.iter().take_while(|p| !is_glob(p)).count();
    parts[..literal].join("/")
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Selection {
    /// Nothing to collect: neither `paths` nor untracked files.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.extra.is_empty()
    }

    pub fn compile(&self, project_dir: &str) -> Result<Matcher, ArchiveError> {
        let mut paths = Vec::new();
        let mut outside = Vec::new();
        let mut bases = Vec::new();
        for text in &self.paths {
            match relative(text, project_dir) {
                Some(rel) => {
                    bases.push(base_of(&rel));
                    // `.` (or the project directory itself): everything in it.
                    let glob = if rel.is_empty() { "**" } else { rel.as_str() };
                    paths.push(Rule::new(text, glob)?);
                }
                None => outside.push(text.clone()),
            }
        }
        let mut extra = BTreeSet::new();
        for file in &self.extra {
            if let Some(rel) = relative(file, project_dir).filter(|r| !r.is_empty()) {
                bases.push(rel.clone());
                extra.insert(rel);
            }
        }
        let exclude = self
            .exclude
            .iter()
            .filter_map(|text| relative(text, project_dir).map(|rel| Rule::new(text, &rel)))
            .collect::<Result<_, _>>()?;
        bases.sort();
        bases.dedup();
        let mut kept: Vec<String> = Vec::new();
        for base in bases {
            if !kept.iter().any(|k| is_under(&base, k)) {
                kept.push(base);
            }
        }
        Ok(Matcher {
            paths,
            exclude,
            extra,
            bases: kept,
            outside,
        })
    }
}

/// Why a path was or was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Taken; the index of the first `paths` rule that matched (`None`: an untracked file).
    Taken(Option<usize>),
    /// Matched, then excluded by the `exclude` rule with this index.
    Excluded(usize),
    Skipped,
}

impl Matcher {
    /// Where the matches can be: project-relative paths to read (`""`: the project directory).
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// `paths` entries that leave the project directory.
    pub fn outside(&self) -> &[String] {
        &self.outside
    }

    /// What happens to the project-relative `path` (a matched directory covers its tree).
    pub fn verdict(&self, path: &str) -> Verdict {
        let taken = self.paths.iter().position(|r| r.covers(path));
        let untracked = ancestors(path).any(|p| self.extra.contains(p));
        if taken.is_none() && !untracked {
            return Verdict::Skipped;
        }
        match self.exclude.iter().position(|r| r.covers(path)) {
            Some(i) => Verdict::Excluded(i),
            None => Verdict::Taken(taken),
        }
    }

    /// The `paths` entry with this index, as written.
    pub fn path_rule(&self, index: usize) -> &str {
        &self.paths[index].text
    }

    pub fn path_rules(&self) -> usize {
        self.paths.len()
    }

    /// The `exclude` entry with this index, as written.
    pub fn exclude_rule(&self, index: usize) -> &str {
        &self.exclude[index].text
    }

    pub fn exclude_rules(&self) -> usize {
        self.exclude.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(paths: &[&str], exclude: &[&str], extra: &[&str]) -> Matcher {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Selection {
            paths: owned(paths),
            exclude: owned(exclude),
            extra: owned(extra),
        }
        .compile("/builds/acme/widget")
        .unwrap()
    }

    fn taken(m: &Matcher, path: &str) -> bool {
        matches!(m.verdict(path), Verdict::Taken(_))
    }

    #[test]
    fn a_matched_directory_brings_its_tree() {
        let m = matcher(&["out/"], &[], &[]);
        assert!(taken(&m, "out"));
        assert!(taken(&m, "out/app.txt"));
        assert!(taken(&m, "out/deep/er/file"));
        assert!(!taken(&m, "outside.txt"));
        assert!(!taken(&m, "src/out/app.txt"));
        assert_eq!(m.bases(), ["out"]);
    }

    #[test]
    fn star_stays_in_its_directory_and_double_star_crosses() {
        let m = matcher(&["logs/*.log"], &[], &[]);
        assert!(taken(&m, "logs/a.log"));
        assert!(!taken(&m, "logs/old/b.log"));
        let m = matcher(&["**/*.xml"], &[], &[]);
        assert!(taken(&m, "report.xml"));
        assert!(taken(&m, "a/b/c/report.xml"));
        assert!(!taken(&m, "a/b/report.json"));
        assert_eq!(m.bases(), [""]);
    }

    #[test]
    fn exclude_removes_matches_and_their_trees() {
        let m = matcher(&["coverage/"], &["coverage/tmp/**/*", "**/*.tmp"], &[]);
        assert!(taken(&m, "coverage/index.html"));
        assert_eq!(m.verdict("coverage/tmp/a/b.json"), Verdict::Excluded(0));
        assert_eq!(m.verdict("coverage/x.tmp"), Verdict::Excluded(1));
        let m = matcher(&["out"], &["out/cache"], &[]);
        assert_eq!(m.verdict("out/cache/deep/file"), Verdict::Excluded(0));
        assert!(taken(&m, "out/cached"));
    }

    #[test]
    fn untracked_files_are_added_as_listed() {
        let m = matcher(&[], &["*.swp"], &["notes.txt", "build/gen"]);
        assert_eq!(m.verdict("notes.txt"), Verdict::Taken(None));
        assert_eq!(m.verdict("build/gen/x.o"), Verdict::Taken(None));
        assert_eq!(m.verdict("x.swp"), Verdict::Skipped);
        assert!(!taken(&m, "README.md"));
        assert_eq!(m.bases(), ["build/gen", "notes.txt"]);
    }

    #[test]
    fn paths_are_cleaned_and_kept_inside_the_project() {
        let m = matcher(
            &[
                "./out//app.txt",
                "/builds/acme/widget/log/test.log",
                "../other/secret",
                "/etc/passwd",
                "/builds/acme/widgetry/x",
            ],
            &[],
            &[],
        );
        assert!(taken(&m, "out/app.txt"));
        assert!(taken(&m, "log/test.log"));
        assert_eq!(
            m.outside(),
            ["../other/secret", "/etc/passwd", "/builds/acme/widgetry/x"]
        );
        assert_eq!(m.bases(), ["log/test.log", "out/app.txt"]);
    }

    #[test]
    fn the_project_directory_itself_takes_everything() {
        for path in [".", "./", "/builds/acme/widget"] {
            let m = matcher(&[path], &["*.log"], &[]);
            assert!(taken(&m, "a.txt"), "{path}");
            assert!(taken(&m, "deep/dir/file"), "{path}");
            assert!(!taken(&m, "x.log"), "{path}");
            assert_eq!(m.bases(), [""]);
        }
    }

    #[test]
    fn bases_inside_other_bases_are_read_once() {
        let m = matcher(&["out/", "out/a/*.txt", "src/**/gen", "srcs/x"], &[], &[]);
        assert_eq!(m.bases(), ["out", "src", "srcs/x"]);
    }
}
