//! Registry credentials as GitLab Runner finds them, and which one a pull uses.
//!
//! Three sources, in GitLab Runner's order of precedence: the `DOCKER_AUTH_CONFIG` variable (a
//! job variable, or `[[runners]] environment`), the runner user's `~/.docker/config.json` (else
//! `~/.dockercfg`), and the job payload's `credentials`. A credential is keyed by a registry
//! host or a registry path (`registry.local:5000/group`); a pull takes the credential with the
//! longest key that is a path prefix of the image, the earliest source winning a tie.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;

/// Where a credential came from: the trace names it (never its secret).
pub const SOURCE_DOCKER_AUTH_CONFIG: &str = "$DOCKER_AUTH_CONFIG";
pub const SOURCE_JOB_PAYLOAD: &str = "job payload (GitLab Registry)";

const DOCKER_HUB: &str = "docker.io";

/// Credentials for one registry (or one path of it).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// As written by its source: `registry.local:5000`, `https://index.docker.io/v1/`,
    /// `registry.local:5000/group`.
    pub registry: String,
    pub username: String,
    pub password: String,
    /// Where it came from, e.g. [`SOURCE_DOCKER_AUTH_CONFIG`] or a file's path.
    pub source: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"[MASKED]")
            .field("source", &self.source)
            .finish()
    }
}

/// A Docker client config (`DOCKER_AUTH_CONFIG`, `config.json`) drover cannot use. The message
/// never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct AuthConfigError {
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigFile {
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: String,
    #[serde(rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    /// base64 of `user:password`.
    auth: String,
    username: String,
    password: String,
}

