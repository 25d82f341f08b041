//! What the executor runs: an executor-level job description. The daemon maps GitLab's job payload
//! (and the runner's `[runners.docker]` settings) onto it; nothing here knows GitLab's JSON.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::archive::{Format, Selection};
use crate::auth::RegistryCredential;
use crate::image::PullPolicy;

/// One job, as the executor needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    /// GitLab's job id: part of every container's labels and name.
    pub job_id: u64,
    /// The runner's short token: labels and object names (sanitised for Docker).
    pub runner: String,
    /// The job's image (or the runner's default image).
    pub image: ImageSpec,
    /// Registry credentials for pulls (the job's `credentials` plus the runner's).
    pub credentials: Vec<RegistryCredential>,
    /// Docker Hub mirrors tried before Docker Hub (`engine-registry-mirror`).
    pub registry_mirrors: Vec<String>,
    /// The job's variables, in order; later keys win, as in a shell.
    pub variables: Vec<Variable>,
    /// `script` (before_script + script), then `after_script`, ... in order.
    pub steps: Vec<StepSpec>,
    pub services: Vec<ServiceSpec>,
    pub git: GitSpec,
    /// The job's timeout. `after_script` runs under its own step timeout even after this expired.
    pub timeout: Duration,
    /// Where the builds volume is mounted (GitLab's `builds_dir`, e.g. `/builds`).
    pub builds_dir: String,
    /// The job's working directory, under `builds_dir` (GitLab's `CI_PROJECT_DIR`).
    pub project_dir: String,
    pub shell: Shell,
    /// Extra mounts, in `[runners.docker] volumes` syntax: `source:target[:mode]` binds a host path
    /// or a named volume; a bare `/path` gets a volume that lives as long as the job.
    pub volumes: Vec<String>,
    /// `[runners.docker] privileged`.
    pub privileged: bool,
    /// The rest of `[runners.docker]` that shapes the job's containers.
    pub container_options: ContainerOptions,
    /// The image that fetches the sources (`helper_image`); `None`: the job's image, which then
    /// needs `git`.
    pub helper_image: Option<String>,
    /// What the job asked for that is not done (caches, ...): each is a warning at the top of its
    /// trace, so nobody has to guess why a file never arrived.
    pub warnings: Vec<String>,
    /// The job's `cache:` entries, resolved by the daemon (keys, signed URLs, local paths).
    pub caches: Vec<CacheSpec>,
    /// Volumes kept across jobs (the local cache's), created with drover's labels but no job's,
    /// so the job's cleanup leaves them and the removal of the machine takes them.
    pub kept_volumes: Vec<String>,
    /// `artifacts[]`: uploaded after the steps, per their `when`.
    pub artifacts: Vec<ArtifactSpec>,
    /// Earlier jobs whose archives are unpacked into the project directory before the script.
    pub dependencies: Vec<DependencySpec>,
    /// Who moves artifacts to and from GitLab (the daemon, with the job's token).
    pub transport: Transport,
}

/// One `cache:` entry of the job: restored before the script, saved after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// The entry's key, as the trace shows it.
    pub key: String,
    /// Globs relative to the project directory, as `artifacts:paths`.
    pub paths: Vec<String>,
    /// Also the files git does not track.
    pub untracked: bool,
    /// The keys to try in order (the key, `fallback_keys`, `CACHE_FALLBACK_KEY`) with where each
    /// archive is; empty for `policy: push`.
    pub restore: Vec<CacheSource>,
    /// Where the archive goes; `None` for `policy: pull`.
    pub save: Option<CacheSave>,
    /// When the archive is saved, given the job's outcome (`cache:when`).
    pub when: When,
}

/// A key to restore from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSource {
    pub key: String,
    pub location: CacheLocation,
}

/// Where a cache archive is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// An object of the distributed cache: a presigned `GET` URL.
    Remote(SignedUrl),
    /// `cache.zip` at this path inside the job's containers (the local cache).
    Local(String),
}

/// Where a cache archive is saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSave {
    pub key: String,
    pub target: CacheTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTarget {
    /// A presigned `PUT` URL and the signed headers the request must carry verbatim.
    Remote {
        url: SignedUrl,
        headers: Vec<(String, String)>,
        /// `MaxUploadedArchiveSize`: a bigger archive is not uploaded.
        max_size: Option<u64>,
    },
    /// `cache.zip` at this path inside the job's containers.
    Local(String),
}

/// A presigned URL: its query string is the signature, so `Debug` and [`SignedUrl::redacted`]
/// show the URL without it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl(String);

impl SignedUrl {
    pub fn new(url: impl Into<String>) -> SignedUrl {
        SignedUrl(url.into())
    }

