//! The HTTP client for one GitLab instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, USER_AGENT};
use reqwest::{Method, Url};

use crate::RunnerIdentity;
use crate::api::{
    self, JobRequest, JobResponse, RegisterRunnerRequest, ResetTokenRequest, ResetTokenResponse,
    RunnerInfo, RunnerTokenResponse, UnregisterRequest, UpdateJobRequest, VerifyRunnerRequest,
};
use crate::error::Error;
use crate::mask::Secret;
use crate::retry::{Backoff, Jitter, RetryPolicy, is_retryable, wait_from_headers};

/// Per-call time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake (GitLab Runner: 30 s).
    pub connect: Duration,
    /// A whole ordinary call, body included.
    pub request: Duration,
    /// A whole `POST /jobs/request`: Workhorse may hold it for its long-polling duration
    /// (50 s on gitlab.com), so this must stay well above that. GitLab Runner waits up to
    /// 10 minutes for response headers; so does drover.
    pub long_poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            request: Duration::from_secs(120),
            long_poll: Duration::from_secs(600),
        }
    }
}

/// How to reach one GitLab instance.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The runner's `url` from config.toml; see [`normalize_url`].
    pub url: String,
    /// `tls-ca-file`: a PEM file of extra trusted CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    pub identity: RunnerIdentity,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// The first wait between artifact tries (then doubling, at most 5×): GitLab Runner's 1 s.
    pub artifact_backoff: Duration,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, identity: RunnerIdentity) -> Self {
        ClientConfig {
            url: url.into(),
            tls_ca_file: None,
            identity,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            artifact_backoff: Duration::from_secs(1),
        }
    }
}

/// The API base for a configured URL: trailing `/` and `/ci` removed, then `/api/v4/` appended.
/// Only `http` and `https` are accepted.
pub fn normalize_url(url: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut trimmed = url.trim();
    loop {
        let before = trimmed.len();
        trimmed = trimmed.trim_end_matches('/');
        if let Some(stripped) = trimmed.strip_suffix("/ci") {
            trimmed = stripped;
        }
        if trimmed.len() == before {
            break;
        }
    }
    let parsed = Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// URLs are supported"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("the URL must not have a query or fragment"));
    }
    Url::parse(&format!("{trimmed}/api/v4/")).map_err(|e| invalid(&e.to_string()))
}

/// The `Job-Status` header of a job response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteJobStatus {
    Pending,
    Running,
    Canceling,
    Canceled,
    Success,
    Failed,
    Other(String),
}

impl RemoteJobStatus {
    fn parse(value: &str) -> Self {
        match value {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "canceling" => Self::Canceling,
            "canceled" => Self::Canceled,
            "success" => Self::Success,
            "failed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// `canceled` or `failed`: GitLab Runner aborts the job.
    pub fn is_abort(&self) -> bool {
        matches!(self, Self::Canceled | Self::Failed)
    }
}

/// The answer to `POST /jobs/request`.
#[derive(Debug)]
pub enum RequestOutcome {
    /// `201`: a job for this runner.
    Job(Box<JobResponse>),
    /// `201` with a payload drover cannot use, for a job it can name: accept it and fail it with
    /// the reason ([`api::UndecodableJob::error`]). Not a fault of the coordinator: no backoff.
    Undecodable(Box<api::UndecodableJob>),
    /// `201` with an answer that names no job (no usable `id` and `token`): nothing can be
    /// reported, so it is logged and dropped. Not a fault of the coordinator's link: no backoff.
    Unusable { message: String },
    /// `204`: nothing to do. Send `last_update` (when present) with the next request; a bare
    /// `204` from a long poll carries none, and the previous value stays current.
    /// `long_polling`: the answer came through Workhorse with long polling on
    /// (`Gitlab-Ci-Builds-Polling: yes`); `false` for a request given up before its answer.
    NoJob {
        last_update: Option<String>,
        long_polling: bool,
    },
    /// Anything else. `unhealthy` follows GitLab Runner (a `403`, or no usable answer at all);
    /// after 3 unhealthy results in a row GitLab Runner rests the runner for an hour.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        unhealthy: bool,
        message: String,
    },
}

/// How a job update went, in the order GitLab Runner checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateKind {
    /// `200`.
    Ok,
    /// `202`: a final state accepted but not completed yet; resend the trace and repeat the
    /// update after the interval.
    Accepted,
    /// `412`: the trace is invalid; rewind to 0 and resend all of it.
    TraceInvalid,
    /// `403`, or `Job-Status` `canceled`/`failed`: stop the job, nothing more to report.
    Abort,
    /// `404`.
    NotFound,
    /// Any other answer, or no answer: try again later.
    Failed(String),
}

