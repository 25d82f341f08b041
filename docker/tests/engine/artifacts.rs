//! A job's artifact stages on the real engine: uploads after the script per `when`, dependencies
//! unpacked before it, failures of either. GitLab's side is a transport double that keeps what it
//! is sent and serves what the test gives it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use drover_core::{FailureReason, Outcome};
use drover_docker::archive::{Format, Selection};
use drover_docker::{
    ArtifactSpec, ArtifactTransport, DependencySpec, LineLevel, TransferError, TransferLog,
    Transport, When,
};
use futures_util::future::BoxFuture;

use crate::support::*;

#[derive(Default)]
struct Double {
    /// (type, file name, bytes) of every upload.
    uploads: Mutex<Vec<(String, String, Vec<u8>)>>,
    /// Served for every dependency; `None`: the download fails.
    archive: Option<PathBuf>,
    refuse_uploads: bool,
    /// Downloads never end.
    hang: bool,
    /// Downloads that fail before one goes through.
    failures: std::sync::atomic::AtomicU32,
}

impl ArtifactTransport for Double {
    fn upload<'a>(
        &'a self,
        artifact: &'a ArtifactSpec,
        file: &'a Path,
        file_name: &'a str,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            if self.refuse_uploads {
                log(LineLevel::Error, "too large archive (double)".into());
                return Err(TransferError("too large archive".into()));
            }
            let bytes = std::fs::read(file).unwrap();
            self.uploads.lock().unwrap().push((
                artifact.artifact_type.clone(),
                file_name.to_string(),
                bytes,
            ));
            log(LineLevel::Info, "uploaded (double)".into());
            Ok(())
        })
    }

    fn download<'a>(
        &'a self,
        _dependency: &'a DependencySpec,
        dest: &'a Path,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            if self.hang {
                log(LineLevel::Info, "hanging (double)".into());
                std::future::pending::<()>().await;
            }
            let failures = &self.failures;
            let failing = failures
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            match &self.archive {
                Some(_) if failing => Err(TransferError("500 Internal Server Error".into())),
                Some(source) => {
                    std::fs::copy(source, dest).unwrap();
                    log(LineLevel::Info, "downloaded (double)".into());
                    Ok(())
                }
                None => Err(TransferError("not found".into())),
            }
        })
    }
}

