use std::path::Path;

use super::*;
use crate::config;
use crate::daemon::build_spec::build_spec;

/// Job 4821 of the reference's worked example: token `glrt-t1_6sYkQxW9bN3pLmZr7cVd`, project 42,
/// cache `gems-main-protected` with the fallback `gems-default-protected`.
fn fixture_job() -> JobResponse {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gitlab-api/job-response.json");
    drover_gitlab::api::decode(&std::fs::read(path).unwrap()).unwrap()
}

fn runner(extra: &str) -> RunnerSettings {
    let text = format!(
        "concurrent = 1\n[[runners]]\nname = \"r\"\nexecutor = \"docker\"\n\
         token = \"glrt-t1_6sYkQxW9bN3pLmZr7cVd\"\n{extra}"
    );
    config::parse(&text, Path::new("config.toml"))
        .unwrap()
        .runners[0]
        .clone()
}

const S3: &str = "[runners.docker]\nimage = \"alpine\"\npull_policy = \"if-not-present\"\nvolumes = [\"/cache\"]\n\
                  [runners.cache]\nType = \"s3\"\nPath = \"ci\"\n\
                  [runners.cache.s3]\nServerAddress = \"127.0.0.1:9000\"\nInsecure = true\n\
                  AccessKey = \"AK\"\nSecretKey = \"SECRETSECRET\"\nBucketName = \"cache\"\n";

fn planned(job: &JobResponse, runner: &RunnerSettings, machine: Option<&str>) -> BuildSpec {
    let mut spec = build_spec(job, runner, "r", &[]).unwrap();
    plan(&mut spec, job, runner, "s_0123456789ab", machine).unwrap();
    spec
}

#[test]
fn s3_objects_are_named_as_gitlab_runner_names_them() {
    let spec = planned(&fixture_job(), &runner(S3), None);
    assert_eq!(spec.caches.len(), 1, "{:?}", spec.caches);
    let cache = &spec.caches[0];
    assert_eq!(cache.key, "gems-main-protected");
    assert_eq!(cache.paths, ["vendor/bundle"]);
    assert_eq!(cache.when, When::OnSuccess);
    let urls: Vec<(&str, &str)> = cache
        .restore
        .iter()
        .map(|s| match &s.location {
            CacheLocation::Remote(url) => (s.key.as_str(), url.redacted()),
            CacheLocation::Local(p) => panic!("local {p}"),
        })
        .collect();
    assert_eq!(
        urls,
        [
            (
                "gems-main-protected",
                "http://127.0.0.1:9000/cache/ci/runner/6sYkQxW9b/project/42/gems-main-protected"
            ),
            (
                "gems-default-protected",
                "http://127.0.0.1:9000/cache/ci/runner/6sYkQxW9b/project/42/gems-default-protected"
            ),
        ]
    );
    let Some(CacheSave {
        key,
        target:
            CacheTarget::Remote {
                url,
                headers,
                max_size,
            },
    }) = &cache.save
    else {
        panic!("{:?}", cache.save)
    };
    assert_eq!(key, "gems-main-protected");
    assert!(url.expose().contains("X-Amz-Signature="));
    assert_eq!(
        headers,
        &[(
            "x-amz-meta-cachekey".to_string(),
            "gems-main-protected".to_string()
        )]
    );
    assert_eq!(*max_size, None);
    // The secret never shows in what the executor logs.
    assert!(!format!("{spec:?}").contains("SECRETSECRET"));
    assert!(!format!("{spec:?}").contains("X-Amz-Signature"));

    let shared = runner(&S3.replace("Path = \"ci\"", "Shared = true"));
    let spec = planned(&fixture_job(), &shared, None);
    let CacheLocation::Remote(url) = &spec.caches[0].restore[0].location else {
        panic!()
    };
    assert_eq!(
        url.redacted(),
        "http://127.0.0.1:9000/cache/project/42/gems-main-protected"
    );
}

#[test]
fn policies_decide_restore_and_save() {
    let mut job = fixture_job();
    job.cache[0].policy = "pull".into();
    let spec = planned(&job, &runner(S3), None);
    assert!(spec.caches[0].save.is_none());
    assert_eq!(spec.caches[0].restore.len(), 2);

    job.cache[0].policy = "push".into();
    job.cache[0].when = "always".into();
    let spec = planned(&job, &runner(S3), None);
    assert!(spec.caches[0].restore.is_empty());
    assert!(spec.caches[0].save.is_some());
    assert_eq!(spec.caches[0].when, When::Always);

    job.cache[0].policy = "pul".into();
    let mut spec = build_spec(&job, &runner(S3), "r", &[]).unwrap();
    let err = plan(&mut spec, &job, &runner(S3), "s", None).unwrap_err();
    assert!(
        err.message.contains("unknown cache policy \"pul\""),
        "{err}"
    );

    // An entry without paths is ignored, as GitLab Runner does.
    job.cache[0].paths.clear();
    let spec = planned(&job, &runner(S3), None);
    assert!(spec.caches.is_empty());
}

