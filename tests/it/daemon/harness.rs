//! The end-to-end harness: a fake GitLab in the test process, the real `drover` binary as a child
//! process, the real Docker engine.
//!
//! Every test gets its own fake (with its own token seed, so its runner has its own short token and
//! machine prefix), its own temp dir with `config.toml` and the state directory, and its own drover.
//! Conditions are waited for by polling with a deadline (the fake's change notifications, the
//! engine's lists, `status.json`), never by sleeping a fixed time. [`Env::finish`] ends every test
//! the same way: a drained shutdown, nothing of the test's prefix left on the engine, no protocol
//! violation at the fake, no secret in the daemon's log. When a test fails, [`Env`]'s `Drop` prints
//! the daemon's logs, kills it and removes what it left on the engine.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use drover_docker::testing::{BUSYBOX_IMAGE, engine_for_tests};
use drover_gitlab::fake::{FakeGitlab, FakeOptions, JobStatus, JobTemplate, JobView, UpdateRecord};
use tokio::process::{Child, Command};

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What the test's `config.toml` says.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `executor = "docker+machine"` with `Provider = "docker"`; else `executor = "docker"`.
    pub pool: bool,
    pub concurrent: u32,
    pub limit: u32,
    pub idle_count: u32,
    /// Seconds.
    pub idle_time: u32,
    pub max_builds: u32,
    /// Seconds between job requests (`check_interval`).
    pub check_interval: u32,
    /// Seconds.
    pub shutdown_timeout: u32,
    /// `[machine.shutdown_drain] enabled`.
    pub drain: bool,
    /// `log_format = "json"`.
    pub json_logs: bool,
    /// The runner's `[runners.docker] image`: each sandbox is made with it.
    pub image: String,
    /// More `[runners.docker]` lines, e.g. `volumes = ["/cache"]`.
    pub docker_extra: String,
    /// More sections of the runner, at the end of the file, e.g. `[runners.cache]`.
    pub runner_extra: String,
    /// More environment variables of the daemon, e.g. where its AWS API is.
    pub env: Vec<(String, String)>,
    /// The fake GitLab's long-poll hold (Workhorse's; zero: a GitLab without long polling).
    pub long_poll: Duration,
}

impl Settings {
    /// An autoscaled pool of Docker sandboxes, created on demand.
    pub fn pool() -> Settings {
        Settings {
            pool: true,
            concurrent: 4,
            limit: 4,
            idle_count: 0,
            idle_time: 600,
            max_builds: 0,
            check_interval: 1,
            shutdown_timeout: 30,
            drain: true,
            json_logs: false,
            image: BUSYBOX_IMAGE.to_string(),
            docker_extra: String::new(),
            runner_extra: String::new(),
            env: Vec::new(),
            long_poll: Duration::from_secs(10),
        }
    }

    /// GitLab's plain docker executor: jobs on the local engine, no machines.
    pub fn docker() -> Settings {
        Settings {
            pool: false,
            ..Settings::pool()
        }
    }
}

/// A job for the test image that does not fetch sources (there is no repository to clone).
pub fn job(name: &str, script: &[&str]) -> JobTemplate {
    JobTemplate::new(name)
        .image(BUSYBOX_IMAGE)
        .variable("GIT_STRATEGY", "none")
        .script(script.iter().copied())
}

/// What the engine holds of one test's runner.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Objects {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}

/// One test's world.
pub struct Env {
    pub fake: FakeGitlab,
    /// The runner's token (`glrt-…`).
    pub token: String,
    /// The runner's machine key (from the fake's URL and the test's name): the `drover.runner`
    /// label and the machine prefix.
    pub short: String,
    pub name: String,
    pub docker: Docker,
    pub settings: Settings,
    dir: tempfile::TempDir,
    child: Option<Child>,
    logs: Vec<PathBuf>,
    born: Instant,
}