/// How a trace patch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchKind {
    /// `202`: GitLab holds everything before `sent_to`.
    Accepted { sent_to: u64 },
    /// `416`: GitLab holds `server_size` bytes; continue from there.
    RangeMismatch { server_size: u64 },
    /// As [`UpdateKind::Abort`].
    Abort,
    /// `404`.
    NotFound,
    /// Any other answer, or no answer: try again later.
    Failed(String),
}

/// GitLab's answer to a job call: `PUT /jobs/:id` ([`UpdateResult`]) or
/// `PATCH /jobs/:id/trace` ([`PatchResult`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReply<K> {
    pub kind: K,
    /// The HTTP status, when GitLab answered.
    pub status: Option<u16>,
    pub job_status: Option<RemoteJobStatus>,
    /// `X-GitLab-Trace-Update-Interval`.
    pub update_interval: Option<Duration>,
}

/// The result of `PUT /jobs/:id`.
pub type UpdateResult = JobReply<UpdateKind>;

/// The result of `PATCH /jobs/:id/trace`.
pub type PatchResult = JobReply<PatchKind>;

impl<K> JobReply<K> {
    /// `Job-Status: canceling`: stop the script gracefully, `after_script` still runs.
    pub fn cancel_requested(&self) -> bool {
        self.job_status == Some(RemoteJobStatus::Canceling)
    }

    /// No answer from GitLab (the call could not be made or got no response).
    fn failed(kind: K) -> Self {
        JobReply {
            kind,
            status: None,
            job_status: None,
            update_interval: None,
        }
    }

    /// GitLab's answer: `abort` for a `403` or `Job-Status: canceled/failed` (GitLab Runner checks
    /// these first), else what `classify` makes of the status.
    fn answered(reply: &Reply, abort: K, classify: impl FnOnce(u16) -> K) -> Self {
        let job_status = reply.job_status();
        let kind =
            if reply.status == 403 || job_status.as_ref().is_some_and(RemoteJobStatus::is_abort) {
                abort
            } else {
                classify(reply.status)
            };
        JobReply {
            kind,
            status: Some(reply.status),
            job_status,
            update_interval: reply.update_interval(),
        }
    }
}

/// A job's id and token: what every job endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCredentials {
    pub id: u64,
    pub token: Secret,
}

impl From<&JobResponse> for JobCredentials {
    fn from(job: &JobResponse) -> Self {
        JobCredentials {
            id: job.id,
            token: job.token.clone(),
        }
    }
}

/// A client for one GitLab instance. Cheap to clone; clones share connections and jitter RNG.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    user_agent: String,
    timeouts: Timeouts,
    retry: RetryPolicy,
    jitter: Jitter,
    artifact_backoff: Duration,
}

/// A response read to the end.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn job_status(&self) -> Option<RemoteJobStatus> {
        self.header("job-status").map(RemoteJobStatus::parse)
    }

    fn update_interval(&self) -> Option<Duration> {
        self.header("x-gitlab-trace-update-interval")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
    }

    /// GitLab's error message (`{"message": ...}` or `{"error": ...}`), else the raw body.
    fn message(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            for key in ["message", "error"] {
                match value.get(key) {
                    Some(serde_json::Value::String(s)) => return s.clone(),
                    Some(other) if !other.is_null() => return other.to_string(),
                    _ => {}
                }
            }
        }
        text.chars().take(300).collect()
    }
}

enum Body {
    Json(Vec<u8>),
    Trace { bytes: Bytes, range: String },
}

