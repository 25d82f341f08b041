//! The job's variables: the runner's `environment`, then drover's `CI_*`, then the job's own
//! (later keys win), plus what services see and the ones known only when the job runs.

use std::time::Duration;

use drover_docker::{BuildSpec, Variable};
use drover_gitlab::api::JobResponse;

use crate::config::RunnerSettings;
use crate::daemon::expand::expand;
use crate::daemon::short_token;

/// Where the job runs, as its `CI_*` variables tell it.
pub(super) struct Dirs<'a> {
    pub builds: &'a str,
    pub project: &'a str,
}

/// The runner's environment first, then drover's own, then the job's: later keys win.
pub(super) fn job_variables(
    job: &JobResponse,
    runner: &RunnerSettings,
    runner_short: &str,
    dirs: Dirs<'_>,
    timeout: Duration,
) -> Vec<Variable> {
    let mut variables: Vec<Variable> = runner
        .environment
        .iter()
        .map(|(k, v)| Variable::new(k.clone(), v.clone()))
        .collect();
    let short_token = short_token::of_runner(runner).unwrap_or_else(|| runner_short.to_string());
    for (k, v) in [
        ("CI_BUILDS_DIR", dirs.builds.to_string()),
        ("CI_PROJECT_DIR", dirs.project.to_string()),
        ("CI_RUNNER_SHORT_TOKEN", short_token),
        (
            "CI_RUNNER_VERSION",
            format!("drover {}", env!("CARGO_PKG_VERSION")),
        ),
        ("CI_RUNNER_EXECUTABLE_ARCH", executable_arch()),
        ("CI_DISPOSABLE_ENVIRONMENT", "true".to_string()),
        ("CI_SERVER", "yes".to_string()),
        ("CI_JOB_TIMEOUT", timeout.as_secs().to_string()),
    ] {
        variables.push(Variable::new(k, v));
    }
    variables.extend(job.variables.iter().map(|v| Variable {
        key: v.key.clone(),
        value: v.value.clone(),
        file: v.file,
        public: v.public && !v.masked,
    }));
    variables
}

/// What a service sees: the runner's and drover's variables and the job's public ones, never a
/// masked or protected one; its own come last and are expanded against all the job's variables.
pub(super) struct ServiceEnv<'a> {
    shared: Vec<Variable>,
    all: &'a [Variable],
}

impl<'a> ServiceEnv<'a> {
    /// `variables` are the job's, its own at the end.
    pub fn new(job: &JobResponse, variables: &'a [Variable]) -> ServiceEnv<'a> {
        let internal = variables.len() - job.variables.len();
        let shared = variables[..internal]
            .iter()
            .cloned()
            .chain(
                job.variables
                    .iter()
                    .filter(|v| v.public && !v.file)
                    .map(|v| Variable::new(v.key.clone(), v.value.clone())),
            )
            .collect();
        ServiceEnv {
            shared,
            all: variables,
        }
    }

    /// The environment of a service with its `own` variables.
    pub fn with(&self, own: Vec<(String, String)>) -> Vec<Variable> {
        let mut env = self.shared.clone();
        env.extend(
            own.into_iter()
                .map(|(k, v)| Variable::new(k, expand(&v, self.all))),
        );
        env
    }
}

/// `CI_RUNNER_EXECUTABLE_ARCH` in Go's terms, as GitLab Runner reports it (`linux/amd64`).
fn executable_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// `CI_CONCURRENT_ID` and `CI_CONCURRENT_PROJECT_ID` of a job, known once it runs: before the
/// job's variables, like GitLab Runner's own.
pub fn with_concurrency(spec: &mut BuildSpec, id: u32, project_id: u32) {
    let ids = [
        Variable::new("CI_CONCURRENT_ID", id.to_string()),
        Variable::new("CI_CONCURRENT_PROJECT_ID", project_id.to_string()),
    ];
    spec.variables.splice(0..0, ids.clone());
    for service in &mut spec.services {
        service.variables.splice(0..0, ids.clone());
    }
}

/// `CI_SERVER_TLS_CA_FILE`: a file variable holding the CA chain of `tls-ca-file`, which the
/// sources step also gives git for GitLab's host. Before the job's variables.
pub fn with_tls_ca(spec: &mut BuildSpec, ca: String) {
    let variable = Variable {
        key: "CI_SERVER_TLS_CA_FILE".to_string(),
        value: ca,
        file: true,
        public: true,
    };
    spec.variables.insert(0, variable);
}
