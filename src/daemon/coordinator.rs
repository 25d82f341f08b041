//! Job requests to GitLab over each runner's link, one task per `RequestJob`, answered as events.
//! An empty answer tells the core how long GitLab held the request and whether it was long-poll
//! news ([`Event::JobRequestAnswered`]), a failure whether it counts against the runner's health
//! ([`Event::JobRequestUnhealthy`]); when to ask again, backoff included, is the core's decision.

use std::sync::{Arc, Mutex};

use drover_core::{Event, RunnerId};
use drover_gitlab::api::{FeaturesInfo, JobRequest, RunnerInfo};
use drover_gitlab::{Client, RequestOutcome, Secret};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Input;

/// What drover tells GitLab it can do. Only what is implemented: sessions and step-runner steps
/// are not.
pub fn features() -> FeaturesInfo {
    FeaturesInfo {
        variables: true,
        image: true,
        services: true,
        masking: true,
        refspecs: true,
        return_exit_code: true,
        service_variables: true,
        service_multiple_aliases: true,
        cancel_gracefully: true,
        cache: true,
        fallback_cache_keys: true,
        artifacts: true,
        upload_multiple_artifacts: true,
        upload_raw_artifacts: true,
        artifacts_exclude: true,
        ..FeaturesInfo::client_protocol()
    }
}

/// One runner's link to GitLab.
pub struct RunnerLink {
    pub client: Client,
    pub token: Secret,
    pub system_id: String,
    pub info: RunnerInfo,
    /// How logs name the runner.
    label: String,
    last_update: Arc<Mutex<String>>,
    /// What the runner's last empty answers said, to tell news from a loop ([`is_news`]).
    ended: Arc<Mutex<PollView>>,
    requests: Vec<CancellationToken>,
}

impl RunnerLink {
    /// `label` is how logs name the runner.
    pub fn new(
        client: Client,
        token: Secret,
        system_id: String,
        info: RunnerInfo,
        label: String,
    ) -> RunnerLink {
        RunnerLink {
            client,
            token,
            system_id,
            info,
            label,
            last_update: Arc::default(),
            ended: Arc::default(),
            requests: Vec::new(),
        }
    }

    /// Takes over from the link this one replaces (after a reload) its requests in flight and
    /// GitLab's `last_update` cursor. Shared, not copied: the old link's requests in flight
    /// update them.
    pub fn adopt(&mut self, old: RunnerLink) {
        self.requests = old.requests;
        self.last_update = old.last_update;
        self.ended = old.ended;
    }

    /// Cancels the runner's requests in flight: each still waiting for GitLab answers as if it
    /// ran out; one whose answer has begun delivers it.
    pub fn cancel(&mut self) {
        for t in self.requests.drain(..) {
            t.cancel();
        }
    }
}

/// Asks GitLab for a job for `runner` over its link; the answer comes back as an input. A runner
/// without a link is answered with a failure at once, to be asked again in a minute.
pub fn request(runner: RunnerId, link: Option<&mut RunnerLink>, inputs: &UnboundedSender<Input>) {
    let inputs = inputs.clone();
    let Some(link) = link else {
        let _ = inputs.send(Input::Event(Event::JobRequestFailed {
            runner,
            retry_after_ms: Some(60_000),
        }));
        return;
    };
    link.requests.retain(|t| !t.is_cancelled());
    let cancel = CancellationToken::new();
    link.requests.push(cancel.clone());
    let client = link.client.clone();
    let last_update = link.last_update.clone();
    let ended = link.ended.clone();
    let label = link.label.clone();
    let request = JobRequest {
        info: link.info.clone(),
        token: link.token.clone(),
        system_id: link.system_id.clone(),
        last_update: lock(&last_update).clone(),
        session: None,
    };
    tokio::spawn(async move {
        let sent = tokio::time::Instant::now();
        // A cancel ends the wait for GitLab, but never drops an answer that has begun: it may
        // carry a job GitLab assigned already, which the core then runs or fails.
        let outcome = client.request_job_until(&request, cancel.cancelled()).await;
        let held_ms = drover_core::millis(sent.elapsed());
        cancel.cancel();
        let input = match outcome {
            RequestOutcome::Job(job) => {
                lock(&ended).version_news = false;
                tracing::info!(runner = %label, job = job.id, "received a job");
                Input::Job { runner, job }
            }
            // GitLab answered: a payload drover cannot use is no fault of the link, so the
            // request cadence stays as it is.
            RequestOutcome::Undecodable(job) => Input::Undecodable { runner, job },
            RequestOutcome::Unusable { message } => Input::Unusable { runner, message },
            RequestOutcome::NoJob {
                last_update: lu,
                long_polling,
            } => {
                let news = long_polling && is_news(lu.as_deref(), &request.last_update, &ended);
                if let Some(lu) = lu {
                    *lock(&last_update) = lu;
                }
                Input::Event(Event::JobRequestAnswered {
                    runner,
                    held_ms,
                    long_poll: news,
                })
            }
            RequestOutcome::Failed {
                status,
                retry_after,
                unhealthy,
                message,
            } => {
                tracing::warn!(runner = %label, status = ?status, "job request failed: {message}");
                let retry_after_ms = retry_after.map(drover_core::millis);
                Input::Event(if unhealthy {
                    Event::JobRequestUnhealthy {
                        runner,
                        retry_after_ms,
                    }
                } else {
                    Event::JobRequestFailed {
                        runner,
                        retry_after_ms,
                    }
                })
            }
        };
        let _ = inputs.send(input);
    });
}

