//! Jobs for the fake to hand out.

use crate::api::{
    Artifact, Dependency, GitInfo, Image, JobFeatures, JobInfo, JobResponse, JobRunnerInfo,
    Service, ServiceVariable, Step, StepWhen, Variable, step_name,
};
use crate::mask::Secret;

/// Stands for the job token until the job is enqueued and gets a real one.
pub(super) const TOKEN_PLACEHOLDER: &str = "glcbt-FAKE-TEMPLATE-TOKEN";
/// Stands for the fake's URL until the job is enqueued.
pub(super) const URL_PLACEHOLDER: &str = "http://fake-gitlab.invalid";

/// Failure reasons the fake's jobs declare (`features.failure_reasons`): a recent GitLab's list,
/// without `image_pull_failure`, so the runner's fallback mapping is exercised.
pub const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "runner_configuration_error",
    "runner_external_dependency_failure",
    "runner_interrupted",
    "trace_size_exceeded",
    "job_token_expired",
];

/// A job to enqueue: the payload the runner will receive, plus fake-side scripting.
///
/// Built with [`JobTemplate::new`] and the builder methods, or from a complete payload with
/// [`JobTemplate::from_response`]. On enqueue the fake gives the job its id and a fresh
/// `glcbt-` token; every occurrence of the template's token in the payload (variables, the
/// repository URL, registry credentials, dependencies) is replaced by it.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    pub response: JobResponse,
    /// Cancel the job (as a user would) right after this many trace patches were appended.
    pub cancel_after_patches: Option<u32>,
    /// Only this runner (by token) may take the job; `None`: any runner.
    pub runner_token: Option<String>,
    /// Changes to the JSON the runner receives, applied in order after `response` is encoded:
    /// (JSON pointer, value). Payloads GitLab's schema does not allow (a wrong type, an array for
    /// an object), which [`JobResponse`] cannot hold. The job keeps its id and token.
    pub json_edits: Vec<(String, serde_json::Value)>,
    /// `job_info.time_in_queue_seconds` as served; `None` (the default): what GitLab reports, the
    /// seconds from the enqueue to the job request that picks the job.
    pub pinned_time_in_queue: Option<f64>,
}

