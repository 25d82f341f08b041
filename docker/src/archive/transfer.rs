//! Files in and out of a container's filesystem (its volumes included) through the engine's
//! archive endpoints (`GET`/`PUT /containers/{id}/archive`). Tar streams go to and come from
//! files on the daemon's disk, never whole into memory. The container need not run: one created
//! and never started serves, so the job's own network and environment are never involved.

use std::path::Path;

use bollard::Docker;
use bollard::body_try_stream;
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::ArchiveError;
use crate::engine::is_status;

fn engine(action: &'static str) -> impl Fn(bollard::errors::Error) -> ArchiveError {
    move |source| ArchiveError::Engine { action, source }
}

/// Streams the tar of `path` in `container` into the file `dest`. `false` when the path does not
/// exist.
pub(crate) async fn fetch(
    docker: &Docker,
    container: &str,
    path: &str,
    dest: &Path,
) -> Result<bool, ArchiveError> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(container, Some(options));
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(ArchiveError::io("creating a tar file"))?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => file
                .write_all(&bytes)
                .await
                .map_err(ArchiveError::io("writing a tar file"))?,
            Err(err) if is_status(&err, &[404]) => return Ok(false),
            Err(err) => return Err(engine("reading files from the container")(err)),
        }
    }
    file.flush()
        .await
        .map_err(ArchiveError::io("writing a tar file"))?;
    Ok(true)
}

/// Streams the tar file `tar` into `container`, unpacked at `dir` (which must exist; `/` always
/// does: give entries their full path to create directories on the way).
pub(crate) async fn put(
    docker: &Docker,
    container: &str,
    dir: &str,
    tar: &Path,
) -> Result<(), ArchiveError> {
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(ArchiveError::io("opening a tar file"))?;
    let options = UploadToContainerOptions {
        path: dir.to_string(),
        ..Default::default()
    };
    docker
        .upload_to_container(
            container,
            Some(options),
            body_try_stream(ReaderStream::new(file)),
        )
        .await
        .map_err(engine("writing files into the container"))
}
