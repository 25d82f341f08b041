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
    let jobs: BTreeSet<u64> = docker
        .list_containers(Some(options))
        .await?
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(labels::JOB)?.parse().ok())
        .collect();
    Ok(jobs.into_iter().collect())
}
