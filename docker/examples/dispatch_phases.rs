//! Where a step's start-up time goes on the local Docker engine, and what a job's dispatch costs
//! through the executor: `benches/warm-dispatch.sh` runs it (see README, "Performance").
//!
//! Part 1 times the engine calls a step container needs (image inspect, create, upload, start,
//! log attach until the first byte, wait, remove), the per-job objects (network, volume, the
//! cleanup listing) and, against them, `exec` into a running container until its first byte.
//! Part 2 times the whole executor: `Executor::start` until the first byte of the job's script,
//! and from the script's last byte to the first of its next step (`after_script`), on a
//! sandbox-like machine (builds volume and network of its own), cold (a container per step) and
//! warm (the machine's pre-started build container: each step in a standby exec started ahead of
//! it), for a job with another image than the warm container's (a build container of its own),
//! and for a `MaxBuilds 1` machine's only job with `"/cache"` in `volumes` (a warm container with
//! fresh caches).
//!
//! `DROVER_BENCH_N` sets the number of rounds (default 40). Figures are wall-clock times of a
//! shared machine: rerun when it is idle for clean ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions, UploadToContainerOptions,
    WaitContainerOptions,
};
use drover_docker::testing::{BUSYBOX_IMAGE, GIT_IMAGE, ensure_test_images};
use drover_docker::{
    BuildSpec, EngineConfig, Executor, ExecutorOptions, GitSpec, ImageSpec, MachineEndpoint,
    PullPolicy, Shell, StepName, StepSpec, When, labels, remove_labelled,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Res<()> {
    let rounds: usize = std::env::var("DROVER_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    ensure_test_images().await?;
    let docker = EngineConfig::local().connect().await?;
    let machine = format!("drover-bench-{}", std::process::id());
    let runner = format!("bench{}", std::process::id());
    let endpoint = sandbox(&docker, &runner, &machine).await?;
    let result = async {
        println!("engine phases, {rounds} rounds (ms: p50 / p95 / max)");
        engine_phases(&docker, &machine, rounds).await?;
        println!("\nexecutor: Executor::start -> first script byte, {rounds} jobs (ms)");
        dispatch(&endpoint, &runner, rounds).await
    }
    .await;
    let removed = remove_labelled(
        &docker,
        labels::filter(&[(labels::MACHINE, Some(&machine))]),
    )
    .await;
    result?;
    Ok(removed?)
}

/// A machine as the `docker` provider makes one: a builds volume and a network of its own.
async fn sandbox(docker: &Docker, runner: &str, machine: &str) -> Res<MachineEndpoint> {
    let labels = HashMap::from([
        (labels::MACHINE.to_string(), machine.to_string()),
        (labels::RUNNER.to_string(), runner.to_string()),
    ]);
    let volume = format!("{machine}-builds");
    docker
        .create_volume(VolumeCreateOptions {
            name: Some(volume.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    docker
        .create_network(NetworkCreateRequest {
            name: machine.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(labels),
            ..Default::default()
        })
        .await?;
    Ok(MachineEndpoint {
        machine: Some(machine.to_string()),
        engine: EngineConfig::local(),
        network: Some(machine.to_string()),
        builds_volume: Some(volume),
    })
}

/// Collected durations of one phase.
#[derive(Default)]
struct Phases(Vec<(&'static str, Vec<Duration>)>);

impl Phases {
    fn add(&mut self, name: &'static str, d: Duration) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(d),
            None => self.0.push((name, vec![d])),
        }
    }

    fn print(&self) {
        for (name, values) in &self.0 {
            let (p50, p95, max) = percentiles(values);
            println!("  {name:<44} {p50:>7.1} / {p95:>7.1} / {max:>7.1}");
        }
    }
}

fn percentiles(values: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95), at(1.0))
}

async fn engine_phases(docker: &Docker, machine: &str, rounds: usize) -> Res<()> {
    let mut phases = Phases::default();
    let bench_labels = HashMap::from([(labels::MACHINE.to_string(), machine.to_string())]);
    let tar = {
        let mut builder = tar::Builder::new(Vec::new());
        let script = b"echo first-byte\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(script.len() as u64);
        header.set_mode(0o755);
        builder.append_data(&mut header, ".drover/step.sh", &script[..])?;
        bytes::Bytes::from(builder.into_inner()?)
    };
    // The warm container the exec rounds use.
    let warm = format!("{machine}-warm-probe");
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(warm.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(BUSYBOX_IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some(bench_labels.clone()),
                host_config: Some(HostConfig {
                    network_mode: Some(machine.to_string()),
                    binds: Some(vec![format!("{machine}-builds:/builds")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    docker
        .start_container(&warm, None::<StartContainerOptions>)
        .await?;
    for round in 0..rounds {
        let t = Instant::now();
        docker.inspect_image(BUSYBOX_IMAGE).await?;
        phases.add("image inspect", t.elapsed());

        let t = Instant::now();
        let filter = labels::filter(&[(labels::MACHINE, Some(machine))]);
        docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filter),
                ..Default::default()
            }))
            .await?;
        phases.add("list containers by label (cleanup, x3)", t.elapsed());

        let t = Instant::now();
        let network = format!("{machine}-n{round}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                labels: Some(bench_labels.clone()),
                ..Default::default()
            })
            .await?;
        phases.add("network create (per-job network)", t.elapsed());
        let t = Instant::now();
        docker.remove_network(&network).await?;
        phases.add("network remove", t.elapsed());
        let t = Instant::now();
        let volume = format!("{machine}-v{round}");
        docker
            .create_volume(VolumeCreateOptions {
                name: Some(volume.clone()),
                labels: Some(bench_labels.clone()),
                ..Default::default()
            })
            .await?;
        phases.add("volume create (per-job volume)", t.elapsed());
        docker
            .remove_volume(&volume, None::<RemoveVolumeOptions>)
            .await?;

        let name = format!("{machine}-step{round}");
        let start = Instant::now();
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(BUSYBOX_IMAGE.to_string()),
                    cmd: Some(vec!["sh".into(), "/.drover/step.sh".into()]),
                    labels: Some(bench_labels.clone()),
                    host_config: Some(HostConfig {
                        init: Some(true),
                        network_mode: Some(machine.to_string()),
                        binds: Some(vec![format!("{machine}-builds:/builds")]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?;
        phases.add("step container: create", start.elapsed());
        let t = Instant::now();
        docker
            .upload_to_container(
                &name,
                Some(UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(tar.clone()),
            )
            .await?;
        phases.add("step container: upload script", t.elapsed());
        let t = Instant::now();
        docker
            .start_container(&name, None::<StartContainerOptions>)
            .await?;
        phases.add("step container: start", t.elapsed());
        let t = Instant::now();
        let mut logs = docker.logs(
            &name,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        logs.next().await.transpose()?;
        phases.add("step container: log attach -> first byte", t.elapsed());
        phases.add("step container: create -> first byte", start.elapsed());
        let t = Instant::now();
        while logs.next().await.is_some() {}
        let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
        while wait.next().await.is_some() {}
        docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await?;
        phases.add("step container: exit seen + inspect", t.elapsed());
        let t = Instant::now();
        docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await?;
        phases.add("step container: remove", t.elapsed());

        let start = Instant::now();
        let exec = docker
            .create_exec(
                &warm,
                CreateExecOptions {
                    cmd: Some(vec!["sh", "-c", "echo first-byte"]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        phases.add("exec: create", start.elapsed());
        let t = Instant::now();
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec.id, None).await?
        {
            output.next().await.transpose()?;
            phases.add("exec: start -> first byte", t.elapsed());
            phases.add("exec: create -> first byte", start.elapsed());
            while output.next().await.is_some() {}
        }
        let t = Instant::now();
        docker.inspect_exec(&exec.id).await?;
        phases.add("exec: inspect (exit code)", t.elapsed());
        let t = Instant::now();
        let renamed = format!("{warm}-r");
        docker
            .rename_container(
                &warm,
                bollard::query_parameters::RenameContainerOptions {
                    name: renamed.clone(),
                },
            )
            .await?;
        phases.add("container rename (claim)", t.elapsed());
        docker
            .rename_container(
                &renamed,
                bollard::query_parameters::RenameContainerOptions { name: warm.clone() },
            )
            .await?;
    }
    phases.print();
    Ok(())
}

/// The jobs of a row of the executor's figures.
#[derive(Clone, Copy)]
enum Kind {
    /// The runner's defaults, as the machine's warm container.
    Same,
    /// Another image than the warm container's: a build container of the job's own.
    OtherImage,
    /// A `MaxBuilds 1` machine's only job, of a project with `"/cache"`: the warm container
    /// has fresh caches.
    LastWithCache,
}

/// What `"/cache"` in `volumes` becomes for a project's job on a machine: a kept volume.
fn with_cache(mut spec: BuildSpec, cache: &str) -> BuildSpec {
    spec.volumes = vec![format!("{cache}:/cache")];
    spec.kept_volumes = vec![cache.to_string()];
    spec
}

fn job(runner: &str, job_id: u64) -> BuildSpec {
    let mut image = ImageSpec::new(BUSYBOX_IMAGE);
    image.pull_policy = vec![PullPolicy::IfNotPresent];
    let step = |name, script: &str| StepSpec {
        name,
        script: vec![script.to_string()],
        timeout: Duration::from_secs(60),
        when: When::OnSuccess,
        allow_failure: name == StepName::AfterScript,
    };
    BuildSpec {
        job_id,
        runner: runner.to_string(),
        image,
        credentials: vec![],
        registry_mirrors: vec![],
        variables: vec![],
        steps: vec![
            // A step that runs a while after its first byte, as a step does: 300 ms.
            step(StepName::Script, "echo script; sleep 0.3; echo script-done"),
            step(StepName::AfterScript, "echo after"),
        ],
        services: vec![],
        git: GitSpec::none(),
        timeout: Duration::from_secs(60),
        builds_dir: "/builds".to_string(),
        project_dir: "/builds/group/project".to_string(),
        shell: Shell::Sh,
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

/// `Executor::start` until the first byte a step's container (or exec) wrote, per job.
async fn dispatch(endpoint: &MachineEndpoint, runner: &str, rounds: usize) -> Res<()> {
    let warm_executor = Executor::new(ExecutorOptions::default());
    let cold_executor = Executor::new(ExecutorOptions {
        warm: false,
        ..Default::default()
    });
    let mut phases = Phases::default();
    let machine = endpoint.machine.clone().unwrap_or_default();
    for (mode, next, warm, kind) in [
        (
            "cold: a container per step",
            "cold: a step's last byte -> the next's first",
            false,
            Kind::Same,
        ),
        (
            "warm: the pre-started container",
            "warm: a step's last byte -> the next's first",
            true,
            Kind::Same,
        ),
        (
            "another image: a build container of its own",
            "another image: a step's last byte -> the next's first",
            true,
            Kind::OtherImage,
        ),
        (
            "last job, /cache: warm container with fresh caches",
            "last job, /cache: a step's last byte -> the next's first",
            true,
            Kind::LastWithCache,
        ),
    ] {
        let executor = if warm { &warm_executor } else { &cold_executor };
        let offset = 100_000 * (kind as u64 + u64::from(warm));
        let job_for = |id: u64| match kind {
            Kind::Same => job(runner, id),
            Kind::OtherImage => {
                let mut spec = job(runner, id);
                spec.image.name = GIT_IMAGE.to_string();
                spec
            }
            // Each round a project new to the machine, as on a new machine.
            Kind::LastWithCache => {
                with_cache(job(runner, id), &format!("{machine}-runner-{id}-cache-1"))
            }
        };
        // The machine's warm container: for the runner's defaults (the test image).
        let prestart = || async {
            match kind {
                Kind::LastWithCache => {
                    let defaults = job_for(offset);
                    executor.prestart_for_last_job(endpoint, &defaults).await
                }
                _ => executor.prestart(endpoint, &job(runner, offset)).await,
            }
        };
        if warm && !prestart().await? {
            println!("  {mode}: this job is not eligible for the warm path");
            continue;
        }
        for round in 0..rounds {
            let spec = job_for(1 + round as u64 + offset);
            let (tx, mut rx) = mpsc::channel(256);
            let t = Instant::now();
            let handle = match kind {
                Kind::LastWithCache => executor.start_last_on_machine(endpoint.clone(), spec, tx),
                _ => executor.start(endpoint.clone(), spec, tx),
            };
            let (mut first, mut last, mut second) = (None, None, None);
            while let Some(chunk) = rx.recv().await {
                if chunk.cursor.messages == 0 {
                    continue;
                }
                if first.is_none() {
                    first = Some(t.elapsed());
                }
                match chunk.cursor.step {
                    0 => last = Some(t.elapsed()),
                    _ => second = second.or(Some(t.elapsed())),
                }
            }
            handle.wait().await;
            if let Some(first) = first {
                phases.add(mode, first);
            }
            if let (Some(last), Some(second)) = (last, second) {
                phases.add(next, second.saturating_sub(last));
            }
            if warm {
                // The next job's container is pre-started while a job runs (a last job's, when
                // the next machine is made); in a fleet jobs are apart. Here they come back to
                // back: wait until it is up, so the figure is the warm path's own.
                prestart().await?;
            }
        }
    }
    phases.print();
    Ok(())
}
