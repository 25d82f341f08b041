//! Removing a job's objects, found by label.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};

use crate::engine::is_status;
use crate::labels;

/// Removes every container, network and volume of a job.
pub(crate) async fn remove_job(
    docker: &Docker,
    runner: &str,
    job_id: u64,
) -> Result<(), bollard::errors::Error> {
    // The warm container the job claimed holds all its steps: it goes first. It is found by
    // the name the claim gave it (its labels were set before any job claimed it).
    super::warm::remove(docker, &super::warm::claimed(runner, job_id)).await?;
    let job = job_id.to_string();
    let filter = labels::filter(&[(labels::RUNNER, Some(runner)), (labels::JOB, Some(&job))]);
    remove_labelled(docker, filter).await
}

/// Removes every container, network and volume that matches the label `filter` (of
/// [`labels::filter`]); objects already gone, or whose removal is under way, are fine. Step
/// containers go first and in step order, so that a cleanup cut short by a crash never leaves a
/// later step without an earlier one (a resume would take that for a step still to run).
pub async fn remove_labelled(
    docker: &Docker,
    filter: HashMap<String, Vec<String>>,
) -> Result<(), bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter.clone()),
        ..Default::default()
    };
    let mut containers = docker.list_containers(Some(options)).await?;
    containers.sort_by_key(|c| {
        let label = |key| c.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let is_step = label(labels::ROLE).as_deref() == Some(labels::ROLE_STEP);
        let index = label(labels::STEP_INDEX).and_then(|i| i.parse::<u16>().ok());
        (!is_step, index.unwrap_or(u16::MAX))
    });
    for container in containers {
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match docker.remove_container(&id, Some(options)).await {
            Err(err) if !is_status(&err, &[404, 409]) => return Err(err),
            _ => {}
        }
    }
    let options = ListNetworksOptions {
        filters: Some(filter.clone()),
    };
    for network in docker.list_networks(Some(options)).await? {
        let Some(id) = network.id else { continue };
        match docker.remove_network(&id).await {
            Err(err) if !is_status(&err, &[404]) => return Err(err),
            _ => {}
        }
    }
    let options = ListVolumesOptions {
        filters: Some(filter),
    };
    let volumes = docker
        .list_volumes(Some(options))
        .await?
        .volumes
        .unwrap_or_default();
    for volume in volumes {
        match docker
            .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Err(err) if !is_status(&err, &[404]) => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// The jobs of `runner` that have containers on the engine.
pub(crate) async fn list_jobs(
    docker: &Docker,
    runner: &str,
) -> Result<Vec<u64>, bollard::errors::Error> {
    let filter = labels::filter(&[(labels::RUNNER, Some(runner)), (labels::JOB, None)]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter),
        ..Default::default()
    };
    let mut jobs: BTreeSet<u64> = docker
        .list_containers(Some(options))
        .await?
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(labels::JOB)?.parse().ok())
        .collect();
    // A claimed warm container was labelled before its job was known: the job is in its name.
    let filter = labels::filter(&[
        (labels::RUNNER, Some(runner)),
        (labels::ROLE, Some(super::warm::ROLE_WARM)),
    ]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter),
        ..Default::default()
    };
    for container in docker.list_containers(Some(options)).await? {
        let names = container.names.unwrap_or_default();
        jobs.extend(
            names
                .iter()
                .filter_map(|n| super::warm::claimed_job(runner, n)),
        );
    }
    Ok(jobs.into_iter().collect())
}

/// Whether step containers of `job_id` (labelled with `runner`) exist, in any state, or the
/// job's claimed warm container holds a started step.
pub(crate) async fn has_step_containers(
    docker: &Docker,
    runner: &str,
    job_id: u64,
) -> Result<bool, bollard::errors::Error> {
    let claimed = super::warm::claimed(runner, job_id);
    if super::exec_step::has_started_steps(docker, &claimed).await? {
        return Ok(true);
    }
    let job = job_id.to_string();
    let filter = labels::filter(&[
        (labels::RUNNER, Some(runner)),
        (labels::JOB, Some(&job)),
        (labels::ROLE, Some(labels::ROLE_STEP)),
    ]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter),
        ..Default::default()
    };
    Ok(!docker.list_containers(Some(options)).await?.is_empty())
}

/// Whether a container of that name exists, in any state.
pub(crate) async fn exists(docker: &Docker, name: &str) -> Result<bool, bollard::errors::Error> {
    match docker
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if is_status(&err, &[404]) => Ok(false),
        Err(err) => Err(err),
    }
}