#[test]
fn the_local_cache_lives_in_a_kept_volume_per_project() {
    let local = runner(
        "[runners.docker]\nimage = \"alpine\"\npull_policy = \"if-not-present\"\nvolumes = [\"/cache\", \"/tmp/x:/x\"]\n",
    );
    let job = fixture_job();
    let spec = planned(&job, &local, None);
    // The volume is `-protected`: the job's ref is.
    let md5_cache = hex(&Md5::digest(b"/cache"));
    let name = format!(
        "runner-{}-cache-{md5_cache}-protected",
        project_hash(&local, "s_0123456789ab", 42)
    );
    assert_eq!(spec.kept_volumes, std::slice::from_ref(&name));
    assert_eq!(
        spec.volumes,
        [format!("{name}:/cache"), "/tmp/x:/x".to_string()]
    );
    assert_eq!(
        spec.caches[0].restore[1].location,
        CacheLocation::Local("/cache/acme/widget/gems-default-protected/cache.zip".into())
    );
    assert_eq!(
        spec.caches[0].save.as_ref().map(|s| &s.target),
        Some(&CacheTarget::Local(
            "/cache/acme/widget/gems-main-protected/cache.zip".into()
        ))
    );
    // On a machine the name carries the machine's: sandboxes share an engine.
    let spec = planned(&job, &local, Some("runner-abc-auto-1"));
    assert!(
        spec.kept_volumes[0].starts_with("runner-abc-auto-1-runner-"),
        "{:?}",
        spec.kept_volumes
    );

    // `cache_dir` binds a host directory instead.
    let host = runner(
        "[runners.docker]\nimage = \"alpine\"\npull_policy = \"if-not-present\"\nvolumes = [\"/cache\"]\ncache_dir = \"/srv/c\"\n",
    );
    let spec = planned(&job, &host, None);
    assert!(spec.kept_volumes.is_empty());
    assert_eq!(
        spec.volumes,
        [format!(
            "/srv/c/runner-{}/{md5_cache}-protected:/cache",
            project_hash(&host, "s_0123456789ab", 42)
        )]
    );

    // `disable_cache`: volumes live as long as the job, and the trace says the cache is off.
    let off = runner(
        "[runners.docker]\nimage = \"alpine\"\npull_policy = \"if-not-present\"\nvolumes = [\"/cache\"]\ndisable_cache = true\n",
    );
    let spec = planned(&job, &off, None);
    assert_eq!(spec.volumes, ["/cache"]);
    assert!(spec.caches.is_empty());
    assert!(
        spec.warnings
            .iter()
            .any(|w| w.contains("disable_cache = true")),
        "{:?}",
        spec.warnings
    );
    // No volume at /cache: nothing would survive the job.
    let none = runner("[runners.docker]\nimage = \"alpine\"\npull_policy = \"if-not-present\"\n");
    let spec = planned(&job, &none, None);
    assert!(spec.caches.is_empty());
    assert!(
        spec.warnings
            .iter()
            .any(|w| w.contains("no `volumes` entry for /cache")),
        "{:?}",
        spec.warnings
    );
}

#[test]
fn gitlab_runners_volume_hash() {
    // sha256("glrt-t1_6sYkQxW9bN3pLmZr7cVd-s_0123456789ab-42-0"), first 16 bytes.
    let digest = Sha256::digest(b"glrt-t1_6sYkQxW9bN3pLmZr7cVd-s_0123456789ab-42-0");
    assert_eq!(
        project_hash(&runner(""), "s_0123456789ab", 42),
        hex(&digest[..16])
    );
    assert_eq!(project_hash(&runner(""), "s_0123456789ab", 42).len(), 32);
    // `echo -n /cache | md5sum`
    assert_eq!(
        hex(&Md5::digest(b"/cache")),
        "3c3f060a0374fc8bc39395164f415a70"
    );
}

#[test]
fn the_s3_secret_never_prints() {
    let with_token = S3.replace("BucketName", "SessionToken = \"SESSIONTOKEN\"\nBucketName");
    let runner = runner(&with_token);
    let debug = format!("{runner:?}");
    assert!(debug.contains("access_key: \"AK\""), "{debug}");
    for secret in ["SECRETSECRET", "SESSIONTOKEN"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}
