//! Reading and editing the `[[runners]]` entries of config.toml for `register`, `verify`,
//! `unregister` and `list`, keeping the operator's comments and formatting (toml_edit). Writes are
//! atomic and leave the file with mode 0600: it holds runner tokens.

use std::path::{Path, PathBuf};

use anyhow::Context;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

use crate::{exit, files, paths};

/// What a new config file starts with.
const NEW_CONFIG: &str = "\
# drover's configuration, in GitLab Runner's config.toml format.
concurrent = 1
check_interval = 3
";

/// One `[[runners]]` entry as the commands need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerEntry {
    /// Position in the `runners` array; `None` for a runner that is not in the file.
    pub index: Option<usize>,
    pub name: String,
    pub url: String,
    pub token: String,
    pub executor: String,
    /// `tls-ca-file`, resolved against the config's directory.
    pub tls_ca_file: Option<PathBuf>,
}

/// What `register` adds.
#[derive(Debug, Clone)]
pub struct NewRunner {
    pub name: String,
    pub url: String,
    pub id: u64,
    pub token: String,
    /// ISO-8601 from GitLab, or empty when the token does not expire.
    pub token_expires_at: String,
    pub executor: String,
    pub limit: Option<u32>,
    pub docker_image: Option<String>,
    /// Written as given: `register` passes an absolute path.
    pub tls_ca_file: Option<PathBuf>,
}

/// config.toml, parsed for editing.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    doc: DocumentMut,
}