/// What a runner's last empty answers said.
#[derive(Debug, Default)]
struct PollView {
    /// The `last_update` whose hold last ended with Workhorse's bare `204`.
    ended: String,
    /// The last empty answer was news by a new queue version (Rails answered), with no job since.
    version_news: bool,
}

/// Whether an empty answer to a request that sent `sent` moved the runner's view of its queue,
/// so the runner asks again at once: a queue version other than `sent` (Rails answered), or the
/// first bare `204` (Workhorse ended the hold) for `sent`.
///
/// Neither may repeat without a pause, so no coordinator can make a runner loop: a second bare
/// `204` for the same version is a Workhorse that stopped holding, and a new version right after
/// a new version (no hold or job between) is a queue key that changes on every request (a busy
/// instance-wide runner, or an evicted Redis key that Rails makes anew each time). Either waits
/// `check_interval`; in the normal flow a new version is followed by a hold.
fn is_news(version: Option<&str>, sent: &str, view: &Mutex<PollView>) -> bool {
    let mut view = lock(view);
    match version {
        Some(v) => {
            let news = v != sent && !view.version_news;
            view.version_news = news;
            news
        }
        None => {
            view.version_news = false;
            let news = view.ended != sent;
            sent.clone_into(&mut view.ended);
            news
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(token: &str) -> RunnerLink {
        let text = format!(
            "concurrent = 1\n[[runners]]\nname = \"a\"\nurl = \"https://gitlab.example.com\"\n\
             token = \"{token}\"\nexecutor = \"docker\"\n"
        );
        let path = std::path::Path::new("config.toml");
        let loaded = crate::config::parse(&text, path).unwrap();
        let settings = &loaded.runners[0];
        super::super::adapters::runner_link(settings, "key", "s_1", path)
            .unwrap()
            .0
    }

    #[test]
    fn a_reload_keeps_gitlabs_cursor() {
        let old = link("glrt-one");
        *lock(&old.last_update) = "cursor-1".to_string();
        let mut other = link("glrt-two");
        other.adopt(old);
        assert_eq!(*lock(&other.last_update), "cursor-1");
    }

    #[test]
    fn a_new_version_or_the_first_bare_204_for_a_version_is_news() {
        let ended = Mutex::new(PollView::default());
        assert!(is_news(Some("v1"), "", &ended), "the first answer");
        assert!(
            !is_news(Some("v1"), "v1", &ended),
            "Rails echoes the version sent"
        );
        assert!(is_news(None, "v1", &ended), "a hold of v1 ended");
        assert!(!is_news(None, "v1", &ended), "and again: nothing new");
        assert!(is_news(Some("v2"), "v1", &ended));
        assert!(is_news(None, "v2", &ended));
    }

    #[test]
    fn a_new_version_on_every_answer_is_news_only_every_other_time() {
        // A queue key that changes on every request: Rails answers each with a new version.
        let view = Mutex::new(PollView::default());
        let news: Vec<bool> = (0..6)
            .map(|i| is_news(Some(&format!("v{}", i + 1)), &format!("v{i}"), &view))
            .collect();
        assert_eq!(news, [true, false, true, false, true, false]);
        // A hold between two new versions, or a job, makes the next new version news again.
        let view = Mutex::new(PollView::default());
        assert!(is_news(Some("v1"), "v0", &view));
        assert!(is_news(None, "v1", &view), "the hold of v1 ended");
        assert!(is_news(Some("v2"), "v1", &view));
        lock(&view).version_news = false; // a job came in between
        assert!(is_news(Some("v3"), "v2", &view));
    }
}