impl Env {
    /// The world of the test `name`; `None` when there is no Docker engine and CI is not set (the
    /// test returns early; in CI a missing engine panics).
    pub async fn new(name: &str, settings: Settings) -> Option<Env> {
        let docker = engine_for_tests().await?;
        // A fake GitLab of its own for every test of every run (test processes may run side by side
        // on one engine): its URL and the test's name key everything drover makes for the test.
        let mut seed = DefaultHasher::new();
        (name, std::process::id(), std::time::SystemTime::now()).hash(&mut seed);
        let fake = FakeGitlab::start(FakeOptions {
            token_seed: seed.finish(),
            trace_update_interval: 1,
            long_poll: settings.long_poll,
            ..FakeOptions::default()
        })
        .await
        .expect("the fake GitLab starts");
        let token = fake.create_runner_token();
        let name = name.replace('_', "-");
        // The installation's system id, kept beside the config: part of the machine key.
        let dir = tempfile::tempdir().expect("a temp dir");
        let system_id = "r_droverTEST01";
        std::fs::write(dir.path().join(".runner_system_id"), system_id).expect("writing");
        let short = drover_core::config::machine_key(system_id, fake.url(), &name);
        let env = Env {
            fake,
            token,
            short,
            name,
            docker,
            settings,
            dir,
            child: None,
            logs: Vec::new(),
            born: Instant::now(),
        };
        env.write_config();
        Some(env)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The machine-name prefix of this test's runner.
    pub fn prefix(&self) -> String {
        format!("runner-{}-", self.short)
    }

    /// (Re)writes `config.toml` from [`Env::settings`].
    pub fn write_config(&self) {
        let s = &self.settings;
        let mut text = format!(
            "concurrent = {concurrent}\n\
             check_interval = {check_interval}\n\
             shutdown_timeout = {shutdown_timeout}\n\
             log_format = \"{format}\"\n\
             listen_address = \"127.0.0.1:0\"\n\
             \n\
             [machine.shutdown_drain]\n  enabled = {drain}\n\
             \n\
             [[runners]]\n\
             \x20 name = \"{name}\"\n\
             \x20 url = \"{url}\"\n\
             \x20 token = \"{token}\"\n\
             \x20 executor = \"{executor}\"\n\
             \x20 limit = {limit}\n\
             \x20 [runners.docker]\n\
             \x20   image = \"{image}\"\n\
             \x20   pull_policy = [\"if-not-present\"]\n",
            concurrent = s.concurrent,
            check_interval = s.check_interval,
            shutdown_timeout = s.shutdown_timeout,
            format = if s.json_logs { "json" } else { "text" },
            drain = s.drain,
            name = self.name,
            url = self.fake.url(),
            token = self.token,
            executor = if s.pool { "docker+machine" } else { "docker" },
            limit = s.limit,
            image = s.image,
        );
        text.push_str(&s.docker_extra);
        if s.pool {
            text.push_str(&format!(
                "  [runners.machine]\n\
                 \x20   Provider = \"docker\"\n\
                 \x20   IdleCount = {}\n\
                 \x20   IdleTime = {}\n\
                 \x20   MaxBuilds = {}\n\
                 \x20   MachineName = \"e2e-%s\"\n",
                s.idle_count, s.idle_time, s.max_builds
            ));
        }
        text.push_str(&s.runner_extra);
        std::fs::write(self.config_path(), text).expect("writing config.toml");
    }

    /// Starts `drover run` and waits until it says it runs (past its recovery).
    pub async fn start(&mut self) {
        self.spawn();
        eventually("drover running", async || {
            if self.has_exited() {
                panic!("drover exited at start:\n{}", self.last_log());
            }
            self.last_log().contains("drover is running").then_some(())
        })
        .await;
    }

    /// Starts `drover run` without waiting; its stderr goes to a log file of its own.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "drover is already running");
        let log = self
            .dir
            .path()
            .join(format!("drover-{}.log", self.logs.len() + 1));
        let file = std::fs::File::create(&log).expect("creating the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("run")
            .arg("-c")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.state_dir())
            .env(
                "RUST_LOG",
                "info,drover=debug,drover_docker=debug,drover_providers=debug,drover_gitlab=debug",
            )
            .env_remove("CONFIG_FILE")
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("drover starts");
        self.logs.push(log);
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("drover is running")
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a signal (`QUIT`, `TERM`, `HUP`, ...) to drover.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// `kill -9`: drover dies without a chance to do anything.
    pub async fn crash(&mut self) {
        let mut child = self.child.take().expect("drover is running");
        child.kill().await.expect("killing drover");
    }

    /// Waits for drover to exit; its exit code (a signal death is a failure of the test).
    pub async fn exit_code(&mut self, within: Duration) -> i32 {
        let child = self.child.as_mut().expect("drover is running");
        let status = tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("drover did not exit within {within:?}"))
            .expect("waiting for drover");
        self.child = None;
        status
            .code()
            .unwrap_or_else(|| panic!("drover died of a signal: {status}"))
    }

