//! Decoding a job payload in two stages: the job's `id` and `token` first, then the rest, so that
//! a payload drover cannot use still names a job it can fail (with the path of the field at fault)
//! instead of being dropped.
//!
//! Tolerant where GitLab is tolerant: `null` is the zero value, `null` array elements are skipped,
//! unknown keys are ignored. Strict where GitLab's schema is strict: a JSON array where the schema
//! has an object is an error (serde's derive would read a struct from a sequence), and so is a
//! value of the wrong type or out of range.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::JobResponse;
use crate::mask::Secret;

/// Why a job payload cannot be used, phrased for the job's trace and drover's log. Never holds a
/// value of the payload that could be a secret (tokens, variable values, credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadError {
    /// The JSON path of the field at fault (`steps[0].script`); empty when the payload as a whole
    /// is unusable (not JSON, nested too deeply).
    pub path: String,
    /// What drover expected there, or what is wrong.
    pub expected: String,
    /// What came instead (its JSON type, and for fields that hold no secrets its value, shortened).
    pub found: String,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.found.is_empty()) {
            (true, _) => write!(f, "{}", self.expected),
            (false, true) => write!(f, "field `{}`: {}", self.path, self.expected),
            (false, false) => write!(
                f,
                "field `{}`: expected {}, found {}",
                self.path, self.expected, self.found
            ),
        }
    }
}

/// A job whose `id` and `token` are usable but whose payload is not: it is accepted and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableJob {
    pub id: u64,
    pub token: Secret,
    pub error: PayloadError,
}

/// Why [`decode_job`] gives no job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobDecodeError {
    /// No usable `id` and `token`: there is no job to report to. Log it and drop it.
    #[error("the answer names no job (no usable `id` and `token`): {0}")]
    Anonymous(String),
    /// The job can be named, and failed.
    #[error("job {}: cannot use its payload: {}", .0.id, .0.error)]
    Job(Box<UndecodableJob>),
}

/// Decodes the body of a `201` to `POST /jobs/request`.
pub fn decode_job(bytes: &[u8]) -> Result<JobResponse, JobDecodeError> {
    // Streaming, ignoring everything but `id` and `token`: serde_json skips values without
    // recursion, so nesting deep enough to refuse the full decode still names the job.
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| JobDecodeError::Anonymous(without_values(&e.to_string())))?;
    let (Some(id), Some(token)) = (head.id.filter(|id| *id > 0), head.token) else {
        return Err(JobDecodeError::Anonymous(
            "`id` must be a positive number and `token` a non-empty string".into(),
        ));
    };
    let fail = |error: PayloadError| {
        JobDecodeError::Job(Box::new(UndecodableJob {
            id,
            token: Secret::new(token.clone()),
            error,
        }))
    };
    // The tree is bounded: serde_json refuses nesting beyond 128 levels here.
    let mut tree: Value = serde_json::from_slice(bytes).map_err(|e| {
        fail(PayloadError {
            path: String::new(),
            expected: format!(
                "the payload is not JSON drover can read: {}",
                without_values(&e.to_string())
            ),
            found: String::new(),
        })
    })?;
    strip_null_members(&mut tree);
    match serde_path_to_error::deserialize::<_, Obj<JobResponse>>(&tree) {
        Ok(Obj(job)) => Ok(job),
        Err(e) => Err(fail(describe(&tree, &e))),
    }
}

