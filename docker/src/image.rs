//! Images: reference parsing, pull policies, registry mirrors and credentials.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{CreateImageOptions, RemoveImageOptions, TagImageOptions};
use futures_util::StreamExt;

use crate::auth::{RegistryCredential, credential_for};
use crate::engine::is_status;
use crate::trace::Trace;

/// When an image is pulled. A list is tried in order: `[Always, IfNotPresent]` pulls, and falls back
/// to the local copy when the pull fails (GitLab Runner's `pull_policy` semantics).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    const ALL: [PullPolicy; 3] = [
        PullPolicy::Always,
        PullPolicy::IfNotPresent,
        PullPolicy::Never,
    ];

    /// The policy GitLab Runner names `s` (`always`, `if-not-present`, `never`), as written in
    /// `config.toml` and in a job's `pull_policy`; `None` for anything else.
    pub fn parse(s: &str) -> Option<PullPolicy> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// GitLab Runner's name for it (`always`, `if-not-present`, `never`).
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }
}

/// Where images come from and how: shared by the executor and the `docker` machine provider.
#[derive(Clone, Copy, Debug)]
pub struct Pull<'a> {
    /// Tried in order; empty means `[Always]`, GitLab Runner's default.
    pub policies: &'a [PullPolicy],
    pub credentials: &'a [RegistryCredential],
    /// Docker Hub mirrors (`engine-registry-mirror`), tried before Docker Hub itself: `host[:port]`,
    /// with or without an `http(s)://` prefix.
    pub mirrors: &'a [String],
}

/// An image could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry (or the policy) refused: GitLab's `image_pull_failure`.
    #[error("image {image}: {reason}")]
    Pull { image: String, reason: String },
    /// The engine itself failed: a system failure, not the image's fault.
    #[error("image {image}: the Docker engine failed: {source}")]
    Engine {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// A parsed image reference: `[domain/]path[:tag][@digest]`, normalised as Docker does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

const DOCKER_HUB: &str = "docker.io";

impl ImageRef {
    pub(crate) fn parse(reference: &str) -> ImageRef {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => (reference, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let domain = match domain.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => domain,
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        ImageRef {
            domain,
            path,
            tag,
            digest,
        }
    }

    fn is_docker_hub(&self) -> bool {
        self.domain == DOCKER_HUB
    }

    /// The same image served by a Docker Hub mirror.
    fn on_mirror(&self, mirror: &str) -> String {
        let host = mirror
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let mut out = format!("{}/{}", host.trim_end_matches('/'), self.path);
        self.push_suffix(&mut out);
        out
    }

    fn push_suffix(&self, out: &mut String) {
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => {
                out.push('@');
                out.push_str(digest);
            }
            (Some(tag), None) => {
                out.push(':');
                out.push_str(tag);
            }
            (None, None) => out.push_str(":latest"),
        }
    }
}

fn docker_credentials(credential: &RegistryCredential) -> DockerCredentials {
    DockerCredentials {
        username: Some(credential.username.clone()),
        password: Some(credential.password.clone()),
        serveraddress: Some(credential.registry.clone()),
        ..Default::default()
    }
}

/// Makes `image` available on the engine per the pull options, with no job to show progress to
/// (the `docker` machine provider warms a sandbox with the runner's default image).
pub async fn ensure_image_untraced(
    docker: &Docker,
    image: &str,
    options: Pull<'_>,
) -> Result<(), ImageError> {
    ensure_image(docker, image, options, &mut Trace::new(None)).await
}

/// Makes `image` available on the engine per the pull options; progress lines go to the trace.
pub(crate) async fn ensure_image(
    docker: &Docker,
    image: &str,
    options: Pull<'_>,
    trace: &mut Trace,
) -> Result<(), ImageError> {
    let default = [PullPolicy::Always];
    let policies = if options.policies.is_empty() {
        &default[..]
    } else {
        options.policies
    };
    let mut last_error = None;
    for (i, policy) in policies.iter().enumerate() {
        if i > 0
            && let Some(err) = &last_error
        {
            trace
                .warn(&format!("{err}; trying pull policy {:?}", policy.as_str()))
                .await;
        }
        let result = match policy {
            PullPolicy::Never => match is_present(docker, image).await? {
                true => Ok(()),
                false => Err(ImageError::Pull {
                    image: image.to_string(),
                    reason: "not present on the engine and the pull policy is \"never\"; \
                             load the image or allow pulls (pull_policy = \"if-not-present\")"
                        .to_string(),
                }),
            },
            PullPolicy::IfNotPresent => match is_present(docker, image).await? {
                true => {
                    trace
                        .say(format!("Using locally found image {image}\n"))
                        .await;
                    Ok(())
                }
                false => pull(docker, image, options, trace).await,
            },
            PullPolicy::Always => pull(docker, image, options, trace).await,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(err @ ImageError::Engine { .. }) => return Err(err),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| ImageError::Pull {
        image: image.to_string(),
        reason: "no pull policy allowed it".to_string(),
    }))
}

async fn is_present(docker: &Docker, image: &str) -> Result<bool, ImageError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(err) if is_status(&err, &[404]) => Ok(false),
        Err(source) => Err(ImageError::Engine {
            image: image.to_string(),
            source,
        }),
    }
}