fn artifact(paths: &[&str], when: When, format: Format, kind: &str, name: &str) -> ArtifactSpec {
    ArtifactSpec {
        name: name.to_string(),
        selection: Selection {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        untracked: false,
        when,
        expire_in: "1 week".to_string(),
        artifact_type: kind.to_string(),
        format,
    }
}

/// The dependency of the download tests: `build`, job 60.
fn on_build() -> Vec<DependencySpec> {
    vec![DependencySpec {
        id: 60,
        name: "build".into(),
    }]
}

/// How a job ends whose script, or the artifact download before it, failed with `code`.
fn script_failure(code: i32) -> Outcome {
    Outcome::Failed {
        reason: FailureReason::ScriptFailure,
        exit_code: Some(code),
    }
}

fn zip_entries(bytes: &[u8]) -> Vec<String> {
    let zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    zip.file_names().map(|n| n.unwrap().to_string()).collect()
}

#[tokio::test]
async fn artifacts_are_uploaded_after_the_script_as_their_when_says() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let double = Arc::new(Double::default());
    let mut spec = spec(
        &runner,
        61,
        &[
            "mkdir -p out/sub && echo built > out/app.txt && echo x > out/sub/x",
            "echo '<testsuite/>' > report.xml",
        ],
    );
    spec.variables = vec![drover_docker::Variable::new("OUT", "out")];
    spec.artifacts = vec![
        artifact(
            &["$OUT/"],
            When::OnSuccess,
            Format::Zip,
            "archive",
            "app-${OUT}",
        ),
        artifact(
            &["report.xml"],
            When::Always,
            Format::Gzip,
            "junit",
            "junit.xml",
        ),
        artifact(&["out/"], When::OnFailure, Format::Zip, "archive", "never"),
        artifact(
            &["nothing/"],
            When::OnSuccess,
            Format::Zip,
            "archive",
            "none",
        ),
    ];
    spec.transport = Transport::new(double.clone());
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    let uploads = double.uploads.lock().unwrap().clone();
    let names: Vec<_> = uploads.iter().map(|u| u.1.as_str()).collect();
    assert_eq!(names, ["app-out.zip", "junit.xml.gz"], "{out}");
    assert_eq!(
        zip_entries(&uploads[0].2),
        ["out/", "out/app.txt", "out/sub/", "out/sub/x"]
    );
    let mut xml = String::new();
    flate2::read::GzDecoder::new(&uploads[1].2[..])
        .read_to_string(&mut xml)
        .unwrap();
    assert_eq!(xml, "<testsuite/>\n");
    assert!(
        out.contains("Uploading artifacts for successful job"),
        "{out}"
    );
    assert!(out.contains("uploaded (double)"), "{out}");
    assert!(out.contains("ERROR: No files to upload"), "{out}");
    assert!(
        out.find("Uploading artifacts") > out.find("$ echo"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_failed_job_uploads_its_on_failure_artifacts_and_a_refused_upload_fails_a_good_job() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let double = Arc::new(Double::default());
    let mut failing = spec(&runner, 62, &["echo log > debug.log", "exit 3"]);
    failing.artifacts = vec![
        artifact(&["debug.log"], When::OnFailure, Format::Zip, "archive", ""),
        artifact(
            &["debug.log"],
            When::OnSuccess,
            Format::Zip,
            "archive",
            "no",
        ),
    ];
    failing.transport = Transport::new(double.clone());
    let (outcome, out) = run_job(local(), failing).await;
    assert_eq!(outcome, script_failure(3), "{out}");
    let names: Vec<String> = double
        .uploads
        .lock()
        .unwrap()
        .iter()
        .map(|u| u.1.clone())
        .collect();
    assert_eq!(names, ["artifacts.zip"], "{out}");
    assert!(out.contains("Uploading artifacts for failed job"), "{out}");

    let refusing = Arc::new(Double {
        refuse_uploads: true,
        ..Default::default()
    });
    let mut good = spec(&runner, 63, &["echo ok > ok.txt"]);
    good.artifacts = vec![artifact(
        &["ok.txt"],
        When::OnSuccess,
        Format::Zip,
        "archive",
        "",
    )];
    good.transport = Transport::new(refusing);
    let (outcome, out) = run_job(local(), good).await;
    assert_eq!(outcome, script_failure(1), "{out}");
    assert!(out.contains("FATAL: too large archive"), "{out}");
    assert!(out.contains("Job failed: exit code 1"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn dependencies_are_unpacked_into_the_project_before_the_script() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("dep.zip");
    {
        let mut zip = zip::ZipWriter::new(File::create(&archive).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.add_directory("out/", options).unwrap();
        zip.start_file("out/app.txt", options.unix_permissions(0o640))
            .unwrap();
        zip.write_all(b"from-build\n").unwrap();
        zip.add_symlink("out/link", "app.txt", options).unwrap();
        zip.finish().unwrap();
    }
    let double = Arc::new(Double {
        archive: Some(archive.clone()),
        ..Default::default()
    });
    let mut job = spec(
        &runner,
        64,
        &["cat out/link", "stat -c %a out/app.txt", "pwd"],
    );
    job.dependencies = on_build();
    job.transport = Transport::new(double);
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Downloading artifacts for build (60)..."),
        "{out}"
    );
    assert!(out.contains("\nfrom-build\n"), "{out}");
    assert!(out.contains("\n640\n"), "modes are kept: {out}");
    assert!(
        out.contains("Extracted build (60) (")
            && out.contains("1 files, 1 directories, 1 symlinks"),
        "{out}"
    );
    assert!(
        out.find("downloaded (double)") < out.find("$ cat out/link"),
        "{out}"
    );

    // ARTIFACT_DOWNLOAD_ATTEMPTS repeats a failed download.
    let flaky = Arc::new(Double {
        archive: Some(archive),
        failures: 1.into(),
        ..Default::default()
    });
    let mut job = spec(&runner, 70, &["cat out/app.txt"]);
    job.variables = vec![drover_docker::Variable::new(
        "ARTIFACT_DOWNLOAD_ATTEMPTS",
        "2",
    )];
    job.dependencies = on_build();
    job.transport = Transport::new(flaky);
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("WARNING: Retrying..."), "{out}");
    assert!(out.contains("\nfrom-build\n"), "{out}");

    // A dependency that cannot be downloaded fails the job before its script; after_script runs.
    let failing = Arc::new(Double::default());
    let mut job = with_after_script(spec(&runner, 65, &["echo script-ran"]), &["echo after-ran"]);
    job.dependencies = on_build();
    job.transport = Transport::new(failing);
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, script_failure(1), "{out}");
    assert!(
        out.contains("Downloading artifacts for build (60) failed: not found"),
        "{out}"
    );
    assert!(!out.contains("\nscript-ran"), "{out}");
    assert!(out.contains("\nafter-ran"), "{out}");

    // A corrupt archive fails the job the same way, naming the dependency.
    let garbage = dir.path().join("garbage.zip");
    std::fs::write(&garbage, b"PK\x03\x04 truncated").unwrap();
    let corrupt = Arc::new(Double {
        archive: Some(garbage),
        ..Default::default()
    });
    let mut job = spec(&runner, 68, &["echo script-ran"]);
    job.dependencies = on_build();
    job.transport = Transport::new(corrupt);
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, script_failure(1), "{out}");
    assert!(
        out.contains("The artifacts of build (60) cannot be extracted: corrupt archive"),
        "{out}"
    );
    assert!(!out.contains("\nscript-ran"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn untracked_files_are_listed_by_git_and_an_image_without_git_is_a_warning() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let double = Arc::new(Double::default());
    let mut job = spec(
        &runner,
        66,
        &[
            "git init -q .",
            "echo t > tracked.txt && git add tracked.txt",
            "mkdir -p gen && echo u > gen/u.txt && echo l > local.log",
        ],
    );
    job.image.name = drover_docker::testing::GIT_IMAGE.to_string();
    let mut untracked = artifact(&[], When::OnSuccess, Format::Zip, "archive", "");
    untracked.untracked = true;
    untracked.selection.exclude = vec!["*.log".to_string()];
    job.artifacts = vec![untracked.clone()];
    job.transport = Transport::new(double.clone());
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("untracked: found 2 files"), "{out}");
    let uploads = double.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1, "{out}");
    assert_eq!(zip_entries(&uploads[0].2), ["gen/", "gen/u.txt"], "{out}");

    // busybox has no git: the upload goes on without the untracked files, with a warning.
    let double = Arc::new(Double::default());
    let mut job = spec(&runner, 67, &["echo x > a.txt"]);
    let mut both = artifact(&["a.txt"], When::OnSuccess, Format::Zip, "archive", "");
    both.untracked = true;
    job.artifacts = vec![both];
    job.transport = Transport::new(double.clone());
    let (outcome, out) = run_job(local(), job).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("WARNING: untracked: files git does not track are not uploaded"),
        "{out}"
    );
    let uploads = double.uploads.lock().unwrap().clone();
    assert_eq!(zip_entries(&uploads[0].2), ["a.txt"], "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn an_abort_cuts_a_hanging_download_short() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let hanging = Arc::new(Double {
        hang: true,
        ..Default::default()
    });
    let mut job = with_after_script(spec(&runner, 69, &["echo script-ran"]), &["echo after-ran"]);
    job.dependencies = on_build();
    job.transport = Transport::new(hanging);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let handle = executor().start(local(), job, tx);
    read_until(&mut rx, "Downloading artifacts for build (60)").await;
    handle.control().abort(FailureReason::RunnerSystemFailure);
    let (outcome, rest) = finish(handle, rx).await;
    let out = rest.text();
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::RunnerSystemFailure,
            exit_code: None
        },
        "{out}"
    );
    assert!(
        !out.contains("script-ran") && !out.contains("after-ran"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}
