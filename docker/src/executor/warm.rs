//! Warm build containers: a machine's build container, created and started before a job arrives,
//! so that a job for its image runs its steps by `exec` (see `exec_step`) instead of a container
//! per step.
//!
//! A machine has at most one unclaimed warm container, `<machine>-warm` (started and checked as
//! `<machine>-warm-pending`, so that no job claims it before it is ready), labelled with the machine
//! and the runner (so the machine's removal takes it) and with a signature of everything that
//! shapes it: image, mounts, network, privileges and the runner's container options. A job whose
//! own container settings have the same signature, and whose image (after its pull policy) is the
//! one the container runs, **claims** it by renaming it to its own deterministic name
//! (`drover-<runner>-job-<id>-warm`): a rename succeeds once, so two jobs never share a container.
//! A claimed container is the job's alone and is removed with the job's other objects; it is
//! never handed to another job. When a job ends, a new warm container is started for the next job
//! like it; a new machine's first one is started by whoever made the machine (drover's daemon
//! does, for the runner's default job, before the machine is ready) through
//! [`crate::Executor::prestart`].
//!
//! A project's cache volumes (what `"/cache"` in `volumes` becomes: kept across the project's jobs
//! on the machine) are mounts like any other: the warm container a job starts for the next one
//! mounts that job's, so the next job of the same project runs warm, and a job of another project,
//! whose signature differs, never claims a container holding a cache not its own.
//!
//! A warm container for a machine's **last** job (a `MaxBuilds 1` machine's only one) can be made
//! before its project is known: it mounts **fresh caches**, new empty volumes of its own at the
//! kept volumes' places ([`prestart`] with `fresh`). The last job of a project whose kept volumes
//! do not exist on the machine claims it: it would have had them made empty, and no later job on
//! the machine looks for them, so the job cannot tell the difference. A job whose cache exists, or
//! that is not the machine's last, does not claim such a container.
//!
//! A job that could run by exec but finds no warm container fitting it (another image, another
//! project's cache) gets a build container of its own, made as a warm one is ([`start_own`]):
//! its first step costs about a step container, each later one an exec. A job that cannot (an
//! image with an entrypoint or without the tools, a helper image for the sources, a volume that
//! lives only as long as its job, a machine without its own network and builds volume) takes the
//! container-per-step path.

use std::collections::HashMap;

use bollard::Docker;
use bollard::body_full;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions,
    RenameContainerOptions, StartContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::host;
use super::spec::{BuildSpec, GitStrategy};
use super::standby::{self, Standby, Standbys};
use crate::endpoint::MachineEndpoint;
use crate::engine::is_status;
use crate::labels;

/// `drover.role` of a warm container, claimed or not.
pub(crate) const ROLE_WARM: &str = "warm";
/// The signature of a warm container's settings.
const SIGNATURE: &str = "drover.warm.signature";
/// Where the steps' records live in a warm container (world-writable: a step may run as `user`).
pub(crate) const RUN_DIR: &str = "/.drover/run";

/// The warm container's main process: PID 1, so that killing "every process but PID 1" ends a
/// step and all it left behind while the container stays up. It exits on `docker stop`.
const HOLDER: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// Whether the image has what steps by exec need: `setsid` (a step's own process group), `tee`
/// (its output file), the tools of a re-attachment, and `sleep` for the holder.
const TOOLS: &str = "for p in setsid tee cat mv stat cut tail head wc sleep; do \
                     command -v $p >/dev/null || exit 1; done";

/// A fresh cache's place in a template's binds, and the start of its volume's name
/// (`<machine>-fresh-cache-<unique>`): each warm container gets new ones.
const FRESH_CACHE: &str = "drover-fresh-cache";

/// Whether the containers of an image have [`TOOLS`], by image id (a content hash: the same image
/// on every engine): each image is checked once per process, not once per container.
static HAS_TOOLS: std::sync::Mutex<std::collections::BTreeMap<String, bool>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The name of a machine's unclaimed warm container.
fn unclaimed(machine: &str) -> String {
    format!("{machine}-warm")
}

/// The name of a machine's warm container while it starts (not yet claimable).
fn pending(machine: &str) -> String {
    format!("{machine}-warm-pending")
}