    /// The whole URL, for the request only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its query string, for traces and logs.
    pub fn redacted(&self) -> &str {
        self.0.split(['?', '#']).next().unwrap_or_default()
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// One `artifacts[]` entry of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// `name` (default `artifacts`): the uploaded file's base name. `$VAR`s are expanded.
    pub name: String,
    /// `paths` and `exclude` (`$VAR`s are expanded), relative to the project directory.
    pub selection: Selection,
    /// Add the files git does not track.
    pub untracked: bool,
    pub when: When,
    /// As the job wrote it (`1 week`); empty: GitLab's default.
    pub expire_in: String,
    /// `archive`, `junit`, ...
    pub artifact_type: String,
    pub format: Format,
}

/// A job whose artifacts this job gets (`dependencies:`/`needs:` with an archive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencySpec {
    pub id: u64,
    pub name: String,
}

/// How a line of a transfer reads in the trace.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LineLevel {
    Info,
    Warning,
    Error,
}

/// A failed transfer: the message ends up in the trace (never a token or a signed URL).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransferError(pub String);

/// Where a transfer's trace lines go.
pub type TransferLog<'a> = &'a mut (dyn FnMut(LineLevel, String) + Send);

/// Moves artifact archives between the daemon's disk and GitLab for one job.
pub trait ArtifactTransport: Send + Sync {
    /// Sends `file` (named `file_name`) as the artifact `artifact`.
    fn upload<'a>(
        &'a self,
        artifact: &'a ArtifactSpec,
        file: &'a Path,
        file_name: &'a str,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>>;

    /// Writes the archive of `dependency` to `dest`.
    fn download<'a>(
        &'a self,
        dependency: &'a DependencySpec,
        dest: &'a Path,
        log: TransferLog<'a>,
    ) -> BoxFuture<'a, Result<(), TransferError>>;
}

/// An [`ArtifactTransport`], or none (jobs without artifacts, tests): equal when it is the same
/// object.
#[derive(Clone, Default)]
pub struct Transport(pub Option<Arc<dyn ArtifactTransport>>);

impl Transport {
    pub fn new(transport: Arc<dyn ArtifactTransport>) -> Transport {
        Transport(Some(transport))
    }
}

impl PartialEq for Transport {
    fn eq(&self, other: &Transport) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Transport {}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Transport(..)",
            None => "Transport(None)",
        })
    }
}

/// `[runners.docker]` settings of the job's containers, with GitLab Runner's reach: the step
/// containers get all of them (`user` only the script steps: the sources step runs as the image's
/// user); services get `dns`, `dns_search`, `extra_hosts` and `shm_size`, their limits being other
/// keys (`service_memory`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerOptions {
    /// `user`: a user of the image, by name or as `uid[:gid]`.
    pub user: Option<String>,
    /// `cap_add`, `cap_drop`: Linux capabilities, e.g. `NET_ADMIN`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `devices`: `host[:container][:permissions]`, e.g. `/dev/fuse` or `/dev/sdc:/dev/xvdc:r`.
    pub devices: Vec<String>,
    /// `memory` in bytes.
    pub memory: Option<u64>,
    /// `cpus` in billionths of a CPU (`"1.5"` → 1 500 000 000), as the engine takes it.
    pub nano_cpus: Option<u64>,
    /// `shm_size`: the size of `/dev/shm` in bytes.
    pub shm_size: Option<u64>,
    /// `dns`: name servers; `dns_search`: search domains.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `extra_hosts`: `host:ip` lines for `/etc/hosts`.
    pub extra_hosts: Vec<String>,
}

/// An image and how to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    /// Overrides the image's entrypoint; `Some(vec![])` or `Some(vec!["".into()])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Tried in order; empty means `[Always]`.
    pub pull_policy: Vec<PullPolicy>,
}

impl ImageSpec {
    pub fn new(name: impl Into<String>) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            entrypoint: None,
            pull_policy: Vec::new(),
        }
    }
}

/// A job variable. Its value never appears in drover's logs (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Variable {
    pub key: String,
    pub value: String,
    /// Written to a file; the environment variable holds the file's path.
    pub file: bool,
    /// Public or set by the runner: services get it too. GitLab's masked and protected variables
    /// are not public.
    pub public: bool,
}

impl Variable {
    /// A public variable.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Variable {
        Variable {
            key: key.into(),
            value: value.into(),
            file: false,
            public: true,
        }
    }
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field("value", &"[hidden]")
            .field("file", &self.file)
            .field("public", &self.public)
            .finish()
    }
}

/// A step of the job's script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    pub name: StepName,
    /// Shell commands, run in one shell that stops at the first failing one.
    pub script: Vec<String>,
    pub timeout: Duration,
    pub when: When,
    /// A failure of this step does not fail the job (`after_script`).
    pub allow_failure: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepName {
    /// `before_script` + `script`: bound by the job's timeout.
    Script,
    /// `after_script`: runs under its own timeout, also after a cancel or a job timeout.
    AfterScript,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Script => "script",
            StepName::AfterScript => "after_script",
        }
    }
}

/// When a step runs, given how the job is doing so far (a canceled job counts as failed).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
}

