//! The fake's artifact storage: `POST /jobs/:id/artifacts` (multipart, checked as Workhorse and
//! Rails check it), `GET /jobs/:id/artifacts` (with `direct_download=true` a redirect to an
//! object-storage-like URL on the same server) and `GET /objects/:key` (that storage).

use std::io::Read;

use super::{JobStatus, Reply, Request, State};
use crate::api::ArtifactsFile;

/// An artifact the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub artifact_type: String,
    pub artifact_format: String,
    pub expire_in: Option<String>,
    /// The multipart part's file name.
    pub filename: String,
    pub data: Vec<u8>,
}

fn decode_query_value(value: &str) -> String {
    let bytes = value.replace('+', " ");
    let mut out = Vec::new();
    let raw = bytes.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let Some(byte) = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One part of a multipart body.
struct Part<'a> {
    name: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
    data: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|p| {
        p.strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_owned())
    })
}

/// Splits a `multipart/form-data` body; `Err` says what is malformed.
fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let start = find(rest, delimiter.as_bytes()).ok_or("no opening boundary")?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("no CRLF after a boundary")?;
        let headers_end = find(rest, b"\r\n\r\n").ok_or("a part without headers")?;
        let headers = String::from_utf8_lossy(&rest[..headers_end]).into_owned();
        rest = &rest[headers_end + 4..];
        let end_marker = format!("\r\n{delimiter}");
        let end = find(rest, end_marker.as_bytes()).ok_or("no closing boundary")?;
        let data = &rest[..end];
        rest = &rest[end + end_marker.len()..];
        let mut part = Part {
            name: None,
            filename: None,
            content_type: None,
            data,
        };
        for line in headers.split("\r\n") {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    part.name = disposition_param(value, "name");
                    part.filename = disposition_param(value, "filename");
                }
                "content-type" => part.content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        parts.push(part);
    }
}

/// Whether `data` is a readable archive in `format`.
fn check_format(format: &str, data: &[u8]) -> Result<(), String> {
    match format {
        "zip" => {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data))
                .map_err(|e| format!("not a zip archive: {e}"))?;
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(|e| format!("zip entry {i}: {e}"))?;
            }
            Ok(())
        }
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .map(|_| ())
                .map_err(|e| format!("not a gzip stream: {e}"))
        }
        _ => Ok(()),
    }
}

impl State {
    /// `POST /jobs/:id/artifacts`.
    pub(crate) fn upload_artifacts(&mut self, req: &Request<'_>, id: u64) -> Reply {
        if let Err(reply) = self.job_auth(req, id, None) {
            return reply;
        }
        let status = self.jobs[&id].status;
        if status != JobStatus::Running && status != JobStatus::Canceling {
            return Reply::message(403, "403 Forbidden - Job is not running").job_status(status);
        }
        if req.query_param("token").is_some() {
            self.violate(req, "the job token must go in JOB-TOKEN, not in the query");
        }
        let param = |key: &str| req.query_param(key).map(decode_query_value);
        let (artifact_type, artifact_format) = (param("artifact_type"), param("artifact_format"));
        if artifact_type.is_none() || artifact_format.is_none() {
            self.violate(
                req,
                "GitLab Runner always sends artifact_type and artifact_format",
            );
        }
        let artifact_type = artifact_type.unwrap_or_else(|| "archive".into());
        let artifact_format = artifact_format.unwrap_or_else(|| "zip".into());
        let content_type = req.header("content-type").unwrap_or_default().to_owned();
        let Some(boundary) = content_type
            .strip_prefix("multipart/form-data")
            .and_then(|rest| disposition_param(rest, "boundary"))
        else {
            self.violate(req, "the body must be multipart/form-data with a boundary");
            return Reply::message(400, "400 Bad request - file is missing");
        };
        let parts = match parse_multipart(req.body, &boundary) {
            Ok(parts) => parts,
            Err(problem) => {
                self.violate(req, format!("malformed multipart body: {problem}"));
                return Reply::message(400, "400 Bad request - file is missing");
            }
        };
        if parts.len() != 1 || parts[0].name.as_deref() != Some("file") {
            // Workhorse wants exactly one file part, named `file`.
            self.violate(req, "the body must have exactly one part, named \"file\"");
            return Reply::message(400, "400 Bad request - file is missing");
        }
        let part = &parts[0];
        let filename = part.filename.clone().unwrap_or_default();
        let expected_suffix = match artifact_format.as_str() {
            "zip" => Some(".zip"),
            "gzip" => Some(".gz"),
            _ => None,
        };
        if filename.is_empty() || expected_suffix.is_some_and(|s| !filename.ends_with(s)) {
            self.violate(
                req,
                format!("file name {filename:?} does not fit artifact_format={artifact_format}"),
            );
        }
        if part.content_type.as_deref() != Some("application/octet-stream") {
            self.violate(req, "the file part must be application/octet-stream");
        }
        if let Err(problem) = check_format(&artifact_format, part.data) {
            self.violate(req, format!("the uploaded {artifact_format}: {problem}"));
            return Reply::message(400, "400 Bad request - invalid archive");
        }
        let stored = StoredArtifact {
            artifact_type,
            artifact_format,
            expire_in: param("expire_in"),
            filename,
            data: part.data.to_vec(),
        };
        let list = self.artifacts.entry(id).or_default();
        match list
            .iter()
            .find(|a| a.artifact_type == stored.artifact_type)
        {
            // Rails: the same file again is a successful no-op (retries are idempotent).
            Some(existing) if existing.data == stored.data => {}
            Some(_) => {
                return Reply::message(
                    400,
                    "400 Bad request - another artifact of the same type already exists",
                );
            }
            None => list.push(stored),
        }
        Reply::text_status(201)
    }