/// The name a job gives the warm container it claims.
pub(crate) fn claimed(runner: &str, job_id: u64) -> String {
    format!("drover-{}-job-{job_id}-warm", labels::sanitize(runner))
}

/// The job that claimed the container named `name` (as the engine lists it, with or without its
/// leading `/`), if a job of `runner` did.
pub(crate) fn claimed_job(runner: &str, name: &str) -> Option<u64> {
    let prefix = format!("drover-{}-job-", labels::sanitize(runner));
    name.trim_start_matches('/')
        .strip_prefix(&prefix)?
        .strip_suffix("-warm")?
        .parse()
        .ok()
}

/// What a warm container for `spec` on `endpoint` is made of, or `None` when the job cannot run
/// by exec (it then takes a container per step).
struct Template {
    machine: String,
    body: ContainerCreateBody,
    signature: String,
}

/// `fresh`: with fresh caches in place of the job's kept volumes (see the module's docs); the
/// signature then names them by place only, so it is the same for every project.
fn template(endpoint: &MachineEndpoint, spec: &BuildSpec, fresh: bool) -> Option<Template> {
    let machine = endpoint.machine.clone()?;
    let network = endpoint.network.clone()?;
    let builds = endpoint.builds_volume.clone()?;
    let helper_sources = spec.helper_image.is_some()
        && matches!(spec.git.strategy, GitStrategy::Fetch | GitStrategy::Clone);
    // A bare `/path` volume lives as long as its job: no container made before the job has it.
    // (The project's kept volumes are named in `volumes`, and in the signature with them.)
    let per_job_volumes = spec.volumes.iter().any(|v| !v.contains(':'));
    // An entrypoint override other than "none" wraps each step, which an exec cannot do.
    let entrypoint_set = spec
        .image
        .entrypoint
        .as_ref()
        .is_some_and(|e| e.iter().any(|part| !part.is_empty()));
    if helper_sources || per_job_volumes || entrypoint_set {
        return None;
    }
    let mut binds = vec![format!("{builds}:{}", spec.builds_dir)];
    for volume in &spec.volumes {
        match volume.split_once(':') {
            Some((source, rest)) if fresh && spec.kept_volumes.iter().any(|k| k == source) => {
                binds.push(format!("{FRESH_CACHE}:{rest}"));
            }
            _ => binds.push(volume.clone()),
        }
    }
    let mut host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(network),
        privileged: Some(spec.privileged),
        ..Default::default()
    };
    host::for_step(&spec.container_options, &mut host_config);
    let body = ContainerCreateBody {
        image: Some(spec.image.name.clone()),
        entrypoint: Some(vec![]),
        cmd: Some(vec!["sh".to_string(), "-c".to_string(), HOLDER.to_string()]),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    };
    let signature = serde_json::to_string(&body)
        .map(|text| format!("{:016x}", fnv1a(text.as_bytes())))
        .ok()?;
    Some(Template {
        machine,
        body,
        signature,
    })
}

