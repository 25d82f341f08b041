//! Caches end to end: a pipeline whose jobs share a cache through a real, signature-checking S3
//! server (s3s-fs, in this process), the same with the server down, and the local cache kept in a
//! volume on the machine.

use drover_docker::testing::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use drover_gitlab::api::Cache;
use drover_gitlab::fake::{JobStatus, JobTemplate};

use super::harness::*;

const BUCKET: &str = "runner-cache";

fn cached(template: JobTemplate, key: &str, policy: &str, fallback: &[&str]) -> JobTemplate {
    let mut template = template;
    template.response.cache.push(Cache {
        key: key.to_string(),
        untracked: false,
        paths: vec!["deps".to_string()],
        policy: policy.to_string(),
        when: "on_success".to_string(),
        fallback_keys: fallback.iter().map(|k| k.to_string()).collect(),
    });
    template
}

/// `template` with `lines` added to the end of its script.
fn append(mut template: JobTemplate, lines: &[&str]) -> JobTemplate {
    let script = template
        .response
        .steps
        .iter_mut()
        .find(|s| s.name == "script")
        .expect("a script step");
    script.script.extend(lines.iter().map(|l| l.to_string()));
    template
}

/// `settings` with the local cache: a `/cache` volume on the machine.
fn with_local_cache(mut settings: Settings) -> Settings {
    settings.docker_extra = "    volumes = [\"/cache\"]\n".to_string();
    settings
}

/// A job that leaves `deps/lib.txt` (`local`) in the cache `deps-protected` under `policy`.
fn fills_local_deps(policy: &str) -> JobTemplate {
    let script = ["mkdir -p deps", "echo local > deps/lib.txt"];
    cached(job("first", &script), "deps-protected", policy, &[])
}

/// A job that fails unless the cache `deps-protected` gave it what `fills_local_deps` left.
fn needs_local_deps() -> JobTemplate {
    let script = ["test \"$(cat deps/lib.txt)\" = local"];
    cached(job("second", &script), "deps-protected", "pull", &[])
}

/// A pool whose machines take one job each: every job starts from an empty project directory,
/// so what it finds there came from the cache.
fn with_s3(address: &str) -> Settings {
    let mut settings = Settings::pool();
    settings.max_builds = 1;
    settings.runner_extra = format!(
        "  [runners.cache]\n\
         \x20   Type = \"s3\"\n\
         \x20   Path = \"ci\"\n\
         \x20   [runners.cache.s3]\n\
         \x20     ServerAddress = \"{address}\"\n\
         \x20     AccessKey = \"{ACCESS_KEY}\"\n\
         \x20     SecretKey = \"{SECRET_KEY}\"\n\
         \x20     BucketName = \"{BUCKET}\"\n\
         \x20     Insecure = true\n"
    );
    settings
}

/// GitLab Runner's short token, written out from its rules: no `glrt-` and `t1_`, 9 characters.
fn gitlab_short(token: &str) -> String {
    let t = token.strip_prefix("glrt-").unwrap_or(token);
    let t = match t.as_bytes() {
        [b't', b'1'..=b'3', b'_', ..] => &t[3..],
        _ => t,
    };
    t.chars().take(9).collect()
}

