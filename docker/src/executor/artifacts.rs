//! The artifact stages of a job: `download_artifacts` (the dependencies' archives unpacked into the
//! project directory before the script) and `upload_artifacts` (after the steps, per each entry's
//! `when`). The bytes go through the daemon: out of and into the builds volume through the
//! engine's archive endpoints of a transfer container (created from the job's image, never
//! started), to and from GitLab through the job's [`ArtifactTransport`](super::spec::ArtifactTransport).

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions, WaitContainerOptions,
};
use drover_core::{FailureReason, Outcome};
use futures_util::StreamExt;

use super::context::{Job, JobError};
use super::spec::{ArtifactSpec, LineLevel};
use crate::archive::{self, Selection};
use crate::engine::is_status;
use crate::labels;

/// A failed artifact stage fails the job as GitLab Runner's failing helper command does.
fn stage_failed() -> Outcome {
    Outcome::Failed {
        reason: FailureReason::ScriptFailure,
        exit_code: Some(1),
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A stage's `*_ATTEMPTS` variable: 1 to 10, default 1; anything else is clamped (or ignored),
/// with GitLab Runner's warning.
pub(crate) fn stage_attempts(vars: &HashMap<&str, &str>, key: &str) -> (u32, Option<String>) {
    let Some(value) = vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return (1, None);
    };
    match value.parse::<i64>() {
        Ok(n) if (1..=10).contains(&n) => (n as u32, None),
        Ok(n) => {
            let clamped = n.clamp(1, 10) as u32;
            (
                clamped,
                Some(format!(
                    "{key}: number of attempts out of the range [1, 10], using {clamped}"
                )),
            )
        }
        Err(_) => (
            1,
            Some(format!("{key}: {value:?} is not a number, using 1")),
        ),
    }
}

/// `$VAR` and `${VAR}` from the job's variables, for `name`, `paths` and `exclude`.
pub(crate) fn expand(text: &str, vars: &HashMap<&str, &str>) -> String {
    crate::expand::expand(text, |name| vars.get(name).copied())
}

impl Job {
    fn variables(&self) -> HashMap<&str, &str> {
        let mut vars: HashMap<&str, &str> = self
            .spec
            .variables
            .iter()
            .filter(|v| !v.file)
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        vars.insert("CI_PROJECT_DIR", &self.spec.project_dir);
        vars.insert("CI_BUILDS_DIR", &self.spec.builds_dir);
        vars
    }

    /// A transfer container of `image`: the job's volumes, no network, `entrypoint` to run.
    fn offline_container(&self, image: String, entrypoint: &str) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(image),
            entrypoint: Some(vec![entrypoint.to_string()]),
            labels: Some(self.labels(labels::ROLE_TRANSFER)),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(self.binds.clone()),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container whose archive endpoints reach the builds volume: created once per job from
    /// the job's image, never started, removed with the job's other containers. Caches use it too.
    pub(crate) async fn transfer_container(&mut self) -> Result<String, JobError> {
        let name = self.names.transfer();
        // Never run; the engine wants a command all the same.
        let body = self.offline_container(self.spec.image.name.clone(), "true");
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(name),
            // Made by an earlier stage of this job (or before a restart).
            Err(err) if is_status(&err, &[409]) => Ok(name),
            Err(err) => Err(err.into()),
        }
    }

    /// The files git does not track in the project directory (`git ls-files -o`, so ignored files
    /// too, as GitLab Runner), listed by a short-lived container of the image that has git (the
    /// helper image, else the job's). `Err`: why not, for a warning.
    pub(crate) async fn untracked_files(&mut self) -> Result<Vec<String>, String> {
        let image = self
            .spec
            .helper_image
            .clone()
            .unwrap_or_else(|| self.spec.image.name.clone());
        let name = format!("{}-untracked", self.names.transfer());
        let body = ContainerCreateBody {
            cmd: Some(
                ["-c", "safe.directory=*", "ls-files", "-o", "-z"]
                    .map(String::from)
                    .to_vec(),
            ),
            working_dir: Some(self.spec.project_dir.clone()),
            ..self.offline_container(image.clone(), "git")
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let engine = |e: bollard::errors::Error| format!("Docker engine: {e}");
        // A leftover of an earlier attempt goes first.
        let remove = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let _ = self
            .docker
            .remove_container(&name, Some(remove.clone()))
            .await;
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(engine)?;
        let listed = async {
            self.docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|e| format!("the image {image} cannot run git: {e}"))?;
            // A non-zero exit is an error item of this stream: the exit code is read below.
            let _ = self
                .docker
                .wait_container(&name, None::<WaitContainerOptions>)
                .collect::<Vec<_>>()
                .await;
            let code = self
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .map_err(engine)?
                .state
                .and_then(|s| s.exit_code)
                .unwrap_or(-1);
            let options = LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            let mut logs = self.docker.logs(&name, Some(options));
            while let Some(item) = logs.next().await {
                match item.map_err(engine)? {
                    LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    _ => {}
                }
            }
            if code != 0 {
                return Err(format!(
                    "git ls-files failed (exit code {code}): {}",
                    String::from_utf8_lossy(&stderr).trim()
                ));
            }
            Ok(stdout
                .split(|b| *b == 0)
                .filter(|f| !f.is_empty())
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect())
        }
        .await;
        let _ = self.docker.remove_container(&name, Some(remove)).await;
        listed
    }

    async fn log_lines(&mut self, lines: Vec<(LineLevel, String)>) {
        for (level, line) in lines {
            match level {
                LineLevel::Info => self.trace.say(format!("{line}\n")).await,
                LineLevel::Warning => self.trace.warn(&line).await,
                LineLevel::Error => self.trace.error(&line).await,
            }
        }
    }

    /// `download_artifacts`: `None` when it went well, else the job's outcome.
    pub(crate) async fn download_dependencies(&mut self) -> Result<Option<Outcome>, JobError> {
        let Some(transport) = self.spec.transport.0.clone() else {
            return Ok(None);
        };
        if self.spec.dependencies.is_empty() {
            return Ok(None);
        }
        self.trace.section("Downloading artifacts").await;
        let (attempts, warning) = stage_attempts(&self.variables(), "ARTIFACT_DOWNLOAD_ATTEMPTS");
        if let Some(warning) = warning {
            self.trace.warn(&warning).await;
        }
        let container = self.transfer_container().await?;
        let work = tempfile::tempdir()
            .map_err(|e| JobError::System(format!("a temporary directory: {e}")))?;
        let spec = self.spec.clone();
        for dependency in &spec.dependencies {
            let what = format!("{} ({})", dependency.name, dependency.id);
            let file = work.path().join(format!("{}.zip", dependency.id));
            for attempt in 1..=attempts {
                self.trace
                    .say(format!("Downloading artifacts for {what}...\n"))
                    .await;
                let mut lines = Vec::new();
                let mut log = |level, line| lines.push((level, line));
                let result = transport.download(dependency, &file, &mut log).await;
                self.log_lines(lines).await;
                let failure = match result {
                    Err(err) => format!("Downloading artifacts for {what} failed: {err}"),
                    Ok(()) => match archive::extract(
                        &self.docker,
                        &container,
                        &spec.project_dir,
                        &file,
                        work.path(),
                    )
                    .await
                    {
                        Ok(counts) => {
                            let size = tokio::fs::metadata(&file).await.map_or(0, |m| m.len());
                            self.trace
                                .say(format!(
                                    "Extracted {} ({}): {} files, {} directories, {} symlinks\n",
                                    what,
                                    human_size(size),
                                    counts.files,
                                    counts.dirs,
                                    counts.symlinks
                                ))
                                .await;
                            break;
                        }
                        Err(err @ archive::ArchiveError::Corrupt { .. }) => {
                            format!("The artifacts of {what} cannot be extracted: {err}")
                        }
                        Err(err) => {
                            return Err(JobError::System(format!(
                                "extracting the artifacts of {what}: {err}"
                            )));
                        }
                    },
                };
                self.trace.error(&failure).await;
                if attempt == attempts {
                    return Ok(Some(stage_failed()));
                }
                self.trace.warn("Retrying...").await;
            }
            let _ = tokio::fs::remove_file(&file).await;
        }
        Ok(None)
    }

    /// `upload_artifacts_on_success` / `_on_failure`: the entries whose `when` fits `outcome`.
    /// Returns the outcome after the uploads (a failed upload fails a job that had succeeded).
    pub(crate) async fn upload_artifacts(&mut self, outcome: Outcome) -> Result<Outcome, JobError> {
        let Some(transport) = self.spec.transport.0.clone() else {
            return Ok(outcome);
        };
        let succeeded = outcome == Outcome::Success;
        if outcome == Outcome::Canceled {
            return Ok(outcome);
        }
        let spec = self.spec.clone();
        let entries: Vec<&ArtifactSpec> = spec
            .artifacts
            .iter()
            .filter(|a| a.when.fits(succeeded))
            .filter(|a| !a.selection.paths.is_empty() || a.untracked)
            .collect();
        if entries.is_empty() {
            return Ok(outcome);
        }
        self.trace
            .section(match succeeded {
                true => "Uploading artifacts for successful job",
                false => "Uploading artifacts for failed job",
            })
            .await;
        let container = self.transfer_container().await?;
        let work = tempfile::tempdir()
            .map_err(|e| JobError::System(format!("a temporary directory: {e}")))?;
        let vars = self.variables();
        let mut expanded: Vec<(ArtifactSpec, String)> = entries
            .iter()
            .map(|a| {
                let mut a = (*a).clone();
                a.selection = Selection {
                    paths: a.selection.paths.iter().map(|p| expand(p, &vars)).collect(),
                    exclude: a
                        .selection
                        .exclude
                        .iter()
                        .map(|p| expand(p, &vars))
                        .collect(),
                    extra: Vec::new(),
                };
                let name = expand(&a.name, &vars);
                (a, name)
            })
            .collect();
        drop(vars);
        let untracked = match expanded.iter().any(|(a, _)| a.untracked) {
            true => match self.untracked_files().await {
                Ok(files) => files,
                Err(why) => {
                    self.trace
                        .warn(&format!(
                            "untracked: files git does not track are not uploaded: {why}"
                        ))
                        .await;
                    Vec::new()
                }
            },
            false => Vec::new(),
        };
        let mut failed = false;
        for (i, (artifact, name)) in expanded.iter_mut().enumerate() {
            self.trace.say("Uploading artifacts...\n").await;
            if artifact.untracked {
                self.trace
                    .say(format!("untracked: found {} files\n", untracked.len()))
                    .await;
                artifact.selection.extra = untracked.clone();
            }
            let file_name = artifact.format.file_name(name);
            let file = work.path().join(format!("{i}-{file_name}"));
            let collected = match archive::collect(
                &self.docker,
                &container,
                &spec.project_dir,
                &artifact.selection,
                artifact.format,
                work.path(),
                &file,
            )
            .await
            {
                Ok(collected) => collected,
                Err(err @ archive::ArchiveError::TooManyForRaw) => {
                    self.trace.error(&format!("FATAL: {err}")).await;
                    failed = true;
                    continue;
                }
                Err(err) => {
                    return Err(JobError::System(format!("collecting artifacts: {err}")));
                }
            };
            for note in &collected.notes {
                self.trace.say(format!("{note}\n")).await;
            }
            for warning in &collected.warnings {
                self.trace.warn(warning).await;
            }
            if collected.entries == 0 {
                // GitLab Runner's helper says so and exits 0: not a failure.
                self.trace.error("No files to upload").await;
                continue;
            }
            self.trace
                .say(format!(
                    "Created {file_name} ({}, {} entries)\n",
                    human_size(collected.size),
                    collected.entries
                ))
                .await;
            let mut lines = Vec::new();
            let mut log = |level, line| lines.push((level, line));
            let result = transport
                .upload(artifact, &file, &file_name, &mut log)
                .await;
            self.log_lines(lines).await;
            if let Err(err) = result {
                self.trace.error(&format!("FATAL: {err}")).await;
                failed = true;
            }
            let _ = tokio::fs::remove_file(&file).await;
        }
        Ok(match (failed, outcome) {
            (true, Outcome::Success) => stage_failed(),
            _ => outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12 << 20), "12.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn stage_attempts_are_clamped_with_a_warning() {
        let key = "ARTIFACT_DOWNLOAD_ATTEMPTS";
        let attempts = |v: &str| stage_attempts(&HashMap::from([(key, v)]), key);
        assert_eq!(stage_attempts(&HashMap::new(), key), (1, None));
        assert_eq!(attempts("3"), (3, None));
        assert_eq!(attempts("42").0, 10);
        assert!(attempts("0").1.is_some_and(|w| w.contains("using 1")));
        assert!(attempts("many").1.is_some());
    }

    #[test]
    fn variables_are_expanded_as_the_helper_does() {
        let vars = HashMap::from([("CI_JOB_NAME", "build"), ("OUT", "dist")]);
        assert_eq!(expand("$CI_JOB_NAME-files", &vars), "build-files");
        assert_eq!(expand("${OUT}/**/*.js", &vars), "dist/**/*.js");
        assert_eq!(expand("$MISSING/x", &vars), "/x");
        assert_eq!(expand("cost$", &vars), "cost$");
        assert_eq!(expand("a$-b", &vars), "a$-b");
    }
}