/// FNV-1a: a signature that stays the same across drover builds (std's hasher may not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The image's id, if the image is present and has no entrypoint of its own (an exec would skip
/// it, a step container would not).
async fn usable_image(
    docker: &Docker,
    image: &str,
) -> Result<Option<String>, bollard::errors::Error> {
    match docker.inspect_image(image).await {
        Ok(inspect) => {
            let entrypoint = inspect
                .config
                .and_then(|c| c.entrypoint)
                .unwrap_or_default();
            Ok(match entrypoint.iter().all(String::is_empty) {
                true => inspect.id,
                false => None,
            })
        }
        Err(err) if is_status(&err, &[404]) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Makes sure `endpoint`'s machine has a running warm container for jobs like `spec`, replacing
/// one made for other jobs, with a standby exec for its first step (see `standby`). `false`:
/// such jobs cannot run warm here (nothing is started).
/// `fresh`: for a machine's last job, with fresh caches (see the module's docs).
pub(crate) async fn prestart(
    docker: &Docker,
    endpoint: &MachineEndpoint,
    spec: &BuildSpec,
    fresh: bool,
    standbys: &Standbys,
) -> Result<bool, bollard::errors::Error> {
    let Some(ready) = make_ready(docker, endpoint, spec, fresh).await? else {
        return Ok(false);
    };
    if let Some(id) = ready
        && !standbys.has(&id)
    {
        // Without one the first step starts an exec of its own: a failure costs only time.
        match standby::start(docker, &id, None).await {
            Ok(Some(standby)) => standbys.put(id, standby),
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "could not start a standby exec"),
        }
    }
    Ok(true)
}

/// [`prestart`]'s container: `None` if jobs like `spec` cannot run warm here, else the id of the
/// ready warm container (`None` if another call made it ready at the same time).
async fn make_ready(
    docker: &Docker,
    endpoint: &MachineEndpoint,
    spec: &BuildSpec,
    fresh: bool,
) -> Result<Option<Option<String>>, bollard::errors::Error> {
    let Some(mut template) = template(endpoint, spec, fresh) else {
        return Ok(None);
    };
    let Some(image_id) = usable_image(docker, &spec.image.name).await? else {
        return Ok(None);
    };
    let name = unclaimed(&template.machine);
    match docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
    {
        Ok(found) => {
            let fits = fits(&found, &template, &image_id);
            match found.state.and_then(|s| s.status) {
                Some(ContainerStateStatusEnum::RUNNING) if fits => return Ok(Some(found.id)),
                _ => remove(docker, &name).await?,
            }
        }
        Err(err) if is_status(&err, &[404]) => {}
        Err(err) => return Err(err),
    }
    // Made and checked under another name: a job can claim it only once it is ready.
    let pending = pending(&template.machine);
    let mut created = None;
    match docker
        .inspect_container(&pending, None::<InspectContainerOptions>)
        .await
    {
        // Its start was cut short (a crash): finish it.
        Ok(found) if fits(&found, &template, &image_id) => created = found.id,
        Ok(_) => remove(docker, &pending).await?,
        Err(err) if is_status(&err, &[404]) => {}
        Err(err) => return Err(err),
    }
    let id = match created {
        Some(id) => id,
        None => {
            let kept = match fresh {
                true => fresh_caches(&mut template),
                false => spec.kept_volumes.clone(),
            };
            let machine = Some(template.machine.as_str());
            create_kept_volumes(docker, &spec.runner, machine, &kept).await?;
            create(docker, &pending, &template, &spec.runner).await?
        }
    };
    if !start_checked(docker, &pending, &image_id).await? {
        remove(docker, &pending).await?;
        return Ok(None);
    }
    let options = RenameContainerOptions { name };
    match docker.rename_container(&pending, options).await {
        Ok(()) => Ok(Some(Some(id))),
        // A concurrent call made it ready first.
        Err(err) if is_status(&err, &[404]) => Ok(Some(None)),
        Err(err) if is_status(&err, &[409]) => {
            remove(docker, &pending).await?;
            Ok(Some(None))
        }
        Err(err) => Err(err),
    }
}

/// Puts the steps' run directory in the created container `name` and starts it; `false` if its
/// image (`image_id`) lacks a program the steps by exec need.
async fn start_checked(
    docker: &Docker,
    name: &str,
    image_id: &str,
) -> Result<bool, bollard::errors::Error> {
    let options = UploadToContainerOptions {
        path: "/".to_string(),
        ..Default::default()
    };
    let tar = run_dir_archive().map_err(|e| bollard::errors::Error::IOError { err: e })?;
    docker
        .upload_to_container(name, Some(options), body_full(Bytes::from(tar)))
        .await?;
    match docker
        .start_container(name, None::<StartContainerOptions>)
        .await
    {
        // Started already (by a concurrent call).
        Err(err) if !is_status(&err, &[304]) => return Err(err),
        _ => {}
    }
    // The programs the steps' wrapper and their re-attachment use (`exec_step`).
    let known = HAS_TOOLS
        .lock()
        .ok()
        .and_then(|ids| ids.get(image_id).copied());
    if let Some(has) = known {
        return Ok(has);
    }
    let has = succeeds(docker, name, TOOLS).await?;
    if let Ok(mut ids) = HAS_TOOLS.lock() {
        ids.insert(image_id.to_string(), has);
    }
    Ok(has)
}

/// A build container for this job alone, for a job that fits no warm container on its machine
/// but could run by exec (another image, another project's cache): made, started and checked
/// as a warm container is, under the name a claim gives, so that its later steps run by exec
/// and it goes with the job. Its first step costs about what a step container costs; each later
/// one, an exec instead of a container. `None`: the job takes a container per step.
pub(crate) async fn start_own(
    docker: &Docker,
    endpoint: &MachineEndpoint,
    spec: &BuildSpec,
) -> Result<Option<String>, bollard::errors::Error> {
    let Some(template) = template(endpoint, spec, false) else {
        return Ok(None);
    };
    let Some(image_id) = usable_image(docker, &spec.image.name).await? else {
        return Ok(None);
    };
    let name = claimed(&spec.runner, spec.job_id);
    create(docker, &name, &template, &spec.runner).await?;
    // Gone again unless it runs: a job with a container under this name runs by exec there.
    match start_checked(docker, &name, &image_id).await {
        Ok(true) => Ok(Some(name)),
        Ok(false) => {
            remove(docker, &name).await?;
            Ok(None)
        }
        Err(err) => {
            remove(docker, &name).await?;
            Err(err)
        }
    }
}

/// Names the fresh caches of `template`'s container, new ones on every call (a claimed
/// container's were written to by its job); their names, to be created.
fn fresh_caches(template: &mut Template) -> Vec<String> {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut names = Vec::new();
    let binds = template
        .body
        .host_config
        .as_mut()
        .and_then(|h| h.binds.as_mut());
    for bind in binds.into_iter().flatten() {
        if let Some(rest) = bind.strip_prefix(&format!("{FRESH_CACHE}:")) {
            let name = format!(
                "{}-fresh-cache-{unique:x}-{}",
                template.machine,
                names.len()
            );
            *bind = format!("{name}:{rest}");
            names.push(name);
        }
    }
    names
}

/// Whether none of `names` exists on the engine.
pub(crate) async fn none_exist(
    docker: &Docker,
    names: &[String],
) -> Result<bool, bollard::errors::Error> {
    for name in names {
        match docker.inspect_volume(name).await {
            Ok(_) => return Ok(false),
            Err(err) if is_status(&err, &[404]) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// Whether the warm container `found` was made from `template` and runs `image_id`.
fn fits(
    found: &bollard::models::ContainerInspectResponse,
    template: &Template,
    image_id: &str,
) -> bool {
    let signature = found
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(SIGNATURE));
    signature.map(String::as_str) == Some(template.signature.as_str())
        && found.image.as_deref() == Some(image_id)
}

/// Creates the unclaimed warm container of `template`'s machine (not started); its id.
async fn create(
    docker: &Docker,
    name: &str,
    template: &Template,
    runner: &str,
) -> Result<String, bollard::errors::Error> {
    let mut body = template.body.clone();
    body.labels = Some(HashMap::from([
        (labels::RUNNER.to_string(), runner.to_string()),
        (labels::MACHINE.to_string(), template.machine.clone()),
        (labels::ROLE.to_string(), ROLE_WARM.to_string()),
        (SIGNATURE.to_string(), template.signature.clone()),
    ]));
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    Ok(docker.create_container(Some(options), body).await?.id)
}

/// Creates the volumes `names` kept across jobs (a project's caches), labelled with the runner
/// and the machine but no job: a job's cleanup leaves them, the machine's removal takes them.
/// Creating an existing volume returns it; the engine would make a missing one without labels
/// when a container mounts it. For a job's containers and for a warm container alike.
pub(crate) async fn create_kept_volumes(
    docker: &Docker,
    runner: &str,
    machine: Option<&str>,
    names: &[String],
) -> Result<(), bollard::errors::Error> {
    let mut labels = HashMap::from([
        (labels::RUNNER.to_string(), runner.to_string()),
        (labels::ROLE.to_string(), labels::ROLE_CACHE.to_string()),
    ]);
    if let Some(machine) = machine {
        labels.insert(labels::MACHINE.to_string(), machine.to_string());
    }
    for name in names {
        let options = VolumeCreateOptions {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        docker.create_volume(options).await?;
    }
    Ok(())
}

/// Whether `script` exits 0 in the container.
async fn succeeds(
    docker: &Docker,
    container: &str,
    script: &str,
) -> Result<bool, bollard::errors::Error> {
    let options = CreateExecOptions {
        cmd: Some(vec!["sh".to_string(), "-c".to_string(), script.to_string()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await?;
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await?
    {
        while output.next().await.is_some() {}
    }
    Ok(docker.inspect_exec(&exec.id).await?.exit_code == Some(0))
}

/// `/.drover/run/`, writable by every user with the sticky bit, as a tar to extract at `/`.
fn run_dir_archive() -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode) in [(".drover/", 0o755), (".drover/run/", 0o1777)] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, path, std::io::empty())?;
    }
    builder.into_inner()
}

/// Claims the machine's warm container for the job of `spec` if it fits (its image already
/// checked per the job's pull policy): the name of the claimed container, and the standby exec
/// waiting in it, if one does.
/// `last_with_caches_absent`: the job is its machine's last and its kept volumes do not exist
/// ([`none_exist`]), so it may take a container with fresh caches (and then makes none).
pub(crate) async fn claim(
    docker: &Docker,
    endpoint: &MachineEndpoint,
    spec: &BuildSpec,
    last_with_caches_absent: bool,
    standbys: &Standbys,
) -> Result<Option<Claimed>, bollard::errors::Error> {
    let fresh_signature = last_with_caches_absent
        .then(|| template(endpoint, spec, true))
        .flatten()
        .map(|t| t.signature);
    let Some(template) = template(endpoint, spec, false) else {
        return Ok(None);
    };
    let name = unclaimed(&template.machine);
    let (found, image) = tokio::join!(
        docker.inspect_container(&name, None::<InspectContainerOptions>),
        usable_image(docker, &spec.image.name)
    );
    let found = match found {
        Ok(found) => found,
        Err(err) if is_status(&err, &[404]) => return Ok(None),
        Err(err) => return Err(err),
    };
    let signature = found
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(SIGNATURE).cloned());
    let running = found.state.and_then(|s| s.status) == Some(ContainerStateStatusEnum::RUNNING);
    let alike = signature.as_deref() == Some(template.signature.as_str());
    let fresh = !alike && fresh_signature.is_some() && signature == fresh_signature;
    if !running || !(alike || fresh) {
        return Ok(None);
    }
    // The container runs the image the job's pull policy left on the engine, or it is stale.
    if image? != found.image {
        return Ok(None);
    }
    let target = claimed(&spec.runner, spec.job_id);
    let options = RenameContainerOptions {
        name: target.clone(),
    };
    let binds = found.host_config.and_then(|h| h.binds).unwrap_or_default();
    match docker.rename_container(&name, options).await {
        Ok(()) => Ok(Some(Claimed {
            name: target,
            standby: found.id.and_then(|id| standbys.take(&id)),
            fresh_binds: fresh.then_some(binds),
        })),
        // Another job claimed it first, or it went away.
        Err(err) if is_status(&err, &[404, 409]) => Ok(None),
        Err(err) => Err(err),
    }
}

/// A warm container a job claimed.
pub(crate) struct Claimed {
    /// Its name now, the job's.
    pub name: String,
    /// The standby exec waiting in it, if one does.
    pub standby: Option<Standby>,
    /// Its mounts, if it has fresh caches: the job's other containers (those that move files
    /// for caches and artifacts) mount these too, not the project's kept volumes.
    pub fresh_binds: Option<Vec<String>>,
}

/// Removes a container by name (gone already is fine).
pub(crate) async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Err(err) if !is_status(&err, &[404, 409]) => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::executor::spec::{GitSpec, ImageSpec};

    fn machine() -> MachineEndpoint {
        MachineEndpoint {
            machine: Some("m1".into()),
            engine: EngineConfig::local(),
            network: Some("m1".into()),
            builds_volume: Some("m1-builds".into()),
        }
    }

    fn spec(image: &str) -> BuildSpec {
        BuildSpec {
            job_id: 1,
            runner: "r".into(),
            image: ImageSpec::new(image),
            credentials: vec![],
            registry_mirrors: vec![],
            variables: vec![],
            steps: vec![],
            services: vec![],
            git: GitSpec::none(),
            timeout: std::time::Duration::from_secs(60),
            builds_dir: "/builds".into(),
            project_dir: "/builds/g/p".into(),
            shell: crate::executor::spec::Shell::Sh,
            volumes: vec![],
            privileged: false,
            container_options: Default::default(),
            helper_image: None,
            warnings: vec![],
            caches: vec![],
            kept_volumes: vec![],
            artifacts: vec![],
            dependencies: vec![],
            transport: Default::default(),
        }
    }

    #[test]
    fn the_job_of_a_claimed_container_comes_from_its_name() {
        let name = format!("/{}", claimed("r:1", 42));
        assert_eq!(claimed_job("r:1", &name), Some(42));
        assert_eq!(claimed_job("other", &name), None);
        assert_eq!(claimed_job("r:1", "/m1-warm"), None);
    }

    #[test]
    fn jobs_alike_share_a_signature_and_others_do_not() {
        let a = template(&machine(), &spec("alpine:3"), false).unwrap();
        let b = template(&machine(), &spec("alpine:3"), false).unwrap();
        assert_eq!(a.signature, b.signature);
        let other = template(&machine(), &spec("debian:12"), false).unwrap();
        assert_ne!(a.signature, other.signature);
        let mut privileged = spec("alpine:3");
        privileged.privileged = true;
        assert_ne!(
            template(&machine(), &privileged, false).unwrap().signature,
            a.signature
        );
    }

    #[test]
    fn a_projects_cache_volume_runs_warm_and_is_part_of_the_signature() {
        let project = |name: &str| {
            let mut s = spec("alpine:3");
            s.volumes = vec![format!("{name}:/cache")];
            s.kept_volumes = vec![name.to_string()];
            s
        };
        let one = template(&machine(), &project("m-runner-aaaa-cache-1"), false).expect("warm");
        let again = template(&machine(), &project("m-runner-aaaa-cache-1"), false).expect("warm");
        let other = template(&machine(), &project("m-runner-bbbb-cache-1"), false).expect("warm");
        assert_eq!(one.signature, again.signature);
        assert_ne!(one.signature, other.signature);

        // With fresh caches, every project's job has the same signature, not a cached one's.
        let fresh = |name| template(&machine(), &project(name), true).expect("warm");
        let mut made = fresh("m-runner-aaaa-cache-1");
        assert_eq!(made.signature, fresh("m-runner-bbbb-cache-1").signature);
        assert_ne!(made.signature, one.signature);
        // Each container made from it gets new volumes there, labelled as kept ones.
        let names = fresh_caches(&mut made);
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("m1-fresh-cache-"), "{names:?}");
        let binds = made.body.host_config.and_then(|h| h.binds).unwrap();
        assert!(binds.contains(&format!("{}:/cache", names[0])), "{binds:?}");
        // A spec without kept volumes is the same either way.
        let plain = spec("alpine:3");
        assert_eq!(
            template(&machine(), &plain, true).unwrap().signature,
            template(&machine(), &plain, false).unwrap().signature
        );
    }

    #[test]
    fn jobs_an_exec_cannot_run_take_the_container_path() {
        let mut entrypoint = spec("alpine:3");
        entrypoint.image = ImageSpec {
            entrypoint: Some(vec!["/init".into()]),
            ..ImageSpec::new("alpine:3")
        };
        assert!(template(&machine(), &entrypoint, false).is_none());
        let mut cleared = spec("alpine:3");
        cleared.image.entrypoint = Some(vec![String::new()]);
        assert!(template(&machine(), &cleared, false).is_some());
        let mut anonymous = spec("alpine:3");
        anonymous.volumes = vec!["/cache".into()];
        assert!(template(&machine(), &anonymous, false).is_none());
        let mut helper = spec("alpine:3");
        helper.helper_image = Some("helper:1".into());
        helper.git = GitSpec {
            strategy: GitStrategy::Fetch,
            ..GitSpec::none()
        };
        assert!(template(&machine(), &helper, false).is_none());
        let plain = MachineEndpoint::engine_only(EngineConfig::local());
        assert!(template(&plain, &spec("alpine:3"), false).is_none());
    }
}