impl When {
    /// Whether something marked `self` runs after a job that has `succeeded` so far.
    pub fn fits(self, succeeded: bool) -> bool {
        match self {
            When::OnSuccess => succeeded,
            When::OnFailure => !succeeded,
            When::Always => true,
        }
    }
}

/// A sidecar container the job reaches by its aliases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub image: ImageSpec,
    /// Host names on the job's network, after those derived from the image name as GitLab does
    /// (`tutum/wordpress:1` → `tutum-wordpress` and `tutum__wordpress`).
    pub aliases: Vec<String>,
    pub command: Option<Vec<String>>,
    /// The service's environment (file variables left out). GitLab gives a service the job's
    /// public variables and its own, not the masked or protected ones: the daemon chooses.
    pub variables: Vec<Variable>,
}

/// How the sources get into the project directory.
#[derive(Clone, PartialEq, Eq)]
pub struct GitSpec {
    pub strategy: GitStrategy,
    /// May carry the job token (`https://gitlab-ci-token:TOKEN@host/…`): never logged.
    pub repo_url: String,
    pub sha: String,
    pub ref_name: String,
    /// Empty: all branches and tags.
    pub refspecs: Vec<String>,
    /// 0: full history.
    pub depth: u32,
    /// `GIT_FETCH_EXTRA_FLAGS`: added to `git fetch` (GitLab's default `--prune --quiet`).
    pub fetch_flags: Vec<String>,
    /// `GIT_CHECKOUT`: check out the job's commit (and clean) after the fetch.
    pub checkout: bool,
    /// `GIT_CLEAN_FLAGS` for `git clean` after the checkout; empty: no clean.
    pub clean_flags: Vec<String>,
    pub submodules: Submodules,
}

impl GitSpec {
    pub fn none() -> GitSpec {
        GitSpec {
            strategy: GitStrategy::None,
            repo_url: String::new(),
            sha: String::new(),
            ref_name: String::new(),
            refspecs: Vec::new(),
            depth: 0,
            fetch_flags: vec!["--prune".to_string(), "--quiet".to_string()],
            checkout: true,
            clean_flags: vec!["-ffdx".to_string()],
            submodules: Submodules::default(),
        }
    }
}

/// `GIT_SUBMODULE_STRATEGY` and its companions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Submodules {
    pub strategy: SubmoduleStrategy,
    /// `GIT_SUBMODULE_DEPTH`; 0: full history.
    pub depth: u32,
    /// `GIT_SUBMODULE_UPDATE_FLAGS`, added to `git submodule update`.
    pub update_flags: Vec<String>,
    /// `GIT_SUBMODULE_PATHS`: the submodules to set up (pathspecs); empty: all.
    pub paths: Vec<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SubmoduleStrategy {
    #[default]
    None,
    /// The top-level submodules.
    Normal,
    /// Submodules of submodules too.
    Recursive,
}

impl fmt::Debug for GitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSpec")
            .field("strategy", &self.strategy)
            .field("repo_url", &without_credentials(&self.repo_url))
            .field("sha", &self.sha)
            .field("ref_name", &self.ref_name)
            .field("refspecs", &self.refspecs)
            .field("depth", &self.depth)
            .field("fetch_flags", &self.fetch_flags)
            .field("checkout", &self.checkout)
            .field("clean_flags", &self.clean_flags)
            .field("submodules", &self.submodules)
            .finish()
    }
}

/// GitLab's `GIT_STRATEGY`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GitStrategy {
    /// Leave the project directory as it is.
    None,
    /// Reuse the working copy in the builds volume if there is one.
    Fetch,
    /// Start from an empty directory.
    Clone,
    /// An empty project directory, no sources (GitLab's `empty`).
    Empty,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

impl Shell {
    pub fn program(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }
}

/// `scheme://user:secret@host/path` → `scheme://host/path`.
pub(crate) fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_urls() {
        assert_eq!(
            without_credentials("https://gitlab-ci-token:glcbt-123@gitlab.local/g/p.git"),
            "https://gitlab.local/g/p.git"
        );
        assert_eq!(without_credentials("file:///repo.git"), "file:///repo.git");
        assert_eq!(without_credentials("https://host/a@b"), "https://host/a@b");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let url =
            SignedUrl::new("http://127.0.0.1:9000/b/o?X-Amz-Signature=abc123&X-Amz-Credential=AK");
        assert_eq!(format!("{url:?}"), "\"http://127.0.0.1:9000/b/o\"");
        assert_eq!(url.redacted(), "http://127.0.0.1:9000/b/o");
        let v = Variable::new("TOKEN", "s3cret-value");
        assert!(!format!("{v:?}").contains("s3cret"));
        let git = GitSpec {
            repo_url: "https://gitlab-ci-token:glcbt-xyz@h/p.git".into(),
            ..GitSpec::none()
        };
        assert!(!format!("{git:?}").contains("glcbt-xyz"));
    }
}
