//! A fake GitLab coordinator on loopback, for tests and demos.
//!
//! It implements the runner API as `shared/reference/gitlab-api.md` describes it: runners and
//! tokens (registration tokens, `glrt-` tokens, managers by `system_id`), per-runner queue
//! versions with Workhorse-style long polling, `time_in_queue_seconds` measured on its own clock,
//! two-phase job commit, job states with
//! `Job-Status` on every job response, trace offsets with `416`, the final update checked against
//! the stored trace, cancellation (`canceling` when the runner declared `cancel_gracefully`),
//! rate limiting, artifacts (uploads checked as Workhorse and Rails check them, served back to
//! dependent jobs through a redirect to object storage on the same server; a job whose artifacts need
//! a feature its runner did not declare is dropped as `runner_unsupported`), and scriptable
//! [`Fault`]s. It can serve payloads GitLab's schema does not allow: a job's JSON with a member
//! replaced ([`JobTemplate::json_at`]), or a raw `201` body ([`FakeGitlab::answer_raw`]).
//!
//! It **records** every request ([`FakeGitlab::requests`]) and it is **strict**: protocol mistakes
//! a real GitLab might tolerate (a missing or wrong token header, a malformed `Content-Range`,
//! a patch after the final update, a final update before the trace is complete, a second final
//! update, ...) are recorded as [`Violation`]s; tests assert there are none.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use drover_gitlab::fake::{FakeGitlab, FakeOptions, JobTemplate};
//! let fake = FakeGitlab::start(FakeOptions::default()).await?;
//! let token = fake.create_runner_token();
//! let job = fake.enqueue_job(JobTemplate::new("build").script(["make"]));
//! // ... point a runner at fake.url() with `token` ...
//! assert!(fake.violations().is_empty());
//! # let _ = (token, job); Ok(()) }
//! ```

mod server;
mod state;
mod template;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use state::{
    JobStatus, JobView, ManagerView, RecordedRequest, RunnerView, StoredArtifact, UpdateRecord,
    Violation,
};
pub use template::{FAILURE_REASONS, JobTemplate};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The registration token accepted by `POST /runners`.
    pub registration_token: String,
    /// `false`: `POST /runners` answers `410 Gone`.
    pub registration_enabled: bool,
    /// How long a job request whose `last_update` is current is held before a bare `204`
    /// (Workhorse's long polling; 0 answers at once).
    pub long_poll: Duration,
    /// `X-GitLab-Trace-Update-Interval` on trace `202`s, in seconds.
    pub trace_update_interval: u64,
    /// `X-GitLab-Trace-Update-Interval` on a final update answered `202`, in seconds.
    pub final_update_interval: u64,
    /// Job requests per runner per minute before `429` (`None`: unlimited).
    pub job_request_rate_limit: Option<u32>,
    /// Serve HTTPS with a fresh self-signed CA ([`FakeGitlab::ca_pem`]).
    pub tls: bool,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Seeds the runner and job tokens the fake hands out: the same seed gives the same tokens
    /// (a test can be rerun and compared); fakes with different seeds give different ones, so
    /// tests running side by side get runners with different short tokens.
    pub token_seed: u64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            registration_token: "GR1348941fakeRegistrationToken".into(),
            registration_enabled: true,
            long_poll: Duration::from_secs(50),
            trace_update_interval: 3,
            final_update_interval: 1,
            job_request_rate_limit: None,
            tls: false,
            port: 0,
            token_seed: 0x006c_6162_f00d,
        }
    }
}

/// Which requests a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Any,
    Register,
    Verify,
    Unregister,
    UnregisterManager,
    ResetToken,
    JobRequest,
    /// `PUT /jobs/:id` with `state=running` (acceptance or keep-alive).
    JobUpdate,
    /// `PUT /jobs/:id` with a final state.
    FinalUpdate,
    TracePatch,
    /// `POST /jobs/:id/artifacts` (e.g. `413` too large, `405` artifacts disabled).
    ArtifactUpload,
    /// `GET /jobs/:id/artifacts`.
    ArtifactDownload,
    /// `GET /objects/...`: the object storage a direct download is redirected to.
    ObjectStorage,
}

/// A scripted misbehaviour, applied to the next `times` matching requests (in injection order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with `status` (e.g. 500, 503, 429) without processing the request.
    Status {
        route: Route,
        status: u16,
        times: u32,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
        /// `RateLimit-ResetTime` this far in the future.
        reset_in: Option<Duration>,
    },
    /// Wait before processing (and answering) the request. If the client gives up first, the
    /// request is never processed.
    Delay {
        route: Route,
        delay: Duration,
        times: u32,
    },
    /// Close the connection without answering and without processing.
    Drop { route: Route, times: u32 },
    /// Answer a final update `202` (trace not persisted yet) instead of accepting it.
    FinalNotCompleted { times: u32 },
    /// Answer a final update `412` and discard the stored trace (the runner must resend it all).
    TraceInvalid { times: u32 },
}

impl Fault {
    /// `times` × `status` on `route`.
    pub fn status(route: Route, status: u16, times: u32) -> Self {
        Fault::Status {
            route,
            status,
            times,
            retry_after: None,
            reset_in: None,
        }
    }

