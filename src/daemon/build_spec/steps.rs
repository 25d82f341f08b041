//! The job's steps: `script` (with the runner's pre/post build scripts) and `after_script`.

use std::time::Duration;

use drover_docker::{StepName, StepSpec, When};
use drover_gitlab::api::{JobResponse, StepWhen, step_name};

use super::{Unsupported, unsupported};
use crate::config::RunnerSettings;

/// The job's steps; `timeout` is the job's, for a step that sets none.
pub(super) fn steps(
    job: &JobResponse,
    runner: &RunnerSettings,
    timeout: Duration,
) -> Result<Vec<StepSpec>, Unsupported> {
    let mut steps = Vec::new();
    for step in &job.steps {
        let name = match step.name.as_str() {
            step_name::SCRIPT => StepName::Script,
            step_name::AFTER_SCRIPT => StepName::AfterScript,
            other => {
                return Err(unsupported(format!(
                    "drover does not support the {other:?} step"
                )));
            }
        };
        let mut script = step.script.clone();
        if name == StepName::Script {
            if let Some(pre) = &runner.hooks.pre_build_script {
                script.insert(0, pre.clone());
            }
            if let Some(post) = &runner.hooks.post_build_script {
                script.push(post.clone());
            }
        }
        let when = match step.when {
            StepWhen::OnSuccess => When::OnSuccess,
            StepWhen::OnFailure => When::OnFailure,
            StepWhen::Always => When::Always,
            StepWhen::Unknown => {
                return Err(unsupported(format!(
                    "unknown `when` in step {:?}",
                    step.name
                )));
            }
        };
        steps.push(StepSpec {
            name,
            script,
            timeout: step_timeout(step.timeout, timeout),
            when,
            // GitLab: after_script never changes the job's result, whatever the payload says.
            allow_failure: step.allow_failure || name == StepName::AfterScript,
        });
    }
    if !steps.iter().any(|s| s.name == StepName::Script) {
        return Err(unsupported("the job has no script step"));
    }
    Ok(steps)
}

fn step_timeout(seconds: i64, job: Duration) -> Duration {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map_or(job, Duration::from_secs)
}
