//! Job artifacts: `POST /jobs/:id/artifacts` (upload, multipart, streamed from a file) and
//! `GET /jobs/:id/artifacts` (download of a dependency's archive, following GitLab's redirect to
//! object storage), with GitLab Runner's retries and trace lines.
//!
//! The retries are the artifacts helper's, not the HTTP layer's: upload `503` is tried 6 times,
//! anything else but `403`/`413` 3 times; download `404`/`401`/`403` are final, anything else is
//! tried 3 times. Every try is one trace line; the lines carry no token and no signed URL.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{LOCATION, USER_AGENT};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::client::{Client, JobCredentials};
use crate::mask::Secret;
use crate::retry::Backoff;

/// The whole upload call (GitLab Runner's `[runners.artifact] upload_timeout`).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The whole download call.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Redirects followed to object storage.
const MAX_REDIRECTS: usize = 10;

/// One artifacts archive to send.
#[derive(Debug, Clone)]
pub struct ArtifactUpload<'a> {
    /// The archive on the daemon's disk; re-read from the start on every try.
    pub file: &'a Path,
    /// The multipart file name (`artifacts.zip`, `junit.xml.gz`, ...).
    pub file_name: &'a str,
    /// `archive`, `junit`, ...
    pub artifact_type: &'a str,
    /// `zip`, `gzip`, `raw`.
    pub artifact_format: &'a str,
    /// As the job wrote it (`1 week`, `never`); empty: GitLab's default.
    pub expire_in: &'a str,
}

/// How a trace line reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLevel {
    Info,
    Warning,
    Error,
}

/// Why an upload or a download failed in the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// `413`: over GitLab's maximum artifact size. Not retried.
    #[error("too large archive")]
    TooLarge,
    /// `403` (`401`): the job token may not do this. Not retried.
    #[error("forbidden")]
    Forbidden,
    /// `404` on download: the dependency has no artifacts. Not retried.
    #[error("not found")]
    NotFound,
    /// Anything else, after the last try.
    #[error("{0}")]
    Failed(String),
}

fn status_text(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// `scheme://host[:port]/path` of a URL: no query (object storage signs there) and no user info.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn host_of(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    }
}

/// `url?a=1&b=x+y`: sorted keys, URL-encoded values with `+` for spaces, empty values left out.
fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    let mut pairs: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    pairs.sort();
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    url
}