enum TokenHeader<'a> {
    Runner(&'a Secret),
    Job(&'a Secret),
}

struct Call<'a> {
    method: Method,
    path: String,
    token: TokenHeader<'a>,
    body: Body,
    timeout: Duration,
    expects_json: bool,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let base = normalize_url(&config.url)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(config.timeouts.connect)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read(path).map_err(|source| Error::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::CaParse {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::CaParse {
                    path: path.clone(),
                    reason: "no BEGIN CERTIFICATE block found".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| Error::Build(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                user_agent: config.identity.user_agent(),
                timeouts: config.timeouts,
                jitter: Jitter::new(config.retry.seed),
                retry: config.retry,
                artifact_backoff: config.artifact_backoff,
            }),
        })
    }

    /// `POST /runners`: register with a registration token.
    pub async fn register_runner(
        &self,
        request: &RegisterRunnerRequest,
    ) -> Result<RunnerTokenResponse, Error> {
        let call = self.json_call(
            Method::POST,
            "runners",
            TokenHeader::Runner(&request.token),
            request,
        )?;
        let (method, url) = (call.method.clone(), self.url_of(&call.path));
        let reply = self.execute(call).await?;
        match reply.status {
            201 => decode(&method, &url, &reply),
            403 => Err(Error::Forbidden {
                method: method.to_string(),
                url,
                hint: "check the registration token",
            }),
            410 => Err(Error::RegistrationDisabled {
                url: self.display_url(),
            }),
            status => Err(status_error(&method, url, status, &reply)),
        }
    }

    /// `POST /runners/verify`. `Ok(None)`: an old GitLab that answers a bare `200` without the
    /// runner's details.
    pub async fn verify_runner(
        &self,
        request: &VerifyRunnerRequest,
    ) -> Result<Option<RunnerTokenResponse>, Error> {
        let call = self.json_call(
            Method::POST,
            "runners/verify",
            TokenHeader::Runner(&request.token),
            request,
        )?;
        let (method, url) = (call.method.clone(), self.url_of(&call.path));
        let reply = self.execute(call).await?;
        match reply.status {
            200 => {
                let is_object = serde_json::from_slice::<serde_json::Value>(&reply.body)
                    .is_ok_and(|v| v.is_object());
                if is_object {
                    decode(&method, &url, &reply).map(Some)
                } else {
                    Ok(None)
                }
            }
            403 => Err(Error::Forbidden {
                method: method.to_string(),
                url,
                hint: "the runner token is invalid, or the runner was deleted in GitLab",
            }),
            status => Err(status_error(&method, url, status, &reply)),
        }
    }

    /// `DELETE /runners`: delete the runner.
    pub async fn unregister_runner(&self, token: &Secret) -> Result<(), Error> {
        let request = UnregisterRequest {
            token: token.clone(),
            system_id: String::new(),
        };
        self.delete(&request, "runners").await
    }

    /// `DELETE /runners/managers`: forget this host's manager of a runner created in the UI (the
    /// runner itself stays). A `404` means GitLab has no such manager.
    pub async fn unregister_manager(&self, token: &Secret, system_id: &str) -> Result<(), Error> {
        let request = UnregisterRequest {
            token: token.clone(),
            system_id: system_id.to_owned(),
        };
        self.delete(&request, "runners/managers").await
    }

    async fn delete(&self, request: &UnregisterRequest, path: &str) -> Result<(), Error> {
        let call = self.json_call(
            Method::DELETE,
            path,
            TokenHeader::Runner(&request.token),
            request,
        )?;
        let call = Call {
            expects_json: false,
            ..call
        };
        let (method, url) = (call.method.clone(), self.url_of(&call.path));
        let reply = self.execute(call).await?;
        match reply.status {
            204 | 200 => Ok(()),
            403 => Err(Error::Forbidden {
                method: method.to_string(),
                url,
                hint: "the runner token is invalid, or the runner was already deleted",
            }),
            status => Err(status_error(&method, url, status, &reply)),
        }
    }

    /// `POST /runners/reset_authentication_token`.
    pub async fn reset_token(&self, token: &Secret) -> Result<ResetTokenResponse, Error> {
        let request = ResetTokenRequest {
            token: token.clone(),
        };
        let call = self.json_call(
            Method::POST,
            "runners/reset_authentication_token",
            TokenHeader::Runner(token),
            &request,
        )?;
        let (method, url) = (call.method.clone(), self.url_of(&call.path));
        let reply = self.execute(call).await?;
        match reply.status {
            201 => decode(&method, &url, &reply),
            403 => Err(Error::Forbidden {
                method: method.to_string(),
                url,
                hint: "the runner token is invalid",
            }),
            status => Err(status_error(&method, url, status, &reply)),
        }
    }

    /// `POST /jobs/request`, allowing for a long poll.
    pub async fn request_job(&self, request: &JobRequest) -> RequestOutcome {
        self.request_job_until(request, std::future::pending())
            .await
    }

    /// [`Client::request_job`] that stops waiting once `stop` completes, as if GitLab had no job
    /// (`NoJob`), but only while GitLab's answer has not begun: an answer whose status line has
    /// arrived is read whole, since GitLab may have assigned its job to this runner already.
    pub async fn request_job_until(
        &self,
        request: &JobRequest,
        stop: impl Future<Output = ()>,
    ) -> RequestOutcome {
        let failed = |status, unhealthy, message: String| RequestOutcome::Failed {
            status,
            retry_after: None,
            unhealthy,
            message,
        };
        let call = match self.json_call(
            Method::POST,
            "jobs/request",
            TokenHeader::Runner(&request.token),
            request,
        ) {
            Ok(call) => Call {
                timeout: self.inner.timeouts.long_poll,
                ..call
            },
            Err(e) => return failed(None, true, e.to_string()),
        };
        let (method, url) = (call.method.clone(), self.url_of(&call.path));
        let reply = match self.execute_until(call, stop).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                return RequestOutcome::NoJob {
                    last_update: None,
                    long_polling: false,
                };
            }
            Err(e) => return failed(None, true, e.to_string()),
        };
        match reply.status {
            201 => match api::decode_job(&reply.body) {
                Ok(job) => RequestOutcome::Job(Box::new(job)),
                Err(api::JobDecodeError::Job(bad)) => RequestOutcome::Undecodable(bad),
                Err(e @ api::JobDecodeError::Anonymous(_)) => RequestOutcome::Unusable {
                    message: format!("{method} {url}: {e}"),
                },
            },
            204 => RequestOutcome::NoJob {
                last_update: reply.header("x-gitlab-last-update").map(str::to_owned),
                long_polling: reply
                    .header("gitlab-ci-builds-polling")
                    .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            },
            status => RequestOutcome::Failed {
                status: Some(status),
                retry_after: (status == 429)
                    .then(|| wait_from_headers(&reply.headers, SystemTime::now()))
                    .flatten(),
                unhealthy: status == 403,
                message: status_error(&method, url, status, &reply).to_string(),
            },
        }
    }

    /// `PUT /jobs/:id` with `state=running` and an empty `output`: the two-phase acceptance.
    /// `Abort`/`NotFound` (or `Job-Status: canceled/failed`): drop the job.
    /// [`UpdateResult::cancel_requested`]: fail it as canceled.
    pub async fn accept_job(&self, job: &JobCredentials, info: &RunnerInfo) -> UpdateResult {
        self.update_job(
            job,
            &UpdateJobRequest::accept(info.clone(), job.token.clone()),
        )
        .await
    }

    /// `PUT /jobs/:id`.
    pub async fn update_job(
        &self,
        job: &JobCredentials,
        request: &UpdateJobRequest,
    ) -> UpdateResult {
        let path = format!("jobs/{}", job.id);
        let call = match self.json_call(Method::PUT, &path, TokenHeader::Job(&job.token), request) {
            Ok(call) => Call {
                expects_json: false,
                ..call
            },
            Err(e) => return JobReply::failed(UpdateKind::Failed(e.to_string())),
        };
        // GitLab Runner aborts the job when an update gets no answer; drover retries instead, so
        // a dropped connection cannot lose the job's final state.
        match self.execute(call).await {
            Ok(reply) => JobReply::answered(&reply, UpdateKind::Abort, |status| match status {
                200 => UpdateKind::Ok,
                202 => UpdateKind::Accepted,
                412 => UpdateKind::TraceInvalid,
                404 => UpdateKind::NotFound,
                status => {
                    UpdateKind::Failed(format!("GitLab answered {status}: {}", reply.message()))
                }
            }),
            Err(e) => JobReply::failed(UpdateKind::Failed(e.to_string())),
        }
    }

    /// `PATCH /jobs/:id/trace` with `content` starting at byte `offset` (never empty).
    pub async fn patch_trace(
        &self,
        job: &JobCredentials,
        offset: u64,
        content: Bytes,
    ) -> PatchResult {
        if content.is_empty() {
            return JobReply::failed(PatchKind::Failed(
                "refusing to send an empty trace patch".into(),
            ));
        }
        let end = offset + content.len() as u64 - 1;
        let call = Call {
            method: Method::PATCH,
            path: format!("jobs/{}/trace?debug_trace=false", job.id),
            token: TokenHeader::Job(&job.token),
            body: Body::Trace {
                bytes: content,
                range: format!("{offset}-{end}"),
            },
            timeout: self.inner.timeouts.request,
            expects_json: false,
        };
        match self.execute(call).await {
            Ok(reply) => JobReply::answered(&reply, PatchKind::Abort, |status| match status {
                202 => PatchKind::Accepted { sent_to: end + 1 },
                404 => PatchKind::NotFound,
                416 => match reply.header("range").and_then(range_end) {
                    Some(server_size) => PatchKind::RangeMismatch { server_size },
                    None => PatchKind::Failed("416 without a usable Range header".into()),
                },
                status => {
                    PatchKind::Failed(format!("GitLab answered {status}: {}", reply.message()))
                }
            }),
            Err(e) => JobReply::failed(PatchKind::Failed(e.to_string())),
        }
    }

    fn json_call<'a, T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        token: TokenHeader<'a>,
        body: &T,
    ) -> Result<Call<'a>, Error> {
        let json = serde_json::to_vec(body)
            .map_err(|e| Error::Build(format!("cannot encode the request: {e}")))?;
        Ok(Call {
            method,
            path: path.to_owned(),
            token,
            body: Body::Json(json),
            timeout: self.inner.timeouts.request,
            expects_json: true,
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn api_base(&self) -> &Url {
        &self.inner.base
    }

    pub(crate) fn user_agent(&self) -> &str {
        &self.inner.user_agent
    }

    pub(crate) fn artifact_backoff(&self) -> Duration {
        self.inner.artifact_backoff
    }

    fn url_of(&self, path: &str) -> String {
        let full = format!("{}{}", self.inner.base, path);
        full.split('?').next().unwrap_or(&full).to_owned()
    }

    /// The configured GitLab URL as the operator knows it (the API base without `/api/v4/`).
    fn display_url(&self) -> String {
        let base = self.inner.base.as_str();
        base.strip_suffix("api/v4/")
            .unwrap_or(base)
            .trim_end_matches('/')
            .to_owned()
    }

    /// Sends a call with GitLab Runner's retries and reads the whole answer.
    async fn execute(&self, call: Call<'_>) -> Result<Reply, Error> {
        match self.execute_until(call, std::future::pending()).await? {
            Some(reply) => Ok(reply),
            None => unreachable!("a pending future never completes"),
        }
    }

    /// [`Client::execute`] that gives up (`None`) when `stop` completes before an answer begins
    /// (while sending and waiting for the status line, or between attempts).
    async fn execute_until(
        &self,
        call: Call<'_>,
        stop: impl Future<Output = ()>,
    ) -> Result<Option<Reply>, Error> {
        let mut stop = std::pin::pin!(stop);
        let inner = &self.inner;
        let url = inner.base.join(&call.path).map_err(|e| Error::InvalidUrl {
            url: self.url_of(&call.path),
            reason: e.to_string(),
        })?;
        let shown = self.url_of(&call.path);
        let request_id = request_id();
        let mut backoff = Backoff::new(inner.retry.min_backoff, inner.retry.max_backoff);
        let attempts = inner.retry.max_attempts.max(1);
        for attempt in 1..=attempts {
            let mut request = inner
                .http
                .request(call.method.clone(), url.clone())
                .timeout(call.timeout)
                .header(USER_AGENT, &inner.user_agent)
                .header("X-Request-Id", &request_id);
            request = match call.token {
                TokenHeader::Runner(token) => request.header("RUNNER-TOKEN", token.expose()),
                TokenHeader::Job(token) => request.header("JOB-TOKEN", token.expose()),
            };
            if call.expects_json {
                request = request.header(ACCEPT, "application/json");
            }
            request = match &call.body {
                Body::Json(json) => request
                    .header(CONTENT_TYPE, "application/json")
                    .body(json.clone()),
                Body::Trace { bytes, range } => request
                    .header(CONTENT_TYPE, "text/plain")
                    .header("Content-Range", range)
                    .body(bytes.clone()),
            };
            let response = tokio::select! {
                // An answer that arrived with the stop wins: it may carry an assigned job.
                biased;
                response = request.send() => response,
                () = &mut stop => return Ok(None),
            };
            let response = response.map_err(|e| classify(e, &call.method, &shown, call.timeout))?;
            let status = response.status().as_u16();
            if attempt < attempts && is_retryable(status) {
                let wait = wait_from_headers(response.headers(), SystemTime::now())
                    .unwrap_or_else(|| inner.jitter.next(&mut backoff));
                tracing::info!(
                    method = %call.method, url = %shown, status, attempt, wait_ms = wait.as_millis() as u64,
                    "GitLab asked to retry; waiting before the next attempt"
                );
                drop(response);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut stop => return Ok(None),
                }
            }
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| classify(e, &call.method, &shown, call.timeout))?;
            return Ok(Some(Reply {
                status,
                headers,
                body,
            }));
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// The number after `-` in a `Range: 0-<size>` header.
fn range_end(value: &str) -> Option<u64> {
    value
        .trim()
        .trim_start_matches("bytes")
        .trim()
        .split_once('-')?
        .1
        .trim()
        .parse()
        .ok()
}

fn decode<T: serde::de::DeserializeOwned>(
    method: &Method,
    url: &str,
    reply: &Reply,
) -> Result<T, Error> {
    api::decode(&reply.body).map_err(|e| Error::Decode {
        method: method.to_string(),
        url: url.to_owned(),
        detail: e.to_string(),
    })
}

fn status_error(method: &Method, url: String, status: u16, reply: &Reply) -> Error {
    Error::Status {
        method: method.to_string(),
        url,
        status,
        message: reply.message(),
    }
}

/// The rustls error somewhere in `error`'s chain. `io::Error::source` skips the error it wraps,
/// so wrapped I/O errors are opened explicitly.
fn find_tls_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls.to_string());
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(found) = find_tls_error(inner) {
            return Some(found);
        }
    }
    error.source().and_then(find_tls_error)
}