    /// The archive (`archive` type) a job uploaded.
    fn archive_of(&self, id: u64) -> Option<&StoredArtifact> {
        self.artifacts
            .get(&id)?
            .iter()
            .find(|a| a.artifact_type == "archive")
    }

    /// `artifacts_file` of a dependency, as GitLab fills it when it hands out a job.
    pub(crate) fn artifacts_file(&self, id: u64) -> Option<ArtifactsFile> {
        self.archive_of(id).map(|a| ArtifactsFile {
            filename: a.filename.clone(),
            size: a.data.len() as u64,
        })
    }

    /// `GET /jobs/:id/artifacts`: the token must be a running job's (GitLab checks it may read
    /// the dependency's job: here, any job of the fake's single project).
    pub(crate) fn download_artifacts(&mut self, req: &Request<'_>, id: u64) -> Reply {
        let token = req.header("job-token").map(str::to_owned);
        if token.is_none() {
            self.violate(req, "no JOB-TOKEN header");
        }
        let reader = self
            .jobs
            .values()
            .find(|j| Some(j.token.as_str()) == token.as_deref());
        match reader {
            Some(j) if matches!(j.status, JobStatus::Running | JobStatus::Canceling) => {}
            _ => return Reply::message(403, "403 Forbidden"),
        }
        let Some(archive) = self.archive_of(id) else {
            return Reply::message(404, "404 Not Found");
        };
        let data = archive.data.clone();
        if req.query_param("direct_download") == Some("true") {
            self.object_counter += 1;
            let key = format!("{:016x}{id}", self.object_counter.wrapping_mul(0x9e37_79b9));
            self.objects.insert(key.clone(), data);
            // What object storage would sign: the signature must never reach a log.
            let location = format!(
                "{}/objects/{key}/artifacts.zip?X-Amz-Signature=fake-signature-{key}",
                self.url
            );
            return Reply::new(302).header("Location", location);
        }
        Reply::new(200)
            .header("Content-Type", "application/octet-stream")
            .body(data)
    }

    /// `GET /objects/:key/...`: the object storage behind a direct download.
    pub(crate) fn object(&mut self, req: &Request<'_>, key: &str) -> Reply {
        if req.header("job-token").is_some() {
            self.violate(req, "the job token was sent to object storage");
        }
        match self.objects.get(key) {
            Some(data) => Reply::new(200)
                .header("Content-Type", "application/zip")
                .body(data.clone()),
            None => Reply::new(404)
                .header("Content-Type", "application/xml")
                .body(b"<Error><Code>NoSuchKey</Code></Error>".to_vec()),
        }
    }

    pub(crate) fn stored_artifacts(&self, id: u64) -> Vec<StoredArtifact> {
        self.artifacts.get(&id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_split_into_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\nContent-Type: application/octet-stream\r\n\r\nPK\r\n--X\r\n--XyZ--\r\n";
        let parts = parse_multipart(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name.as_deref(), Some("file"));
        assert_eq!(parts[0].filename.as_deref(), Some("a.zip"));
        assert_eq!(parts[0].data, b"PK\r\n--X");
        assert!(parse_multipart(b"garbage", "XyZ").is_err());
        assert_eq!(decode_query_value("7+days%21"), "7 days!");
    }
}
