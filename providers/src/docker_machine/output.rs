//! Reading docker-machine's output: the engine address and certificates from `config`, what kind of
//! failure an error message describes, and masking credentials in anything shown.

use std::path::PathBuf;

use drover_docker::TlsFiles;

use crate::ProviderErrorKind;

/// The engine address (`-H=`) and TLS files (`--tlscacert=` ...) that `docker-machine config`
/// prints, one flag a line, paths quoted Go-style. `None` without an address.
pub(super) fn parse_config(stdout: &str) -> Option<(String, Option<TlsFiles>)> {
    let mut host = None;
    let (mut ca, mut cert, mut key) = (None, None, None);
    for line in stdout.lines().map(str::trim) {
        let Some((flag, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value);
        match flag {
            "-H" | "--host" => host = Some(value),
            "--tlscacert" => ca = Some(PathBuf::from(value)),
            "--tlscert" => cert = Some(PathBuf::from(value)),
            "--tlskey" => key = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    let tls = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        _ => None,
    };
    host.filter(|h| !h.is_empty()).map(|h| (h, tls))
}

/// A Go `%q` string back to its text (paths seldom need more than `\\` and `\"`).
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// docker-machine's answer for a name it does not know (`Host does not exist: "name"`).
pub(super) fn does_not_exist(stderr: &str) -> bool {
    stderr.contains("Host does not exist")
}

/// Cloud answers that mean "not now, not this much": quotas, capacity, rate limits.
const QUOTA: &[&str] = &[
    "requestlimitexceeded",
    "instancelimitexceeded",
    "vcpulimitexceeded",
    "maxspotinstancecountexceeded",
    "insufficientinstancecapacity",
    "limitexceeded",
    "quota",
    "rate limit",
    "ratelimit",
    "rate-limit",
    "too many requests",
    "throttl",
    "droplet limit",
];

/// Command lines docker-machine refuses: wrong however often it is retried. Checked before
/// [`TRANSIENT`], whose words an option name may contain (`--amazonec2-ssh-keypath`).
const USAGE: &[&str] = &[
    "flag provided but not defined",
    "incorrect usage",
    "found extra arguments",
    "invalid hostname",
];

/// Failures of the moment even when they mention credentials: ssh to a VM still booting, network
/// trouble. Checked before [`FATAL`] ("ssh: unable to authenticate" is a VM not ready yet).
const TRANSIENT: &[&str] = &[
    "ssh",
    "timeout",
    "timed out",
    "temporar",
    "try again",
    "connection reset",
    "connection refused",
];

/// Failures only an operator can fix: bad values, bad credentials.
const FATAL: &[&str] = &[
    "invalid",
    "authfailure",
    "unauthorized",
    "authenticat",
    "credential",
    "signaturedoesnotmatch",
    "accessdenied",
    "access denied",
    "forbidden",
    "permission denied",
    "optinrequired",
];

/// What a failed docker-machine command's output says about retrying it. Messages are matched by
/// keywords of the major drivers' APIs (AWS, GCE, Azure, DigitalOcean); anything unrecognised is
/// retryable, because wrongly calling a failure fatal stops a runner's creations for minutes and
/// fails the jobs waiting for a machine.
pub(super) fn classify(output: &str) -> ProviderErrorKind {
    let text = output.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let status = |code: &str| {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|token| token == code)
    };
    if has(QUOTA) || status("429") {
        return ProviderErrorKind::Quota;
    }
    let unknown_driver = text.contains("driver") && text.contains("not found");
    if has(USAGE) || unknown_driver {
        return ProviderErrorKind::Fatal;
    }
    if has(TRANSIENT) {
        return ProviderErrorKind::Retryable;
    }
    // "invalid character '<' looking for beginning of value": an HTML error page from a proxy.
    let text = text.replace("invalid character", "");
    if FATAL.iter().any(|w| text.contains(w)) || status("401") || status("403") {
        return ProviderErrorKind::Fatal;
    }
    ProviderErrorKind::Retryable
}

/// A docker-machine option safe to show: the value of a credential-like option is masked
/// (`digitalocean-access-token=***`). The same rule as drover's config display.
pub fn mask_option(option: &str) -> String {
    match option.split_once('=') {
        Some((name, value)) if !value.is_empty() && is_secret_name(name) => format!("{name}=***"),
        _ => option.to_string(),
    }
}

fn is_secret_name(name: &str) -> bool {
    const SECRET_WORDS: [&str; 5] = ["token", "secret", "password", "passwd", "key"];
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// Replaces the values of credential-like options wherever they appear: in command lines shown,
/// and in docker-machine's output (drivers may echo what they were given).
#[derive(Clone, Debug, Default)]
pub(super) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Shorter values would mask ordinary words; credentials are longer.
    const MIN_SECRET_LEN: usize = 4;

    pub fn new<'a>(options: impl Iterator<Item = &'a String>) -> Scrubber {
        let mut secrets: Vec<String> = options
            .filter_map(|o| o.trim().trim_start_matches('-').split_once('='))
            .filter(|(name, value)| {
                is_secret_name(name) && value.len() >= Self::MIN_SECRET_LEN && !value.contains("%s")
            })
            .map(|(_, value)| value.to_string())
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |text, secret| text.replace(secret, "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_output_gives_the_engine_and_its_certificates() {
        let out = "--tlsverify\n\
                   --tlscacert=\"/home/ci/.docker/machine/certs/ca.pem\"\n\
                   --tlscert=\"/home/ci/.docker/machine/certs/cert.pem\"\n\
                   --tlskey=\"/home/ci/.docker/machine/certs/key.pem\"\n\
                   -H=tcp://203.0.113.7:2376\n";
        let (host, tls) = parse_config(out).unwrap();
        assert_eq!(host, "tcp://203.0.113.7:2376");
        assert_eq!(
            tls,
            Some(TlsFiles::from_dir("/home/ci/.docker/machine/certs"))
        );
    }

    #[test]
    fn config_output_without_an_address_or_certificates() {
        assert_eq!(parse_config("--tlsverify\n"), None);
        assert_eq!(parse_config(""), None);
        let (host, tls) = parse_config("-H=tcp://10.1.2.3:2376").unwrap();
        assert_eq!((host.as_str(), tls), ("tcp://10.1.2.3:2376", None));
    }

    #[test]
    fn go_quoting_is_undone() {
        assert_eq!(unquote(r#""/a b/c\"d\\e""#), r#"/a b/c"d\e"#);
        assert_eq!(unquote("/plain"), "/plain");
        assert_eq!(unquote(r#""tab\there""#), "tab\there");
    }

    #[test]
    fn quota_and_rate_limits() {
        for message in [
            "Error launching instance: RequestLimitExceeded: Request limit exceeded.",
            "Error launching instance: InstanceLimitExceeded: You have requested more instances \
             (20) than your current instance limit of 20 allows",
            "googleapi: Error 403: Quota 'CPUS' exceeded. Limit: 24.0 in region europe-west1.",
            "POST https://api.digitalocean.com/v2/droplets: 429 API Rate limit exceeded",
            "HTTP 429",
            "Error: InsufficientInstanceCapacity: We currently do not have sufficient capacity",
        ] {
            assert_eq!(classify(message), ProviderErrorKind::Quota, "{message}");
        }
    }

    #[test]
    fn permanent_failures() {
        for message in [
            "Driver \"amazonec3\" not found. Do you have the plugin binary \
             \"docker-machine-driver-amazonec3\" accessible in your PATH?",
            "flag provided but not defined: -amazonec2-regoin",
            "flag provided but not defined: -amazonec2-ssh-keypth",
            "Invalid command line. Found extra arguments [true]",
            "Error creating machine: Invalid hostname specified.",
            "Error launching instance: InvalidAMIID.NotFound: The image id '[ami-1]' does not exist",
            "AuthFailure: AWS was not able to validate the provided access credentials",
            "NoCredentialProviders: no valid providers in chain",
            "GET https://api.digitalocean.com/v2/account: 401 Unable to authenticate you",
            "UnauthorizedOperation: You are not authorized to perform this operation.",
        ] {
            assert_eq!(classify(message), ProviderErrorKind::Fatal, "{message}");
        }
    }

    #[test]
    fn everything_else_is_retryable() {
        for message in [
            "Error creating machine: Error detecting OS: Too many retries waiting for SSH to be \
             available. Last error: ssh: handshake failed: ssh: unable to authenticate",
            "Error running provisioning: timed out waiting for the Docker daemon",
            "invalid character '<' looking for beginning of value",
            "Error launching instance: InternalError: An internal error has occurred",
            "exit status 1",
            "Host already exists: \"runner-abc-auto-1\"",
            "dial tcp 10.0.0.1:2376: connect: connection refused",
            "server returned 4290 bytes",
        ] {
            assert_eq!(classify(message), ProviderErrorKind::Retryable, "{message}");
        }
    }

    #[test]
    fn unknown_hosts_are_recognised() {
        assert!(does_not_exist("Host does not exist: \"runner-x\"\n"));
        assert!(!does_not_exist(
            "Error removing host \"x\": API unavailable"
        ));
    }

    #[test]
    fn options_are_masked_like_the_config() {
        assert_eq!(
            mask_option("amazonec2-secret-key=abc"),
            "amazonec2-secret-key=***"
        );
        assert_eq!(
            mask_option("digitalocean-access-token=x"),
            "digitalocean-access-token=***"
        );
        assert_eq!(mask_option("google-password="), "google-password=");
        assert_eq!(
            mask_option("engine-registry-mirror=http://m:5000"),
            "engine-registry-mirror=http://m:5000"
        );
        assert_eq!(
            mask_option("amazonec2-request-spot-instance"),
            "amazonec2-request-spot-instance"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_any_text() {
        let options = [
            "amazonec2-access-key=AKIAEXAMPLE".to_string(),
            "--amazonec2-secret-key=wJalrXUtnFEMI".to_string(),
            "amazonec2-region=eu-west-1".to_string(),
            "google-password=abc".to_string(),
            "amazonec2-tags=key,%s".to_string(),
        ];
        let s = Scrubber::new(options.iter());
        assert_eq!(
            s.scrub("auth with AKIAEXAMPLE/wJalrXUtnFEMI in eu-west-1 (abc)"),
            "auth with ***/*** in eu-west-1 (abc)"
        );
        assert_eq!(
            s.scrub("--amazonec2-secret-key=wJalrXUtnFEMI"),
            "--amazonec2-secret-key=***"
        );
    }
}