/// Turns a transport failure into an error an operator can act on.
/// A new `X-Request-Id`: 32 hex digits.
pub(crate) fn request_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

fn classify(error: reqwest::Error, method: &Method, url: &str, timeout: Duration) -> Error {
    if error.is_timeout() {
        return Error::Timeout {
            method: method.to_string(),
            url: url.to_owned(),
            timeout,
        };
    }
    let tls = find_tls_error(&error);
    let mut root: &dyn std::error::Error = &error;
    while let Some(next) = root.source() {
        root = next;
    }
    let detail = root.to_string();
    if let Some(detail) = tls {
        return Error::Tls {
            url: url.to_owned(),
            detail,
        };
    }
    if error.is_connect() {
        return Error::Connect {
            url: url.to_owned(),
            detail,
        };
    }
    Error::Transport {
        method: method.to_string(),
        url: url.to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rule() {
        let ok = |u: &str| normalize_url(u).unwrap().to_string();
        assert_eq!(
            ok("https://gitlab.example.com"),
            "https://gitlab.example.com/api/v4/"
        );
        assert_eq!(
            ok("https://gitlab.example.com/"),
            "https://gitlab.example.com/api/v4/"
        );
        assert_eq!(
            ok("https://gitlab.example.com/ci"),
            "https://gitlab.example.com/api/v4/"
        );
        assert_eq!(
            ok("https://gitlab.example.com/ci/"),
            "https://gitlab.example.com/api/v4/"
        );
        assert_eq!(
            ok("http://h:8080/gitlab/ci//"),
            "http://h:8080/gitlab/api/v4/"
        );
        assert_eq!(
            ok(" https://gitlab.example.com/cix "),
            "https://gitlab.example.com/cix/api/v4/"
        );
        for bad in [
            "ftp://gitlab.example.com",
            "gitlab.example.com",
            "",
            "https://h/?a=1",
        ] {
            assert!(
                matches!(normalize_url(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn range_header_end() {
        assert_eq!(range_end("0-369"), Some(369));
        assert_eq!(range_end(" 0-11 "), Some(11));
        assert_eq!(range_end("bytes 0-5"), Some(5));
        assert_eq!(range_end("369"), None);
        assert_eq!(range_end("0-x"), None);
    }
}
