//! Artifacts against the fake: upload (multipart, query fields, retries, refusals) and download of
//! a dependency's archive through a redirect to object storage.

use std::io::Write;
use std::time::Duration;

use drover_gitlab::artifacts::{ArtifactError, ArtifactUpload, LineLevel};
use drover_gitlab::fake::{FakeGitlab, Fault, JobTemplate, Route};
use drover_gitlab::{Client, ClientConfig, JobCredentials, Secret};

use crate::common::*;

fn fast_client(url: &str) -> Client {
    let mut config = ClientConfig::new(url, identity());
    config.artifact_backoff = Duration::from_millis(5);
    Client::new(config).expect("client")
}

/// A runner with a running job (taken and accepted), and the job's credentials.
async fn running_job(fake: &FakeGitlab, client: &Client, template: JobTemplate) -> JobCredentials {
    running_payload(fake, client, template).await.0
}

/// As [`running_job`], with the payload the runner received.
async fn running_payload(
    fake: &FakeGitlab,
    client: &Client,
    template: JobTemplate,
) -> (JobCredentials, drover_gitlab::api::JobResponse) {
    let token = verified_runner(fake, client, false).await;
    fake.enqueue_job(template);
    let job = take_job(client, &token, false).await;
    let creds = JobCredentials::from(&job);
    client.accept_job(&creds, &info(false)).await;
    (creds, job)
}

fn a_zip(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("artifacts.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("out/app.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"built\n").unwrap();
    zip.finish().unwrap();
    path
}

fn upload<'a>(file: &'a std::path::Path) -> ArtifactUpload<'a> {
    ArtifactUpload {
        file,
        file_name: "artifacts.zip",
        artifact_type: "archive",
        artifact_format: "zip",
        expire_in: "7 days",
    }
}

#[tokio::test]
async fn an_uploaded_archive_is_stored_and_served_to_a_dependent_job_through_object_storage() {
    let fake = fake().await;
    let client = fast_client(fake.url());
    let build = running_job(&fake, &client, JobTemplate::new("build")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = a_zip(dir.path());
    let mut lines = Vec::new();
    client
        .upload_artifacts(&build, &upload(&file), &mut |level, line| {
            lines.push((level, line))
        })
        .await
        .expect("upload");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, LineLevel::Info);
    assert!(
        lines[0]
            .1
            .starts_with("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{lines:?}"
    );
    let uploads = requests_to(&fake, "POST", &format!("/jobs/{}/artifacts", build.id));
    assert_eq!(
        uploads[0].query,
        "artifact_format=zip&artifact_type=archive&expire_in=7+days"
    );
    let stored = fake.artifacts(build.id);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].filename, "artifacts.zip");
    assert_eq!(stored[0].expire_in.as_deref(), Some("7 days"));
    assert_eq!(stored[0].data, std::fs::read(&file).unwrap());

    // The same upload again (a retry after a lost answer) is a no-op.
    client
        .upload_artifacts(&build, &upload(&file), &mut |_, _| {})
        .await
        .expect("idempotent");

    // A later job that depends on `build` gets its archive.
    let (test, payload) = running_payload(
        &fake,
        &client,
        JobTemplate::new("test").dependency(build.id, "build"),
    )
    .await;
    let dependency = &payload.dependencies[0];
    assert_eq!(dependency.token, test.token, "the running job's token");
    assert_eq!(
        dependency
            .artifacts_file
            .as_ref()
            .map(|f| f.filename.as_str()),
        Some("artifacts.zip")
    );
    let dest = dir.path().join("downloaded.zip");
    let mut lines = Vec::new();
    let size = client
        .download_artifacts(build.id, &dependency.token, &dest, &mut |_, line| {
            lines.push(line)
        })
        .await
        .expect("download");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
    assert_eq!(size, std::fs::metadata(&file).unwrap().len());
    assert!(
        lines[0].starts_with("Downloading artifacts from coordinator... ok"),
        "{lines:?}"
    );
    let joined = lines.join("\n");
    assert!(!joined.contains("fake-signature"), "{joined}");
    assert!(!joined.contains(test.token.expose()), "{joined}");
    let direct = requests_to(&fake, "GET", &format!("/jobs/{}/artifacts", build.id));
    assert_eq!(direct[0].query, "direct_download=true");
    let storage: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/objects/"))
        .collect();
    assert_eq!(storage.len(), 1, "the redirect was followed");
    assert_no_violations(&fake);
}

