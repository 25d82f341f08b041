//! Artifacts of a job, daemon side: GitLab's `artifacts[]` and `dependencies[]` mapped onto the
//! executor's specs, and the transport that moves the archives between the daemon's disk and
//! GitLab with the job's token (which never enters the build environment).

use std::path::Path;

use drover_docker::archive::{Format, Selection};
use drover_docker::{
    ArtifactSpec, ArtifactTransport, DependencySpec, LineLevel, TransferError, TransferLog, When,
};
use drover_gitlab::api::JobResponse;
use drover_gitlab::artifacts::{self, ArtifactUpload};
use drover_gitlab::{Client, JobCredentials};
use futures_util::future::BoxFuture;

/// The job's `artifacts[]` as the executor uploads them, and warnings for the entries it cannot.
pub fn specs(job: &JobResponse) -> (Vec<ArtifactSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut warnings = Vec::new();
    for entry in &job.artifacts {
        let Some(format) = Format::parse(&entry.artifact_format) else {
            warnings.push(format!(
                "the {:?} artifact is not uploaded: drover cannot write the {:?} format",
                entry.artifact_type, entry.artifact_format
            ));
            continue;
        };
        let when = match entry.when.as_str() {
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            _ => When::OnSuccess,
        };
        specs.push(ArtifactSpec {
            name: entry.name.clone(),
            selection: Selection {
                paths: entry.paths.clone(),
                exclude: entry.exclude.clone(),
                extra: Vec::new(),
            },
            untracked: entry.untracked,
            when,
            expire_in: entry.expire_in.clone(),
            artifact_type: match entry.artifact_type.as_str() {
                "" => "archive".to_string(),
                kind => kind.to_string(),
            },
            format,
        });
    }
    (specs, warnings)
}

/// The dependencies that have an archive to download, in payload order.
pub fn dependencies(job: &JobResponse) -> Vec<DependencySpec> {
    job.dependencies
        .iter()
        .filter(|d| {
            d.artifacts_file
                .as_ref()
                .is_some_and(|f| !f.filename.is_empty())
        })
        .map(|d| DependencySpec {
            id: d.id,
            name: d.name.clone(),
        })
        .collect()
}

/// Moves one job's artifacts to and from its GitLab.
pub struct GitlabTransport {
    pub client: Client,
    pub job: JobCredentials,
}

fn level(level: artifacts::LineLevel) -> LineLevel {
    match level {
        artifacts::LineLevel::Info => LineLevel::Info,
        artifacts::LineLevel::Warning => LineLevel::Warning,
        artifacts::LineLevel::Error => LineLevel::Error,
    }
}

impl ArtifactTransport for GitlabTransport {
    fn upload<'a>(
        &'a self,
        artifact: &'a ArtifactSpec,
        file: &'a Path,
        file_name: &'a str,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            let upload = ArtifactUpload {
                file,
                file_name,
                artifact_type: &artifact.artifact_type,
                artifact_format: artifact.format.as_str(),
                expire_in: &artifact.expire_in,
            };
            self.client
                .upload_artifacts(&self.job, &upload, &mut |l, line| log(level(l), line))
                .await
                .map_err(|e| TransferError(e.to_string()))
        })
    }

    fn download<'a>(
        &'a self,
        dependency: &'a DependencySpec,
        dest: &'a Path,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            // `dependencies[].token` is the running job's own token.
            self.client
                .download_artifacts(dependency.id, &self.job.token, dest, &mut |l, line| {
                    log(level(l), line)
                })
                .await
                .map(|_| ())
                .map_err(|e| TransferError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_job() -> JobResponse {
        let text = include_str!("../../fixtures/gitlab-api/job-response.json");
        drover_gitlab::api::decode(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_fixtures_artifacts_and_dependencies_map_onto_the_executor() {
        let job = fixture_job();
        let (specs, warnings) = specs(&job);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].artifact_type, "archive");
        assert_eq!(specs[0].format, Format::Zip);
        assert_eq!(specs[0].when, When::Always);
        assert_eq!(specs[0].selection.paths, ["coverage/", "log/test.log"]);
        assert_eq!(specs[0].selection.exclude, ["coverage/tmp/**/*"]);
        assert_eq!(specs[1].artifact_type, "junit");
        assert_eq!(specs[1].format, Format::Gzip);
        assert_eq!(specs[1].format.file_name(&specs[1].name), "junit.xml.gz");
        let deps = dependencies(&job);
        assert_eq!(
            deps,
            [DependencySpec {
                id: 4819,
                name: "build".into()
            }],
            "4820 has no archive"
        );
    }

    #[test]
    fn formats_drover_cannot_write_are_warnings() {
        let mut job = fixture_job();
        job.artifacts[1].artifact_format = "tarzstd".into();
        let (specs, warnings) = specs(&job);
        assert_eq!(specs.len(), 1);
        assert!(warnings[0].contains("\"tarzstd\""), "{warnings:?}");
    }
}
