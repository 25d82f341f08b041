//! The fake's model of GitLab: runners, managers, jobs, traces, and the synchronous part of every
//! endpoint (everything but waiting).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

mod artifacts;

pub use artifacts::StoredArtifact;

use super::template::JobTemplate;
use super::{FakeOptions, Fault, Route};
use crate::api::{self, FeaturesInfo, JobResponse};

/// One request as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// When it arrived (tokio time, so virtual under `tokio::time::pause`).
    pub at: Instant,
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; `None` while in flight or when the connection was dropped.
    pub status: Option<u16>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A protocol mistake by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index into [`super::FakeGitlab::requests`].
    pub request: usize,
    pub method: String,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request #{} {} {}: {}",
            self.request, self.method, self.path, self.message
        )
    }
}

/// A job's status in the fake's GitLab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Queued, or assigned and not yet accepted (two-phase commit).
    Pending,
    Running,
    Canceling,
    Canceled,
    Success,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Canceled | JobStatus::Success | JobStatus::Failed
        )
    }
}

/// A `PUT /jobs/:id` the fake processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRecord {
    pub state: String,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub checksum: Option<String>,
    pub bytesize: Option<u64>,
    /// The status answered.
    pub status: u16,
}

/// A snapshot of a job.
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: u64,
    pub token: String,
    pub status: JobStatus,
    /// Taken by a runner (pending or not).
    pub assigned: bool,
    /// Acknowledged by the runner (`state=running`).
    pub accepted: bool,
    pub runner_token: Option<String>,
    pub system_id: Option<String>,
    pub trace: Vec<u8>,
    pub patches: u32,
    pub updates: Vec<UpdateRecord>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    /// Final updates answered `200`.
    pub final_updates_accepted: u32,
    pub response: JobResponse,
    /// When the job entered the queue, on the fake's clock.
    pub enqueued_at: Instant,
    /// When a runner picked it (the last time, if it was handed out again).
    pub picked_at: Option<Instant>,
    /// When it turned `running`: the runner's acknowledgement (two-phase commit) or, without it,
    /// the pick. GitLab's `started_at`.
    pub started_at: Option<Instant>,
}

impl JobView {
    /// `crc32:%08x` of the stored trace.
    pub fn trace_checksum(&self) -> String {
        format!("crc32:{:08x}", crc32fast::hash(&self.trace))
    }
}

/// A runner manager (one per `system_id`).
#[derive(Debug, Clone)]
pub struct ManagerView {
    pub system_id: String,
    pub features: FeaturesInfo,
    pub executor: String,
}

/// A snapshot of a runner.
#[derive(Debug, Clone)]
pub struct RunnerView {
    pub id: u64,
    pub token: String,
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: Option<bool>,
    pub locked: Option<bool>,
    pub access_level: String,
    pub maximum_timeout: u64,
    pub paused: bool,
    /// Registered with a registration token (`glrtr-`), not created in the UI.
    pub registered: bool,
    pub managers: Vec<ManagerView>,
}

#[derive(Debug)]
pub(crate) struct Runner {
    id: u64,
    token: String,
    description: String,
    tags: Vec<String>,
    run_untagged: Option<bool>,
    locked: Option<bool>,
    access_level: String,
    maximum_timeout: u64,
    pub(crate) paused: bool,
    registered: bool,
    managers: BTreeMap<String, ManagerView>,
    queue_version: String,
    rate_window: Option<(Instant, u32)>,
}

