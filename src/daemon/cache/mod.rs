//! The job's `cache:` entries resolved for the executor: which keys to try, each key's archive
//! (a presigned URL of the distributed cache, or a `cache.zip` in the machine's local cache), and
//! the local cache's volumes kept across jobs. The daemon signs; the executor only moves bytes.
//!
//! Names follow GitLab Runner, so caches are found after switching: objects
//! `[<Path>/][runner/<short token>/]project/<id>/<key>`, local archives
//! `<cache_dir>/<project path>/<key>/cache.zip`, local volumes
//! `runner-<hash>-cache-<md5(dir)>[-protected]` (prefixed with the machine's name on a machine,
//! since sandboxes of the `docker` provider share one engine).

mod keys;
mod s3;

use std::time::Duration;

use drover_docker::{
    BuildSpec, CacheLocation, CacheSave, CacheSource, CacheSpec, CacheTarget, When,
};
use drover_gitlab::api::JobResponse;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::build_spec::Unsupported;
use super::short_token;
use crate::config::RunnerSettings;

/// Fills `spec.caches` and the local cache's volumes. `machine`: the machine the job runs on.
/// A `policy` that is none of GitLab's fails the job, as GitLab Runner's stage error does; every
/// other problem is a warning in the trace, never a failure.
pub fn plan(
    spec: &mut BuildSpec,
    job: &JobResponse,
    runner: &RunnerSettings,
    system_id: &str,
    machine: Option<&str>,
) -> Result<(), Unsupported> {
    let hash = project_hash(runner, system_id, job.job_info.project_id);
    let protected = job
        .git_info
        .protected
        .unwrap_or_else(|| job.variable("CI_COMMIT_REF_PROTECTED") == Some("true"))
        || job
            .cache
            .iter()
            .any(|c| c.key.ends_with("-protected") && !c.key.ends_with("-non_protected"));
    if !runner.docker.disable_cache {
        keep_volumes(spec, runner, &hash, protected, machine);
    }
    let entries: Vec<_> = job
        .cache
        .iter()
        .filter(|c| !c.paths.is_empty() || c.untracked)
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let mut notes = Vec::new();
    let remote = match &runner.cache {
        Some(cache) => match s3::Signer::new(&cache.s3) {
            Ok(signer) => Some((cache, signer)),
            Err(e) => {
                spec.warnings
                    .push(format!("caches are neither restored nor saved: {e}"));
                return Ok(());
            }
        },
        None if runner.docker.disable_cache || !runner.local_cache_kept() => {
            spec.warnings.push(format!(
                "caches are neither restored nor saved: the runner has no [runners.cache] and its \
                 local cache is not kept ({})",
                if runner.docker.disable_cache {
                    "disable_cache = true".to_string()
                } else {
                    format!("no `volumes` entry for {}", runner.cache_dir)
                }
            ));
            return Ok(());
        }
        None => None,
    };
    let slug = spec
        .project_dir
        .strip_prefix(spec.builds_dir.trim_end_matches('/'))
        .unwrap_or(&spec.project_dir)
        .trim_matches('/')
        .to_string();
    let short = short_token::of_runner(runner).unwrap_or_default();
    // GitLab Runner's URLs live as long as the job's timeout; saving comes after the script and
    // `after_script`, so a short job's URLs get an hour.
    let expires = spec.timeout.max(Duration::from_secs(3600));
    for entry in entries {
        let policy = keys::expand(&entry.policy, job);
        let (pull, push) = match policy.as_str() {
            "" | "pull-push" => (true, true),
            "pull" => (true, false),
            "push" => (false, true),
            other => {
                return Err(Unsupported {
                    reason: drover_core::FailureReason::ScriptFailure,
                    message: format!("unknown cache policy {other:?}: use pull, push or pull-push"),
                });
            }
        };
        let when = match entry.when.as_str() {
            "" | "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            other => {
                notes.push(format!("unknown cache:when {other:?}: saved on success"));
                When::OnSuccess
            }
        };
        let keys = keys::keys(&entry.key, &entry.fallback_keys, job, &mut notes);
        let Some(key) = keys.first().cloned() else {
            continue;
        };
        let local = |key: &str| format!("{}/{slug}/{key}/cache.zip", runner.cache_dir);
        let object = |key: &str| match &remote {
            Some((cache, _)) => keys::object_name(
                &cache.path,
                cache.shared,
                &short,
                job.job_info.project_id,
                key,
            ),
            None => String::new(),
        };
        let restore = if pull {
            keys.iter()
                .map(|k| CacheSource {
                    key: k.clone(),
                    location: match &remote {
                        Some((_, signer)) => CacheLocation::Remote(signer.get(&object(k), expires)),
                        None => CacheLocation::Local(local(k)),
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        let save = push.then(|| CacheSave {
            key: key.clone(),
            target: match &remote {
                Some((cache, signer)) => {
                    let (url, headers) = signer.put(&object(&key), &key, expires);
                    CacheTarget::Remote {
                        url,
                        headers,
                        max_size: cache.max_uploaded_archive_size,
                    }
                }
                None => CacheTarget::Local(local(&key)),
            },
        });
        spec.caches.push(CacheSpec {
            key,
            paths: entry.paths.iter().map(|p| keys::expand(p, job)).collect(),
            untracked: entry.untracked,
            restore,
            save,
            when,
        });
    }
    spec.warnings.extend(notes);
    Ok(())
}

/// `runner-<h>`'s `<h>`: GitLab Runner's `ProjectRealUniqueName`, the first 16 bytes of
/// sha256(`<token>-<system id>-<project id>-<concurrent project id>`) in hex. The concurrent
/// project id is 0, as under docker+machine.
fn project_hash(runner: &RunnerSettings, system_id: &str, project_id: u64) -> String {
    let token = runner.token.as_ref().map_or("", |t| t.expose());
    let digest = Sha256::digest(format!("{token}-{system_id}-{project_id}-0"));
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Container-only `volumes` entries (`"/cache"`) become the project's kept volume (or a
/// directory under `[runners.docker] cache_dir`), as GitLab Runner's cache volumes.
fn keep_volumes(
    spec: &mut BuildSpec,
    runner: &RunnerSettings,
    hash: &str,
    protected: bool,
    machine: Option<&str>,
) {
    let suffix = if protected { "-protected" } else { "" };
    for volume in &mut spec.volumes {
        if volume.contains(':') {
            continue;
        }
        let target = volume.trim_end_matches('/').to_string();
        let dst = hex(&Md5::digest(target.as_bytes()));
        *volume = match &runner.docker.cache_dir {
            Some(dir) => format!("{dir}/runner-{hash}/{dst}{suffix}:{target}"),
            None => {
                let name = match machine {
                    Some(m) => format!("{m}-runner-{hash}-cache-{dst}{suffix}"),
                    None => format!("runner-{hash}-cache-{dst}{suffix}"),
                };
                spec.kept_volumes.push(name.clone());
                format!("{name}:{target}")
            }
        };
    }
}

#[cfg(test)]
mod tests;