#[tokio::test]
async fn too_large_and_forbidden_are_final_other_refusals_are_retried() {
    let fake = fake().await;
    let client = fast_client(fake.url());
    let job = running_job(&fake, &client, JobTemplate::new("build")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = a_zip(dir.path());
    let uploads = || requests_to(&fake, "POST", &format!("/jobs/{}/artifacts", job.id)).len();

    fake.inject(Fault::status(Route::ArtifactUpload, 413, 1));
    let mut lines = Vec::new();
    let err = client
        .upload_artifacts(&job, &upload(&file), &mut |l, line| lines.push((l, line)))
        .await
        .unwrap_err();
    assert_eq!(err, ArtifactError::TooLarge);
    assert_eq!(uploads(), 1, "413 is not retried");
    assert_eq!(lines[0].0, LineLevel::Error);
    assert!(lines[0].1.contains("too large archive"), "{lines:?}");

    // 405 (artifacts disabled): GitLab Runner retries it like any other answer, 3 tries in all.
    fake.inject(Fault::status(Route::ArtifactUpload, 405, 3));
    let err = client
        .upload_artifacts(&job, &upload(&file), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::Failed(ref m) if m.contains("405")),
        "{err}"
    );
    assert_eq!(uploads(), 4);

    // 503 is tried up to 6 times: two of them, then it goes through.
    fake.inject(Fault::status(Route::ArtifactUpload, 503, 2));
    client
        .upload_artifacts(&job, &upload(&file), &mut |_, _| {})
        .await
        .expect("third try");
    assert_eq!(uploads(), 7);

    // A wrong token: 403, final.
    let wrong = JobCredentials {
        id: job.id,
        token: Secret::new("glcbt-64_not-the-token"),
    };
    let err = client
        .upload_artifacts(&wrong, &upload(&file), &mut |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err, ArtifactError::Forbidden);
    assert_eq!(uploads(), 8);
    assert_no_violations(&fake);
}

#[tokio::test]
async fn downloads_fail_on_404_and_403_and_retry_server_errors() {
    let fake = fake().await;
    let client = fast_client(fake.url());
    let build = running_job(&fake, &client, JobTemplate::new("build")).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d.zip");

    // Nothing uploaded: 404, once.
    let err = client
        .download_artifacts(build.id, &build.token, &dest, &mut |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err, ArtifactError::NotFound);

    let file = a_zip(dir.path());
    client
        .upload_artifacts(&build, &upload(&file), &mut |_, _| {})
        .await
        .unwrap();
    let err = client
        .download_artifacts(
            build.id,
            &Secret::new("glcbt-64_wrong"),
            &dest,
            &mut |_, _| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err, ArtifactError::Forbidden);

    // Two server errors, then the proxied download (no direct_download on retries).
    fake.inject(Fault::status(Route::ArtifactDownload, 500, 2));
    client
        .download_artifacts(build.id, &build.token, &dest, &mut |_, _| {})
        .await
        .expect("third try");
    let gets = requests_to(&fake, "GET", &format!("/jobs/{}/artifacts", build.id));
    assert_eq!(gets.len(), 5);
    assert_eq!(gets[4].query, "");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
    assert_no_violations(&fake);
}

#[tokio::test]
async fn gitlab_drops_report_jobs_for_runners_without_the_artifact_features() {
    let fake = fake().await;
    let client = fast_client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let junit = drover_gitlab::api::Artifact {
        name: "junit.xml".into(),
        paths: vec!["rspec.xml".into()],
        when: "always".into(),
        artifact_type: "junit".into(),
        artifact_format: "gzip".into(),
        ..Default::default()
    };
    let dropped = fake.enqueue_job(JobTemplate::new("reports").artifact(junit));
    let plain = fake.enqueue_job(JobTemplate::new("plain"));
    // This runner declared only the client protocol: the report job is never handed to it.
    let job = take_job(&client, &token, false).await;
    assert_eq!(job.id, plain);
    let view = fake.job(dropped).unwrap();
    assert_eq!(view.failure_reason.as_deref(), Some("runner_unsupported"));
    assert_no_violations(&fake);
}

#[tokio::test]
async fn gitlab_drops_fallback_key_jobs_for_runners_without_fallback_cache_keys() {
    let fake = fake().await;
    let client = fast_client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let mut fallback = JobTemplate::new("fallback");
    fallback.response.cache.push(drover_gitlab::api::Cache {
        key: "deps-protected".into(),
        paths: vec!["deps".into()],
        fallback_keys: vec!["deps-default-protected".into()],
        ..Default::default()
    });
    let dropped = fake.enqueue_job(fallback);
    let plain = fake.enqueue_job(JobTemplate::new("plain"));
    let job = take_job(&client, &token, false).await;
    assert_eq!(job.id, plain);
    let view = fake.job(dropped).unwrap();
    assert_eq!(view.failure_reason.as_deref(), Some("runner_unsupported"));
    assert_no_violations(&fake);
}
