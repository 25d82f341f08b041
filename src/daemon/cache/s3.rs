//! Presigned AWS SigV4 URLs for the distributed cache, signed by the daemon with `rusty-s3`.
//! The job never sees the keys: only the executor holds the URLs, and only for this job.

use std::time::Duration;

use drover_docker::SignedUrl;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config::{S3Credentials, S3Settings};

/// The longest validity SigV4 allows for a presigned URL.
const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The header GitLab Runner signs into every cache upload; it names the cache in the object's
/// metadata, and the upload must send it verbatim.
pub const CACHE_KEY_HEADER: &str = "x-amz-meta-cachekey";

/// Why no URL could be signed; said in the job's trace as a warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the cache server address {0:?} is not a valid URL")]
    Endpoint(String),
    #[error("the bucket {bucket:?} cannot be addressed at {endpoint}: {reason}")]
    Bucket {
        bucket: String,
        endpoint: String,
        reason: String,
    },
    #[error(
        "AuthenticationType is iam but drover's environment has no AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials,
}

/// Signs the cache's URLs for one job.
pub struct Signer {
    bucket: Bucket,
    credentials: Credentials,
}

impl Signer {
    pub fn new(s3: &S3Settings) -> Result<Signer, SignError> {
        let endpoint = s3
            .endpoint
            .parse()
            .map_err(|_| SignError::Endpoint(s3.endpoint.clone()))?;
        let style = if s3.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket =
            Bucket::new(endpoint, style, s3.bucket.clone(), s3.region.clone()).map_err(|e| {
                SignError::Bucket {
                    bucket: s3.bucket.clone(),
                    endpoint: s3.endpoint.clone(),
                    reason: format!("{e:?}"),
                }
            })?;
        let credentials = match &s3.credentials {
            S3Credentials::Static {
                access_key,
                secret_key,
                session_token,
            } => match session_token {
                Some(token) => Credentials::new_with_token(access_key, secret_key, token),
                None => Credentials::new(access_key, secret_key),
            },
            S3Credentials::Environment => {
                Credentials::from_env().ok_or(SignError::NoCredentials)?
            }
        };
        Ok(Signer {
            bucket,
            credentials,
        })
    }

    /// A `GET` of `object`, valid for `expires`.
    pub fn get(&self, object: &str, expires: Duration) -> SignedUrl {
        let action = self.bucket.get_object(Some(&self.credentials), object);
        SignedUrl::new(action.sign(clamp(expires)).to_string())
    }

    /// A `PUT` of `object` carrying `x-amz-meta-cachekey: <key>`, valid for `expires`; the
    /// headers the request must send verbatim come with it.
    pub fn put(
        &self,
        object: &str,
        key: &str,
        expires: Duration,
    ) -> (SignedUrl, Vec<(String, String)>) {
        let mut action = self.bucket.put_object(Some(&self.credentials), object);
        action
            .headers_mut()
            .insert(CACHE_KEY_HEADER, key.to_string());
        let url = SignedUrl::new(action.sign(clamp(expires)).to_string());
        (url, vec![(CACHE_KEY_HEADER.to_string(), key.to_string())])
    }

    #[cfg(test)]
    fn get_at(&self, object: &str, expires: Duration, at: jiff::Timestamp) -> String {
        let action = self.bucket.get_object(Some(&self.credentials), object);
        action.sign_with_time(expires, &at).to_string()
    }

    #[cfg(test)]
    fn put_at(&self, object: &str, key: &str, expires: Duration, at: jiff::Timestamp) -> String {
        let mut action = self.bucket.put_object(Some(&self.credentials), object);
        action
            .headers_mut()
            .insert(CACHE_KEY_HEADER, key.to_string());
        action.sign_with_time(expires, &at).to_string()
    }
}

