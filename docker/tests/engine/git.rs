//! GIT_STRATEGY: clone and fetch from a repository bind-mounted into the job (file:// URL).

use std::path::Path;
use std::process::Command;

use drover_core::{FailureReason, Outcome};
use drover_docker::testing::GIT_IMAGE;
use drover_docker::{GitSpec, GitStrategy, MachineProvider};

use crate::support::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository with one commit on `main`; returns it and the commit's sha.
fn bare_repo(root: &Path, content: &str) -> (std::path::PathBuf, String) {
    let work = root.join("work");
    let bare = root.join("repo.git");
    std::fs::create_dir_all(&work).unwrap();
    git(
        root,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), content).unwrap();
    git(&work, &["add", "README"]);
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "first",
        ],
    );
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    (bare, sha)
}

fn git_spec(strategy: GitStrategy, sha: &str) -> GitSpec {
    GitSpec {
        strategy,
        repo_url: "file:///repo.git".to_string(),
        sha: sha.to_string(),
        ref_name: "main".to_string(),
        refspecs: vec![],
        depth: 0,
    }
}

#[tokio::test]
async fn clone_fetches_the_sources_into_the_project_dir() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let dir = tempfile::tempdir().unwrap();
    let (bare, sha) = bare_repo(dir.path(), "hello from git\n");
    let mut spec = spec(
        &runner,
        30,
        &[
            "cat README",
            "git rev-parse HEAD",
            "git remote get-url origin",
        ],
    );
    spec.image.name = GIT_IMAGE.to_string();
    spec.volumes = vec![format!("{}:/repo.git:ro", bare.display())];
    spec.git = git_spec(GitStrategy::Clone, &sha);
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains(&format!("Checking out {} as main...", &sha[..8])),
        "{out}"
    );
    assert!(out.contains("hello from git"), "{out}");
    assert!(
        out.contains(&format!("\n{sha}\n")),
        "HEAD is the job's sha: {out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn an_image_without_git_fails_with_a_clear_message() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let dir = tempfile::tempdir().unwrap();
    let (bare, sha) = bare_repo(dir.path(), "x\n");
    let mut spec = with_after_script(
        spec(&runner, 31, &["echo script-ran-$((1))"]),
        &["echo after-$((2))"],
    );
    spec.volumes = vec![format!("{}:/repo.git:ro", bare.display())];
    spec.git = git_spec(GitStrategy::Clone, &sha);
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(1)
        },
        "{out}"
    );
    assert!(
        out.contains("the image drover-test/busybox:1 has no git"),
        "{out}"
    );
    assert!(
        out.contains("GIT_STRATEGY=none"),
        "the message says what to do: {out}"
    );
    assert!(
        !out.contains("script-ran-1") && !out.contains("after-2"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn fetch_reuses_the_working_copy_in_a_machines_builds_volume() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let provider = crate::provider::provider(&runner).await;
    let machine = format!("runner-{runner}-git");
    let endpoint = provider.create(&machine).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bare, sha) = bare_repo(dir.path(), "v1\n");
    let job = |id, strategy, script: &[&str]| {
        let mut s = spec(&runner, id, script);
        s.image.name = GIT_IMAGE.to_string();
        s.volumes = vec![format!("{}:/repo.git:ro", bare.display())];
        s.git = git_spec(strategy, &sha);
        s
    };
    let (first, out) = run_job(
        endpoint.clone(),
        job(32, GitStrategy::Clone, &["touch untracked-$((1))"]),
    )
    .await;
    assert_eq!(first, Outcome::Success, "{out}");
    let (second, out) = run_job(
        endpoint,
        job(33, GitStrategy::Fetch, &["ls -a", "cat README"]),
    )
    .await;
    assert_eq!(second, Outcome::Success, "{out}");
    assert!(
        out.contains("Fetching changes..."),
        "the working copy was reused: {out}"
    );
    assert!(
        !out.contains("untracked-1"),
        "git clean removed the last job's files: {out}"
    );
    assert!(out.contains("v1"), "{out}");
    provider.remove(&machine).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}