impl Client {
    /// `POST /jobs/:id/artifacts` with GitLab Runner's tries; every try is a line for `log`.
    pub async fn upload_artifacts(
        &self,
        job: &JobCredentials,
        upload: &ArtifactUpload<'_>,
        log: &mut (dyn FnMut(LineLevel, String) + Send),
    ) -> Result<(), ArtifactError> {
        let base = self
            .api_base()
            .join(&format!("jobs/{}/artifacts", job.id))
            .map_err(|e| ArtifactError::Failed(e.to_string()))?;
        let mut url = with_query(
            base,
            &[
                ("artifact_format", upload.artifact_format),
                ("artifact_type", upload.artifact_type),
                ("expire_in", upload.expire_in),
            ],
        );
        let what = format!(
            "Uploading artifacts as {:?} to coordinator...",
            upload.artifact_type
        );
        // GitLab Runner's waits: the first, doubling, at most five times it.
        let first = self.artifact_backoff();
        let mut backoff = Backoff::new(first, first * 5);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let (level, text, outcome) = match self.upload_once(&url, job, upload).await {
                Err(detail) => (
                    LineLevel::Warning,
                    format!("{what} error  error={detail} id={}", job.id),
                    Try::Retry(3, detail),
                ),
                Ok((status, location)) => {
                    let fields = format!(
                        "id={} responseStatus={} status={}",
                        job.id,
                        status_text(status),
                        status.as_u16()
                    );
                    match status.as_u16() {
                        201 => (
                            LineLevel::Info,
                            format!("{what} {}  {fields}", status_text(status)),
                            Try::Done,
                        ),
                        307 => match location.and_then(|l| url.join(&l).ok()) {
                            // GitLab Runner keeps the new host, and the path and query of its own.
                            Some(to) => {
                                let mut next = url.clone();
                                let _ = next.set_scheme(to.scheme());
                                let _ = next.set_host(to.host_str());
                                let _ = next.set_port(to.port());
                                // A redirect counts as one try (GitLab Runner): a proxy that
                                // redirects every upload cannot keep the job going forever.
                                url = next;
                                (
                                    LineLevel::Info,
                                    format!(
                                        "{what} redirected  {fields} location={}",
                                        host_of(&url)
                                    ),
                                    Try::Again,
                                )
                            }
                            None => (
                                LineLevel::Error,
                                format!("{what} redirect without Location  {fields}"),
                                Try::Fail(ArtifactError::Failed(
                                    "a redirect without Location".into(),
                                )),
                            ),
                        },
                        403 => (
                            LineLevel::Error,
                            format!("{what} forbidden  {fields}"),
                            Try::Fail(ArtifactError::Forbidden),
                        ),
                        413 => (
                            LineLevel::Error,
                            format!("{what} too large archive  {fields}"),
                            Try::Fail(ArtifactError::TooLarge),
                        ),
                        503 => (
                            LineLevel::Warning,
                            format!("{what} service unavailable  {fields}"),
                            Try::Retry(6, status_text(status)),
                        ),
                        _ => (
                            LineLevel::Warning,
                            format!("{what} failed  {fields}"),
                            Try::Retry(3, status_text(status)),
                        ),
                    }
                }
            };
            log(level, text);
            match outcome {
                Try::Done => return Ok(()),
                Try::Again if tries as usize >= MAX_REDIRECTS => {
                    return Err(ArtifactError::Failed("too many redirects".into()));
                }
                Try::Again => {}
                Try::Fail(err) => return Err(err),
                Try::Retry(limit, detail) => {
                    if tries >= limit {
                        return Err(ArtifactError::Failed(detail));
                    }
                    log(LineLevel::Warning, "Retrying...".to_string());
                    tokio::time::sleep(backoff.next_ceiling()).await;
                }
            }
        }
    }

    /// One try: the status and `Location`, or a transport error (without the URL).
    async fn upload_once(
        &self,
        url: &Url,
        job: &JobCredentials,
        upload: &ArtifactUpload<'_>,
    ) -> Result<(StatusCode, Option<String>), String> {
        let file = tokio::fs::File::open(upload.file)
            .await
            .map_err(|e| format!("opening the archive: {e}"))?;
        let body = reqwest::Body::wrap_stream(ReaderStream::new(file));
        let part = reqwest::multipart::Part::stream(body)
            .file_name(upload.file_name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| e.to_string())?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = self
            .http()
            .post(url.clone())
            .timeout(UPLOAD_TIMEOUT)
            .header(USER_AGENT, self.user_agent())
            .header("X-Request-Id", crate::client::request_id())
            .header("JOB-TOKEN", job.token.expose())
            .multipart(form)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((response.status(), location))
    }

    /// `GET /jobs/:dependency/artifacts` into `dest` with the running job's `token`, as GitLab
    /// Runner does: first with `direct_download=true` (following a redirect to object storage),
    /// then without. Returns the size written.
    pub async fn download_artifacts(
        &self,
        dependency: u64,
        token: &Secret,
        dest: &Path,
        log: &mut (dyn FnMut(LineLevel, String) + Send),
    ) -> Result<u64, ArtifactError> {
        const TRIES: u32 = 3;
        let what = "Downloading artifacts from coordinator...";
        for tries in 1..=TRIES {
            let direct = tries == 1;
            let path = match direct {
                true => format!("jobs/{dependency}/artifacts?direct_download=true"),
                false => format!("jobs/{dependency}/artifacts"),
            };
            let url = self
                .api_base()
                .join(&path)
                .map_err(|e| ArtifactError::Failed(e.to_string()))?;
            let host = host_of(&url);
            let result = self.download_once(url, token, dest).await;
            let fields = |status: StatusCode| {
                format!(
                    "host={host} id={dependency} responseStatus={}",
                    status_text(status)
                )
            };
            let detail = match result {
                Ok((status, size)) if status.is_success() => {
                    log(LineLevel::Info, format!("{what} ok  {}", fields(status)));
                    return Ok(size);
                }
                Ok((status, _)) => {
                    let (text, final_error) = match status.as_u16() {
                        404 => ("not found", Some(ArtifactError::NotFound)),
                        401 | 403 => ("forbidden", Some(ArtifactError::Forbidden)),
                        _ => ("failed", None),
                    };
                    if let Some(err) = final_error {
                        log(
                            LineLevel::Error,
                            format!("{what} {text}  {}", fields(status)),
                        );
                        return Err(err);
                    }
                    log(
                        LineLevel::Warning,
                        format!("{what} {text}  {}", fields(status)),
                    );
                    status_text(status)
                }
                Err(detail) => {
                    log(
                        LineLevel::Warning,
                        format!("{what} error  host={host} id={dependency} error={detail}"),
                    );
                    detail
                }
            };
            if tries == TRIES {
                return Err(ArtifactError::Failed(detail));
            }
            log(LineLevel::Warning, "Retrying...".to_string());
            tokio::time::sleep(self.artifact_backoff()).await;
        }
        unreachable!("the loop returns on its last try")
    }

    /// One try, following redirects. The job token goes with the first request only: a redirect
    /// leads to object storage, which has no use for it.
    async fn download_once(
        &self,
        mut url: Url,
        token: &Secret,
        dest: &Path,
    ) -> Result<(StatusCode, u64), String> {
        let mut to_gitlab = true;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .http()
                .get(url.clone())
                .timeout(DOWNLOAD_TIMEOUT)
                .header(USER_AGENT, self.user_agent());
            if to_gitlab {
                request = request
                    .header("X-Request-Id", crate::client::request_id())
                    .header("JOB-TOKEN", token.expose());
            }
            let response = request
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| format!("{} without a usable Location", status_text(status)))?;
                to_gitlab = false;
                url = location;
                continue;
            }
            if !status.is_success() {
                return Ok((status, 0));
            }
            let mut file = tokio::fs::File::create(dest)
                .await
                .map_err(|e| format!("creating {}: {e}", dest.display()))?;
            let mut size = 0u64;
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| format!("reading from {}: {}", shown(&url), e.without_url()))?;
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| format!("writing {}: {e}", dest.display()))?;
            }
            file.flush()
                .await
                .map_err(|e| format!("writing {}: {e}", dest.display()))?;
            return Ok((status, size));
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

enum Try {
    Done,
    /// A redirect: the same try again elsewhere.
    Again,
    Fail(ArtifactError),
    /// Retry while fewer than this many tries were made.
    Retry(u32, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_sorted_encoded_and_skips_empty_values() {
        let base = Url::parse("http://h/api/v4/jobs/1/artifacts").unwrap();
        let url = with_query(
            base.clone(),
            &[
                ("expire_in", "7 days"),
                ("artifact_type", "archive"),
                ("artifact_format", "zip"),
            ],
        );
        assert_eq!(
            url.query(),
            Some("artifact_format=zip&artifact_type=archive&expire_in=7+days")
        );
        let url = with_query(base, &[("artifact_format", "gzip"), ("expire_in", "")]);
        assert_eq!(url.query(), Some("artifact_format=gzip"));
    }

    #[test]
    fn shown_urls_carry_no_signature() {
        let url = Url::parse("https://u:p@store.example/b/o?X-Amz-Signature=abc").unwrap();
        assert_eq!(shown(&url), "https://store.example/b/o");
    }
}