async fn pull(
    docker: &Docker,
    image: &str,
    options: Pull<'_>,
    trace: &mut Trace,
) -> Result<(), ImageError> {
    let parsed = ImageRef::parse(image);
    // A digest names content on one registry: mirrors are for tags only.
    if parsed.is_docker_hub() && parsed.digest.is_none() {
        for mirror in options.mirrors {
            let mirrored = parsed.on_mirror(mirror);
            trace
                .say(format!(
                    "Pulling docker image {image} from mirror {mirror} ...\n"
                ))
                .await;
            let credential = credential_for(&mirrored, options.credentials);
            authenticating(credential, trace).await;
            match pull_one(docker, &mirrored, credential).await {
                Ok(()) => return retag(docker, &mirrored, image).await,
                Err(reason) => {
                    trace
                        .warn(&format!(
                            "the registry mirror {mirror} could not serve {image} ({reason}); \
                             pulling from Docker Hub instead"
                        ))
                        .await
                }
            }
        }
    }
    trace
        .say(format!("Pulling docker image {image} ...\n"))
        .await;
    let credential = credential_for(image, options.credentials);
    authenticating(credential, trace).await;
    pull_one(docker, image, credential)
        .await
        .map_err(|reason| ImageError::Pull {
            image: image.to_string(),
            reason,
        })
}

/// GitLab Runner's line naming the credentials' source (never their secret).
async fn authenticating(credential: Option<&RegistryCredential>, trace: &mut Trace) {
    if let Some(credential) = credential {
        trace
            .say(format!(
                "Authenticating with credentials from {}\n",
                credential.source
            ))
            .await;
    }
}

async fn pull_one(
    docker: &Docker,
    image: &str,
    credential: Option<&RegistryCredential>,
) -> Result<(), String> {
    let credentials = credential.map(docker_credentials);
    let options = CreateImageOptions {
        from_image: Some(image.to_string()),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, credentials);
    while let Some(item) = stream.next().await {
        if let Err(err) = item {
            return Err(match err {
                bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                bollard::errors::Error::DockerStreamError { error } => error,
                other => other.to_string(),
            });
        }
    }
    Ok(())
}

/// Gives an image pulled from a mirror its Docker Hub name, and drops the mirror's name.
async fn retag(docker: &Docker, mirrored: &str, image: &str) -> Result<(), ImageError> {
    let target = ImageRef::parse(image);
    let engine = |source| ImageError::Engine {
        image: image.to_string(),
        source,
    };
    // Keep the name as the job wrote it (`alpine`, not `docker.io/library/alpine`): later lookups by
    // that name must find it.
    let (repo, tag) = match &target.tag {
        Some(tag) => (&image[..image.len() - tag.len() - 1], tag.as_str()),
        None => (image, "latest"),
    };
    let options = TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    docker
        .tag_image(mirrored, Some(options))
        .await
        .map_err(engine)?;
    let untag = RemoveImageOptions {
        noprune: true,
        ..Default::default()
    };
    docker
        .remove_image(mirrored, Some(untag), None)
        .await
        .map_err(engine)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(r: &str) -> (String, String, Option<String>, Option<String>) {
        let i = ImageRef::parse(r);
        (i.domain, i.path, i.tag, i.digest)
    }

    #[test]
    fn pull_policies_parse_from_gitlab_names() {
        for p in PullPolicy::ALL {
            assert_eq!(PullPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(
            PullPolicy::parse("if-not-present"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(
            PullPolicy::parse("Always"),
            None,
            "GitLab's names are lowercase"
        );
        assert_eq!(PullPolicy::parse("if_not_present"), None);
    }

    #[test]
    fn docker_hub_official_images_get_library() {
        assert_eq!(
            parsed("alpine"),
            ("docker.io".into(), "library/alpine".into(), None, None)
        );
        assert_eq!(
            parsed("alpine:3.20"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                Some("3.20".into()),
                None
            )
        );
        assert_eq!(parsed("bitnami/redis").1, "bitnami/redis");
        assert_eq!(parsed("index.docker.io/library/ruby:3").0, "docker.io");
    }

    #[test]
    fn registry_ports_are_not_tags() {
        assert_eq!(
            parsed("registry.local:5000/group/app"),
            ("registry.local:5000".into(), "group/app".into(), None, None)
        );
        assert_eq!(parsed("localhost/app:1").0, "localhost");
        assert_eq!(parsed("localhost:5000/app:1").2, Some("1".into()));
    }

    #[test]
    fn digests_are_kept() {
        let (_, path, tag, digest) = parsed("ruby:3@sha256:abc");
        assert_eq!(
            (path.as_str(), tag.as_deref(), digest.as_deref()),
            ("library/ruby", Some("3"), Some("sha256:abc"))
        );
    }

    #[test]
    fn mirror_names_keep_path_and_tag() {
        let image = ImageRef::parse("alpine:3");
        assert_eq!(
            image.on_mirror("https://mirror.local:5000/"),
            "mirror.local:5000/library/alpine:3"
        );
        assert_eq!(
            ImageRef::parse("org/app").on_mirror("m"),
            "m/org/app:latest"
        );
    }
}
