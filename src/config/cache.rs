//! `[runners.cache]` and `[runners.cache.s3]`: the distributed cache, S3 (and S3-compatible
//! servers such as Minio) only. Without a usable section jobs keep their caches on the machine
//! (the local cache, `[runners.docker] disable_cache` and `cache_dir`).

use std::fmt;

use toml::Spanned;

use super::ctx::Ctx;
use super::diagnostic::{Diagnostic, WarningKind};
use super::raw::{RawCache, RawCacheS3};
use super::schema::suggest;

/// Where a bucket lives when `BucketLocation` is empty (GitLab Runner asks the server with a
/// signed `GetBucketLocation` and falls back to this; drover takes it at once).
pub const DEFAULT_REGION: &str = "us-east-1";

/// `[runners.cache]` with `Type = "s3"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// `Path`: a prefix of every object name, without slashes at its ends; may be empty.
    pub path: String,
    /// `Shared`: one cache for all runners (the object names lose `runner/<short token>/`).
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes; `None`: no limit.
    pub max_uploaded_archive_size: Option<u64>,
    pub s3: S3Settings,
}

/// `[runners.cache.s3]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// `scheme://host[:port]`: from `ServerAddress` and `Insecure`, or AWS's endpoint.
    pub endpoint: String,
    pub bucket: String,
    /// `BucketLocation`, or [`DEFAULT_REGION`].
    pub region: String,
    /// Path-style URLs (`host/bucket/object`) instead of virtual hosts (`bucket.host/object`).
    pub path_style: bool,
    pub credentials: S3Credentials,
}

/// How drover signs the cache's URLs.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// `AuthenticationType = "access-key"`: the keys of the section.
    Static {
        access_key: String,
        secret_key: String,
        session_token: Option<String>,
    },
    /// `AuthenticationType = "iam"`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` of drover's environment, read for each job.
    Environment,
}

// Hand-written: the secret key and the session token never print.
impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::Static {
                access_key,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key", access_key)
                .field("secret_key", &"[MASKED]")
                .field("session_token", &session_token.as_ref().map(|_| "[MASKED]"))
                .finish(),
            S3Credentials::Environment => f.write_str("Environment"),
        }
    }
}

/// The validated section, or `None` when the runner has no distributed cache (with a warning or
/// an error in `ctx` saying why, unless the section is absent).
pub fn settings(
    raw: Option<Spanned<RawCache>>,
    index: usize,
    ctx: &mut Ctx<'_>,
) -> Option<CacheSettings> {
    let raw = raw?;
    let span = raw.span();
    let raw = raw.into_inner();
    let path = format!("runners[{index}].cache");
    let kind = raw.Type.as_ref().filter(|t| !t.get_ref().trim().is_empty());
    let Some(kind) = kind else {
        if let Some(s3) = &raw.s3 {
            let d = Diagnostic::new(
                "[runners.cache] has no `Type`: its [runners.cache.s3] section has no effect and \
                 jobs keep their caches on the machine",
            )
            .hint("add `Type = \"s3\"` to [runners.cache]");
            ctx.warn_at(WarningKind::NoEffect, format!("{path}.s3"), s3.span(), d);
        }
        return None;
    };
    match kind.get_ref().trim() {
        "s3" => {}
        "gcs" | "azure" => {
            let d = Diagnostic::new(format!(
                "drover has no {} cache: jobs keep their caches on the machine they run on",
                kind.get_ref().trim()
            ))
            .label("drover supports S3 and S3-compatible servers only")
            .hint(
                "use an S3-compatible store, e.g. Google Cloud Storage's XML API with HMAC keys: \
                 Type = \"s3\" and ServerAddress = \"storage.googleapis.com\"",
            );
            ctx.warn_at(
                WarningKind::NoEffect,
                format!("{path}.Type"),
                kind.span(),
                d,
            );
            return None;
        }
        other => {
            let hint = match suggest(other, ["s3", "gcs", "azure"].into_iter()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "drover supports `Type = \"s3\"` (S3 and S3-compatible servers)".into(),
            };
            ctx.error(
                ctx.diag(
                    kind.span(),
                    format!("`{path}.Type`: unknown cache type {other:?}"),
                )
                .hint(hint),
            );
            return None;
        }
    }
    let Some(s3) = raw.s3 else {
        let d = Diagnostic::new(
            "`Type = \"s3\"` without a [runners.cache.s3] section: jobs keep their caches on the \
             machine",
        )
        .label("this [runners.cache] section")
        .hint("add a [runners.cache.s3] section with at least `BucketName`");
        ctx.warn_at(WarningKind::NoEffect, path, span, d);
        return None;
    };
    let s3 = s3_settings(s3, &path, ctx)?;
    Some(CacheSettings {
        path: raw.Path.unwrap_or_default().trim_matches('/').to_string(),
        shared: raw.Shared,
        max_uploaded_archive_size: raw.MaxUploadedArchiveSize.map(|c| c.0).filter(|&n| n > 0),
        s3,
    })
}