impl Runner {
    pub(crate) fn view(&self) -> RunnerView {
        RunnerView {
            id: self.id,
            token: self.token.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            run_untagged: self.run_untagged,
            locked: self.locked,
            access_level: self.access_level.clone(),
            maximum_timeout: self.maximum_timeout,
            paused: self.paused,
            registered: self.registered,
            managers: self.managers.values().cloned().collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    id: u64,
    token: String,
    response: JobResponse,
    status: JobStatus,
    accepted: bool,
    runner: Option<String>,
    manager: Option<String>,
    graceful: bool,
    pub(crate) trace: Vec<u8>,
    patches: u32,
    cancel_after_patches: Option<u32>,
    only_runner: Option<String>,
    /// What a job request that picks the job answers (the payload after the template's edits).
    served: Value,
    updates: Vec<UpdateRecord>,
    final_accepted: u32,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
    enqueued_at: Instant,
    /// `false`: the template pins `job_info.time_in_queue_seconds`.
    live_time_in_queue: bool,
    picked_at: Option<Instant>,
    started_at: Option<Instant>,
}

impl Job {
    pub(crate) fn view(&self) -> JobView {
        JobView {
            id: self.id,
            token: self.token.clone(),
            status: self.status,
            assigned: self.runner.is_some(),
            accepted: self.accepted,
            runner_token: self.runner.clone(),
            system_id: self.manager.clone(),
            trace: self.trace.clone(),
            patches: self.patches,
            updates: self.updates.clone(),
            failure_reason: self.failure_reason.clone(),
            exit_code: self.exit_code,
            final_updates_accepted: self.final_accepted,
            response: self.response.clone(),
            enqueued_at: self.enqueued_at,
            picked_at: self.picked_at,
            started_at: self.started_at,
        }
    }
}

/// An answer to send.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn json(status: u16, value: &Value) -> Self {
        Reply::new(status)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    fn message(status: u16, message: &str) -> Self {
        Reply::json(status, &json!({ "message": message }))
    }

    /// GitLab's job endpoints answer the status code as a text body.
    fn text_status(status: u16) -> Self {
        Reply::new(status)
            .header("Content-Type", "text/plain")
            .body(status.to_string().into_bytes())
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    fn job_status(self, status: JobStatus) -> Self {
        self.header("Job-Status", status.as_str())
    }
}

/// A parsed request, as the handlers see it.
pub(crate) struct Request<'a> {
    pub index: usize,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(self.body).ok()
    }

    fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// What a fault asks the server to do.
pub(crate) enum FaultAction {
    Respond(Reply),
    Delay(Duration),
    Drop,
}

pub(crate) struct State {
    pub options: FakeOptions,
    url: String,
    pub runners: BTreeMap<String, Runner>,
    next_runner_id: u64,
    pub jobs: BTreeMap<u64, Job>,
    queue: VecDeque<u64>,
    next_job_id: u64,
    version_counter: u64,
    pub faults: Vec<Fault>,
    /// Bodies of `201` answers to the next job requests, before any queued job.
    pub raw_answers: VecDeque<Vec<u8>>,
    pub requests: Vec<RecordedRequest>,
    pub violations: Vec<Violation>,
    rng: StdRng,
    /// Uploaded artifacts by job id.
    artifacts: BTreeMap<u64, Vec<StoredArtifact>>,
    /// Object storage behind direct downloads, by key.
    objects: BTreeMap<String, Vec<u8>>,
    object_counter: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("url", &self.url)
            .field("runners", &self.runners.len())
            .field("jobs", &self.jobs.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";

impl State {
    pub(crate) fn new(options: FakeOptions, url: String) -> Self {
        // Deterministic tokens: a test can be rerun and compared.
        let rng = StdRng::seed_from_u64(options.token_seed);
        State {
            options,
            url,
            runners: BTreeMap::new(),
            next_runner_id: 1,
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            next_job_id: 1001,
            version_counter: 0,
            faults: Vec::new(),
            raw_answers: VecDeque::new(),
            requests: Vec::new(),
            violations: Vec::new(),
            rng,
            artifacts: BTreeMap::new(),
            objects: BTreeMap::new(),
            object_counter: 0,
        }
    }

    fn random_token(&mut self, prefix: &str) -> String {
        let body: String = (0..20)
            .map(|_| TOKEN_ALPHABET[self.rng.random_range(0..TOKEN_ALPHABET.len())] as char)
            .collect();
        format!("{prefix}{body}")
    }

    fn next_version(&mut self) -> String {
        self.version_counter += 1;
        format!(
            "{:032x}",
            u128::from(self.version_counter)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        )
    }

    pub(crate) fn create_runner(
        &mut self,
        prefix: &str,
        description: &str,
        registered: bool,
    ) -> String {
        let token = self.random_token(prefix);
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let queue_version = self.next_version();
        self.runners.insert(
            token.clone(),
            Runner {
                id,
                token: token.clone(),
                description: description.into(),
                tags: Vec::new(),
                run_untagged: None,
                locked: None,
                access_level: String::new(),
                maximum_timeout: 0,
                paused: false,
                registered,
                managers: BTreeMap::new(),
                queue_version,
                rate_window: None,
            },
        );
        token
    }

    pub(crate) fn enqueue(&mut self, template: JobTemplate) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let token = self.random_token("glcbt-64_");
        let response = template.instantiate(id, &token, &self.url);
        let served = template.served(&response);
        self.jobs.insert(
            id,
            Job {
                id,
                token,
                response,
                status: JobStatus::Pending,
                accepted: false,
                runner: None,
                manager: None,
                graceful: false,
                trace: Vec::new(),
                patches: 0,
                cancel_after_patches: template.cancel_after_patches,
                only_runner: template.runner_token.clone(),
                served,
                updates: Vec::new(),
                final_accepted: 0,
                failure_reason: None,
                exit_code: None,
                enqueued_at: Instant::now(),
                live_time_in_queue: template.live_time_in_queue(),
                picked_at: None,
                started_at: None,
            },
        );
        self.queue.push_back(id);
        self.bump_queues(template.runner_token.as_deref());
        id
    }

    /// Queues a raw answer; like a new job, it ends the long polls of every runner.
    pub(crate) fn push_raw_answer(&mut self, body: Vec<u8>) {
        self.raw_answers.push_back(body);
        self.bump_queues(None);
    }

    /// A new queue version for the runners that could take a new job.
    fn bump_queues(&mut self, only: Option<&str>) {
        let tokens: Vec<String> = self
            .runners
            .keys()
            .filter(|t| only.is_none_or(|o| o == t.as_str()))
            .cloned()
            .collect();
        for token in tokens {
            let version = self.next_version();
            if let Some(r) = self.runners.get_mut(&token) {
                r.queue_version = version;
            }
        }
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        match job.status {
            JobStatus::Pending if job.runner.is_none() => {
                job.status = JobStatus::Canceled;
                self.queue.retain(|j| *j != id);
            }
            JobStatus::Pending | JobStatus::Running => {
                job.status = if job.graceful {
                    JobStatus::Canceling
                } else {
                    JobStatus::Canceled
                };
            }
            _ => {}
        }
    }

    // ---- recording and strictness -------------------------------------------------------

    pub(crate) fn record(&mut self, request: RecordedRequest) -> usize {
        self.requests.push(request);
        self.requests.len() - 1
    }

    pub(crate) fn answered(&mut self, index: usize, status: Option<u16>) {
        if let Some(r) = self.requests.get_mut(index) {
            r.status = status;
        }
    }

    fn violate(&mut self, req: &Request<'_>, message: impl Into<String>) {
        self.violations.push(Violation {
            request: req.index,
            method: req.method.to_owned(),
            path: req.path.to_owned(),
            message: message.into(),
        });
    }

    /// Checks every request must pass, whatever the endpoint.
    pub(crate) fn check_common(&mut self, req: &Request<'_>) {
        if req.header("user-agent").is_none_or(str::is_empty) {
            self.violate(req, "no User-Agent header");
        }
        let id_ok = req
            .header("x-request-id")
            .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        if !id_ok {
            self.violate(req, "X-Request-Id must be a new 32-hex correlation id");
        }
    }

    fn check_json_request(&mut self, req: &Request<'_>) -> Option<Value> {
        if req.header("content-type") != Some("application/json") {
            self.violate(
                req,
                "a JSON body must be sent with Content-Type: application/json",
            );
        }
        let value = req.json();
        if value.is_none() {
            self.violate(req, "the body is not JSON");
        }
        value
    }

    fn check_runner_header(&mut self, req: &Request<'_>, body_token: &str) {
        match req.header("runner-token") {
            None => self.violate(req, "no RUNNER-TOKEN header"),
            Some(h) if h != body_token => {
                self.violate(req, "RUNNER-TOKEN header differs from the body token")
            }
            Some(_) => {}
        }
    }

    // ---- faults -----------------------------------------------------------------------------

    /// The first pending transport-level fault (status, delay, drop) for `route`, used up by one.
    pub(crate) fn take_fault(&mut self, route: Route) -> Option<FaultAction> {
        let matches = |r: &Route| *r == Route::Any || *r == route;
        let pos = self.faults.iter().position(|f| match f {
            Fault::Status { route, .. }
            | Fault::Delay { route, .. }
            | Fault::Drop { route, .. } => matches(route),
            Fault::FinalNotCompleted { .. } | Fault::TraceInvalid { .. } => false,
        })?;
        let action = match &self.faults[pos] {
            Fault::Status {
                status,
                retry_after,
                reset_in,
                ..
            } => {
                let mut reply = Reply::message(*status, &format!("{status} (injected fault)"));
                if let Some(s) = retry_after {
                    reply = reply.header("Retry-After", s.to_string());
                }
                if let Some(d) = reset_in {
                    let at =
                        chrono::Utc::now() + chrono::Duration::from_std(*d).unwrap_or_default();
                    reply = reply.header(
                        "RateLimit-ResetTime",
                        at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                    );
                }
                FaultAction::Respond(reply)
            }
            Fault::Delay { delay, .. } => FaultAction::Delay(*delay),
            _ => FaultAction::Drop,
        };
        self.use_fault(pos);
        Some(action)
    }

    fn use_fault(&mut self, pos: usize) {
        let done = match &mut self.faults[pos] {
            Fault::Status { times, .. }
            | Fault::Delay { times, .. }
            | Fault::Drop { times, .. }
            | Fault::FinalNotCompleted { times }
            | Fault::TraceInvalid { times } => {
                *times = times.saturating_sub(1);
                *times == 0
            }
        };
        if done {
            self.faults.remove(pos);
        }
    }

    fn take_final_fault(&mut self) -> Option<Fault> {
        let pos = self.faults.iter().position(|f| {
            matches!(
                f,
                Fault::FinalNotCompleted { .. } | Fault::TraceInvalid { .. }
            )
        })?;
        let fault = self.faults[pos].clone();
        self.use_fault(pos);
        Some(fault)
    }

    pub(crate) fn unknown_endpoint(&mut self, req: &Request<'_>) {
        self.violate(req, "no such endpoint in GitLab's runner API");
    }

    // ---- runner endpoints -------------------------------------------------------------------

    pub(crate) fn register(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        self.check_runner_header(req, &token);
        if token.is_empty() {
            return Reply::json(400, &json!({ "error": "token is missing" }));
        }
        if !self.options.registration_enabled {
            return Reply::message(410, "410 Gone - runner registration disallowed");
        }
        if token != self.options.registration_token {
            return Reply::message(403, "403 Forbidden");
        }
        let description = body["description"].as_str().unwrap_or_default().to_owned();
        let new_token = self.create_runner("glrtr-", &description, true);
        let runner = self.runners.get_mut(&new_token).expect("just created");
        runner.tags = body["tag_list"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        runner.run_untagged = body["run_untagged"].as_bool();
        runner.locked = body["locked"].as_bool();
        runner.access_level = body["access_level"].as_str().unwrap_or_default().to_owned();
        runner.maximum_timeout = body["maximum_timeout"].as_u64().unwrap_or(0);
        runner.paused = body["paused"].as_bool().unwrap_or(false);
        Reply::json(
            201,
            &json!({ "id": runner.id, "token": new_token, "token_expires_at": null }),
        )
    }

    /// Authenticates a runner endpoint from the body token; records the manager like GitLab's
    /// `ensure_manager` when `heartbeat` is set.
    fn runner_auth(
        &mut self,
        req: &Request<'_>,
        body: &Value,
        heartbeat: bool,
    ) -> Result<String, Reply> {
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        self.check_runner_header(req, &token);
        if token.is_empty() {
            return Err(Reply::json(400, &json!({ "error": "token is missing" })));
        }
        let Some(runner) = self.runners.get_mut(&token) else {
            return Err(Reply::message(403, "403 Forbidden"));
        };
        if heartbeat {
            let system_id = body["system_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("<legacy>")
                .to_owned();
            let info: api::RunnerInfo =
                api::decode(body["info"].to_string().as_bytes()).unwrap_or_default();
            let manager = runner
                .managers
                .entry(system_id.clone())
                .or_insert_with(|| ManagerView {
                    system_id,
                    features: FeaturesInfo::default(),
                    executor: String::new(),
                });
            if body.get("info").is_some_and(Value::is_object) {
                manager.features = info.features;
                manager.executor = info.executor;
            }
        }
        Ok(token)
    }

    pub(crate) fn verify(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        match self.runner_auth(req, &body, true) {
            Err(reply) => reply,
            Ok(token) => {
                let id = self.runners[&token].id;
                Reply::json(
                    200,
                    &json!({ "id": id, "token": token, "token_expires_at": null }),
                )
            }
        }
    }

    pub(crate) fn unregister(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        match self.runner_auth(req, &body, false) {
            Err(reply) => reply,
            Ok(token) => {
                self.runners.remove(&token);
                Reply::new(204)
            }
        }
    }

    pub(crate) fn unregister_manager(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        let token = match self.runner_auth(req, &body, false) {
            Err(reply) => return reply,
            Ok(token) => token,
        };
        let Some(system_id) = body["system_id"].as_str().filter(|s| !s.is_empty()) else {
            return Reply::message(400, "400 Bad request - system_id is missing");
        };
        match self
            .runners
            .get_mut(&token)
            .and_then(|r| r.managers.remove(system_id))
        {
            Some(_) => Reply::new(204),
            None => Reply::message(404, "404 Runner manager not found"),
        }
    }

    /// Gives a runner a new token; the old one stops working.
    pub(super) fn rotate_token(&mut self, token: &str, prefix: &str) -> Option<String> {
        let mut runner = self.runners.remove(token)?;
        let new_token = self.random_token(prefix);
        runner.token = new_token.clone();
        self.runners.insert(new_token.clone(), runner);
        Some(new_token)
    }

    pub(crate) fn reset_token(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        let token = match self.runner_auth(req, &body, true) {
            Err(reply) => return reply,
            Ok(token) => token,
        };
        let prefix = if token.starts_with("glrtr-") {
            "glrtr-"
        } else {
            "glrt-"
        };
        let new_token = self.random_token(prefix);
        if let Some(mut runner) = self.runners.remove(&token) {
            runner.token = new_token.clone();
            self.runners.insert(new_token.clone(), runner);
        }
        Reply::json(
            201,
            &json!({ "token": new_token, "token_expires_at": null }),
        )
    }

    // ---- job requests -------------------------------------------------------------------------

    /// For Workhorse's long poll: the runner's current queue version, if the request may be held
    /// (a known token and a non-empty `last_update`).
    pub(crate) fn queue_version(&self, body: &Value) -> Option<String> {
        let token = body["token"].as_str()?;
        body["last_update"].as_str().filter(|s| !s.is_empty())?;
        self.runners.get(token).map(|r| r.queue_version.clone())
    }

    pub(crate) fn request_job(&mut self, req: &Request<'_>) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::message(400, "400 Bad request");
        };
        if let Some(limit) = self.options.job_request_rate_limit {
            let token = body["token"].as_str().unwrap_or_default();
            if let Some(runner) = self.runners.get_mut(token) {
                let now = Instant::now();
                let window = match runner.rate_window {
                    Some((start, n)) if now.duration_since(start) < Duration::from_secs(60) => {
                        (start, n + 1)
                    }
                    _ => (now, 1),
                };
                runner.rate_window = Some(window);
                if window.1 > limit {
                    let left = Duration::from_secs(60).saturating_sub(now.duration_since(window.0));
                    return Reply::message(429, "429 Too Many Requests")
                        .header("Retry-After", left.as_secs().max(1).to_string());
                }
            }
        }
        let token = match self.runner_auth(req, &body, true) {
            Err(reply) => return reply,
            Ok(token) => token,
        };
        let system_id = body["system_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<legacy>")
            .to_owned();
        let runner = &self.runners[&token];
        let version = runner.queue_version.clone();
        if runner.paused {
            return Reply::new(204).header("X-GitLab-Last-Update", version);
        }
        if let Some(body) = self.raw_answers.pop_front() {
            return Reply::new(201)
                .header("Content-Type", "application/json")
                .body(body);
        }
        let features = runner
            .managers
            .get(&system_id)
            .map(|m| m.features.clone())
            .unwrap_or_default();
        let id = loop {
            let pick = self.queue.iter().position(|id| {
                self.jobs
                    .get(id)
                    .is_some_and(|j| j.only_runner.as_deref().is_none_or(|t| t == token))
            });
            let Some(pos) = pick else {
                return Reply::new(204).header("X-GitLab-Last-Update", version);
            };
            let id = self.queue.remove(pos).expect("position is in range");
            // GitLab drops a job that needs a feature the runner did not declare, and looks on.
            if !supports(&features, &self.jobs[&id].response) {
                let job = self.jobs.get_mut(&id).expect("queued jobs exist");
                job.status = JobStatus::Failed;
                job.failure_reason = Some("runner_unsupported".into());
                continue;
            }
            break id;
        };
        // GitLab fills in the dependencies' archives when it hands the job out.
        let files: Vec<_> = self.jobs[&id]
            .response
            .dependencies
            .iter()
            .map(|d| self.artifacts_file(d.id))
            .collect();
        let job = self.jobs.get_mut(&id).expect("queued jobs exist");
        for (i, (dependency, file)) in job.response.dependencies.iter_mut().zip(files).enumerate() {
            dependency.artifacts_file = file;
            // The served payload too, unless the template's edits took the entry away.
            if let Some(Value::Object(served)) =
                job.served.pointer_mut(&format!("/dependencies/{i}"))
            {
                match &dependency.artifacts_file {
                    Some(file) => {
                        served.insert("artifacts_file".into(), json!(file));
                    }
                    None => {
                        served.remove("artifacts_file");
                    }
                }
            }
        }
        // GitLab's `time_in_queue_seconds`: from the enqueue to this pick.
        let now = Instant::now();
        job.picked_at = Some(now);
        if job.live_time_in_queue {
            let seconds = now.duration_since(job.enqueued_at).as_secs_f64();
            job.response.job_info.time_in_queue_seconds = seconds;
            if let Some(slot) = job.served.pointer_mut("/job_info/time_in_queue_seconds") {
                *slot = json!(seconds);
            }
        }
        job.runner = Some(token);
        job.manager = Some(system_id);
        job.graceful = features.cancel_gracefully;
        if features.two_phase_job_commit {
            job.accepted = false;
        } else {
            job.accepted = true;
            job.status = JobStatus::Running;
            job.started_at = Some(now);
        }
        Reply::json(201, &job.served)
    }

    // ---- job endpoints ------------------------------------------------------------------------

    /// Finds the job and checks the `JOB-TOKEN` header; `Err` is GitLab's `403` without
    /// `Job-Status` (unknown job or token).
    fn job_auth(
        &mut self,
        req: &Request<'_>,
        id: u64,
        body_token: Option<&str>,
    ) -> Result<(), Reply> {
        let header = req.header("job-token").map(str::to_owned);
        match (&header, body_token) {
            (None, _) => self.violate(req, "no JOB-TOKEN header"),
            (Some(h), Some(b)) if h != b => {
                self.violate(req, "JOB-TOKEN header differs from the body token")
            }
            _ => {}
        }
        let presented = body_token
            .map(str::to_owned)
            .or(header)
            .or_else(|| req.query_param("token").map(str::to_owned));
        match self.jobs.get(&id) {
            Some(job) if Some(job.token.as_str()) == presented.as_deref() => Ok(()),
            _ => Err(Reply::message(403, "403 Forbidden")),
        }
    }

    pub(crate) fn update_job(&mut self, req: &Request<'_>, id: u64) -> Reply {
        let Some(body) = self.check_json_request(req) else {
            return Reply::text_status(400);
        };
        if let Err(reply) = self.job_auth(req, id, body["token"].as_str()) {
            return reply;
        }
        let state = body["state"].as_str().unwrap_or_default().to_owned();
        let record = |status: u16| UpdateRecord {
            state: state.clone(),
            failure_reason: body["failure_reason"].as_str().map(str::to_owned),
            exit_code: body["exit_code"].as_i64(),
            checksum: body["output"]["checksum"].as_str().map(str::to_owned),
            bytesize: body["output"]["bytesize"].as_u64(),
            status,
        };
        let is_final = matches!(state.as_str(), "success" | "failed");
        let job = self.jobs.get(&id).expect("authenticated");
        let (status, accepted, final_accepted) = (job.status, job.accepted, job.final_accepted);

        if status.is_finished() {
            if is_final && final_accepted > 0 {
                self.violate(
                    req,
                    "a second final update for a job whose final update was accepted",
                );
            }
            return self.job_reply(
                id,
                Reply::message(403, "403 Forbidden - Job is not processing on runner"),
                record(403),
            );
        }
        if status == JobStatus::Pending && !accepted {
            if job.runner.is_none() {
                return self.job_reply(
                    id,
                    Reply::message(403, "403 Forbidden - Job is not processing on runner"),
                    record(403),
                );
            }
            return match state.as_str() {
                "running" => {
                    let job = self.jobs.get_mut(&id).expect("authenticated");
                    job.accepted = true;
                    job.status = JobStatus::Running;
                    job.started_at.get_or_insert_with(Instant::now);
                    self.job_reply(id, Reply::text_status(200), record(200))
                }
                "pending" => self.job_reply(id, Reply::text_status(200), record(200)),
                _ => {
                    self.violate(
                        req,
                        format!("state={state} before the job was accepted (two-phase commit)"),
                    );
                    self.job_reply(id, Reply::text_status(400), record(400))
                }
            };
        }
        // Running or canceling (a job canceled between assignment and acceptance is accepted
        // here and learns of the cancel from Job-Status).
        if state == "running" {
            self.jobs.get_mut(&id).expect("authenticated").accepted = true;
        }
        match state.as_str() {
            "running" => self.job_reply(id, Reply::text_status(200), record(200)),
            "pending" => self.job_reply(id, Reply::text_status(409), record(409)),
            "success" | "failed" => self.final_update(req, id, &body, record),
            _ => {
                self.violate(req, format!("unsupported state {state:?}"));
                self.job_reply(id, Reply::text_status(400), record(400))
            }
        }
    }

    fn final_update(
        &mut self,
        req: &Request<'_>,
        id: u64,
        body: &Value,
        record: impl Fn(u16) -> UpdateRecord,
    ) -> Reply {
        let checksum = body["output"]["checksum"].as_str().map(str::to_owned);
        let bytesize = body["output"]["bytesize"].as_u64();
        if checksum.is_none() {
            self.violate(req, "final update without output.checksum");
        }
        if body["checksum"].as_str() != checksum.as_deref() {
            self.violate(
                req,
                "the deprecated checksum field differs from output.checksum",
            );
        }
        if body.get("exit_code").is_some_and(|c| c.as_i64() == Some(0)) {
            self.violate(req, "exit_code 0 must be omitted");
        }
        if body["state"] == "success" && body.get("failure_reason").is_some() {
            self.violate(req, "a successful job with a failure_reason");
        }
        match self.take_final_fault() {
            Some(Fault::TraceInvalid { .. }) => {
                self.jobs.get_mut(&id).expect("authenticated").trace.clear();
                return self.job_reply(id, Reply::text_status(412), record(412));
            }
            Some(_) => {
                let interval = self.options.final_update_interval.to_string();
                let reply =
                    Reply::text_status(202).header("X-GitLab-Trace-Update-Interval", interval);
                return self.job_reply(id, reply, record(202));
            }
            None => {}
        }
        let stored = self.jobs[&id].trace.clone();
        let declared = bytesize.unwrap_or(0);
        if declared > stored.len() as u64 {
            self.violate(
                req,
                format!(
                    "final update before the trace is complete: it declares {declared} bytes, GitLab holds {}",
                    stored.len()
                ),
            );
            let interval = self.options.final_update_interval.to_string();
            let reply = Reply::text_status(202).header("X-GitLab-Trace-Update-Interval", interval);
            return self.job_reply(id, reply, record(202));
        }
        let actual = format!("crc32:{:08x}", crc32fast::hash(&stored));
        if declared != stored.len() as u64 || checksum.as_deref() != Some(actual.as_str()) {
            self.violate(
                req,
                format!(
                    "final output {:?}/{declared} bytes does not match the stored trace {actual}/{} bytes",
                    checksum.unwrap_or_default(),
                    stored.len()
                ),
            );
        }
        let job = self.jobs.get_mut(&id).expect("authenticated");
        job.status = match (job.status, body["state"].as_str()) {
            (JobStatus::Canceling, _) => JobStatus::Canceled,
            (_, Some("success")) => JobStatus::Success,
            _ => JobStatus::Failed,
        };
        job.failure_reason = body["failure_reason"].as_str().map(str::to_owned);
        job.exit_code = body["exit_code"].as_i64();
        job.final_accepted += 1;
        self.job_reply(id, Reply::text_status(200), record(200))
    }

    fn job_reply(&mut self, id: u64, reply: Reply, record: UpdateRecord) -> Reply {
        let job = self
            .jobs
            .get_mut(&id)
            .expect("callers checked the job exists");
        job.updates.push(record);
        reply.job_status(job.status)
    }

    pub(crate) fn patch_trace(&mut self, req: &Request<'_>, id: u64) -> Reply {
        if let Err(reply) = self.job_auth(req, id, None) {
            return reply;
        }
        let job = &self.jobs[&id];
        let (status, accepted, final_accepted, size) = (
            job.status,
            job.accepted,
            job.final_accepted,
            job.trace.len(),
        );
        if final_accepted > 0 {
            self.violate(req, "a trace patch after the final update");
            return Reply::message(403, "403 Forbidden - Job is not processing on runner")
                .job_status(status);
        }
        if status == JobStatus::Pending && !accepted && job.runner.is_some() {
            self.violate(
                req,
                "a trace patch before the job was accepted (two-phase commit)",
            );
        }
        if !matches!(status, JobStatus::Running | JobStatus::Canceling) {
            return Reply::message(403, "403 Forbidden - Job is not processing on runner")
                .job_status(status);
        }
        let Some(range) = req.header("content-range") else {
            self.violate(req, "no Content-Range header");
            return Reply::message(400, "400 Missing header Content-Range");
        };
        let parsed = range.split_once('-').and_then(|(s, e)| {
            let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            (digits(s) && digits(e)).then(|| (s.parse::<u64>().ok(), e.parse::<u64>().ok()))
        });
        let Some((Some(start), Some(end))) = parsed else {
            self.violate(
                req,
                format!("malformed Content-Range {range:?} (expected <start>-<end>)"),
            );
            return Reply::message(400, "400 Bad request - malformed Content-Range");
        };
        if req.body.is_empty() {
            self.violate(req, "an empty trace patch");
        } else if end != start + req.body.len() as u64 - 1 {
            self.violate(
                req,
                format!(
                    "Content-Range {range} does not match the {} bytes sent (end is inclusive)",
                    req.body.len()
                ),
            );
        }
        if req.body.len() > 1024 * 1024 {
            self.violate(req, "a trace patch over 1 MiB");
        }
        if req.header("content-type") != Some("text/plain") {
            self.violate(req, "a trace patch must be sent as text/plain");
        }
        if start != size as u64 {
            return Reply::message(416, "416 Range Not Satisfiable")
                .header("Range", format!("0-{size}"))
                .job_status(status);
        }
        let job = self.jobs.get_mut(&id).expect("authenticated");
        job.trace.extend_from_slice(req.body);
        job.patches += 1;
        let new_size = job.trace.len();
        if job.cancel_after_patches == Some(job.patches) {
            self.cancel(id);
        }
        let status = self.jobs[&id].status;
        Reply::new(202)
            .header("Range", format!("0-{new_size}"))
            .header(
                "X-GitLab-Trace-Update-Interval",
                self.options.trace_update_interval.to_string(),
            )
            .job_status(status)
    }
}

/// GitLab's `pre_assign_runner_checks` for artifacts and caches: reports need
/// `upload_multiple_artifacts`, `exclude` needs `artifacts_exclude`, `cache:fallback_keys` needs
/// `fallback_cache_keys`.
fn supports(features: &FeaturesInfo, job: &JobResponse) -> bool {
    job.artifacts.iter().all(|a| {
        (a.artifact_type.is_empty()
            || a.artifact_type == "archive"
            || features.upload_multiple_artifacts)
            && (a.exclude.is_empty() || features.artifacts_exclude)
    }) && job
        .cache
        .iter()
        .all(|c| c.fallback_keys.is_empty() || features.fallback_cache_keys)
}
