//! The cache stages of a job: `restore_cache` before the script and `archive_cache` after it, as
//! GitLab Runner prints them. The daemon moves the bytes: out of and into the builds volume (and
//! the local cache's volume) through the engine's archive endpoints of the job's transfer
//! container, to and from the distributed cache over HTTP(S) with the URLs the daemon signed. A
//! cache never fails a job: a miss, an unreachable or refusing server, a broken archive are
//! warnings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_core::Outcome;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::context::{Job, JobError};
use super::spec::{CacheLocation, CacheSpec, CacheTarget, SignedUrl};
use crate::archive::{self, Format, Selection};

/// GitLab Runner's `CACHE_REQUEST_TIMEOUT` default: one transfer, start to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// GitLab Runner's cache client: dial and response-header timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Transport errors and 5xx: 3 attempts, 1 s apart (GitLab Runner's `retryOnServerError`).
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a cache could not be restored or saved: one warning line in the trace.
#[derive(Debug)]
enum CacheError {
    /// The archive is not there (404, or no local `cache.zip`): a plain miss.
    Missing,
    Failed(String),
}

impl From<archive::ArchiveError> for CacheError {
    fn from(err: archive::ArchiveError) -> CacheError {
        CacheError::Failed(err.to_string())
    }
}

fn http_client() -> Result<reqwest::Client, CacheError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| CacheError::Failed(format!("an HTTP client: {e}")))
}

/// A transport error without the URL: reqwest's messages name it, with its signature.
fn transport(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

/// The `Code` and `Message` of an S3 error body, when there is one.
fn s3_error(body: &str) -> String {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))?;
        Some(body[start..start + end].to_string())
    };
    match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!(" ({code}: {message})"),
        (Some(code), None) => format!(" ({code})"),
        _ => String::new(),
    }
}