    /// Whether drover has exited by now (without waiting).
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("drover was started");
        child.try_wait().expect("checking on drover").is_some()
    }

    /// SIGQUIT and a clean exit: running jobs finish, machines are drained.
    pub async fn quit(&mut self) {
        self.signal("QUIT");
        let code = self.exit_code(PATIENCE).await;
        assert_eq!(code, 0, "drover exits 0 after SIGQUIT");
    }

    /// Everything drover wrote to its logs so far, all runs.
    pub fn log(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The log of the current (or last) run.
    pub fn last_log(&self) -> String {
        self.logs
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Queues a job at the fake.
    pub fn enqueue(&self, template: JobTemplate) -> u64 {
        self.fake.enqueue_job(template)
    }

    pub fn job(&self, id: u64) -> JobView {
        self.fake.job(id).expect("the fake knows the job")
    }

    /// Waits until the job satisfies `condition`.
    pub async fn wait_job(
        &self,
        id: u64,
        what: &str,
        condition: impl Fn(&JobView) -> bool,
    ) -> JobView {
        let done = self
            .fake
            .wait_until(PATIENCE, |f| f.job(id).is_some_and(|j| condition(&j)))
            .await;
        let job = self.job(id);
        assert!(
            done,
            "job {id}: {what} did not happen within {PATIENCE:?}; it is {:?} with trace:\n{}",
            job.status,
            String::from_utf8_lossy(&job.trace)
        );
        job
    }

    /// Waits until GitLab holds the job's final state.
    pub async fn finished(&self, id: u64) -> JobView {
        self.wait_job(id, "finishing", |j| j.status.is_finished())
            .await
    }

    /// Waits until the job runs and its trace (at GitLab) contains `text`.
    pub async fn trace_shows(&self, id: u64, text: &str) -> JobView {
        self.wait_job(id, &format!("a trace with {text:?}"), |j| {
            contains(&j.trace, text)
        })
        .await
    }

    /// The names of this test's complete sandboxes (their anchor containers).
    pub async fn sandboxes(&self) -> Vec<String> {
        let filters = label_filter(&[
            format!("drover.runner={}", self.short),
            "drover.role=anchor".into(),
        ]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let mut names: Vec<String> = self
            .docker
            .list_containers(Some(options))
            .await
            .expect("listing containers")
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        names.sort();
        names
    }

    /// Waits until the engine holds exactly `n` complete sandboxes of this test; their names.
    pub async fn sandboxes_become(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} sandboxes"), async || {
            let names = self.sandboxes().await;
            (names.len() == n).then_some(names)
        })
        .await
    }

    /// Every container, network and volume of this test's runner: labelled with its short token,
    /// or named after it.
    pub async fn objects(&self) -> Objects {
        objects_of(&self.docker, &self.short).await
    }

    /// The daemon's `status.json`, once it exists.
    pub fn status(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.state_dir().join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// How far drover persisted a job, from its journal (`jobs/<id>/events.jsonl` of the state
    /// directory): `{"trace_len": …, "cursor": …}` as of its last stored trace.
    pub fn progress(&self, job: u64) -> Option<serde_json::Value> {
        let path = self
            .state_dir()
            .join("jobs")
            .join(job.to_string())
            .join("events.jsonl");
        let text = std::fs::read_to_string(path).ok()?;
        let mut progress = None;
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                break;
            };
            if let Some(trace) = record.get("snapshot").map(|s| &s["trace"]) {
                progress = Some(
                    serde_json::json!({ "trace_len": trace["len"], "cursor": trace["cursor"] }),
                );
            }
            if let Some(stored) = record.get("event").and_then(|e| e.get("trace_stored")) {
                progress = Some(
                    serde_json::json!({ "trace_len": stored["len"], "cursor": stored["cursor"] }),
                );
            }
        }
        progress
    }

    /// `drover status` for this config: (exit code, stdout).
    pub async fn status_command(&self, json: bool) -> (i32, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
        command
            .arg("status")
            .arg("-c")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.state_dir());
        if json {
            command.arg("--json");
        }
        let out = command.output().await.expect("drover status runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The address drover serves `/metrics` on, from its log.
    pub async fn metrics_address(&self) -> String {
        eventually("the metrics address in the log", async || {
            let log = self.last_log();
            let line = log.lines().find(|l| l.contains("serving metrics"))?;
            let at = line.find("127.0.0.1:")?;
            let addr: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            Some(addr)
        })
        .await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_address().await;
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connecting to the metrics server");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: drover\r\nConnection: close\r\n\r\n")
            .await
            .expect("sending the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("reading /metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The end of every test: a drained shutdown (when drover still runs), then nothing of the
    /// test on the engine, no protocol violation, no secret in the logs.
    pub async fn finish(mut self) {
        if self.running() {
            self.quit().await;
        }
        let left = self.objects().await;
        assert!(
            left.is_empty(),
            "drover left objects on the engine after a drained shutdown: {left:?}"
        );
        self.assert_no_violations();
        self.assert_no_secrets_logged();
        eprintln!("{}: {:.1} s", self.name, self.born.elapsed().as_secs_f64());
    }

    pub fn assert_no_violations(&self) {
        let violations = self.fake.violations();
        assert!(
            violations.is_empty(),
            "protocol violations:\n{}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The runner token, every job token and every masked value stay out of the daemon's log.
    pub fn assert_no_secrets_logged(&self) {
        let log = self.log();
        let mut secrets = vec![self.token.clone()];
        for job in self.fake.jobs() {
            secrets.push(job.token.clone());
            secrets.extend(job.response.masked_values());
        }
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !log.contains(secret.as_str()),
                "the daemon's log contains a secret ({}…)",
                &secret[..6]
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        for (i, path) in self.logs.iter().enumerate() {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(400);
            eprintln!(
                "----- drover run #{} of {} (last {} lines) -----\n{}",
                i + 1,
                self.name,
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
        // The test failed: leave nothing behind for the tests that run next.
        let short = self.short.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(docker) = Docker::connect_with_local_defaults() {
                    remove_objects(&docker, &short).await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` (every 100 ms) until it gives a value, for at most [`PATIENCE`].
pub async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_within(what, PATIENCE, check).await
}

/// [`eventually`] with its own patience, for what takes several slow round trips (a cloud
/// group's scaling, each step through the API emulator and the instance reconciler).
pub async fn eventually_within<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `future` to its end, failing the test if that takes longer than `within`.
pub async fn within<T>(within: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {within:?}"))
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    count(haystack, needle) > 0
}

/// How often `needle` occurs in `haystack`.
pub fn count(haystack: &[u8], needle: &str) -> usize {
    let needle = needle.as_bytes();
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// How many lines of the job's trace are exactly `line` (the script's output, not the echo of
/// its commands).
pub fn lines(job: &JobView, line: &str) -> usize {
    text(job).lines().filter(|l| *l == line).count()
}

pub fn text(job: &JobView) -> String {
    String::from_utf8_lossy(&job.trace).into_owned()
}

/// The final updates (`success`/`failed`) GitLab received for a job.
pub fn final_updates(job: &JobView) -> Vec<&UpdateRecord> {
    job.updates
        .iter()
        .filter(|u| u.state == "success" || u.state == "failed")
        .collect()
}

/// The job ended at GitLab with exactly one accepted final update of `state`, `failure_reason` and
/// `exit_code`, and every final update sent said the same (a retry never changes the outcome).
pub fn assert_final(
    job: &JobView,
    status: JobStatus,
    failure_reason: Option<&str>,
    exit_code: Option<i64>,
) {
    let trace = text(job);
    assert_eq!(
        job.status, status,
        "job {}'s status; trace:\n{trace}",
        job.id
    );
    assert_eq!(
        job.final_updates_accepted, 1,
        "job {}: exactly one accepted final update; updates: {:?}",
        job.id, job.updates
    );
    let finals = final_updates(job);
    let state = match status {
        JobStatus::Success => "success",
        _ => "failed",
    };
    for update in &finals {
        assert_eq!(
            (
                update.state.as_str(),
                update.failure_reason.as_deref(),
                update.exit_code
            ),
            (state, failure_reason, exit_code),
            "job {}: every final update reports the same outcome; updates: {:?}",
            job.id,
            job.updates
        );
    }
    assert_eq!(
        job.failure_reason.as_deref(),
        failure_reason,
        "job {}'s failure reason",
        job.id
    );
    assert_eq!(job.exit_code, exit_code, "job {}'s exit code", job.id);
    assert_eq!(
        finals.last().and_then(|u| u.checksum.clone()),
        Some(job.trace_checksum()),
        "job {}: the final update's checksum covers the stored trace",
        job.id
    );
}

fn label_filter(labels: &[String]) -> std::collections::HashMap<String, Vec<String>> {
    std::collections::HashMap::from([("label".to_string(), labels.to_vec())])
}

/// Containers, networks and volumes of the runner `short`, by label or by name.
pub async fn objects_of(docker: &Docker, short: &str) -> Objects {
    let ours = |name: &str, labels: Option<&std::collections::HashMap<String, String>>| {
        name.contains(short)
            || labels
                .and_then(|l| l.get("drover.runner"))
                .is_some_and(|r| r == short)
    };
    let options = ListContainersOptions {
        all: true,
        ..Default::default()
    };
    let mut objects = Objects::default();
    for c in docker
        .list_containers(Some(options))
        .await
        .expect("listing containers")
    {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        if ours(&name, c.labels.as_ref()) {
            objects.containers.push(name);
        }
    }
    for n in docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .expect("listing networks")
    {
        let name = n.name.clone().unwrap_or_default();
        if ours(&name, n.labels.as_ref()) {
            objects.networks.push(name);
        }
    }
    for v in docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .expect("listing volumes")
        .volumes
        .unwrap_or_default()
    {
        if ours(&v.name, Some(&v.labels)) {
            objects.volumes.push(v.name);
        }
    }
    objects.containers.sort();
    objects.networks.sort();
    objects.volumes.sort();
    objects
}

/// Removes every object of the runner `short` (after a failed test, or to simulate loss).
pub async fn remove_objects(docker: &Docker, short: &str) {
    let objects = objects_of(docker, short).await;
    for c in &objects.containers {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = docker.remove_container(c, Some(options)).await;
    }
    for n in &objects.networks {
        let _ = docker.remove_network(n).await;
    }
    for v in &objects.volumes {
        let _ = docker
            .remove_volume(v, Some(RemoveVolumeOptions { force: true }))
            .await;
    }
}

/// A directory a job's containers mount at `/sync`: the script and the test wait for each other
/// through files in it, never through sleeps.
pub struct SyncDir(tempfile::TempDir);

impl SyncDir {
    pub fn new() -> SyncDir {
        let dir = tempfile::tempdir().expect("a sync directory");
        // A step may run as another user.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("opening the sync directory to every user");
        SyncDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// The `[runners.docker]` line that mounts it at `/sync`.
    pub fn volume(&self) -> String {
        format!("    volumes = [\"{}:/sync\"]\n", self.path().display())
    }

    /// Waits until the job made `/sync/<name>`.
    pub async fn wait_for(&self, name: &str) {
        let path = self.path().join(name);
        within(PATIENCE, &format!("/sync/{name} from the job"), async {
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Makes `/sync/<name>` for the job.
    pub fn signal(&self, name: &str) {
        std::fs::write(self.path().join(name), b"").expect("writing a sync file");
    }
}

/// Removes the containers of one job (as an operator cleaning up while drover is down would).
pub async fn remove_job_containers(docker: &Docker, short: &str, job: u64) -> usize {
    let filters = label_filter(&[
        format!("drover.runner={short}"),
        format!("drover.job={job}"),
    ]);
    // A warm build container the job claimed carries its job in its name only (it was made
    // before the job): `drover-<runner>-job-<id>-warm`.
    let claimed = std::collections::HashMap::from([
        ("label".to_string(), vec![format!("drover.runner={short}")]),
        ("name".to_string(), vec![format!("-job-{job}-warm")]),
    ]);
    let mut containers = Vec::new();
    for filters in [filters, claimed] {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        containers.extend(
            docker
                .list_containers(Some(options))
                .await
                .expect("listing the job's containers"),
        );
    }
    for c in &containers {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        docker
            .remove_container(c.id.as_deref().unwrap_or_default(), Some(options))
            .await
            .expect("removing a job container");
    }
    containers.len()
}