impl JobTemplate {
    /// A shell job named `name` in project `acme/widget`: image `alpine:3.20`, one script
    /// line, a 3600 s timeout and GitLab's usual predefined variables.
    pub fn new(name: &str) -> Self {
        let repo_url = format!(
            "http://gitlab-ci-token:{TOKEN_PLACEHOLDER}@{}/acme/widget.git",
            host_of(URL_PLACEHOLDER)
        );
        let sha = "03af6fc71345293cf29de98665cfafad0f5f2dfa";
        let mut t = JobTemplate {
            response: JobResponse {
                token: Secret::new(TOKEN_PLACEHOLDER),
                allow_git_fetch: true,
                job_info: JobInfo {
                    name: name.into(),
                    stage: "test".into(),
                    project_id: 42,
                    project_name: "widget".into(),
                    project_full_path: "acme/widget".into(),
                    namespace_id: 7,
                    root_namespace_id: 7,
                    organization_id: 1,
                    instance_id: "1".into(),
                    user_id: 12,
                    project_jobs_running_on_instance_runners_count: "0".into(),
                    ..Default::default()
                },
                git_info: GitInfo {
                    repo_url,
                    git_ref: "main".into(),
                    sha: sha.into(),
                    before_sha: "0000000000000000000000000000000000000000".into(),
                    ref_type: "branch".into(),
                    refspecs: vec!["+refs/heads/main:refs/remotes/origin/main".into()],
                    depth: 20,
                    repo_object_format: "sha1".into(),
                    protected: Some(true),
                },
                runner_info: JobRunnerInfo {
                    timeout: 3600,
                    ..Default::default()
                },
                image: Image {
                    name: "alpine:3.20".into(),
                    ..Default::default()
                },
                features: JobFeatures {
                    trace_sections: true,
                    failure_reasons: FAILURE_REASONS.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
                ..Default::default()
            },
            cancel_after_patches: None,
            runner_token: None,
            json_edits: Vec::new(),
            pinned_time_in_queue: None,
        };
        for (key, value) in [
            ("CI", "true"),
            ("GITLAB_CI", "true"),
            ("CI_SERVER_URL", URL_PLACEHOLDER),
            ("CI_PROJECT_PATH", "acme/widget"),
            ("CI_JOB_NAME", name),
            ("CI_COMMIT_SHA", sha),
            ("CI_COMMIT_REF_NAME", "main"),
        ] {
            t = t.variable(key, value);
        }
        t.response.variables.push(Variable {
            key: "CI_JOB_TOKEN".into(),
            value: TOKEN_PLACEHOLDER.into(),
            public: false,
            masked: true,
            ..Default::default()
        });
        t.script(["echo hello from drover"])
    }

    /// A template from a complete payload (e.g. a recorded one). Its `token` is replaced on
    /// enqueue wherever it occurs.
    pub fn from_response(response: JobResponse) -> Self {
        JobTemplate {
            response,
            cancel_after_patches: None,
            runner_token: None,
            json_edits: Vec::new(),
            pinned_time_in_queue: None,
        }
    }

    pub fn image(mut self, name: &str) -> Self {
        self.response.image.name = name.into();
        self
    }

    pub fn entrypoint<S: Into<String>>(mut self, entrypoint: impl IntoIterator<Item = S>) -> Self {
        self.response.image.entrypoint = entrypoint.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the `script` step.
    pub fn script<S: Into<String>>(self, lines: impl IntoIterator<Item = S>) -> Self {
        let timeout = self.response.runner_info.timeout;
        self.step(Step {
            name: step_name::SCRIPT.into(),
            script: lines.into_iter().map(Into::into).collect(),
            timeout,
            when: StepWhen::OnSuccess,
            allow_failure: false,
        })
    }

    /// Replaces the `after_script` step.
    pub fn after_script<S: Into<String>>(self, lines: impl IntoIterator<Item = S>) -> Self {
        let timeout = self.response.runner_info.timeout;
        self.step(Step {
            name: step_name::AFTER_SCRIPT.into(),
            script: lines.into_iter().map(Into::into).collect(),
            timeout,
            when: StepWhen::Always,
            allow_failure: true,
        })
    }

    /// Adds a step, replacing one of the same name.
    pub fn step(mut self, step: Step) -> Self {
        match self.response.steps.iter_mut().find(|s| s.name == step.name) {
            Some(existing) => *existing = step,
            None => self.response.steps.push(step),
        }
        self
    }

    fn set_variable(mut self, var: Variable) -> Self {
        match self
            .response
            .variables
            .iter_mut()
            .find(|v| v.key == var.key)
        {
            Some(existing) => *existing = var,
            None => self.response.variables.push(var),
        }
        self
    }

    pub fn variable(self, key: &str, value: &str) -> Self {
        self.set_variable(Variable {
            key: key.into(),
            value: value.into(),
            public: true,
            ..Default::default()
        })
    }

    /// A masked variable: its value must never appear in the trace.
    pub fn masked_variable(self, key: &str, value: &str) -> Self {
        self.set_variable(Variable {
            key: key.into(),
            value: value.into(),
            masked: true,
            ..Default::default()
        })
    }

    /// A file variable: the job sees a path to a file holding `value`.
    pub fn file_variable(self, key: &str, value: &str) -> Self {
        self.set_variable(Variable {
            key: key.into(),
            value: value.into(),
            file: true,
            ..Default::default()
        })
    }

    /// A variable whose `$` references are not expanded.
    pub fn raw_variable(self, key: &str, value: &str) -> Self {
        self.set_variable(Variable {
            key: key.into(),
            value: value.into(),
            public: true,
            raw: true,
            ..Default::default()
        })
    }

    /// A service container reachable as `alias` (comma-separate several).
    pub fn service(self, image: &str, alias: &str) -> Self {
        self.service_full(Service {
            name: image.into(),
            alias: alias.into(),
            ..Default::default()
        })
    }

    /// A service with variables (`key=value` pairs).
    pub fn service_with_variables(
        self,
        image: &str,
        alias: &str,
        variables: &[(&str, &str)],
    ) -> Self {
        self.service_full(Service {
            name: image.into(),
            alias: alias.into(),
            variables: variables
                .iter()
                .map(|(k, v)| ServiceVariable {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        })
    }

    pub fn service_full(mut self, service: Service) -> Self {
        self.response.services.push(service);
        self
    }

    /// The job timeout in seconds (also applied to the steps).
    pub fn timeout(mut self, seconds: i64) -> Self {
        self.response.runner_info.timeout = seconds;
        for step in &mut self.response.steps {
            step.timeout = seconds;
        }
        self
    }

    pub fn git(mut self, repo_path: &str, git_ref: &str, sha: &str) -> Self {
        self.response.git_info.repo_url = format!(
            "http://gitlab-ci-token:{TOKEN_PLACEHOLDER}@{}/{repo_path}.git",
            host_of(URL_PLACEHOLDER)
        );
        self.response.git_info.git_ref = git_ref.into();
        self.response.git_info.sha = sha.into();
        self.response.git_info.refspecs = vec![format!(
            "+refs/heads/{git_ref}:refs/remotes/origin/{git_ref}"
        )];
        self
    }

    /// Serves `job_info.time_in_queue_seconds = seconds` whenever the job is picked, instead of the
    /// time it really spent in the queue.
    pub fn time_in_queue(mut self, seconds: f64) -> Self {
        self.response.job_info.time_in_queue_seconds = seconds;
        self.pinned_time_in_queue = Some(seconds);
        self
    }

    /// Whether the served payload's `job_info.time_in_queue_seconds` is the fake's to fill in: not
    /// pinned, and no JSON edit replaces it.
    pub(super) fn live_time_in_queue(&self) -> bool {
        self.pinned_time_in_queue.is_none()
            && !self
                .json_edits
                .iter()
                .any(|(pointer, _)| "/job_info/time_in_queue_seconds".starts_with(pointer.as_str()))
    }

    pub fn token_mask_prefixes<S: Into<String>>(
        mut self,
        prefixes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.response.features.token_mask_prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    pub fn cancel_after_patches(mut self, patches: u32) -> Self {
        self.cancel_after_patches = Some(patches);
        self
    }

    /// Serves the payload with `value` at the JSON `pointer` (e.g. `/steps/0/script`); the member
    /// is added when its parent object lacks it. See [`JobTemplate::json_edits`].
    pub fn json_at(mut self, pointer: &str, value: serde_json::Value) -> Self {
        self.json_edits.push((pointer.to_owned(), value));
        self
    }

    /// The JSON a runner receives for `response` (the instantiated payload of this template).
    pub(super) fn served(&self, response: &JobResponse) -> serde_json::Value {
        let mut json = serde_json::to_value(response).unwrap_or_default();
        for (pointer, value) in &self.json_edits {
            if let Some(slot) = json.pointer_mut(pointer) {
                *slot = value.clone();
                continue;
            }
            let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            if let Some(serde_json::Value::Object(map)) = json.pointer_mut(parent) {
                map.insert(key.replace("~1", "/").replace("~0", "~"), value.clone());
            }
        }
        json
    }

    /// Adds an `artifacts[]` entry (`artifacts:` or one of `artifacts:reports:`).
    pub fn artifact(mut self, artifact: Artifact) -> Self {
        self.response.artifacts.push(artifact);
        self
    }

    /// Adds a dependency on the job `id` (`dependencies:`/`needs:`). Its token is the running
    /// job's; its `artifacts_file` is filled when the job is handed out, from what `id` uploaded.
    pub fn dependency(mut self, id: u64, name: &str) -> Self {
        let token = self.response.token.clone();
        self.response.dependencies.push(Dependency {
            id,
            name: name.into(),
            token,
            artifacts_file: None,
        });
        self
    }

    /// Only the runner with this token may take the job.
    pub fn for_runner(mut self, token: &str) -> Self {
        self.runner_token = Some(token.into());
        self
    }

    /// The payload for the enqueued job `id` with `token`, on a fake at `url`.
    pub(super) fn instantiate(&self, id: u64, token: &str, url: &str) -> JobResponse {
        let old_token = self.response.token.expose().to_owned();
        let mut json = serde_json::to_string(&self.response).unwrap_or_default();
        if !old_token.is_empty() {
            json = json.replace(&old_token, token);
        }
        json = json
            .replace(URL_PLACEHOLDER, url)
            .replace(host_of(URL_PLACEHOLDER), host_of(url));
        let mut job: JobResponse = crate::api::decode(json.as_bytes()).unwrap_or_default();
        job.id = id;
        job.token = Secret::new(token);
        job.job_info.id = id;
        let id_text = id.to_string();
        let mut with_id = JobTemplate::from_response(job).set_variable(Variable {
            key: "CI_JOB_ID".into(),
            value: id_text,
            public: true,
            ..Default::default()
        });
        if !with_id
            .response
            .variables
            .iter()
            .any(|v| v.key == "CI_JOB_TOKEN")
        {
            with_id = with_id.set_variable(Variable {
                key: "CI_JOB_TOKEN".into(),
                value: token.into(),
                masked: true,
                ..Default::default()
            });
        }
        with_id.response
    }
}

fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
}