    /// `times` × `429` with `Retry-After: seconds` on `route`.
    pub fn rate_limited(route: Route, seconds: u64, times: u32) -> Self {
        Fault::Status {
            route,
            status: 429,
            times,
            retry_after: Some(seconds),
            reset_in: None,
        }
    }
}

/// The fake coordinator. Stops serving when dropped.
#[derive(Debug)]
pub struct FakeGitlab {
    shared: Arc<Shared>,
    url: String,
    ca_pem: Option<String>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<state::State>,
    /// Bumped on every change; long polls and [`FakeGitlab::wait_until`] follow it.
    changes: watch::Sender<u64>,
    /// Job requests held by the long poll right now.
    held: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

impl FakeGitlab {
    /// Starts serving on 127.0.0.1 in the current tokio runtime.
    pub async fn start(options: FakeOptions) -> std::io::Result<Self> {
        let tls = if options.tls {
            Some(server::TlsMaterial::generate()?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", addr.port());
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(state::State::new(options, url.clone())),
            changes: watch::Sender::new(0),
            held: AtomicUsize::new(0),
        });
        let server = tokio::spawn(server::serve(listener, tls, shared.clone()));
        Ok(FakeGitlab {
            shared,
            url,
            ca_pem,
            server,
        })
    }

    /// The GitLab URL to configure (`http://127.0.0.1:<port>`, no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// With [`FakeOptions::tls`]: the PEM of the CA that signed the fake's certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn registration_token(&self) -> String {
        self.shared.lock().options.registration_token.clone()
    }

    pub fn set_registration_enabled(&self, enabled: bool) {
        self.shared.lock().options.registration_enabled = enabled;
    }

    /// Creates a runner as GitLab's UI does and returns its `glrt-` token.
    pub fn create_runner_token(&self) -> String {
        let token = self
            .shared
            .lock()
            .create_runner("glrt-", "created in the UI", false);
        self.shared.changed();
        token
    }

    /// Rotates a runner's token as `reset_authentication_token` does (or token expiry): the old
    /// token stops working; returns the new one.
    pub fn rotate_runner_token(&self, token: &str) -> Option<String> {
        let rotated = self.shared.lock().rotate_token(token, "glrt-");
        self.shared.changed();
        rotated
    }

    /// Deletes a runner (as an admin would in the UI); its token stops working.
    pub fn delete_runner(&self, token: &str) -> bool {
        let removed = self.shared.lock().runners.remove(token).is_some();
        self.shared.changed();
        removed
    }

    /// Pauses or resumes a runner: a paused runner's job requests get `204`.
    pub fn set_runner_paused(&self, token: &str, paused: bool) {
        if let Some(r) = self.shared.lock().runners.get_mut(token) {
            r.paused = paused;
        }
        self.shared.changed();
    }

    pub fn runner(&self, token: &str) -> Option<RunnerView> {
        self.shared
            .lock()
            .runners
            .get(token)
            .map(state::Runner::view)
    }

    pub fn runners(&self) -> Vec<RunnerView> {
        self.shared
            .lock()
            .runners
            .values()
            .map(state::Runner::view)
            .collect()
    }

    /// Queues a job; returns its id.
    pub fn enqueue_job(&self, template: JobTemplate) -> u64 {
        let id = self.shared.lock().enqueue(template);
        self.shared.changed();
        id
    }

    /// Answers one of the next job requests (of any runner that is not paused) with `201` and
    /// `body` as it is, before any queued job: an answer that names no job, or garbage. Answers
    /// queue up in call order.
    pub fn answer_raw(&self, body: impl Into<Vec<u8>>) {
        self.shared.lock().push_raw_answer(body.into());
        self.shared.changed();
    }

    /// Job requests the long poll holds right now (each change is a change for
    /// [`FakeGitlab::wait_until`]): a test can wait until a runner is parked before it enqueues.
    pub fn held_requests(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Raw answers not served yet.
    pub fn pending_raw_answers(&self) -> usize {
        self.shared.lock().raw_answers.len()
    }

    pub fn job(&self, id: u64) -> Option<JobView> {
        self.shared.lock().jobs.get(&id).map(state::Job::view)
    }

    pub fn jobs(&self) -> Vec<JobView> {
        self.shared
            .lock()
            .jobs
            .values()
            .map(state::Job::view)
            .collect()
    }

    /// Cancels a job as a user would: a queued job is canceled at once; a running one becomes
    /// `canceling` if its runner declared `cancel_gracefully`, else `canceled`.
    pub fn cancel_job(&self, id: u64) {
        self.shared.lock().cancel(id);
        self.shared.changed();
    }

    /// Drops stored trace bytes beyond `len`, as if GitLab lost chunks: the runner's next patch
    /// gets `416` and must rewind.
    pub fn truncate_trace(&self, id: u64, len: usize) {
        if let Some(job) = self.shared.lock().jobs.get_mut(&id) {
            job.trace.truncate(len);
        }
        self.shared.changed();
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.lock().faults.clone()
    }

    /// The artifacts a job uploaded, in upload order.
    pub fn artifacts(&self, job: u64) -> Vec<StoredArtifact> {
        self.shared.lock().stored_artifacts(job)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Protocol violations seen so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().violations.clone()
    }

    /// Waits until `condition` holds (checked after every change), or `timeout` passes.
    /// Returns whether it holds.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&FakeGitlab) -> bool,
    ) -> bool {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if condition(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return condition(self),
            }
        }
    }
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.server.abort();
    }
}