fn assert_no_s3_secrets(env: &Env, traces: &[String]) {
    let log = env.log();
    for text in traces.iter().chain([&log]) {
        assert!(!text.contains(SECRET_KEY), "the S3 secret leaked:\n{text}");
        assert!(
            !text.contains("X-Amz-Signature"),
            "a signature leaked:\n{text}"
        );
        assert!(
            !text.contains("X-Amz-Credential"),
            "a credential leaked:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_shares_its_cache_through_s3() {
    let server = S3Server::start(BUCKET).await.expect("the S3 server starts");
    let Some(mut env) = Env::new("cache_s3_pipeline", with_s3(&server.address())).await else {
        return;
    };
    env.start().await;
    let object = format!(
        "ci/runner/{}/project/42/deps-protected",
        gitlab_short(&env.token)
    );

    let build = env.enqueue(cached(
        job(
            "build",
            &[
                "test ! -e deps",
                "mkdir -p deps/sub",
                "echo v1 > deps/sub/lib.txt",
            ],
        ),
        "deps-protected",
        "pull-push",
        &[],
    ));
    let build = env.finished(build).await;
    assert_final(&build, JobStatus::Success, None, None);
    let trace = text(&build);
    for line in [
        "Checking cache for deps-protected...",
        "Failed to extract cache",
        "Creating cache deps-protected...",
        &format!(
            "Uploading cache.zip to http://{}/{BUCKET}/{object}",
            server.address()
        ),
        "Created cache",
    ] {
        assert!(trace.contains(line), "no {line:?} in:\n{trace}");
    }
    assert!(
        trace.find("Checking cache for") < trace.find("test ! -e deps")
            && trace.find("echo v1") < trace.find("Creating cache"),
        "restore before the script, save after it:\n{trace}"
    );
    assert_eq!(server.objects(), std::slice::from_ref(&object));

    // `test` restores the cache from S3 (a hit) and reads what `build` wrote.
    let test = env.enqueue(cached(
        job(
            "test",
            &[
                "test \"$(cat deps/sub/lib.txt)\" = v1",
                "echo v2 > deps/sub/lib.txt",
            ],
        ),
        "deps-protected",
        "pull-push",
        &[],
    ));
    let test = env.finished(test).await;
    assert_final(&test, JobStatus::Success, None, None);
    let test_trace = text(&test);
    assert!(
        test_trace.contains("Successfully extracted cache")
            && !test_trace.contains("Failed to extract cache"),
        "{test_trace}"
    );

    // `package` pulls only: through its fallback key, and nothing goes up.
    let package = env.enqueue(cached(
        job("package", &["test \"$(cat deps/sub/lib.txt)\" = v2"]),
        "package-protected",
        "pull",
        &["deps-protected"],
    ));
    let package = env.finished(package).await;
    assert_final(&package, JobStatus::Success, None, None);
    let package_trace = text(&package);
    assert!(
        package_trace.contains("Checking cache for package-protected...")
            && package_trace.contains("Checking cache for deps-protected...")
            && package_trace.contains("Successfully extracted cache"),
        "{package_trace}"
    );
    assert!(!package_trace.contains("Creating cache"), "{package_trace}");

    // The bucket holds exactly the one cache, as GitLab Runner names it.
    assert_eq!(server.objects(), [object]);
    assert_no_s3_secrets(&env, &[trace, test_trace, package_trace]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_with_warnings_when_the_cache_server_is_down() {
    let server = S3Server::start(BUCKET).await.expect("the S3 server starts");
    let address = server.address();
    server.stop().await;
    let Some(mut env) = Env::new("cache_s3_down", with_s3(&address)).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(cached(
        job("build", &["mkdir -p deps", "echo v1 > deps/lib.txt"]),
        "deps-protected",
        "pull-push",
        &[],
    ));
    let done = env.finished(id).await;
    assert_final(&done, JobStatus::Success, None, None);
    let trace = text(&done);
    for line in [
        "Checking cache for deps-protected...",
        "Failed to extract cache",
        "Creating cache deps-protected...",
        "Failed to create cache",
        "Job succeeded",
    ] {
        assert!(trace.contains(line), "no {line:?} in:\n{trace}");
    }
    assert!(!trace.contains("Created cache"), "{trace}");
    assert_no_s3_secrets(&env, &[trace]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cache_is_kept_on_the_machine_between_jobs() {
    // Jobs straight on the engine: each has its own builds volume, so only the cache carries files
    // from one job to the next.
    let Some(mut env) = Env::new("cache_local", with_local_cache(Settings::docker())).await else {
        return;
    };
    env.start().await;
    let first = env.enqueue(fills_local_deps("pull-push"));
    let first = env.finished(first).await;
    assert_final(&first, JobStatus::Success, None, None);
    assert!(text(&first).contains("Created cache"), "{}", text(&first));
    let second = env.enqueue(needs_local_deps());
    let second = env.finished(second).await;
    assert_final(&second, JobStatus::Success, None, None);
    let trace = text(&second);
    assert!(
        trace.contains("a local version of cache will be extracted")
            && trace.contains("Successfully extracted cache"),
        "{trace}"
    );
    env.quit().await;
    // The cache volume outlives the jobs (it goes with the machine; here there is none).
    let left = env.objects().await;
    assert_eq!(left.containers, Vec::<String>::new());
    assert_eq!(left.volumes.len(), 1, "{left:?}");
    assert!(
        left.volumes[0].starts_with("runner-") && left.volumes[0].ends_with("-protected"),
        "{left:?}"
    );
    remove_objects(&env.docker, &env.short).await;
    env.finish().await;
}

/// The pipeline: `build` uploads its artifacts and pushes a cache, `test` gets the
/// artifacts and restores the cache (a hit), `package` pulls the cache only. Then the same with
/// the S3 server down: every job still succeeds, with cache warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_with_artifacts_and_an_s3_cache_up_and_down() {
    use super::pipeline::{build_job, test_job};
    let server = S3Server::start(BUCKET).await.expect("the S3 server starts");
    // Jobs straight on the engine, each with a builds volume of its own.
    let mut settings = with_s3(&server.address());
    settings.pool = false;
    let Some(mut env) = Env::new("cache_pipeline_artifacts", settings).await else {
        return;
    };
    env.start().await;
    let pipeline = async |env: &Env| {
        let with_cache = |t: JobTemplate, policy: &str| cached(t, "node-protected", policy, &[]);
        let build = env.enqueue(with_cache(
            append(
                build_job(),
                &["mkdir -p deps", "echo modules > deps/node.txt"],
            ),
            "pull-push",
        ));
        let build_view = env.finished(build).await;
        let test = env.enqueue(with_cache(
            append(test_job(build), &["cat deps/node.txt || true"]),
            "pull-push",
        ));
        let package = env.enqueue(with_cache(
            job("package", &["cat deps/node.txt || true"]),
            "pull",
        ));
        [
            build_view,
            env.finished(test).await,
            env.finished(package).await,
        ]
    };

    let [build, test, package] = pipeline(&env).await;
    for view in [&build, &test, &package] {
        assert_final(view, JobStatus::Success, None, None);
    }
    let build_trace = text(&build);
    assert!(
        build_trace.contains("Created cache")
            && build_trace.find("Created cache") < build_trace.find("Uploading artifacts..."),
        "the cache is saved before the artifacts go up:\n{build_trace}"
    );
    let test_trace = text(&test);
    assert!(
        test_trace.contains("Successfully extracted cache")
            && test_trace.find("Restoring cache") < test_trace.find("Downloading artifacts")
            && test_trace.contains("\nmodules\n"),
        "{test_trace}"
    );
    let package_trace = text(&package);
    assert!(
        package_trace.contains("Successfully extracted cache")
            && package_trace.contains("\nmodules\n")
            && !package_trace.contains("Creating cache"),
        "{package_trace}"
    );
    assert_eq!(
        server.objects(),
        [format!(
            "ci/runner/{}/project/42/node-protected",
            gitlab_short(&env.token)
        )]
    );

    server.stop().await;
    let [build, test, package] = pipeline(&env).await;
    for view in [&build, &test, &package] {
        assert_final(view, JobStatus::Success, None, None);
        assert!(
            text(view).contains("Failed to extract cache"),
            "{}",
            text(view)
        );
    }
    // `build` made a cache it could not upload; `test`, without the cache, had nothing to save.
    assert!(
        text(&build).contains("Failed to create cache"),
        "{}",
        text(&build)
    );
    assert!(
        text(&test).contains("No files to cache."),
        "{}",
        text(&test)
    );
    assert_no_s3_secrets(&env, &[build_trace, test_trace, package_trace, text(&test)]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_over_max_uploaded_archive_size_is_not_uploaded() {
    let server = S3Server::start(BUCKET).await.expect("the S3 server starts");
    let mut settings = with_s3(&server.address());
    settings.runner_extra = settings.runner_extra.replace(
        "    Path = \"ci\"\n",
        "    Path = \"ci\"\n    MaxUploadedArchiveSize = 64\n",
    );
    let Some(mut env) = Env::new("cache_max_size", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(cached(
        job("big", &["mkdir -p deps", "seq 1 2000 > deps/numbers.txt"]),
        "deps-protected",
        "push",
        &[],
    ));
    let done = env.finished(id).await;
    assert_final(&done, JobStatus::Success, None, None);
    let trace = text(&done);
    assert!(
        trace.contains("MaxUploadedArchiveSize is 64): not uploaded")
            && trace.contains("Failed to create cache")
            && !trace.contains("Restoring cache"),
        "push only, and too big:\n{trace}"
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cache_lives_as_long_as_its_sandbox() {
    let Some(mut env) = Env::new("cache_local_sandbox", with_local_cache(Settings::pool())).await
    else {
        return;
    };
    env.start().await;
    let first = env.enqueue(fills_local_deps("push"));
    assert_final(&env.finished(first).await, JobStatus::Success, None, None);
    let sandbox = env.sandboxes_become(1).await.remove(0);
    let volumes = env.objects().await.volumes;
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with(&format!("{sandbox}-runner-")) && v.ends_with("-protected")),
        "{volumes:?}"
    );
    let second = env.enqueue(needs_local_deps());
    let second = env.finished(second).await;
    assert_final(&second, JobStatus::Success, None, None);
    assert!(
        text(&second).contains("Successfully extracted cache"),
        "{}",
        text(&second)
    );
    // The drained shutdown removes the sandbox, and its cache volume with it: `finish` checks that
    // nothing of the runner is left.
    env.finish().await;
}
