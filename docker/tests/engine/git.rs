//! GIT_STRATEGY: clone and fetch from a repository bind-mounted into the job (file:// URL).

use std::path::Path;
use std::process::Command;

use drover_core::{FailureReason, Outcome};
use drover_docker::testing::GIT_IMAGE;
use drover_docker::{GitSpec, GitStrategy};

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
        ..GitSpec::none()
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
    let machine = format!("runner-{runner}-git");
    let endpoint = machine_on_local_engine(&docker, &runner, &machine).await;
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
        out.contains("Removing untracked-1"),
        "git clean removed the last job's files: {out}"
    );
    let listing = &out[out.find("$ ls -a").unwrap()..];
    assert!(!listing.contains("untracked-1"), "{out}");
    assert!(out.contains("v1"), "{out}");
    remove_machine(&docker, &machine).await;
    assert_nothing_left(&docker, &runner).await;
}

/// Commits `files` (path, content) in `work` and pushes to `bare`; returns the new sha.
fn commit_and_push(work: &Path, bare: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, content) in files {
        let file = work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
        git(work, &["add", path]);
    }
    git(
        work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
    git(work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// A job on `endpoint` whose sources come from `bare` (mounted at /repo.git).
fn git_job(
    runner: &str,
    id: u64,
    bare: &Path,
    git: GitSpec,
    script: &[&str],
) -> drover_docker::BuildSpec {
    let mut s = spec(runner, id, script);
    s.image.name = GIT_IMAGE.to_string();
    s.volumes = vec![format!("{}:/repo.git:ro", bare.display())];
    s.git = git;
    s
}

#[tokio::test]
async fn clean_flags_checkout_and_depth_are_honoured_across_fetches() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let machine = format!("runner-{runner}-gitflags");
    let endpoint = machine_on_local_engine(&docker, &runner, &machine).await;
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = bare_repo(dir.path(), "v1\n");
    let sha = commit_and_push(&dir.path().join("work"), &bare, &[("two", "2\n")], "second");

    // A shallow clone leaves an untracked file behind.
    let mut shallow = git_spec(GitStrategy::Clone, &sha);
    shallow.depth = 1;
    let (outcome, out) = run_job(
        endpoint.clone(),
        git_job(
            &runner,
            40,
            &bare,
            shallow,
            &["git rev-list --count HEAD", "touch left-$((1))"],
        ),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("\n1\n"), "one commit deep: {out}");

    // GIT_CLEAN_FLAGS=none keeps it; a full fetch deepens the shallow copy.
    let mut keep = git_spec(GitStrategy::Fetch, &sha);
    keep.clean_flags = vec![];
    let (outcome, out) = run_job(
        endpoint.clone(),
        git_job(
            &runner,
            41,
            &bare,
            keep,
            &["ls", "git rev-list --count HEAD"],
        ),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("left-1"), "not cleaned: {out}");
    assert!(out.contains("\n2\n"), "unshallowed: {out}");

    // GIT_CHECKOUT=false: fetched, not checked out, not cleaned.
    let mut no_checkout = git_spec(GitStrategy::Fetch, &sha);
    no_checkout.checkout = false;
    let (outcome, out) = run_job(
        endpoint.clone(),
        git_job(&runner, 42, &bare, no_checkout, &["ls"]),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("Skipping Git checkout"), "{out}");
    assert!(!out.contains("Checking out"), "{out}");
    assert!(out.contains("left-1"), "{out}");

    // Custom clean flags: -fd keeps ignored files... and removes untracked ones.
    let mut clean = git_spec(GitStrategy::Fetch, &sha);
    clean.clean_flags = vec!["-f".into(), "-d".into()];
    let (outcome, out) = run_job(
        endpoint.clone(),
        git_job(&runner, 43, &bare, clean, &["ls"]),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Removing left-1"),
        "git clean -f -d ran: {out}"
    );
    remove_machine(&docker, &machine).await;
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn the_empty_strategy_leaves_an_empty_project_dir() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let machine = format!("runner-{runner}-empty");
    let endpoint = machine_on_local_engine(&docker, &runner, &machine).await;
    let (outcome, out) =
        run_job(endpoint.clone(), spec(&runner, 44, &["touch stale-$((3))"])).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    let mut empty = spec(&runner, 45, &["ls -A", "echo listed-$((4))"]);
    empty.git.strategy = GitStrategy::Empty;
    let (outcome, out) = run_job(endpoint, empty).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Skipping Git repository setup and creating an empty build directory"),
        "{out}"
    );
    assert!(!out.contains("stale-3"), "{out}");
    assert!(out.contains("listed-4"), "{out}");
    remove_machine(&docker, &machine).await;
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn submodules_are_set_up_recursively() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let dir = tempfile::tempdir().unwrap();
    // leaf.git, inside mid.git, inside repo.git: relative URLs, resolved against origin.
    let mut shas = std::collections::BTreeMap::new();
    for name in ["leaf", "mid", "repo"] {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let (bare, _) = bare_repo(&root, &format!("{name}\n"));
        let work = root.join("work");
        let sha = match name {
            "leaf" => git(&work, &["rev-parse", "HEAD"]),
            _ => {
                let child = if name == "mid" { "leaf" } else { "mid" };
                let url = format!("../{child}.git");
                git(
                    &work,
                    &[
                        "-c",
                        "protocol.file.allow=always",
                        "submodule",
                        "add",
                        "-q",
                        "--name",
                        child,
                        dir.path().join(child).join("repo.git").to_str().unwrap(),
                        child,
                    ],
                );
                git(
                    &work,
                    &[
                        "config",
                        "-f",
                        ".gitmodules",
                        &format!("submodule.{child}.url"),
                        &url,
                    ],
                );
                git(&work, &["add", ".gitmodules"]);
                commit_and_push(&work, &bare, &[], "submodule")
            }
        };
        shas.insert(name, (bare, sha));
    }
    let mut spec = spec(
        &runner,
        46,
        &[
            "cat README mid/README mid/leaf/README",
            "git submodule status --recursive",
        ],
    );
    spec.image.name = GIT_IMAGE.to_string();
    // Each bare repository where the relative URLs point: /repo.git, /mid.git, /leaf.git.
    spec.volumes = ["repo", "mid", "leaf"]
        .iter()
        .map(|n| format!("{}:/{n}.git:ro", shas[n].0.display()))
        .collect();
    spec.git = git_spec(GitStrategy::Clone, &shas["repo"].1);
    spec.git.submodules.strategy = drover_docker::SubmoduleStrategy::Recursive;
    spec.git.submodules.depth = 1;
    // Git refuses file:// submodules by default since 2.38; these are the job's own repositories.
    spec.variables = vec![
        drover_docker::Variable::new("GIT_CONFIG_COUNT", "1"),
        drover_docker::Variable::new("GIT_CONFIG_KEY_0", "protocol.file.allow"),
        drover_docker::Variable::new("GIT_CONFIG_VALUE_0", "always"),
    ];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Updating/initializing submodules recursively..."),
        "{out}"
    );
    assert!(out.contains("repo\nmid\nleaf\n"), "{out}");
    assert!(
        out.contains(&format!(" {} mid", shas["mid"].1))
            && out.contains(&format!(" {} mid/leaf", shas["leaf"].1)),
        "each submodule at its recorded commit: {out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_fetch_drops_the_hooks_config_and_locks_an_earlier_job_left() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let machine = format!("runner-{runner}-gitlocks");
    let endpoint = machine_on_local_engine(&docker, &runner, &machine).await;
    let dir = tempfile::tempdir().unwrap();
    let (bare, sha) = bare_repo(dir.path(), "v1\n");
    let planted = [
        "mkdir -p .git/hooks",
        "printf '#!/bin/sh\\necho planted-hook-ran\\n' > .git/hooks/post-checkout",
        "chmod +x .git/hooks/post-checkout",
        "git config core.planted yes",
        "touch .git/index.lock .git/refs/heads/main.lock",
    ];
    let (outcome, out) = run_job(
        endpoint.clone(),
        git_job(
            &runner,
            47,
            &bare,
            git_spec(GitStrategy::Clone, &sha),
            &planted,
        ),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    let (outcome, out) = run_job(
        endpoint,
        git_job(
            &runner,
            48,
            &bare,
            git_spec(GitStrategy::Fetch, &sha),
            &[
                "git config core.planted || echo no-planted-config",
                "cat README",
            ],
        ),
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("Fetching changes..."), "{out}");
    assert!(!out.contains("planted-hook-ran"), "{out}");
    assert!(out.contains("\nno-planted-config\n"), "{out}");
    assert!(out.contains("v1"), "{out}");
    remove_machine(&docker, &machine).await;
    assert_nothing_left(&docker, &runner).await;
}
