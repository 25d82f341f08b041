//! A real pipeline through `drover run`: `build` uploads `out/` as its archive and a junit report,
//! `test` (dependencies: build) gets the archive before its script. Jobs run with the plain docker
//! executor, so each has a builds volume of its own: a file `test` reads can only have come
//! through GitLab.
//!
//! [`build_job`] and [`test_job`] are the payloads; extend them (caches, a `package` job) here.

use std::io::Read;

use drover_gitlab::api::Artifact;
use drover_gitlab::fake::{Fault, JobStatus, JobTemplate, Route};

use super::harness::*;

/// What `build` writes into `out/app.txt`.
pub const BUILT: &str = "built-by-the-build-job";

/// `build`: writes `out/app.txt` and `junit.xml`; uploads `out/` (on success) and the report.
pub fn build_job() -> JobTemplate {
    job(
        "build",
        &[
            "mkdir -p out/empty",
            &format!("echo {BUILT} > out/app.txt"),
            "echo '<testsuite name=\"unit\" tests=\"1\"/>' > junit.xml",
        ],
    )
    .variable("OUT_DIR", "out")
    .artifact(Artifact {
        name: "$CI_JOB_NAME-output".into(),
        paths: vec!["$OUT_DIR/".into()],
        when: "on_success".into(),
        expire_in: "1 week".into(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        ..Default::default()
    })
    .artifact(Artifact {
        name: "junit.xml".into(),
        paths: vec!["junit.xml".into()],
        when: "always".into(),
        expire_in: "1 week".into(),
        artifact_type: "junit".into(),
        artifact_format: "gzip".into(),
        ..Default::default()
    })
}

/// `test`: needs `build`'s `out/app.txt`.
pub fn test_job(build: u64) -> JobTemplate {
    job(
        "test",
        &[
            "cat out/app.txt",
            &format!("test \"$(cat out/app.txt)\" = {BUILT}"),
            "test -d out/empty",
        ],
    )
    .dependency(build, "build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_artifacts_reach_the_dependent_test_job_through_gitlab() {
    let Some(mut env) = Env::new("pipeline_artifacts", Settings::docker()).await else {
        return;
    };
    env.start().await;
    let build = env.enqueue(build_job());
    let view = env.finished(build).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert!(
        trace.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{trace}"
    );
    assert!(
        trace.contains("Uploading artifacts as \"junit\" to coordinator... 201 Created"),
        "{trace}"
    );
    assert!(
        trace.find("Uploading artifacts") < trace.find("Job succeeded"),
        "{trace}"
    );

    let stored = env.fake.artifacts(build);
    let kinds: Vec<_> = stored
        .iter()
        .map(|a| (a.artifact_type.as_str(), a.filename.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("archive", "build-output.zip"), ("junit", "junit.xml.gz")]
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&stored[0].data)).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
    assert_eq!(names, ["out/", "out/app.txt", "out/empty/"]);
    let mut app = String::new();
    zip.by_name("out/app.txt")
        .unwrap()
        .read_to_string(&mut app)
        .unwrap();
    assert_eq!(app, format!("{BUILT}\n"));
    let mut junit = String::new();
    flate2::read::GzDecoder::new(&stored[1].data[..])
        .read_to_string(&mut junit)
        .unwrap();
    assert!(junit.contains("<testsuite name=\"unit\""), "{junit}");

    let test = env.enqueue(test_job(build));
    let view = env.finished(test).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert!(
        trace.contains(&format!("Downloading artifacts for build ({build})...")),
        "{trace}"
    );
    assert!(
        trace.contains("Downloading artifacts from coordinator... ok"),
        "{trace}"
    );
    assert_eq!(lines(&view, BUILT), 1, "{trace}");
    assert!(
        !trace.contains("fake-signature"),
        "no signed URL in the trace:\n{trace}"
    );
    // The download went the direct way: GitLab's redirect, then object storage.
    let requests = env.fake.requests();
    assert!(requests.iter().any(|r| r.method == "GET"
        && r.path == format!("/api/v4/jobs/{build}/artifacts")
        && r.query == "direct_download=true"
        && r.status == Some(302)));
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/objects/") && r.status == Some(200))
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_as_too_large_fails_that_job_only() {
    let Some(mut env) = Env::new("pipeline_too_large", Settings::docker()).await else {
        return;
    };
    env.fake
        .inject(Fault::status(Route::ArtifactUpload, 413, 1));
    env.start().await;
    let build = env.enqueue(build_job());
    let view = env.finished(build).await;
    assert_final(&view, JobStatus::Failed, Some("script_failure"), Some(1));
    let trace = text(&view);
    assert!(trace.contains("too large archive"), "{trace}");
    assert!(trace.contains("FATAL: too large archive"), "{trace}");
    assert_eq!(
        env.fake
            .requests()
            .iter()
            .filter(
                |r| r.path.ends_with(&format!("/jobs/{build}/artifacts")) && r.status == Some(413)
            )
            .count(),
        1,
        "413 is not retried"
    );

    // Other jobs go on as usual, their uploads included.
    let other = env.enqueue(build_job());
    let view = env.finished(other).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(env.fake.artifacts(other).len(), 2);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_gitlab_refuses_fails_the_job_naming_it() {
    let Some(mut env) = Env::new("pipeline_refused_dependency", Settings::docker()).await else {
        return;
    };
    env.start().await;
    let build = env.enqueue(build_job());
    assert_final(&env.finished(build).await, JobStatus::Success, None, None);
    env.fake
        .inject(Fault::status(Route::ArtifactDownload, 403, 1));
    let test = env.enqueue(test_job(build));
    let view = env.finished(test).await;
    assert_final(&view, JobStatus::Failed, Some("script_failure"), Some(1));
    let trace = text(&view);
    assert!(
        trace.contains(&format!(
            "Downloading artifacts for build ({build}) failed: forbidden"
        )),
        "{trace}"
    );
    assert_eq!(lines(&view, BUILT), 0, "the script did not run:\n{trace}");
    env.finish().await;
}