fn s3_settings(raw: Spanned<RawCacheS3>, path: &str, ctx: &mut Ctx<'_>) -> Option<S3Settings> {
    let span = raw.span();
    let raw = raw.into_inner();
    let path = format!("{path}.s3");
    let errors_before = ctx.errors.len();
    let non_empty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());

    let bucket = raw
        .BucketName
        .as_ref()
        .map(|b| b.get_ref().trim().to_string())
        .filter(|b| !b.is_empty());
    if bucket.is_none() {
        ctx.error(
            ctx.diag(span.clone(), "[runners.cache.s3] has no `BucketName`")
                .label("this [runners.cache.s3] section")
                .hint("add `BucketName = \"...\"`: the bucket that holds the caches"),
        );
    }
    let server = raw
        .ServerAddress
        .as_ref()
        .filter(|a| !a.get_ref().trim().is_empty());
    let endpoint = match server {
        None => "https://s3.amazonaws.com".to_string(),
        Some(address) => {
            let host = address.get_ref().trim();
            if host.contains("://") || host.contains('/') {
                ctx.error(
                    ctx.diag(
                        address.span(),
                        format!("`{path}.ServerAddress` {host:?} is not host[:port]"),
                    )
                    .hint(
                        "write the server as host[:port], e.g. \"minio.example.com:9000\"; \
                         `Insecure = true` selects plain http",
                    ),
                );
            }
            let scheme = if raw.Insecure { "http" } else { "https" };
            format!("{scheme}://{host}")
        }
    };
    let access_key = non_empty(raw.AccessKey);
    let secret_key = non_empty(raw.SecretKey);
    let session_token = non_empty(raw.SessionToken);
    let auth = raw
        .AuthenticationType
        .as_ref()
        .filter(|a| !a.get_ref().trim().is_empty());
    let credentials = match auth.map(|a| (a.get_ref().trim().to_ascii_lowercase(), a.span())) {
        // GitLab Runner's default is `iam` unless `ServerAddress` is set too; static keys in the
        // file are what an operator means, wherever the server is.
        None => match (&access_key, &secret_key) {
            (Some(access_key), Some(secret_key)) => S3Credentials::Static {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                session_token,
            },
            _ => S3Credentials::Environment,
        },
        Some((kind, span)) if kind == "access-key" => match (access_key, secret_key) {
            (Some(access_key), Some(secret_key)) => S3Credentials::Static {
                access_key,
                secret_key,
                session_token,
            },
            _ => {
                ctx.error(
                    ctx.diag(
                        span,
                        "`AuthenticationType = \"access-key\"` needs `AccessKey` and `SecretKey`",
                    )
                    .hint("add both keys to [runners.cache.s3], or use `AuthenticationType = \"iam\"`"),
                );
                S3Credentials::Environment
            }
        },
        Some((kind, _)) if kind == "iam" => S3Credentials::Environment,
        Some((kind, span)) => {
            let hint = match suggest(&kind, ["access-key", "iam"].into_iter()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "use \"access-key\" (the keys of this section) or \"iam\"".into(),
            };
            ctx.error(
                ctx.diag(
                    span,
                    format!("`{path}.AuthenticationType`: unknown value {kind:?}"),
                )
                .hint(hint),
            );
            S3Credentials::Environment
        }
    };
    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(S3Settings {
        endpoint,
        bucket: bucket?,
        region: non_empty(raw.BucketLocation)
            .map(|r| if r == "EU" { "eu-west-1".into() } else { r })
            .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        // GitLab Runner: virtual hosts for AWS, path-style for every other server.
        path_style: raw.PathStyle.unwrap_or(server.is_some()),
        credentials,
    })
}