/// At least a second, at most SigV4's week.
fn clamp(expires: Duration) -> Duration {
    expires.clamp(Duration::from_secs(1), MAX_EXPIRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_example(path_style: bool) -> Signer {
        Signer::new(&S3Settings {
            endpoint: "https://s3.amazonaws.com".into(),
            bucket: "examplebucket".into(),
            region: "us-east-1".into(),
            path_style,
            credentials: S3Credentials::Static {
                access_key: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
        })
        .unwrap()
    }

    #[test]
    fn presigned_get_matches_the_aws_documentation_example() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", the
        // example presigned URL: GET examplebucket/test.txt on 2013-05-24, valid for 86400 s.
        let at = jiff::Timestamp::from_second(1_369_353_600).unwrap();
        let url = aws_example(false).get_at("test.txt", Duration::from_secs(86400), at);
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
        // Path style moves the bucket into the path, and so changes the signature.
        let path = aws_example(true).get_at("test.txt", Duration::from_secs(86400), at);
        assert!(
            path.starts_with("https://s3.amazonaws.com/examplebucket/test.txt?"),
            "{path}"
        );
        assert!(!path.contains("aeeed9bbccd4d02ee5c0109b86d86835"), "{path}");
    }

    #[test]
    fn uploads_sign_the_cache_key_header_and_never_show_the_secret() {
        let (url, headers) = aws_example(true).put(
            "runner/6sYkQxW9b/project/42/gems-main-protected",
            "gems-main-protected",
            Duration::from_secs(3600),
        );
        assert_eq!(
            headers,
            [(
                "x-amz-meta-cachekey".to_string(),
                "gems-main-protected".to_string()
            )]
        );
        let full = url.expose();
        assert!(
            full.contains("X-Amz-SignedHeaders=host%3Bx-amz-meta-cachekey"),
            "{full}"
        );
        assert!(full.contains("X-Amz-Expires=3600"), "{full}");
        assert!(!full.contains("wJalrXUtnFEMI"), "{full}");
        assert_eq!(
            url.redacted(),
            "https://s3.amazonaws.com/examplebucket/runner/6sYkQxW9b/project/42/gems-main-protected"
        );
        assert!(!format!("{url:?}").contains("X-Amz-Signature"));
    }

    /// Against a server that verifies signatures (s3s-fs): what drover signs is accepted, and a
    /// wrong secret, an expired URL or a missing signed header are refused.
    #[tokio::test]
    async fn a_verifying_server_takes_drovers_urls_and_refuses_bad_ones() {
        use drover_docker::testing::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
        let server = S3Server::start("cache").await.unwrap();
        let settings = |secret: &str| S3Settings {
            endpoint: server.endpoint(),
            bucket: "cache".into(),
            region: "us-east-1".into(),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key: ACCESS_KEY.into(),
                secret_key: secret.into(),
                session_token: None,
            },
        };
        let good = Signer::new(&settings(SECRET_KEY)).unwrap();
        let wrong = Signer::new(&settings("not-the-secret")).unwrap();
        let http = reqwest::Client::new();
        let object = "runner/abc/project/1/k";
        let hour = Duration::from_secs(3600);
        let put = |url: &str, header: bool| {
            let mut request = http.put(url).body("zip bytes");
            if header {
                request = request.header(CACHE_KEY_HEADER, "k");
            }
            request.send()
        };
        let status = |r: reqwest::Response| r.status().as_u16();

        let (url, _) = wrong.put(object, "k", hour);
        assert_eq!(
            status(put(url.expose(), true).await.unwrap()),
            403,
            "wrong secret"
        );
        let (url, _) = good.put(object, "k", hour);
        assert_eq!(
            status(put(url.expose(), false).await.unwrap()),
            403,
            "unsent signed header"
        );
        let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
        let expired = good.put_at(object, "k", Duration::from_secs(60), long_ago);
        assert_eq!(status(put(&expired, true).await.unwrap()), 403, "expired");
        assert!(server.objects().is_empty(), "{:?}", server.objects());

        assert_eq!(
            status(put(url.expose(), true).await.unwrap()),
            200,
            "right secret"
        );
        assert_eq!(server.objects(), [object]);
        let got = http
            .get(good.get(object, hour).expose())
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), 200);
        assert_eq!(got.text().await.unwrap(), "zip bytes");
        let denied = http
            .get(wrong.get(object, hour).expose())
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status().as_u16(), 403);
        let expired = good.get_at(object, Duration::from_secs(60), long_ago);
        assert_eq!(status(http.get(&expired).send().await.unwrap()), 403);
        let missing = http
            .get(good.get("nope", hour).expose())
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
    }

    #[test]
    fn expiry_is_clamped_to_what_sigv4_allows() {
        let url = aws_example(true).get("o", Duration::from_secs(30 * 24 * 3600));
        assert!(url.expose().contains("X-Amz-Expires=604800"), "{url:?}");
    }
}