impl ConfigFile {
    /// The file at `path`, or a new one if it does not exist.
    pub fn load_or_new(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse(path, NEW_CONFIG),
            Err(e) => Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// The file at `path`, which must exist.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!(
                    "{} does not exist; register a runner first: drover register -c {}",
                    path.display(),
                    path.display()
                ),
            )),
            Err(e) => Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!("cannot parse {}: {e}", path.display()),
            )
        })?;
        if doc
            .get("runners")
            .is_some_and(|r| r.as_array_of_tables().is_none())
        {
            return Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!(
                    "{}: `runners` must be written as [[runners]] tables",
                    path.display()
                ),
            ));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// The `[[runners]]` entries, in file order.
    pub fn runners(&self) -> Vec<RunnerEntry> {
        let Some(runners) = self.doc.get("runners").and_then(Item::as_array_of_tables) else {
            return Vec::new();
        };
        let text = |t: &Table, key: &str| {
            t.get(key)
                .and_then(Item::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        runners
            .iter()
            .enumerate()
            .map(|(index, t)| RunnerEntry {
                index: Some(index),
                name: text(t, "name"),
                url: text(t, "url"),
                token: text(t, "token"),
                executor: text(t, "executor"),
                tls_ca_file: t
                    .get("tls-ca-file")
                    .and_then(Item::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|f| paths::in_config_dir(&self.path, Path::new(f))),
            })
            .collect()
    }

    /// Appends a `[[runners]]` entry in GitLab Runner's layout.
    pub fn add_runner(
        &mut self,
        new: &NewRunner,
        obtained_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let mut entry = Table::new();
        entry.insert("name", value(new.name.as_str()));
        entry.insert("url", value(new.url.as_str()));
        entry.insert(
            "id",
            value(i64::try_from(new.id).context("runner id out of range")?),
        );
        entry.insert("token", value(new.token.as_str()));
        entry.insert("token_obtained_at", value(toml_datetime(obtained_at)?));
        let expires = if new.token_expires_at.is_empty() {
            "0001-01-01T00:00:00Z"
                .parse::<toml_edit::Datetime>()
                .context("zero datetime")?
        } else {
            let at =
                chrono::DateTime::parse_from_rfc3339(&new.token_expires_at).with_context(|| {
                    format!(
                        "GitLab sent an invalid token_expires_at {:?}",
                        new.token_expires_at
                    )
                })?;
            toml_datetime(at.with_timezone(&chrono::Utc))?
        };
        entry.insert("token_expires_at", value(expires));
        if let Some(ca) = &new.tls_ca_file {
            entry.insert("tls-ca-file", value(ca.display().to_string()));
        }
        entry.insert("executor", value(new.executor.as_str()));
        if let Some(limit) = new.limit {
            entry.insert("limit", value(i64::from(limit)));
        }
        indent(&mut entry, "  ");

        let mut docker = Table::new();
        if let Some(image) = &new.docker_image {
            docker.insert("image", value(image.as_str()));
        }
        indent(&mut docker, "    ");
        docker.decor_mut().set_prefix("  ");
        entry.insert("docker", Item::Table(docker));

        if new.executor == "docker+machine" {
            let mut machine = Table::new();
            machine.insert("IdleCount", value(0));
            machine.insert("MachineName", value("drover-%s"));
            machine.insert("Provider", value("docker"));
            indent(&mut machine, "    ");
            machine.decor_mut().set_prefix("  ");
            entry.insert("machine", Item::Table(machine));
        }
        entry.decor_mut().set_prefix("\n");

        match self
            .doc
            .get_mut("runners")
            .and_then(Item::as_array_of_tables_mut)
        {
            Some(runners) => runners.push(entry),
            None => {
                let mut runners = ArrayOfTables::new();
                runners.push(entry);
                self.doc.insert("runners", Item::ArrayOfTables(runners));
            }
        }
        Ok(())
    }

    /// Removes the entries at these indices (from [`RunnerEntry::index`]).
    pub fn remove_runners(&mut self, indices: &[usize]) {
        let Some(runners) = self
            .doc
            .get_mut("runners")
            .and_then(Item::as_array_of_tables_mut)
        else {
            return;
        };
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for index in sorted.into_iter().rev() {
            if index < runners.len() {
                runners.remove(index);
            }
        }
    }

    /// Writes the file atomically with mode 0600, creating its directory.
    pub fn save(&self) -> anyhow::Result<()> {
        files::write_private(&self.path, self.doc.to_string().as_bytes())
    }

    #[cfg(test)]
    fn text(&self) -> String {
        self.doc.to_string()
    }
}

fn indent(table: &mut Table, prefix: &str) {
    let keys: Vec<String> = table
        .iter()
        .filter(|(_, v)| v.is_value())
        .map(|(k, _)| k.to_owned())
        .collect();
    for key in keys {
        if let Some(mut k) = table.key_mut(&key) {
            k.leaf_decor_mut().set_prefix(prefix);
        }
    }
}

fn toml_datetime(at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<toml_edit::Datetime> {
    at.format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .parse()
        .context("formatting a datetime for TOML")
}

/// The runner's GitLab URL as an operator compares them: trailing `/` and `/ci` ignored.
pub fn same_url(a: &str, b: &str) -> bool {
    match (
        drover_gitlab::normalize_url(a),
        drover_gitlab::normalize_url(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_runner(executor: &str) -> NewRunner {
        NewRunner {
            name: "ci-01".into(),
            url: "https://gitlab.example.com".into(),
            id: 42,
            token: "glrt-abcdefghijklmnopqrstu".into(),
            token_expires_at: "2026-12-31T12:00:00.000Z".into(),
            executor: executor.into(),
            limit: Some(5),
            docker_image: Some("alpine:3.20".into()),
            tls_ca_file: None,
        }
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn adds_a_runner_in_gitlab_runner_layout_keeping_comments() {
        let text = "# my fleet\nconcurrent = 4 # busy\n\n[[runners]]\n  # old one\n  name = \"old\"\n  url = \"https://x\"\n  token = \"glrt-old\"\n  executor = \"docker\"\n";
        let mut file = ConfigFile::parse(Path::new("c.toml"), text).unwrap();
        file.add_runner(&new_runner("docker+machine"), at())
            .unwrap();
        let out = file.text();
        assert!(
            out.starts_with(text),
            "the operator's text is kept verbatim:\n{out}"
        );
        let added = &out[text.len()..];
        assert_eq!(
            added,
            "\n[[runners]]\n  name = \"ci-01\"\n  url = \"https://gitlab.example.com\"\n  id = 42\n  \
             token = \"glrt-abcdefghijklmnopqrstu\"\n  token_obtained_at = 2026-05-01T10:00:00Z\n  \
             token_expires_at = 2026-12-31T12:00:00Z\n  executor = \"docker+machine\"\n  limit = 5\n  \
             [runners.docker]\n    image = \"alpine:3.20\"\n  [runners.machine]\n    IdleCount = 0\n    \
             MachineName = \"drover-%s\"\n    Provider = \"docker\"\n"
        );
        let reparsed = ConfigFile::parse(Path::new("c.toml"), &out).unwrap();
        let names: Vec<String> = reparsed.runners().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["old", "ci-01"]);
    }

    #[test]
    fn a_new_file_has_sane_globals_and_no_machine_table_for_plain_docker() {
        let mut file = ConfigFile::parse(Path::new("c.toml"), NEW_CONFIG).unwrap();
        let mut runner = new_runner("docker");
        runner.token_expires_at.clear();
        runner.limit = None;
        file.add_runner(&runner, at()).unwrap();
        let out = file.text();
        assert!(
            out.contains("concurrent = 1\ncheck_interval = 3\n"),
            "{out}"
        );
        assert!(
            out.contains("token_expires_at = 0001-01-01T00:00:00Z"),
            "{out}"
        );
        assert!(
            !out.contains("[runners.machine]") && !out.contains("limit"),
            "{out}"
        );
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(
            parsed["runners"][0]["docker"]["image"].as_str(),
            Some("alpine:3.20")
        );
    }

    #[test]
    fn a_relative_tls_ca_file_is_relative_to_the_config_directory() {
        let text = "[[runners]]\nname = \"a\"\ntls-ca-file = \"certs/ca.pem\"\n\
                    [[runners]]\nname = \"b\"\ntls-ca-file = \"/srv/ca.pem\"\n\
                    [[runners]]\nname = \"c\"\ntls-ca-file = \"\"\n";
        let file = ConfigFile::parse(Path::new("/etc/drover/config.toml"), text).unwrap();
        let cas: Vec<Option<PathBuf>> = file.runners().into_iter().map(|r| r.tls_ca_file).collect();
        assert_eq!(
            cas,
            [
                Some(PathBuf::from("/etc/drover/certs/ca.pem")),
                Some(PathBuf::from("/srv/ca.pem")),
                None
            ]
        );
    }

    #[test]
    fn removes_entries_by_index() {
        let text =
            "[[runners]]\nname = \"a\"\n[[runners]]\nname = \"b\"\n[[runners]]\nname = \"c\"\n";
        let mut file = ConfigFile::parse(Path::new("c.toml"), text).unwrap();
        file.remove_runners(&[2, 0]);
        let names: Vec<String> = file.runners().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn rejects_runners_that_are_not_tables() {
        let err = ConfigFile::parse(Path::new("c.toml"), "runners = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("[[runners]]"), "{err:#}");
        let err = ConfigFile::parse(Path::new("c.toml"), "concurrent = \n").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot parse c.toml"),
            "{err:#}"
        );
    }

    #[test]
    fn urls_compare_as_gitlab_does() {
        assert!(same_url(
            "https://gitlab.example.com/",
            "https://gitlab.example.com/ci"
        ));
        assert!(!same_url(
            "https://gitlab.example.com",
            "https://other.example.com"
        ));
    }
}