/// The job's `id` and `token`; everything else is skipped. Only a JSON object has them.
struct Head {
    id: Option<u64>,
    token: Option<String>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Head, D::Error> {
        struct HeadVisitor;
        impl<'de> Visitor<'de> for HeadVisitor {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head {
                    id: None,
                    token: None,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "id" => head.id = map.next_value::<Loose<u64>>()?.0,
                        "token" => {
                            head.token = map
                                .next_value::<Loose<String>>()?
                                .0
                                .filter(|t| !t.is_empty())
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_map(HeadVisitor)
    }
}

/// A value of `T`, or `None` when it is something else (skipped without recursion).
struct Loose<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Buffer as a value only what can be `T` at all (a scalar): nested values are skipped.
        struct LooseVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LooseVisitor<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Loose(
                    T::deserialize(de::value::U64Deserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Loose(
                    T::deserialize(de::value::I64Deserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose(
                    T::deserialize(de::value::StrDeserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
        }
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

/// Removes object members whose value is `null` (their field takes its default). Array elements
/// stay, so error paths keep GitLab's indices; the sequence helpers skip `null` elements.
fn strip_null_members(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_null_members);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_members),
        _ => {}
    }
}

/// Path segments under which values may be secrets: never quoted in an error.
const SECRET_KEYS: &[&str] = &[
    "token",
    "variables",
    "credentials",
    "dependencies",
    "password",
    "repo_url",
    "secrets",
    "authorization",
];

/// The error at its path, with what was expected and what came.
fn describe(tree: &Value, error: &serde_path_to_error::Error<serde_json::Error>) -> PayloadError {
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = error.inner().to_string();
    let mut found_value = Some(tree);
    let mut secret = false;
    for segment in error.path().iter() {
        found_value = match segment {
            serde_path_to_error::Segment::Seq { index } => found_value
                .and_then(|v| v.as_array())
                .and_then(|a| a.get(*index)),
            serde_path_to_error::Segment::Map { key } => {
                secret |= SECRET_KEYS.contains(&key.as_str());
                found_value
                    .and_then(|v| v.as_object())
                    .and_then(|o| o.get(key))
            }
            _ => None,
        };
    }
    let expected = match message.split_once(", expected ") {
        // In JSON's words: serde says "a sequence" and "a map".
        Some((_, expected)) => expected
            .replace("a sequence", "an array")
            .replace("a map", "an object"),
        None => without_values(&message),
    };
    let found = match found_value {
        Some(v) if message.contains(", expected ") => shown(v, secret),
        _ => String::new(),
    };
    PayloadError {
        path,
        expected,
        found,
    }
}

/// A JSON value as an error shows it: its type, and for a scalar outside secrets its value.
fn shown(value: &Value, secret: bool) -> String {
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => return "an array".into(),
        Value::Object(_) => return "an object".into(),
    };
    if secret {
        return format!("{kind} (value hidden)");
    }
    let text = value.to_string();
    let short: String = text.chars().take(40).collect();
    let ellipsis = if short.len() < text.len() { "…" } else { "" };
    format!("{kind} ({short}{ellipsis})")
}

/// serde_json's message without the values it quotes (`invalid type: string "…"` → `a string`).
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    // Quoted strings and backticked scalars are values of the payload.
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[start] as char;
        out.push_str(&rest[..start]);
        match rest[start + 1..].find(quote) {
            Some(end) => {
                out.push('…');
                rest = &rest[start + 1 + end + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A JSON object decoded into `T` (`null`: `T::default()`); anything else is an error. serde's
/// derive also reads a struct from an array, which GitLab's schema never has.
pub(crate) struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData)).map(Obj)
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for ObjVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A field holding a JSON object (`#[serde(deserialize_with = "object")]`).
pub(crate) fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Obj::<T>::deserialize(d).map(|o| o.0)
}

/// A field holding a JSON object or nothing.
pub(crate) fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<Obj<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

/// A field holding an array of objects; `null` elements are skipped.
pub(crate) fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items = Vec::<Option<Obj<T>>>::deserialize(d)?;
    Ok(items.into_iter().flatten().map(|o| o.0).collect())
}

/// A field holding an array of strings; `null` elements are skipped.
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<Option<String>>::deserialize(d)?;
    Ok(items.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/gitlab-api/job-response.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn with(pointer: &str, value: Value) -> Vec<u8> {
        let mut tree = fixture();
        *tree.pointer_mut(pointer).unwrap() = value;
        serde_json::to_vec(&tree).unwrap()
    }

    fn undecodable(bytes: &[u8]) -> UndecodableJob {
        match decode_job(bytes) {
            Err(JobDecodeError::Job(job)) => *job,
            other => panic!("expected an undecodable job, got {other:?}"),
        }
    }

    #[test]
    fn the_fixture_decodes() {
        let job = decode_job(&serde_json::to_vec(&fixture()).unwrap()).unwrap();
        assert!(job.id > 0 && !job.token.is_empty() && !job.steps.is_empty());
    }

    #[test]
    fn a_wrong_type_names_its_path_what_was_expected_and_what_came() {
        let bad = undecodable(&with("/steps/0/script", Value::String("make".into())));
        assert_eq!(bad.error.path, "steps[0].script");
        assert_eq!(bad.error.expected, "an array");
        assert_eq!(bad.error.found, "a string (\"make\")");
        assert_eq!(bad.id, fixture()["id"].as_u64().unwrap());
        assert_eq!(bad.token.expose(), fixture()["token"].as_str().unwrap());

        let bad = undecodable(&with("/git_info/depth", serde_json::json!(-1)));
        assert_eq!(bad.error.path, "git_info.depth");
        assert_eq!(bad.error.found, "a number (-1)");
        assert_eq!(
            bad.error.to_string(),
            "field `git_info.depth`: expected u32, found a number (-1)"
        );
    }

    #[test]
    fn values_that_may_be_secret_are_never_shown() {
        let secret = "s3cr3t-value-of-a-masked-variable";
        let bad = undecodable(&with(
            "/variables/0",
            serde_json::json!({"key": "K", "value": 7, "masked": secret}),
        ));
        let shown = format!("{} {:?}", bad.error, bad.error);
        assert!(bad.error.path.starts_with("variables[0]."), "{shown}");
        assert!(!shown.contains(secret) && !shown.contains('7'), "{shown}");
    }

    #[test]
    fn arrays_are_not_objects() {
        let bad = undecodable(&with("/image", serde_json::json!(["alpine"])));
        assert_eq!(bad.error.path, "image");
        assert_eq!(bad.error.expected, "an object");
        assert_eq!(bad.error.found, "an array");
        let bad = undecodable(&with("/variables/1", serde_json::json!(["KEY", "value"])));
        assert_eq!(bad.error.path, "variables[1]");
        assert!(matches!(
            decode_job(b"[]"),
            Err(JobDecodeError::Anonymous(_))
        ));
        assert!(matches!(
            decode_job(b"[1, \"token\"]"),
            Err(JobDecodeError::Anonymous(_))
        ));
    }

    #[test]
    fn nulls_are_zero_values_and_null_elements_are_skipped() {
        let mut tree = fixture();
        tree["image"] = Value::Null;
        tree["services"][0]["alias"] = Value::Null;
        tree["cache"] = serde_json::json!([null]);
        tree["steps"][0]["script"] = serde_json::json!([null, "echo hi"]);
        let job = decode_job(&serde_json::to_vec(&tree).unwrap()).unwrap();
        assert_eq!(job.image, Default::default());
        assert_eq!(job.services[0].alias, "");
        assert!(job.cache.is_empty());
        assert_eq!(job.steps[0].script, vec!["echo hi".to_string()]);
    }

    #[test]
    fn without_a_usable_id_and_token_there_is_no_job() {
        for body in [
            &b"{}"[..],
            b"{\"id\": 5}",
            b"{\"id\": \"5\", \"token\": \"t\"}",
            b"{\"id\": 0, \"token\": \"t\"}",
            b"{\"id\": 5, \"token\": \"\"}",
            b"not json",
            b"null",
        ] {
            assert!(
                matches!(decode_job(body), Err(JobDecodeError::Anonymous(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_but_names_the_job() {
        let depth = 1_000_000;
        let mut body = b"{\"id\": 9, \"token\": \"glcbt-x\", \"inputs\": ".to_vec();
        body.extend(std::iter::repeat_n(b'[', depth));
        body.extend(std::iter::repeat_n(b']', depth));
        body.push(b'}');
        let bad = undecodable(&body);
        assert_eq!((bad.id, bad.token.expose()), (9, "glcbt-x"));
        assert!(
            bad.error.expected.contains("recursion limit"),
            "{}",
            bad.error
        );
    }

    #[test]
    fn a_lone_surrogate_fails_the_job_rather_than_dropping_it() {
        let body = br#"{"id": 3, "token": "glcbt-y", "job_info": {"name": "a\ud800b"}}"#;
        let bad = undecodable(body);
        assert_eq!(bad.id, 3);
        assert!(bad.error.expected.contains("escape"), "{}", bad.error);
    }

    #[test]
    fn quoted_values_leave_messages() {
        assert_eq!(
            without_values("invalid type: string \"s3cret\", expected `u32` here"),
            "invalid type: string …, expected … here"
        );
    }
}