/// The `auths` of a Docker client config (JSON, as `docker login` writes it). Entries with
/// neither `auth` nor a username are skipped; credential stores and helpers are refused (drover
/// runs no programs to find a password).
pub fn parse_docker_config(
    json: &str,
    source: &str,
) -> Result<Vec<RegistryCredential>, AuthConfigError> {
    let error = |message: String| AuthConfigError {
        source_name: source.to_string(),
        message,
    };
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    // serde_json's messages can quote a value ("invalid type: string \"dXNl...\""), and the
    // value may be a password: say only what kind of error, and where.
    let config: ConfigFile = serde_json::from_str(json).map_err(|e| {
        error(format!(
            "not a Docker config: {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if !config.creds_store.is_empty() || !config.cred_helpers.is_empty() {
        return Err(error(
            "credsStore and credHelpers are not supported by drover; write the credentials \
             into `auths`"
                .to_string(),
        ));
    }
    let mut out = Vec::new();
    for (registry, entry) in config.auths {
        let (username, password) = if !entry.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| error(format!("the `auth` of {registry:?} is not base64")))?;
            let Some((user, password)) = decoded.split_once(':') else {
                return Err(error(format!(
                    "the `auth` of {registry:?} is not `user:password`"
                )));
            };
            (user.to_string(), password.to_string())
        } else if !entry.username.is_empty() {
            (entry.username, entry.password)
        } else {
            continue;
        };
        out.push(RegistryCredential {
            registry,
            username,
            password,
            source: source.to_string(),
        });
    }
    Ok(out)
}

/// The credentials of the user drover runs as: `<home>/.docker/config.json`, else
/// `<home>/.dockercfg` (GitLab Runner reads the same two files; `DOCKER_CONFIG` is not
/// consulted). `Ok(empty)` when there is neither.
pub fn home_credentials(home: &Path) -> Result<Vec<RegistryCredential>, AuthConfigError> {
    for file in [home.join(".docker/config.json"), home.join(".dockercfg")] {
        match std::fs::read_to_string(&file) {
            Ok(text) => return parse_docker_config(&text, &file.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(AuthConfigError {
                    source_name: file.display().to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(Vec::new())
}

/// GitLab Runner's key of a credential: a bare host for `http(s)://host/...` (Docker Hub's index
/// URL becoming `docker.io`), else the path without a tag; the host lower-cased.
fn registry_key(registry: &str) -> String {
    let lower_scheme = registry.to_ascii_lowercase();
    if lower_scheme.starts_with("https://") || lower_scheme.starts_with("http://") {
        let rest = &registry[registry.find("://").map_or(0, |i| i + 3)..];
        let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
        return match host.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_string(),
            _ => host,
        };
    }
    let mut path = registry.trim_end_matches('/');
    if let (Some(colon), Some(slash)) = (path.rfind(':'), path.rfind('/'))
        && colon > slash
    {
        path = &path[..colon];
    }
    match path {
        "" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => lower_host(path),
    }
}

/// GitLab Runner's lookup path of an image: `[registry/]path` without tag or digest, Docker Hub
/// images under `docker.io/` (without `library/`), the host lower-cased.
fn image_path(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    let path = match name.split_once('/') {
        Some(("index.docker.io", rest)) => format!("{DOCKER_HUB}/{rest}"),
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            name.to_string()
        }
        _ => format!("{DOCKER_HUB}/{name}"),
    };
    lower_host(&path)
}

fn lower_host(path: &str) -> String {
    match path.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", host.to_ascii_lowercase()),
        None => path.to_ascii_lowercase(),
    }
}

/// The credential a pull of `image` uses: the longest registry path that is a prefix of the
/// image's path (whole segments only), the earliest in `credentials` among equals.
pub(crate) fn credential_for<'a>(
    image: &str,
    credentials: &'a [RegistryCredential],
) -> Option<&'a RegistryCredential> {
    let path = image_path(image);
    let keys: Vec<String> = credentials
        .iter()
        .map(|c| registry_key(&c.registry))
        .collect();
    let mut prefix = path.as_str();
    loop {
        if let Some(i) = keys.iter().position(|k| k == prefix) {
            return Some(&credentials[i]);
        }
        prefix = &prefix[..prefix.rfind('/')?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(registry: &str, user: &str, source: &str) -> RegistryCredential {
        RegistryCredential {
            registry: registry.into(),
            username: user.into(),
            password: "s3cret".into(),
            source: source.into(),
        }
    }

    #[test]
    fn docker_auth_config_auth_is_base64_user_and_password() {
        // base64("ci:se:cret") — the password may hold a colon.
        let json = r#"{"auths": {"127.0.0.1:5000": {"auth": "Y2k6c2U6Y3JldA=="},
                       "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
                       "empty.local": {}}}"#;
        let creds = parse_docker_config(json, SOURCE_DOCKER_AUTH_CONFIG).unwrap();
        assert_eq!(creds.len(), 2, "{creds:?}");
        let local = creds
            .iter()
            .find(|c| c.registry == "127.0.0.1:5000")
            .unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("ci", "se:cret")
        );
        assert_eq!(local.source, "$DOCKER_AUTH_CONFIG");
    }

    #[test]
    fn bad_configs_are_errors_that_quote_no_secret() {
        for (json, expected) in [
            (r#"{"auths": {"r": {"auth": "%%%"}}}"#, "not base64"),
            (
                r#"{"auths": {"r": {"auth": "c2VjcmV0"}}}"#,
                "not `user:password`",
            ),
            (r#"{"credsStore": "desktop"}"#, "credsStore"),
            (r#"{"auths": "secret-value"#, "not a Docker config"),
            // A string where an entry belongs: serde_json would quote it.
            (
                r#"{"auths": {"r": "secret-base64"}}"#,
                "not a Docker config",
            ),
        ] {
            let err = parse_docker_config(json, "src").unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        assert_eq!(parse_docker_config("  ", "src"), Ok(vec![]));
    }

    #[test]
    fn home_config_is_read_from_docker_config_json() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(home_credentials(home.path()), Ok(vec![]));
        std::fs::create_dir(home.path().join(".docker")).unwrap();
        std::fs::write(
            home.path().join(".docker/config.json"),
            r#"{"auths": {"reg.local": {"auth": "dTpw"}}}"#,
        )
        .unwrap();
        let creds = home_credentials(home.path()).unwrap();
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].username, "u");
        assert!(creds[0].source.ends_with(".docker/config.json"));
    }

    #[test]
    fn keys_and_image_paths_follow_gitlab_runner() {
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_key("HTTP://Reg.Local:5000/v2/"), "reg.local:5000");
        assert_eq!(
            registry_key("Reg.Local:5000/group/"),
            "reg.local:5000/group"
        );
        assert_eq!(registry_key("reg.local/group/app:1"), "reg.local/group/app");
        assert_eq!(image_path("alpine:3"), "docker.io/alpine");
        assert_eq!(image_path("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(
            image_path("Reg.Local:5000/g/app:1@sha256:ab"),
            "reg.local:5000/g/app"
        );
        assert_eq!(
            image_path("index.docker.io/library/ruby"),
            "docker.io/library/ruby"
        );
    }

    #[test]
    fn the_longest_prefix_wins_then_the_earliest_source() {
        let creds = vec![
            cred("reg.local:5000", "host-env", "env"),
            cred("reg.local:5000/team", "team", "home"),
            cred("reg.local:5000", "host-payload", "payload"),
            cred("https://index.docker.io/v1/", "hub", "home"),
        ];
        let user = |image| credential_for(image, &creds).map(|c| c.username.as_str());
        assert_eq!(user("reg.local:5000/team/app:1"), Some("team"));
        assert_eq!(user("reg.local:5000/teamx/app:1"), Some("host-env"));
        assert_eq!(user("reg.local:5000/other"), Some("host-env"));
        assert_eq!(user("alpine"), Some("hub"));
        assert_eq!(user("quay.io/x/y"), None);
    }

    #[test]
    fn debug_masks_the_password() {
        let c = cred("r", "u", "s");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