impl Job {
    /// `restore_cache`: for each entry that pulls, the first of its keys whose archive exists
    /// is unpacked into the project directory.
    pub(crate) async fn restore_caches(&mut self) -> Result<(), JobError> {
        let spec = self.spec.clone();
        let entries: Vec<&CacheSpec> = spec
            .caches
            .iter()
            .filter(|c| !c.restore.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        self.trace.section("Restoring cache").await;
        let container = self.transfer_container().await?;
        let work = tempfile::tempdir()
            .map_err(|e| JobError::System(format!("a temporary directory: {e}")))?;
        for entry in entries {
            for source in &entry.restore {
                self.trace
                    .say(format!("Checking cache for {}...\n", source.key))
                    .await;
                let file = work.path().join("cache.zip");
                let fetched = match &source.location {
                    CacheLocation::Remote(url) => {
                        self.trace
                            .say(format!("Downloading cache from {}\n", url.redacted()))
                            .await;
                        download(url, &file).await
                    }
                    CacheLocation::Local(path) => {
                        self.trace
                            .say(
                                "No URL provided, cache will not be downloaded from shared cache \
                                 server. Instead a local version of cache will be extracted.\n",
                            )
                            .await;
                        self.read_local(&container, path, work.path(), &file).await
                    }
                };
                let extracted = match fetched {
                    Ok(()) => archive::extract(
                        &self.docker,
                        &container,
                        &spec.project_dir,
                        &file,
                        work.path(),
                    )
                    .await
                    .map(|_| ())
                    .map_err(CacheError::from),
                    Err(e) => Err(e),
                };
                let _ = tokio::fs::remove_file(&file).await;
                match extracted {
                    Ok(()) => {
                        self.trace.say("Successfully extracted cache\n").await;
                        break;
                    }
                    Err(CacheError::Missing) => {
                        self.trace.warn("file does not exist").await;
                        self.trace.warn("Failed to extract cache").await;
                    }
                    Err(CacheError::Failed(message)) => {
                        self.trace.warn(&message).await;
                        self.trace.warn("Failed to extract cache").await;
                    }
                }
            }
        }
        Ok(())
    }

    /// `archive_cache` / `archive_cache_on_failure`: each entry that pushes and whose `when` fits
    /// `outcome` is archived and saved. A canceled job saves nothing.
    pub(crate) async fn save_caches(&mut self, outcome: Outcome) -> Result<(), JobError> {
        if outcome == Outcome::Canceled {
            return Ok(());
        }
        let succeeded = outcome == Outcome::Success;
        let spec = self.spec.clone();
        let entries: Vec<&CacheSpec> = spec
            .caches
            .iter()
            .filter(|c| c.save.is_some())
            .filter(|c| c.when.fits(succeeded))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        self.trace
            .section(match succeeded {
                true => "Saving cache for successful job",
                false => "Saving cache for failed job",
            })
            .await;
        let container = self.transfer_container().await?;
        let work = tempfile::tempdir()
            .map_err(|e| JobError::System(format!("a temporary directory: {e}")))?;
        let untracked = match entries.iter().any(|c| c.untracked) {
            true => match self.untracked_files().await {
                Ok(files) => files,
                Err(why) => {
                    self.trace
                        .warn(&format!(
                            "untracked: files git does not track are not cached: {why}"
                        ))
                        .await;
                    Vec::new()
                }
            },
            false => Vec::new(),
        };
        for entry in entries {
            let Some(save) = &entry.save else { continue };
            self.trace
                .say(format!("Creating cache {}...\n", save.key))
                .await;
            let file = work.path().join("cache.zip");
            // Caches have no `exclude`.
            let selection = Selection {
                paths: entry.paths.clone(),
                exclude: Vec::new(),
                extra: if entry.untracked {
                    untracked.clone()
                } else {
                    Vec::new()
                },
            };
            let collected = archive::collect(
                &self.docker,
                &container,
                &spec.project_dir,
                &selection,
                Format::Zip,
                work.path(),
                &file,
            )
            .await;
            let collected = match collected {
                Ok(c) => c,
                Err(err) => {
                    self.trace.warn(&err.to_string()).await;
                    self.trace.warn("Failed to create cache").await;
                    continue;
                }
            };
            for warning in &collected.warnings {
                self.trace.warn(warning).await;
            }
            for note in &collected.notes {
                self.trace.say(format!("{note}\n")).await;
            }
            if collected.entries == 0 {
                self.trace.warn("No files to cache.").await;
                continue;
            }
            let saved = match &save.target {
                CacheTarget::Remote {
                    url,
                    headers,
                    max_size,
                } => match max_size {
                    Some(max) if collected.size > *max => {
                        self.trace
                            .warn(&format!(
                                "cache.zip is too big ({} bytes, MaxUploadedArchiveSize is {max}): \
                                 not uploaded",
                                collected.size
                            ))
                            .await;
                        Err(CacheError::Failed("the archive is too big".into()))
                    }
                    _ => {
                        self.trace
                            .say(format!("Uploading cache.zip to {}\n", url.redacted()))
                            .await;
                        upload(url, headers, &file, collected.size).await
                    }
                },
                CacheTarget::Local(path) => {
                    self.write_local(&container, path, work.path(), &file).await
                }
            };
            let _ = tokio::fs::remove_file(&file).await;
            match saved {
                Ok(()) => self.trace.say("Created cache\n").await,
                Err(CacheError::Missing) => {
                    self.trace.warn("Failed to create cache").await;
                }
                Err(CacheError::Failed(message)) => {
                    self.trace.warn(&message).await;
                    self.trace.warn("Failed to create cache").await;
                }
            }
        }
        Ok(())
    }

    /// Copies the local cache's `cache.zip` at `path` (inside the job's containers) to `dest`.
    async fn read_local(
        &self,
        container: &str,
        path: &str,
        work: &Path,
        dest: &Path,
    ) -> Result<(), CacheError> {
        let tar = work.join("local-cache.tar");
        if !archive::transfer::fetch(&self.docker, container, path, &tar).await? {
            return Err(CacheError::Missing);
        }
        let (tar_path, dest) = (tar.clone(), dest.to_path_buf());
        let unpacked = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let mut archive = tar::Archive::new(std::fs::File::open(&tar_path)?);
            for entry in archive.entries()? {
                let mut entry = entry?;
                if entry.header().entry_type().is_file() {
                    let mut out = std::fs::File::create(&dest)?;
                    std::io::copy(&mut entry, &mut out)?;
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
        .map_err(|e| CacheError::Failed(e.to_string()))?;
        let _ = tokio::fs::remove_file(&tar).await;
        match unpacked {
            Ok(true) => Ok(()),
            Ok(false) => Err(CacheError::Missing),
            Err(e) => Err(CacheError::Failed(format!("reading {path}: {e}"))),
        }
    }

    /// Puts `file` as the local cache's `cache.zip` at `path` inside the job's containers.
    async fn write_local(
        &self,
        container: &str,
        path: &str,
        work: &Path,
        file: &Path,
    ) -> Result<(), CacheError> {
        let tar = work.join("local-cache.tar");
        let (tar_path, file_path) = (tar.clone(), file.to_path_buf());
        // Under `/` with the full path: the engine creates the directories on the way.
        let name = path.trim_start_matches('/').to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut builder = tar::Builder::new(std::fs::File::create(&tar_path)?);
            let mut source = std::fs::File::open(&file_path)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(source.metadata()?.len());
            header.set_mode(0o644);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            builder.append_data(&mut header, &name, &mut source)?;
            builder.into_inner()?.sync_all()
        })
        .await
        .map_err(|e| CacheError::Failed(e.to_string()))?
        .map_err(|e| CacheError::Failed(format!("packing cache.zip: {e}")))?;
        archive::transfer::put(&self.docker, container, "/", &tar).await?;
        let _ = tokio::fs::remove_file(&tar).await;
        Ok(())
    }
}

/// `GET`s `url` into `dest`, streamed. 404 is a miss; transport errors and 5xx are retried.
async fn download(url: &SignedUrl, dest: &Path) -> Result<(), CacheError> {
    let client = http_client()?;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let response = match client.get(url.expose()).send().await {
            Ok(r) => r,
            Err(e) => {
                last = transport(e);
                continue;
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(CacheError::Missing);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            last = format!("the cache server answered {status}{}", s3_error(&body));
            if status.is_server_error() {
                continue;
            }
            return Err(CacheError::Failed(last));
        }
        match stream_to(response, dest).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(CacheError::Failed(last))
}

async fn stream_to(response: reqwest::Response, dest: &Path) -> Result<(), String> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(transport)?;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("writing {}: {e}", dest.display()))
}

/// `PUT`s `file` to `url` with the signed `headers`, streamed with its length. Transport errors
/// and 5xx are retried; every other non-2xx answer is a failure.
async fn upload(
    url: &SignedUrl,
    headers: &[(String, String)],
    file: &PathBuf,
    size: u64,
) -> Result<(), CacheError> {
    let client = http_client()?;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let body = tokio::fs::File::open(file)
            .await
            .map_err(|e| CacheError::Failed(format!("opening cache.zip: {e}")))?;
        let mut request = client
            .put(url.expose())
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(ReaderStream::new(body)));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                last = transport(e);
                continue;
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        last = format!("the cache server answered {status}{}", s3_error(&body));
        if !status.is_server_error() {
            break;
        }
    }
    Err(CacheError::Failed(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_bodies_are_quoted() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(
            s3_error(body),
            " (SignatureDoesNotMatch: The request signature we calculated does not match)"
        );
        assert_eq!(s3_error("not xml"), "");
    }
}
